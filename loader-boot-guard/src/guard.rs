//! The guard: the state machine made durable through a [`Store`].
//!
//! Every operation works on a copy of the state, writes the new record, and only then changes
//! the state in memory and acts (loads content, deletes a replaced pack). A write that fails
//! leaves the previous record and the running content as they were.

use alloc::boxed::Box;
use alloc::vec::Vec;
use bulwark_interpreter::error::HexHash;

use crate::envelope::{self, Admission, LoadError, Opened, TrustedKeys};
use crate::record::{self, RecordError, Slot, RECORD_BYTES};
use crate::state::{Active, Config, Decision, EventKind, Reason, State};
use crate::ContentId;

/// A store failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("stored item is larger than the {max}-byte limit")]
    TooLarge { max: usize },
    #[error("I/O error {0:#010x}")]
    Io(u32),
}

impl StoreError {
    /// A code for events: 1 not found, 2 too large, otherwise the I/O code.
    pub fn code(self) -> u32 {
        match self {
            StoreError::NotFound => 1,
            StoreError::TooLarge { .. } => 2,
            StoreError::Io(c) => c,
        }
    }
}

/// Persistence: two record slots and the stored envelopes (blobs), named by [`ContentId`].
///
/// The driver implements it with its registry key (records, each write followed by
/// `ZwFlushKey`) and files; the host with `host::DirStore` (feature `std`). Writes must be durable
/// when they return `Ok`. A write may be torn or lost by a crash: the guard copes with that.
pub trait Store {
    /// Reads a record slot into `buf` (replacing its contents). An empty or absent slot reads as
    /// zero bytes. More than `max` bytes: [`StoreError::TooLarge`].
    fn read_record(&mut self, slot: Slot, buf: &mut Vec<u8>, max: usize) -> Result<(), StoreError>;
    /// Replaces a record slot with `bytes`, durably.
    fn write_record(&mut self, slot: Slot, bytes: &[u8]) -> Result<(), StoreError>;
    /// Stores an envelope under `id`, durably (replacing any blob with that id).
    fn put_blob(&mut self, id: &ContentId, bytes: &[u8]) -> Result<(), StoreError>;
    /// Reads the envelope stored under `id` into `buf`. Absent: [`StoreError::NotFound`]; more
    /// than `max` bytes: [`StoreError::TooLarge`].
    fn get_blob(&mut self, id: &ContentId, buf: &mut Vec<u8>, max: usize)
        -> Result<(), StoreError>;
    /// Deletes the envelope stored under `id` (absent is not an error).
    fn remove_blob(&mut self, id: &ContentId) -> Result<(), StoreError>;
    /// Deletes every stored envelope not in `keep` (left over by a crash between writing a blob
    /// and the record naming it). Optional: the default keeps everything.
    fn retain_blobs(&mut self, keep: &[ContentId]) -> Result<(), StoreError> {
        let _ = keep;
        Ok(())
    }
}

/// The reason code of a refusal because the guard's records are unusable (lost, or for another
/// channel): the driver refuses new content with it until an administrator acts.
pub const CODE_RECORDS_UNUSABLE: u16 = 220;

/// The records could not be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
// Made once, at start-up, and never moved in a loop: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum OpenError {
    /// Both slots are lost: damaged, unreadable, or one damaged and the other missing. The
    /// anti-downgrade floor, last-known-good and the quarantine list are gone with them, so the
    /// guard refuses to start from an empty state: no content runs and nothing can be staged until
    /// an administrator re-creates the records with a floor ([`Guard::reset`]).
    #[error("guard records lost: slot A: {a}; slot B: {b}; the anti-downgrade floor, last-known-good and quarantine list are gone, so no content runs and new content is refused until an administrator resets the records with a floor")]
    NoValidRecord { a: SlotProblem, b: SlotProblem },
    #[error(
        "the guard records are for channel {records}, the configuration says channel {config}"
    )]
    ChannelMismatch { records: u32, config: u32 },
    #[error("bad guard configuration: {0}")]
    Config(#[from] crate::state::ConfigError),
}

