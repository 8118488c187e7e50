//! The guard's durable state, its events, and the pure state machine over it.
//!
//! Every decision is a function of [`State`] and [`Config`] alone: [`State::boot`],
//! [`State::stage`], [`State::bless`], [`State::clean_shutdown`] and the others change a state in
//! memory and return what happened; [`crate::Guard`] makes each change durable before acting on it.

use crate::ContentId;

/// The most quarantined packs remembered (the oldest entry is dropped when full; an evicted pack
/// still cannot come back as an update because its version is not newer than the newest accepted).
pub const MAX_QUARANTINE: usize = 32;
/// The most recent events kept in the records.
pub const MAX_EVENTS: usize = 32;
/// The default number of failed boots after which a candidate is quarantined.
pub const DEFAULT_THRESHOLD: u8 = 3;
/// The largest allowed threshold.
pub const MAX_THRESHOLD: u8 = 10;
/// The default stable period, in seconds, after which a running candidate is blessed.
pub const DEFAULT_STABLE_SECS: u32 = 600;
/// The shortest allowed stable period, in seconds.
pub const MIN_STABLE_SECS: u32 = 10;
/// The longest allowed stable period, in seconds (one week).
pub const MAX_STABLE_SECS: u32 = 7 * 24 * 3600;

/// The guard's configuration (the driver reads it from its service key; not part of the records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The update channel this sensor takes content from.
    pub channel: u32,
    /// N: failed or unfinished boots with a candidate after which it is quarantined (1..=10).
    pub threshold: u8,
    /// Seconds a candidate must run before it is blessed as last-known-good.
    pub stable_secs: u32,
}

/// A configuration value out of its bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("threshold {0} is out of range 1..={MAX_THRESHOLD}")]
    Threshold(u8),
    #[error("stable period {0} s is out of range {MIN_STABLE_SECS}..={MAX_STABLE_SECS} s")]
    StablePeriod(u32),
}

impl Config {
    /// A configuration with the default threshold (3) and stable period (600 s).
    pub fn new(channel: u32) -> Config {
        Config {
            channel,
            threshold: DEFAULT_THRESHOLD,
            stable_secs: DEFAULT_STABLE_SECS,
        }
    }

    /// Checks the bounds.
    pub fn validate(self) -> Result<Config, ConfigError> {
        if self.threshold == 0 || self.threshold > MAX_THRESHOLD {
            return Err(ConfigError::Threshold(self.threshold));
        }
        if !(MIN_STABLE_SECS..=MAX_STABLE_SECS).contains(&self.stable_secs) {
            return Err(ConfigError::StablePeriod(self.stable_secs));
        }
        Ok(self)
    }
}

/// What content is running (recorded at boot and at a hot update, cleared by a clean shutdown).
/// Found set at the next boot, it means the previous run ended in a crash or power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Active {
    /// Nothing, or the machine was shut down cleanly.
    #[default]
    None = 0,
    /// Last-known-good content.
    Lkg = 1,
    /// The candidate.
    Candidate = 2,
}

impl Active {
    /// The value with this code.
    pub fn from_u8(v: u8) -> Option<Active> {
        [Active::None, Active::Lkg, Active::Candidate]
            .into_iter()
            .find(|a| *a as u8 == v)
    }

    /// A short name for output.
    pub fn name(self) -> &'static str {
        match self {
            Active::None => "none",
            Active::Lkg => "last-known-good",
            Active::Candidate => "candidate",
        }
    }
}

