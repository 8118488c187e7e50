//! The driver's control plane: the loader and the boot-count guard (`bulwark-loader-boot-guard`)
//! wired to the sensor. It decides what content runs at start-up, admits staged packs, blesses
//! candidates, records clean shutdowns, and forwards the guard's events to user mode.
//!
//! When the guard's records are lost (both slots damaged, or one damaged and the other missing),
//! no content runs and every stage is refused until an administrator sends a reset request
//! ([`ResetRequest`], `bulwark guard reset-request`) through the control device in place of an
//! envelope: it re-creates the records with the floor it names. Only SYSTEM and Administrators
//! can open the device for writing.
//!
//! The Windows layer supplies the [`Store`] (registry records flushed with `ZwFlushKey`, content
//! files) and the clock; everything else is here and tested with an in-memory store.

use bulwark_loader_boot_guard::state::EventKind;
use bulwark_loader_boot_guard::{
    Active, Config, ContentId, Decision, Guard, OpenError, Opened, ResetRequest, SlotProblem,
    Store, TrustedKeys,
};
use bulwark_protocol::{ContentSource, GuardEventRecord, GuardStatus};

use crate::content::Content;
use crate::sensor::{ControlPlane, OutcomeBuf};

/// Reason code of a refusal because the guard could not open its records at start.
pub const CODE_GUARD_UNAVAILABLE: u16 = bulwark_loader_boot_guard::CODE_RECORDS_UNUSABLE;
/// Reason code of a refused reset request because the guard's records are usable.
pub const CODE_RECORDS_USABLE: u16 = 230;

/// What happened at start-up.
#[derive(Debug)]
pub struct Start {
    /// The guard's decision (`None` when the guard could not open its records).
    pub decision: Option<Decision>,
    /// The content to install, if any.
    pub content: Option<Content>,
    /// Why the guard is unavailable, if it is.
    pub error: Option<OpenError>,
}

/// The control plane.
pub struct Control<S: Store> {
    guard: Result<Guard<S>, OpenError>,
    /// The store while the guard's records are unusable, kept for an administrator's reset.
    unusable_store: Option<S>,
    keys: TrustedKeys,
    config: Config,
    /// Guard events up to this sequence number have been forwarded.
    forwarded: u64,
}

fn content(opened: Opened, source: ContentSource) -> Content {
    Content {
        channel: opened.header.channel,
        version: opened.id.version,
        hash: opened.id.hash,
        pack: opened.pack,
        source,
    }
}

impl<S: Store> Control<S> {
    /// Opens the guard's records and takes the boot decision: counts the previous run's crash,
    /// quarantines a candidate that used its N attempts, records this attempt durably, and only
    /// then opens the chosen content (signature, version and the verifier again). Call once, at
    /// driver start, before any callback can evaluate. Never fails: the worst outcome is no
    /// content, with the reason in [`Start`].
    pub fn start(store: S, config: Config, keys: TrustedKeys, now: u64) -> (Self, Start) {
        let (mut guard, unusable_store) = match Guard::try_open(store, config) {
            Ok(g) => (Ok(g), None),
            Err((e, store)) => (Err(e), Some(store)),
        };
        let start = match &mut guard {
            Ok(g) => {
                let boot = g.boot(&keys, now);
                let source = match boot.decision.active() {
                    Active::Candidate => ContentSource::Candidate,
                    _ => ContentSource::LastKnownGood,
                };
                Start {
                    decision: Some(boot.decision),
                    content: boot.content.map(|o| content(o, source)),
                    error: None,
                }
            }
            Err(e) => Start {
                decision: None,
                content: None,
                error: Some(e.clone()),
            },
        };
        (
            Control {
                guard,
                unusable_store,
                keys,
                config,
                forwarded: 0,
            },
            start,
        )
    }

    /// The guard, if its records could be opened.
    pub fn guard(&self) -> Option<&Guard<S>> {
        self.guard.as_ref().ok()
    }

    /// Time passes (the driver's worker, every few seconds): a candidate that has run the stable
    /// period is blessed. Returns the blessed content, if any.
    pub fn tick(&mut self, secs: u32, now: u64) -> Option<ContentId> {
        self.guard
            .as_mut()
            .ok()
            .and_then(|g| g.tick(secs, now).ok().flatten())
    }

    /// A clean shutdown: the running attempt does not count as a failure.
    pub fn clean_shutdown(&mut self, now: u64) {
        if let Ok(g) = self.guard.as_mut() {
            let _ = g.clean_shutdown(now);
        }
    }

    /// Where the running content came from, according to the guard.
    pub fn running_source(&self) -> ContentSource {
        match self.guard.as_ref().map(|g| g.active()) {
            Ok(Active::Candidate) => ContentSource::Candidate,
            Ok(Active::Lkg) => ContentSource::LastKnownGood,
            _ => ContentSource::None,
        }
    }
}