/// What was wrong with one record slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotProblem {
    #[error("missing (empty or absent)")]
    Empty,
    #[error("cannot be read: {0}")]
    Store(StoreError),
    #[error("{0}")]
    Record(RecordError),
}

impl SlotProblem {
    /// A stable code for events: 1 missing, 2 unreadable, 3 wrong length, 4 bad magic,
    /// 5 unsupported version, 6 bad CRC, 7 not canonical, 8 bad field, 9 inconsistent.
    pub fn code(&self) -> u8 {
        match self {
            SlotProblem::Empty => 1,
            SlotProblem::Store(_) => 2,
            SlotProblem::Record(r) => match r {
                RecordError::WrongLength { .. } => 3,
                RecordError::BadMagic { .. } => 4,
                RecordError::UnsupportedVersion { .. } => 5,
                RecordError::BadCrc { .. } => 6,
                RecordError::NonCanonical { .. } => 7,
                RecordError::BadField { .. } => 8,
                RecordError::Inconsistent { .. } => 9,
            },
        }
    }

    /// A short description of a [`code`](SlotProblem::code), for output.
    pub fn code_name(code: u8) -> &'static str {
        match code {
            1 => "missing",
            2 => "unreadable",
            3 => "wrong length",
            4 => "bad magic",
            5 => "unsupported version",
            6 => "bad checksum",
            7 => "not canonical",
            8 => "bad field",
            9 => "inconsistent fields",
            _ => "not trusted",
        }
    }

    /// The byte offset the problem was found at, if any.
    pub fn offset(&self) -> Option<usize> {
        match self {
            SlotProblem::Record(r) => r.offset(),
            _ => None,
        }
    }

    /// The `detail` of a [`EventKind::RecordRecovered`] event for this problem in `slot`.
    pub fn event_detail(&self, slot: Slot) -> u32 {
        let offset = self
            .offset()
            .and_then(|o| u32::try_from(o).ok())
            .filter(|o| *o <= 0xffff)
            .unwrap_or(0);
        slot_code(slot) | (u32::from(self.code()) << 8) | (offset << 16)
    }
}

fn slot_code(slot: Slot) -> u32 {
    match slot {
        Slot::A => 1,
        Slot::B => 2,
    }
}

/// How the records were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The slot whose record is in use (`None`: no record yet, a fresh state).
    pub used: Option<Slot>,
    /// A slot that was not trusted, and why: it held something that failed its checks, or it is
    /// missing although the record in use shows it was written before (slot A is written first,
    /// slot B second).
    pub rejected: Option<(Slot, SlotProblem)>,
}

/// A refused stage, or a failed guard operation. [`code`](GuardError::code) gives the stable
/// reason code for the control protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("{0}")]
    Load(LoadError),
    #[error("could not store the pack or record: {0}")]
    Store(StoreError),
    #[error("no candidate is running (staged candidates are tried at the next boot)")]
    NoCandidateRunning,
    #[error("nothing to revert: no candidate is staged or running")]
    NothingToRevert,
    #[error("no last-known-good content to go back to")]
    NoLkg,
    #[error("the stored last-known-good could not be loaded (loader code {0}); nothing runs")]
    LkgUnusable(u32),
}

impl GuardError {
    /// The code of [`GuardError::Store`]: the machine's own storage failed, whatever the content.
    pub const STORE_CODE: u16 = 200;

    /// A stable reason code: the loader's codes (100..=199), 200 store, 210 nothing to bless,
    /// 211 nothing to revert, 212 no last-known-good, 213 last-known-good unusable.
    pub fn code(&self) -> u16 {
        match self {
            GuardError::Load(e) => e.code(),
            GuardError::Store(_) => Self::STORE_CODE,
            GuardError::NoCandidateRunning => 210,
            GuardError::NothingToRevert => 211,
            GuardError::NoLkg => 212,
            GuardError::LkgUnusable(_) => 213,
        }
    }
}