macro_rules! codes {
    ($(#[$m:meta])* $vis:vis enum $name:ident : $repr:ty { $($(#[$vm:meta])* $v:ident = $code:literal => $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr($repr)]
        $vis enum $name { $($(#[$vm])* $v = $code,)* }
        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// The value with this code.
            pub fn from_code(code: $repr) -> Option<$name> {
                Self::ALL.iter().copied().find(|k| *k as $repr == code)
            }
            /// The stable code.
            pub fn code(self) -> $repr {
                self as $repr
            }
            /// A short name (kebab-case) for output.
            pub fn name(self) -> &'static str {
                match self { $($name::$v => $text,)* }
            }
        }
    };
}

codes! {
    /// What an [`Event`] reports.
    pub enum EventKind: u16 {
        /// A signed pack passed the loader and is now the candidate (`detail` 1 if it was
        /// activated at once, a hot update).
        Staged = 1 => "staged",
        /// An envelope was refused (`detail` is the loader's reason code, [`crate::LoadError::code`]).
        Refused = 2 => "refused",
        /// Boot decision: the candidate loads (`attempts` is this attempt's number).
        BootCandidate = 3 => "boot-candidate",
        /// Boot decision: last-known-good loads (`detail` is a [`Reason`]).
        BootLkg = 4 => "boot-lkg",
        /// Boot decision: no content loads (`detail` is a [`Reason`]).
        BootNoContent = 5 => "boot-no-content",
        /// The previous run of this content ended without a clean shutdown (crash or power loss);
        /// it was counted as a failed attempt.
        CrashCounted = 6 => "crash-counted",
        /// The candidate became last-known-good (`detail` is a [`Reason`]: stable period or
        /// service confirmation).
        Blessed = 7 => "blessed",
        /// The candidate failed N boots: the machine goes back to last-known-good.
        Reverted = 8 => "reverted",
        /// A pack was put on the quarantine list and will never load again.
        Quarantined = 9 => "quarantined",
        /// A clean shutdown: the running attempt is not counted as a failure.
        CleanShutdown = 10 => "clean-shutdown",
        /// A record slot failed its checks (or was missing although the other slot shows it was
        /// written) and the other slot was used. `detail`: bits 0..8 the slot (1 A, 2 B), bits
        /// 8..16 the problem ([`crate::SlotProblem::code`]; 0 in events of older guards), bits
        /// 16..32 the byte offset the problem was found at (0 when none).
        RecordRecovered = 11 => "record-recovered",
        /// A record or blob could not be written (`detail` is the store's error code).
        StoreFailed = 12 => "store-failed",
        /// The stored candidate could not be read or opened; it was dropped (`detail` is the
        /// loader's reason code, or 0 when the blob could not be read).
        CandidateUnusable = 13 => "candidate-unusable",
        /// Stored last-known-good could not be read or opened; no content runs this boot.
        LkgUnusable = 14 => "lkg-unusable",
        /// Last-known-good content ran the stable period (or was confirmed healthy): its count
        /// of unfinished runs went back to 0.
        LkgHealthy = 15 => "lkg-healthy",
        /// An administrator re-created lost records ([`crate::Guard::reset`]): the floor is the
        /// event's content version, and nothing else survived. `detail`: bits 0..8 slot A's
        /// problem, bits 8..16 slot B's ([`crate::SlotProblem::code`]; 0 0 when the records had
        /// never been written).
        RecordsReset = 16 => "records-reset",
    }
}

codes! {
    /// Why a boot decision or blessing was taken (the `detail` of boot and blessing events).
    pub enum Reason: u32 {
        /// A candidate is staged and has attempts left.
        CandidateHasAttemptsLeft = 1 => "candidate has attempts left",
        /// No candidate is staged.
        NoCandidate = 2 => "no candidate is staged",
        /// The candidate failed N boots and was quarantined.
        CandidateQuarantined = 3 => "the candidate failed the threshold of boots and was quarantined",
        /// The candidate could not be read or did not pass the loader again.
        CandidateUnusable = 4 => "the stored candidate could not be loaded",
        /// The attempt could not be recorded durably, so the candidate is not tried.
        AttemptNotRecorded = 5 => "the attempt could not be recorded durably",
        /// There is no last-known-good content.
        NoLkg = 6 => "there is no last-known-good content",
        /// Last-known-good content itself failed N runs in a row; no content until the machine has
        /// run the stable period without it.
        LkgSuspended = 7 => "last-known-good failed the threshold of runs in a row",
        /// Stored last-known-good content could not be read or opened.
        LkgUnusable = 8 => "the stored last-known-good could not be loaded",
        /// Blessed after the stable period.
        StablePeriod = 9 => "ran the stable period",
        /// Blessed because the user-mode service confirmed a healthy boot.
        ServiceConfirmed = 10 => "the service confirmed a healthy boot",
        /// The user-mode service asked to go back to last-known-good (the rollout controller's
        /// revert, or an administrator's): the candidate was quarantined.
        RevertRequested = 11 => "the service asked to go back to last-known-good",
    }
}

/// One guard event, for telemetry (the driver forwards these; the fields match the control
/// protocol's guard event record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Sequence number, increasing by one per event, kept across boots.
    pub seq: u64,
    /// When (the caller's clock: the driver passes 100 ns units since 1601).
    pub time: u64,
    /// What happened.
    pub kind: EventKind,
    /// The candidate's attempt counter after the event.
    pub attempts: u8,
    /// Kind-specific detail (a [`Reason`], a loader reason code, a store error code).
    pub detail: u32,
    /// The content concerned (zero when none).
    pub content: ContentId,
}

impl Event {
    const EMPTY: Event = Event {
        seq: 0,
        time: 0,
        kind: EventKind::Staged,
        attempts: 0,
        detail: 0,
        content: ContentId::NONE,
    };
}

/// What to do at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Load the candidate; this is attempt number `attempt` (1..=N).
    Candidate { id: ContentId, attempt: u8 },
    /// Load last-known-good.
    Lkg { id: ContentId, reason: Reason },
    /// Load nothing.
    NoContent { reason: Reason },
}