impl<S: Store> Control<S> {
    /// An administrator's reset request (sent with the stage request, told apart by its magic):
    /// accepted only while the guard's records are lost; re-creates them with the request's floor.
    /// Nothing runs until content above the floor is staged.
    fn reset(&mut self, request: &[u8], now: u64) -> OutcomeBuf {
        if let Ok(g) = &self.guard {
            let s = g.state();
            return OutcomeBuf::format(
                false,
                CODE_RECORDS_USABLE,
                format_args!(
                    "reset refused: the guard records are usable (sequence {}, newest accepted \
                     version {}); a reset only re-creates lost records",
                    s.seq, s.newest
                ),
            );
        }
        let Some(store) = self.unusable_store.take() else {
            return OutcomeBuf::new(false, CODE_GUARD_UNAVAILABLE, "reset refused: no store");
        };
        match Guard::reset_from_request(store, self.config, request, now) {
            Ok(g) => {
                let floor = g.state().newest;
                self.guard = Ok(g);
                OutcomeBuf::format(
                    true,
                    0,
                    format_args!(
                        "guard records re-created with floor {floor}: content versions above \
                         {floor} can be staged; nothing runs until then"
                    ),
                )
            }
            Err((e, store)) => {
                self.unusable_store = Some(store);
                OutcomeBuf::format(false, e.code(), format_args!("reset refused: {e}"))
            }
        }
    }
}

/// Why nothing can be staged, short enough for a reply (the full error is in the start-up log).
fn unavailable(e: &OpenError) -> OutcomeBuf {
    match e {
        OpenError::NoValidRecord { a, b } => OutcomeBuf::format(
            false,
            CODE_GUARD_UNAVAILABLE,
            format_args!(
                "guard records unusable: both slots lost (slot A: {}, slot B: {}); new content is \
                 refused until an administrator sends a reset request (bulwark guard \
                 reset-request --floor N)",
                SlotProblem::code_name(a.code()),
                SlotProblem::code_name(b.code())
            ),
        ),
        e => OutcomeBuf::format(
            false,
            CODE_GUARD_UNAVAILABLE,
            format_args!("the guard's records are unusable, nothing can be staged: {e}"),
        ),
    }
}

impl<S: Store> ControlPlane for Control<S> {
    fn stage(
        &mut self,
        envelope: &[u8],
        hot: bool,
        now: u64,
        swap: &mut dyn FnMut(Content),
    ) -> OutcomeBuf {
        if ResetRequest::is_reset_request(envelope) {
            return self.reset(envelope, now);
        }
        let stable_secs = self.config.stable_secs;
        let guard = match self.guard.as_mut() {
            Ok(g) => g,
            Err(e) => return unavailable(e),
        };
        // A hot update: the candidate runs at once, its attempt counted durably first, so a crash
        // while it runs counts against it at the next boot. Otherwise it is recorded as the
        // candidate and tried at the next boot.
        match guard.stage(&self.keys, envelope, hot, now) {
            Ok(opened) => {
                let version = opened.id.version;
                let rules = opened.pack.rule_count();
                if !hot {
                    return OutcomeBuf::format(
                        true,
                        0,
                        format_args!(
                            "content version {version} ({rules} rules) is staged as the candidate \
                             for the next boot"
                        ),
                    );
                }
                swap(content(opened, ContentSource::Candidate));
                OutcomeBuf::format(
                    true,
                    0,
                    format_args!(
                        "content version {version} ({rules} rules) is running as the candidate; \
                         it becomes last-known-good after {} s or a confirmed healthy boot",
                        stable_secs
                    ),
                )
            }
            Err(e) => OutcomeBuf::format(false, e.code(), format_args!("{e}")),
        }
    }

    fn revert(&mut self, now: u64, swap: &mut dyn FnMut(Content)) -> OutcomeBuf {
        let guard = match self.guard.as_mut() {
            Ok(g) => g,
            Err(e) => return unavailable(e),
        };
        let reverted = guard.state().candidate.map_or(0, |c| c.version);
        match guard.revert(&self.keys, now) {
            Ok(opened) => {
                let version = opened.id.version;
                swap(content(opened, ContentSource::LastKnownGood));
                OutcomeBuf::format(
                    true,
                    0,
                    format_args!(
                        "content version {reverted} is quarantined; last-known-good version \
                         {version} is running"
                    ),
                )
            }
            Err(e) => OutcomeBuf::format(false, e.code(), format_args!("{e}")),
        }
    }