/// The outcome of [`Guard::boot`]: the decision and, when content is to run, the opened pack.
#[derive(Debug)]
pub struct Boot {
    /// What was decided (after any fallback: if the candidate could not be loaded, this is the
    /// decision that followed).
    pub decision: Decision,
    /// The content to run (`None` exactly when the decision is [`Decision::NoContent`]).
    pub content: Option<Opened>,
}

/// The durable boot-count guard.
pub struct Guard<S: Store> {
    store: S,
    config: Config,
    state: Box<State>,
    /// A second state box, reused by every change (see `draft`), allocated at open.
    spare: Option<Box<State>>,
    recovery: Recovery,
    running_secs: u32,
    /// The packs the record in the other slot names (kept until a newer record replaces it).
    older: [Option<ContentId>; 2],
}

impl<S: Store> Guard<S> {
    /// Reads the records: the valid slot with the higher sequence number wins; a slot that fails
    /// its length, magic, version, CRC, field or consistency checks ([`record::check`]) is never
    /// trusted. Both slots missing is a fresh state (nothing was ever written). Both slots lost,
    /// or one lost and the other missing, is [`OpenError::NoValidRecord`]: nothing is written,
    /// and the records stay unusable until [`Guard::reset`]. Call once at driver start, before
    /// [`Guard::boot`].
    pub fn open(store: S, config: Config) -> Result<Guard<S>, OpenError> {
        Guard::try_open(store, config).map_err(|(e, _)| e)
    }

    /// [`Guard::open`], giving the store back on failure (the driver keeps it for an
    /// administrator's [`Guard::reset`]).
    pub fn try_open(mut store: S, config: Config) -> Result<Guard<S>, (OpenError, S)> {
        let config = match config.validate() {
            Ok(c) => c,
            Err(e) => return Err((e.into(), store)),
        };
        let (a, b) = read_slots(&mut store);
        let mut older = [None, None];
        let (state, recovery) = match (a, b) {
            (Ok(a), Ok(b)) => {
                if a.seq >= b.seq {
                    older = refs(&b);
                    (
                        a,
                        Recovery {
                            used: Some(Slot::A),
                            rejected: None,
                        },
                    )
                } else {
                    older = refs(&a);
                    (
                        b,
                        Recovery {
                            used: Some(Slot::B),
                            rejected: None,
                        },
                    )
                }
            }
            // Slot A holds the first record (sequence 1) and slot B the second: B missing next to
            // a later record in A, or A missing at all, means a written slot was erased.
            (Ok(a), Err(SlotProblem::Empty)) if a.seq == 1 => (
                a,
                Recovery {
                    used: Some(Slot::A),
                    rejected: None,
                },
            ),
            (Ok(a), Err(p)) => (a, recovery(Slot::A, Slot::B, p)),
            (Err(p), Ok(b)) => (b, recovery(Slot::B, Slot::A, p)),
            (Err(SlotProblem::Empty), Err(SlotProblem::Empty)) => (
                Box::new(State::new(config.channel)),
                Recovery {
                    used: None,
                    rejected: None,
                },
            ),
            // Everything else is lost records, including one slot damaged and the other missing:
            // that is what a torn first write looks like, but also what erasing one slot and
            // corrupting the other looks like, and starting from an empty state would drop the
            // floor, last-known-good and the quarantine list. The guard cannot tell the two apart,
            // so it stops and an administrator decides.
            (Err(a), Err(b)) => return Err((OpenError::NoValidRecord { a, b }, store)),
        };
        if state.channel != config.channel {
            return Err((
                OpenError::ChannelMismatch {
                    records: state.channel,
                    config: config.channel,
                },
                store,
            ));
        }
        let mut guard = Guard {
            store,
            config,
            state,
            spare: Some(Box::new(State::new(config.channel))),
            recovery,
            running_secs: 0,
            older,
        };
        if let Some((slot, problem)) = &guard.recovery.rejected {
            let detail = problem.event_detail(*slot);
            guard
                .state
                .push_event(0, EventKind::RecordRecovered, detail, ContentId::NONE);
        }
        let keep: Vec<ContentId> = refs(&guard.state)
            .into_iter()
            .chain(guard.older)
            .flatten()
            .collect();
        let _ = guard.store.retain_blobs(&keep);
        Ok(guard)
    }