impl Decision {
    /// The content to load, if any.
    pub fn content(&self) -> Option<ContentId> {
        match self {
            Decision::Candidate { id, .. } | Decision::Lkg { id, .. } => Some(*id),
            Decision::NoContent { .. } => None,
        }
    }

    /// Which slot loads.
    pub fn active(&self) -> Active {
        match self {
            Decision::Candidate { .. } => Active::Candidate,
            Decision::Lkg { .. } => Active::Lkg,
            Decision::NoContent { .. } => Active::None,
        }
    }
}

/// The guard's durable state: what [`crate::record`] encodes in each record slot.
///
/// Laid out in this order (`repr(C)`): what every status and boot reads (the content ids, what
/// is running, the event count) in the first three cache lines, the rings after them; the
/// compiler's own order put them 3 KiB apart, across four lines.
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(C)]
pub struct State {
    /// Last-known-good content.
    pub lkg: Option<ContentId>,
    /// The candidate: staged, not yet blessed or quarantined.
    pub candidate: Option<ContentId>,
    /// The sequence number the next event gets.
    next_event: u64,
    /// The record's sequence number (the newer of the two valid slots wins).
    pub seq: u64,
    /// The newest content version ever accepted on the channel (anti-downgrade).
    pub newest: u64,
    /// Boots seen.
    pub boots: u64,
    /// The update channel.
    pub channel: u32,
    /// Unfinished runs of last-known-good in a row (each boot with it counts one, a clean
    /// shutdown or the stable period takes it back).
    pub lkg_attempts: u8,
    /// Failed or unfinished boots with the candidate (counted before it loads, taken back by a
    /// clean shutdown).
    pub attempts: u8,
    /// What is running.
    pub active: Active,
    quarantine_len: u8,
    quarantine: [ContentId; MAX_QUARANTINE],
    events: [Event; MAX_EVENTS],
}

impl State {
    /// A new, empty state for `channel`.
    pub fn new(channel: u32) -> State {
        State {
            seq: 0,
            channel,
            newest: 0,
            boots: 0,
            lkg: None,
            lkg_attempts: 0,
            candidate: None,
            attempts: 0,
            active: Active::None,
            quarantine: [ContentId::NONE; MAX_QUARANTINE],
            quarantine_len: 0,
            events: [Event::EMPTY; MAX_EVENTS],
            next_event: 1,
        }
    }

    /// The quarantine list, oldest first.
    pub fn quarantine(&self) -> &[ContentId] {
        self.quarantine
            .get(..usize::from(self.quarantine_len))
            .unwrap_or(&[])
    }

    /// Whether content with this pack hash is quarantined.
    pub fn is_quarantined(&self, hash: &[u8; 32]) -> bool {
        self.quarantine().iter().any(|q| &q.hash == hash)
    }

    /// The sequence number the next event will get.
    pub fn next_event_seq(&self) -> u64 {
        self.next_event
    }