    fn confirm_healthy(&mut self, now: u64) -> OutcomeBuf {
        let guard = match self.guard.as_mut() {
            Ok(g) => g,
            Err(e) => {
                return OutcomeBuf::format(
                    false,
                    CODE_GUARD_UNAVAILABLE,
                    format_args!("the guard's records are unusable: {e}"),
                )
            }
        };
        match guard.confirm_healthy(now) {
            Ok(id) => OutcomeBuf::format(
                true,
                0,
                format_args!("content version {} is now last-known-good", id.version),
            ),
            Err(e) => OutcomeBuf::format(false, e.code(), format_args!("{e}")),
        }
    }

    fn guard_status(&self) -> GuardStatus {
        let Ok(g) = self.guard.as_ref() else {
            return GuardStatus {
                threshold: self.config.threshold,
                stable_period_secs: self.config.stable_secs,
                ..GuardStatus::default()
            };
        };
        let s = g.state();
        GuardStatus {
            attempts: s.attempts,
            threshold: self.config.threshold,
            candidate_staged: s.candidate.is_some(),
            candidate_version: s.candidate.map_or(0, |c| c.version),
            quarantined: u32::try_from(s.quarantine().len()).unwrap_or(u32::MAX),
            stable_period_secs: self.config.stable_secs,
            stable_elapsed_secs: if s.active == Active::Candidate {
                g.running_secs()
            } else {
                0
            },
            lkg_version: s.lkg.map_or(0, |l| l.version),
        }
    }

    fn running_source(&self) -> ContentSource {
        Control::running_source(self)
    }

    fn take_events(&mut self, sink: &mut dyn FnMut(GuardEventRecord)) {
        let Ok(g) = self.guard.as_ref() else {
            return;
        };
        let mut last = self.forwarded;
        for e in g.state().events_after(self.forwarded) {
            sink(guard_event_record(e, 0));
            last = last.max(e.seq);
        }
        self.forwarded = last;
    }
}

/// The control protocol's record of guard event `e`, numbered `seq` (0: the sensor numbers it).
#[must_use]
pub fn guard_event_record(e: &bulwark_loader_boot_guard::Event, seq: u64) -> GuardEventRecord {
    GuardEventRecord {
        seq,
        time: e.time,
        kind: e.kind.code(),
        attempts: e.attempts,
        detail: e.detail,
        version: e.content.version,
        hash: e.content.hash,
    }
}

/// The name of a guard event kind code, for output.
pub fn event_kind_name(code: u16) -> &'static str {
    match code {
        GuardEventRecord::KIND_OVER_BUDGET => return "over-budget",
        GuardEventRecord::KIND_BLOCK_DEMOTED => return "block-demoted",
        _ => {}
    }
    EventKind::from_code(code).map_or("unknown", EventKind::name)
}

/// Reason code of a refusal because the driver has not started its control plane yet.
pub const CODE_STARTING: u16 = 221;

/// The control plane before start-up has finished (a boot-start driver waits for the boot
/// volume's file system before it can read its content): status works, changes are refused.
#[derive(Debug, Clone, Copy)]
pub struct Starting {
    /// The configured threshold.
    pub threshold: u8,
    /// The configured stable period.
    pub stable_secs: u32,
}

impl ControlPlane for Starting {
    fn stage(&mut self, _: &[u8], _: bool, _: u64, _: &mut dyn FnMut(Content)) -> OutcomeBuf {
        OutcomeBuf::new(
            false,
            CODE_STARTING,
            "the driver is still starting (its content directory is not available yet); try again",
        )
    }

    fn confirm_healthy(&mut self, _: u64) -> OutcomeBuf {
        OutcomeBuf::new(
            false,
            CODE_STARTING,
            "the driver is still starting; try again",
        )
    }

    fn revert(&mut self, _: u64, _: &mut dyn FnMut(Content)) -> OutcomeBuf {
        OutcomeBuf::new(
            false,
            CODE_STARTING,
            "the driver is still starting; try again",
        )
    }

    fn guard_status(&self) -> GuardStatus {
        GuardStatus {
            threshold: self.threshold,
            stable_period_secs: self.stable_secs,
            ..GuardStatus::default()
        }
    }

    fn running_source(&self) -> ContentSource {
        ContentSource::None
    }

    fn take_events(&mut self, _: &mut dyn FnMut(GuardEventRecord)) {}
}

/// The driver's control plane over its life: starting, then running.
pub enum Lifecycle<S: Store> {
    /// Waiting for the file system.
    Starting(Starting),
    /// Started.
    Running(alloc::boxed::Box<Control<S>>),
}

impl<S: Store> Lifecycle<S> {
    /// The control plane to hand requests to.
    pub fn plane(&mut self) -> &mut dyn ControlPlane {
        match self {
            Lifecycle::Starting(s) => s,
            Lifecycle::Running(c) => &mut **c,
        }
    }
}