    /// The administrator's action after the records were lost: re-creates them with the
    /// anti-downgrade floor `floor` (the newest content version already accepted: only newer
    /// versions can be staged afterwards) and nothing else: no last-known-good, no candidate, an
    /// empty quarantine list, and one [`EventKind::RecordsReset`] event naming the floor and what
    /// was wrong with each slot. The new record is written to slot A and then slot B (a failure
    /// of the second write is left for the next write to repair). Refused, with nothing written,
    /// when the records are usable ([`ResetError::RecordsUsable`]: a reset never lowers the floor
    /// of valid records) or belong to another channel; allowed when no record was ever written
    /// (an installation can set its first floor). Stored envelopes are not read; those no record
    /// names are deleted at the next [`Guard::open`].
    pub fn reset(
        store: S,
        config: Config,
        floor: u64,
        now: u64,
    ) -> Result<Guard<S>, (ResetError, S)> {
        let config = match config.validate() {
            Ok(c) => c,
            Err(e) => return Err((ResetError::Open(e.into()), store)),
        };
        let (store, a, b) = match Guard::try_open(store, config) {
            // Never written: an installation sets its first floor.
            Ok(g) if g.state.seq == 0 => (g.store, 0u8, 0u8),
            Ok(g) => {
                let err = ResetError::RecordsUsable {
                    slot: g.recovery.used.map_or("none", Slot::name),
                    seq: g.state.seq,
                    newest: g.state.newest,
                };
                return Err((err, g.store));
            }
            Err((OpenError::NoValidRecord { a, b }, store)) => (store, a.code(), b.code()),
            Err((e, store)) => return Err((ResetError::Open(e), store)),
        };
        let mut state = State::new(config.channel);
        state.newest = floor;
        state.push_event(
            now,
            EventKind::RecordsReset,
            u32::from(a) | (u32::from(b) << 8),
            ContentId {
                version: floor,
                hash: [0; 32],
            },
        );
        let mut guard = Guard {
            store,
            config,
            state: Box::new(state),
            spare: Some(Box::new(State::new(config.channel))),
            recovery: Recovery {
                used: None,
                rejected: None,
            },
            running_secs: 0,
            older: [None, None],
        };
        for _ in 0..2 {
            let next = guard.draft();
            match guard.try_commit(next) {
                Ok(()) => guard.recovery.used = Some(Slot::for_seq(guard.state.seq)),
                Err((e, _)) if guard.state.seq == 0 => {
                    return Err((ResetError::Store(e), guard.store))
                }
                Err(_) => break,
            }
        }
        Ok(guard)
    }