    /// The kept events with a sequence number greater than `after`, oldest first.
    pub fn events_after(&self, after: u64) -> impl Iterator<Item = &Event> + '_ {
        let first = self
            .next_event
            .saturating_sub(MAX_EVENTS as u64)
            .max(1)
            .max(after.saturating_add(1));
        (first..self.next_event).filter_map(move |seq| {
            let e = self.events.get(ring_index(seq))?;
            (e.seq == seq).then_some(e)
        })
    }

    /// All kept events, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Event> + '_ {
        self.events_after(0)
    }

    /// Records an event (the oldest kept event is dropped when the ring is full).
    pub fn push_event(&mut self, time: u64, kind: EventKind, detail: u32, content: ContentId) {
        let e = Event {
            seq: self.next_event,
            time,
            kind,
            attempts: self.attempts,
            detail,
            content,
        };
        if let Some(slot) = self.events.get_mut(ring_index(e.seq)) {
            *slot = e;
        }
        self.next_event = self.next_event.saturating_add(1);
    }

    fn push_quarantine(&mut self, id: ContentId) {
        if self.is_quarantined(&id.hash) {
            return;
        }
        if usize::from(self.quarantine_len) >= MAX_QUARANTINE {
            self.quarantine.rotate_left(1);
            if let Some(last) = self.quarantine.last_mut() {
                *last = id;
            }
        } else {
            if let Some(slot) = self.quarantine.get_mut(usize::from(self.quarantine_len)) {
                *slot = id;
            }
            self.quarantine_len = self.quarantine_len.saturating_add(1);
        }
    }

    /// The boot decision, taken before any content is loaded, and its bookkeeping: the previous
    /// run's crash (if it did not end cleanly) was already counted when it started; a candidate
    /// that has used up its N attempts is quarantined; the attempt about to be made is counted.
    /// The caller must make the new state durable before loading the content.
    pub fn boot(&mut self, config: &Config, now: u64) -> Decision {
        self.boots = self.boots.saturating_add(1);
        match self.active {
            Active::Candidate => {
                if let Some(c) = self.candidate {
                    self.push_event(now, EventKind::CrashCounted, Active::Candidate as u32, c);
                }
            }
            Active::Lkg => {
                if let Some(l) = self.lkg {
                    self.push_event(now, EventKind::CrashCounted, Active::Lkg as u32, l);
                }
            }
            Active::None => {}
        }
        self.active = Active::None;
        let mut reason = Reason::NoCandidate;
        if let Some(c) = self.candidate {
            if self.attempts >= config.threshold {
                self.push_quarantine(c);
                self.push_event(now, EventKind::Quarantined, u32::from(self.attempts), c);
                self.candidate = None;
                self.attempts = 0;
                self.push_event(
                    now,
                    EventKind::Reverted,
                    Reason::CandidateQuarantined as u32,
                    self.lkg.unwrap_or(ContentId::NONE),
                );
                reason = Reason::CandidateQuarantined;
            } else {
                self.attempts = self.attempts.saturating_add(1);
                self.active = Active::Candidate;
                self.push_event(
                    now,
                    EventKind::BootCandidate,
                    Reason::CandidateHasAttemptsLeft as u32,
                    c,
                );
                return Decision::Candidate {
                    id: c,
                    attempt: self.attempts,
                };
            }
        }
        self.boot_lkg(config, reason, now)
    }

    /// The decision when the candidate is not tried (`reason` says why).
    pub fn boot_lkg(&mut self, config: &Config, reason: Reason, now: u64) -> Decision {
        let Some(l) = self.lkg else {
            self.active = Active::None;
            self.push_event(
                now,
                EventKind::BootNoContent,
                Reason::NoLkg as u32,
                ContentId::NONE,
            );
            return Decision::NoContent {
                reason: Reason::NoLkg,
            };
        };
        if self.lkg_attempts >= config.threshold {
            self.active = Active::None;
            self.push_event(
                now,
                EventKind::BootNoContent,
                Reason::LkgSuspended as u32,
                l,
            );
            return Decision::NoContent {
                reason: Reason::LkgSuspended,
            };
        }
        self.lkg_attempts = self.lkg_attempts.saturating_add(1);
        self.active = Active::Lkg;
        self.push_event(now, EventKind::BootLkg, reason as u32, l);
        Decision::Lkg { id: l, reason }
    }

    /// The stored candidate could not be loaded (unreadable, or refused by the loader): it is
    /// dropped, not quarantined (the fault may be the disk's), and not running.
    pub fn candidate_unusable(&mut self, detail: u32, now: u64) {
        if let Some(c) = self.candidate.take() {
            self.push_event(now, EventKind::CandidateUnusable, detail, c);
        }
        self.attempts = 0;
        if self.active == Active::Candidate {
            self.active = Active::None;
        }
    }

    /// Stored last-known-good could not be loaded: nothing runs this boot (the record keeps it).
    pub fn lkg_unusable(&mut self, detail: u32, now: u64) {
        if let Some(l) = self.lkg {
            self.push_event(now, EventKind::LkgUnusable, detail, l);
        }
        if self.active == Active::Lkg {
            self.active = Active::None;
            self.lkg_attempts = self.lkg_attempts.saturating_sub(1);
        }
    }

    /// A pack accepted by the loader becomes the candidate (replacing an unblessed one). With
    /// `activate` it runs at once (a hot update), and that counts as its first attempt.
    pub fn stage(&mut self, id: ContentId, activate: bool, now: u64) {
        self.newest = self.newest.max(id.version);
        self.candidate = Some(id);
        self.attempts = 0;
        if self.active == Active::Candidate {
            self.active = Active::None;
        }
        if activate {
            if self.active == Active::Lkg {
                // The last-known-good run ended without trouble: it is replaced, not crashed.
                self.lkg_attempts = self.lkg_attempts.saturating_sub(1);
            }
            self.attempts = 1;
            self.active = Active::Candidate;
        }
        self.push_event(now, EventKind::Staged, u32::from(activate), id);
    }

    /// The service asks to go back to last-known-good: the candidate (staged or running) is
    /// quarantined, so that no boot tries it again and it is refused if offered again, and
    /// last-known-good becomes what runs (an unfinished run of it, as at boot). Returns
    /// last-known-good, or `None` (and changes nothing) when there is no candidate or no
    /// last-known-good.
    pub fn revert(&mut self, now: u64) -> Option<ContentId> {
        let (c, l) = (self.candidate?, self.lkg?);
        self.push_quarantine(c);
        self.push_event(
            now,
            EventKind::Quarantined,
            Reason::RevertRequested as u32,
            c,
        );
        self.candidate = None;
        self.attempts = 0;
        if self.active != Active::Lkg {
            self.lkg_attempts = self.lkg_attempts.saturating_add(1);
        }
        self.active = Active::Lkg;
        self.push_event(now, EventKind::Reverted, Reason::RevertRequested as u32, l);
        Some(l)
    }

    /// A refusal, for the event log.
    pub fn refused(&mut self, code: u16, version: u64, hash: [u8; 32], now: u64) {
        self.push_event(
            now,
            EventKind::Refused,
            u32::from(code),
            ContentId { version, hash },
        );
    }

    /// The running candidate becomes last-known-good. Returns the blessed content, or `None` if
    /// no candidate is running.
    pub fn bless(&mut self, reason: Reason, now: u64) -> Option<ContentId> {
        let c = self
            .candidate
            .filter(|_| self.active == Active::Candidate)?;
        self.lkg = Some(c);
        self.candidate = None;
        self.attempts = 0;
        self.lkg_attempts = 0;
        self.active = Active::Lkg;
        self.push_event(now, EventKind::Blessed, reason as u32, c);
        Some(c)
    }

    /// Running content proved itself for the stable period, or the service confirmed a healthy
    /// boot: a running candidate is blessed; last-known-good's count of unfinished runs goes back
    /// to 0 (also when it was suspended and the machine has run stably without content). Returns
    /// whether anything changed.
    pub fn stable(&mut self, reason: Reason, now: u64) -> bool {
        if self.bless(reason, now).is_some() {
            return true;
        }
        if self.lkg_attempts > 0 && self.active != Active::Candidate {
            self.lkg_attempts = 0;
            self.push_event(
                now,
                EventKind::LkgHealthy,
                reason as u32,
                self.lkg.unwrap_or(ContentId::NONE),
            );
            return true;
        }
        false
    }

    /// A clean shutdown: the running attempt is taken back, it did not fail.
    pub fn clean_shutdown(&mut self, now: u64) {
        match self.active {
            Active::Candidate => self.attempts = self.attempts.saturating_sub(1),
            Active::Lkg => self.lkg_attempts = self.lkg_attempts.saturating_sub(1),
            Active::None => {}
        }
        let running = match self.active {
            Active::Candidate => self.candidate,
            Active::Lkg => self.lkg,
            Active::None => None,
        };
        self.active = Active::None;
        self.push_event(
            now,
            EventKind::CleanShutdown,
            0,
            running.unwrap_or(ContentId::NONE),
        );
    }

    pub(crate) fn raw_parts(&self) -> (&[ContentId], &[Event; MAX_EVENTS], u64) {
        (self.quarantine(), &self.events, self.next_event)
    }

    /// The quarantine and event arrays, for the record decoder to fill in place (no copy of the
    /// arrays on the kernel stack); [`State::set_raw_lengths`] then sets their counters.
    pub(crate) fn raw_arrays_mut(
        &mut self,
    ) -> (&mut [ContentId; MAX_QUARANTINE], &mut [Event; MAX_EVENTS]) {
        (&mut self.quarantine, &mut self.events)
    }

    /// Sets the quarantine length (entries past it are cleared) and the next event's number.
    pub(crate) fn set_raw_lengths(&mut self, quarantine_len: u8, next_event: u64) {
        let len = usize::from(quarantine_len).min(MAX_QUARANTINE);
        for q in self.quarantine.iter_mut().skip(len) {
            *q = ContentId::NONE;
        }
        self.quarantine_len = u8::try_from(len).unwrap_or(0);
        self.next_event = next_event;
    }
}

fn ring_index(seq: u64) -> usize {
    usize::try_from(seq.checked_rem(MAX_EVENTS as u64).unwrap_or(0)).unwrap_or(0)
}

pub(crate) const EMPTY_EVENT: Event = Event::EMPTY;