    /// The records in use.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How the records were read at [`Guard::open`].
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Seconds the current content has run (since boot or hot update), as told by [`Guard::tick`].
    pub fn running_secs(&self) -> u32 {
        self.running_secs
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably (tests inject faults through it).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives the store back.
    pub fn into_store(self) -> S {
        self.store
    }

    /// A copy of the state to change (on the heap: the state is a few KiB and kernel stacks are
    /// small), in the spare box when there is one: after [`Guard::open`] a commit hands the
    /// replaced (or refused) state back as the spare, so changing the state allocates nothing.
    fn draft(&mut self) -> Box<State> {
        match self.spare.take() {
            Some(mut spare) => {
                spare.clone_from(&self.state);
                spare
            }
            None => Box::new(State::clone(&self.state)),
        }
    }

    /// Writes `next` as the new record; on success it becomes the state. On failure the state
    /// stays and `next` is handed back.
    fn try_commit(&mut self, mut next: Box<State>) -> Result<(), (StoreError, Box<State>)> {
        next.seq = self.state.seq.saturating_add(1);
        let mut bytes = [0u8; RECORD_BYTES];
        record::encode_into(&next, &mut bytes);
        match self.store.write_record(Slot::for_seq(next.seq), &bytes) {
            Ok(()) => {
                // The record before this one is still on disk in the other slot, and is the one
                // that counts if this write is lost: a pack is deleted only when neither names it.
                let older = core::mem::replace(&mut self.older, refs(&self.state));
                self.spare = Some(core::mem::replace(&mut self.state, next));
                let keep = [refs(&self.state), self.older];
                for id in older.into_iter().flatten() {
                    if !keep.iter().flatten().flatten().any(|k| *k == id) {
                        let _ = self.store.remove_blob(&id);
                    }
                }
                Ok(())
            }
            Err(e) => Err((e, next)),
        }
    }

    /// Writes `next` as the new record; on failure the state stays (and the failure is an event).
    fn commit(&mut self, next: Box<State>, now: u64) -> Result<(), StoreError> {
        self.try_commit(next).map_err(|(e, refused)| {
            self.spare = Some(refused);
            self.state
                .push_event(now, EventKind::StoreFailed, e.code(), ContentId::NONE);
            e
        })
    }

    /// Writes `next`; if that fails, adopts it in memory anyway (what runs must match what the
    /// guard believes; the next successful write persists it).
    fn commit_or_adopt(&mut self, next: Box<State>, now: u64) {
        if let Err((e, mut next)) = self.try_commit(next) {
            next.seq = self.state.seq;
            next.push_event(now, EventKind::StoreFailed, e.code(), ContentId::NONE);
            self.spare = Some(core::mem::replace(&mut self.state, next));
        }
    }

    fn load_stored(&mut self, id: ContentId, keys: &TrustedKeys) -> Result<Opened, u32> {
        let mut buf = Vec::new();
        let read = self
            .store
            .get_blob(&id, &mut buf, envelope::MAX_ENVELOPE_BYTES);
        let opened = match read {
            Ok(()) => envelope::open(
                &buf,
                keys,
                Admission::Stored {
                    channel: self.config.channel,
                    id,
                },
            )
            .map_err(|e| u32::from(e.code())),
            Err(_) => Err(0),
        };
        // The verified pack owns its data: the envelope bytes are freed here.
        drop(buf);
        opened
    }

    /// The boot decision, at driver start, before any content is loaded: counts the previous
    /// run's crash, quarantines a candidate that used up its N attempts, records this attempt
    /// durably, and only then reads and opens the chosen content (signature, version, verifier
    /// again). A candidate whose attempt cannot be recorded is not tried; one that cannot be
    /// read or opened is dropped; then last-known-good is chosen the same way. Never fails: the
    /// worst outcome is [`Decision::NoContent`].
    pub fn boot(&mut self, keys: &TrustedKeys, now: u64) -> Boot {
        self.running_secs = 0;
        let mut next = self.draft();
        let mut decision = next.boot(&self.config, now);
        if let Decision::Candidate { id, .. } = decision {
            if self.commit(next, now).is_ok() {
                match self.load_stored(id, keys) {
                    Ok(opened) => {
                        return Boot {
                            decision,
                            content: Some(opened),
                        }
                    }
                    Err(detail) => {
                        let mut next = self.draft();
                        next.candidate_unusable(detail, now);
                        decision = next.boot_lkg(&self.config, Reason::CandidateUnusable, now);
                        self.commit_or_adopt(next, now);
                    }
                }
            } else {
                // Not durable: the candidate is not tried. Take the last-known-good decision from
                // the records as they were (the crash accounting is redone at the next boot).
                let mut next = self.draft();
                next.boots = next.boots.saturating_add(1);
                decision = next.boot_lkg(&self.config, Reason::AttemptNotRecorded, now);
                // If nothing can be written, the in-memory view still matches what runs.
                self.commit_or_adopt(next, now);
            }
        } else {
            // Last-known-good is proven content: it still loads when the record cannot be written.
            self.commit_or_adopt(next, now);
        }
        if let Decision::Lkg { id, .. } = decision {
            match self.load_stored(id, keys) {
                Ok(opened) => {
                    return Boot {
                        decision,
                        content: Some(opened),
                    }
                }
                Err(detail) => {
                    let mut next = self.draft();
                    next.lkg_unusable(detail, now);
                    decision = Decision::NoContent {
                        reason: Reason::LkgUnusable,
                    };
                    next.push_event(
                        now,
                        EventKind::BootNoContent,
                        Reason::LkgUnusable as u32,
                        id,
                    );
                    self.commit_or_adopt(next, now);
                }
            }
        }
        Boot {
            decision,
            content: None,
        }
    }

    /// A signed envelope arrived (the stage IOCTL): opens it as an update (size, signature,
    /// channel, quarantine, version, schema, verifier), stores it, and records it as the
    /// candidate. With `activate` (a hot update) the attempt is counted in the same record,
    /// before the caller swaps the returned pack in. A refusal or a store failure leaves the
    /// candidate, last-known-good and the running content as they are (a refusal is recorded as
    /// an event).
    pub fn stage(
        &mut self,
        keys: &TrustedKeys,
        envelope_bytes: &[u8],
        activate: bool,
        now: u64,
    ) -> Result<Opened, GuardError> {
        let opened = match envelope::open(
            envelope_bytes,
            keys,
            Admission::Update {
                channel: self.config.channel,
                newest: self.state.newest,
                quarantine: self.state.quarantine(),
            },
        ) {
            Ok(o) => o,
            Err(e) => {
                let (version, hash) = envelope::parse(envelope_bytes)
                    .map(|(h, pack)| (h.version, sha256(pack)))
                    .unwrap_or((0, [0; 32]));
                // The refusal is recorded for telemetry (best effort: nothing else changes).
                let mut next = self.draft();
                next.refused(e.code(), version, hash, now);
                let _ = self.commit(next, now);
                return Err(GuardError::Load(e));
            }
        };
        let id = opened.id;
        if let Err(e) = self.store.put_blob(&id, envelope_bytes) {
            self.state
                .push_event(now, EventKind::StoreFailed, e.code(), id);
            let _ = self.store.remove_blob(&id);
            return Err(GuardError::Store(e));
        }
        let mut next = self.draft();
        next.stage(id, activate, now);
        if let Err(e) = self.commit(next, now) {
            if self.state.lkg != Some(id) && self.state.candidate != Some(id) {
                let _ = self.store.remove_blob(&id);
            }
            return Err(GuardError::Store(e));
        }
        if activate {
            self.running_secs = 0;
        }
        Ok(opened)
    }

    /// Time passes (the driver's timer): after the stable period a running candidate is blessed
    /// (it becomes last-known-good), and last-known-good's count of unfinished runs is cleared.
    /// Returns the blessed content, if any. Writes only when something changes.
    pub fn tick(&mut self, secs: u32, now: u64) -> Result<Option<ContentId>, StoreError> {
        self.running_secs = self.running_secs.saturating_add(secs);
        if self.running_secs < self.config.stable_secs {
            return Ok(None);
        }
        let mut next = self.draft();
        let running = next.candidate.filter(|_| next.active == Active::Candidate);
        if !next.stable(Reason::StablePeriod, now) {
            return Ok(None);
        }
        self.commit(next, now)?;
        Ok(running)
    }

    /// The user-mode service confirms a healthy boot: the running candidate is blessed at once.
    pub fn confirm_healthy(&mut self, now: u64) -> Result<ContentId, GuardError> {
        let mut next = self.draft();
        let Some(id) = next.bless(Reason::ServiceConfirmed, now) else {
            if next.stable(Reason::ServiceConfirmed, now) {
                self.commit(next, now).map_err(GuardError::Store)?;
            }
            return Err(GuardError::NoCandidateRunning);
        };
        self.commit(next, now).map_err(GuardError::Store)?;
        Ok(id)
    }

    /// The service asks to go back to last-known-good ([`State::revert`]): the candidate is
    /// quarantined and last-known-good made what runs, in the record first; then last-known-good
    /// is read and opened again (as at boot) for the caller to swap in. Refused, changing
    /// nothing, when there is no candidate or no last-known-good, or the record cannot be
    /// written. If last-known-good cannot be loaded, the record says so and nothing should run.
    pub fn revert(&mut self, keys: &TrustedKeys, now: u64) -> Result<Opened, GuardError> {
        if self.state.candidate.is_none() {
            return Err(GuardError::NothingToRevert);
        }
        let mut next = self.draft();
        let Some(lkg) = next.revert(now) else {
            self.spare = Some(next);
            return Err(GuardError::NoLkg);
        };
        self.commit(next, now).map_err(GuardError::Store)?;
        self.running_secs = 0;
        match self.load_stored(lkg, keys) {
            Ok(opened) => Ok(opened),
            Err(detail) => {
                let mut next = self.draft();
                next.lkg_unusable(detail, now);
                self.commit_or_adopt(next, now);
                Err(GuardError::LkgUnusable(detail))
            }
        }
    }

    /// A clean shutdown (the driver's shutdown notification or unload): the running attempt is
    /// not a failure.
    pub fn clean_shutdown(&mut self, now: u64) -> Result<(), StoreError> {
        let mut next = self.draft();
        next.clean_shutdown(now);
        self.running_secs = 0;
        self.commit(next, now)
    }

    /// What is running according to the records.
    pub fn active(&self) -> Active {
        self.state.active
    }
}

fn refs(state: &State) -> [Option<ContentId>; 2] {
    [state.lkg, state.candidate]
}

fn recovery(used: Slot, other: Slot, problem: SlotProblem) -> Recovery {
    Recovery {
        used: Some(used),
        rejected: Some((other, problem)),
    }
}

/// Reads and decodes both record slots.
type SlotRead = Result<Box<State>, SlotProblem>;

fn read_slots<S: Store>(store: &mut S) -> (SlotRead, SlotRead) {
    let mut buf = Vec::new();
    let mut read = |slot: Slot| -> SlotRead {
        store
            .read_record(slot, &mut buf, RECORD_BYTES)
            .map_err(SlotProblem::Store)?;
        if buf.is_empty() {
            return Err(SlotProblem::Empty);
        }
        let state = record::decode(&buf).map_err(SlotProblem::Record)?;
        if Slot::for_seq(state.seq) != slot {
            return Err(SlotProblem::Record(RecordError::BadField {
                field: "sequence number (wrong slot)",
                offset: 8,
                value: state.seq,
            }));
        }
        Ok(state)
    };
    let a = read(Slot::A);
    let b = read(Slot::B);
    (a, b)
}

/// Why [`Guard::reset`] refused. Each variant has a stable [`code`](ResetError::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResetError {
    #[error("the guard records are usable (slot {slot}, sequence {seq}, newest accepted version {newest}): a reset only re-creates lost records, it never lowers the floor of valid ones")]
    RecordsUsable {
        slot: &'static str,
        seq: u64,
        newest: u64,
    },
    #[error("{0}")]
    Open(OpenError),
    #[error("could not write the new record: {0}")]
    Store(StoreError),
    #[error("{0}")]
    Request(ResetRequestError),
}

impl ResetError {
    /// A stable reason code: 230 records usable, 231 records unusable for another reason
    /// (channel or configuration), 232 a malformed reset request, 200 store failure.
    pub fn code(&self) -> u16 {
        match self {
            ResetError::RecordsUsable { .. } => 230,
            ResetError::Open(_) => 231,
            ResetError::Request(_) => 232,
            ResetError::Store(_) => 200,
        }
    }
}

/// An administrator's request to re-create lost guard records, as the driver takes it through its
/// control device (which only SYSTEM and Administrators can open for writing): sent in place of
/// an envelope with the stage request, and told apart from one by its magic.
///
/// Layout (integers little-endian), [`ResetRequest::BYTES`] bytes:
///
/// ```text
/// 0   magic "BWRS"
/// 4   u16 request version (1)
/// 6   u16 flags (0)
/// 8   u32 channel (must be the driver's)
/// 12  u64 floor: the newest content version already accepted on the channel
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetRequest {
    /// The channel the records are for.
    pub channel: u32,
    /// The anti-downgrade floor: only content versions above it can be staged afterwards.
    pub floor: u64,
}

/// A malformed [`ResetRequest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResetRequestError {
    #[error("reset request is {len} bytes, expected {expected}")]
    WrongLength { len: usize, expected: usize },
    #[error("reset request field {field} at byte offset {offset} has invalid value {value}")]
    BadField {
        field: &'static str,
        offset: usize,
        value: u64,
    },
    #[error("reset request is for channel {request}, the guard's channel is {config}")]
    ChannelMismatch { request: u32, config: u32 },
}

impl ResetRequest {
    /// `BWRS`: the first four bytes of a reset request (an envelope starts with `BWSG`).
    pub const MAGIC: [u8; 4] = *b"BWRS";
    /// The request version this crate writes and reads.
    pub const VERSION: u16 = 1;
    /// The size of a request.
    pub const BYTES: usize = 20;

    /// Whether `bytes` claim to be a reset request (they start with its magic).
    pub fn is_reset_request(bytes: &[u8]) -> bool {
        bytes.get(..4) == Some(&ResetRequest::MAGIC[..])
    }

    /// The request's bytes.
    pub fn encode(&self) -> [u8; ResetRequest::BYTES] {
        let mut out = [0u8; ResetRequest::BYTES];
        let parts: [&[u8]; 5] = [
            &ResetRequest::MAGIC,
            &ResetRequest::VERSION.to_le_bytes(),
            &0u16.to_le_bytes(),
            &self.channel.to_le_bytes(),
            &self.floor.to_le_bytes(),
        ];
        let mut at = 0usize;
        for p in parts {
            let end = at.saturating_add(p.len());
            if let Some(dst) = out.get_mut(at..end) {
                dst.copy_from_slice(p);
            }
            at = end;
        }
        out
    }

    /// Parses a request (every field checked).
    pub fn parse(bytes: &[u8]) -> Result<ResetRequest, ResetRequestError> {
        let fixed: &[u8; ResetRequest::BYTES] =
            bytes
                .try_into()
                .map_err(|_| ResetRequestError::WrongLength {
                    len: bytes.len(),
                    expected: ResetRequest::BYTES,
                })?;
        let [m0, m1, m2, m3, v0, v1, f0, f1, c0, c1, c2, c3, n0, n1, n2, n3, n4, n5, n6, n7] =
            *fixed;
        let magic = [m0, m1, m2, m3];
        if magic != ResetRequest::MAGIC {
            return Err(ResetRequestError::BadField {
                field: "magic",
                offset: 0,
                value: u64::from(u32::from_le_bytes(magic)),
            });
        }
        let version = u16::from_le_bytes([v0, v1]);
        if version != ResetRequest::VERSION {
            return Err(ResetRequestError::BadField {
                field: "version",
                offset: 4,
                value: u64::from(version),
            });
        }
        let flags = u16::from_le_bytes([f0, f1]);
        if flags != 0 {
            return Err(ResetRequestError::BadField {
                field: "flags",
                offset: 6,
                value: u64::from(flags),
            });
        }
        Ok(ResetRequest {
            channel: u32::from_le_bytes([c0, c1, c2, c3]),
            floor: u64::from_le_bytes([n0, n1, n2, n3, n4, n5, n6, n7]),
        })
    }
}

impl<S: Store> Guard<S> {
    /// [`Guard::reset`] from an administrator's [`ResetRequest`] bytes: parsed, and its channel
    /// checked against the configuration, before anything is read or written.
    pub fn reset_from_request(
        store: S,
        config: Config,
        request: &[u8],
        now: u64,
    ) -> Result<Guard<S>, (ResetError, S)> {
        let r = match ResetRequest::parse(request) {
            Ok(r) => r,
            Err(e) => return Err((ResetError::Request(e), store)),
        };
        if r.channel != config.channel {
            let e = ResetRequestError::ChannelMismatch {
                request: r.channel,
                config: config.channel,
            };
            return Err((ResetError::Request(e), store));
        }
        Guard::reset(store, config, r.floor, now)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

/// A hash for messages.
pub fn hex(hash: &[u8; 32]) -> HexHash {
    HexHash(*hash)
}
