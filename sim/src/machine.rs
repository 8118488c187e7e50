//! One endpoint's machine: the real boot-count guard and loader (and through the loader, the
//! interpreter's verifier) over an in-memory store into which power cuts and torn writes are
//! injected, and the power state the simulation moves it through.
//!
//! Only the crash itself is simulated: the engine decides, from the scenario's release behaviour,
//! whether loading a given pack crashes this machine (a driver bug the content reaches), and calls
//! [`Machine::crash`]. Everything the guard does about it (count the unfinished boot, retry the
//! candidate, quarantine it after the threshold, load last-known-good) is the guard's own code.

use std::rc::Rc;

use bulwark_loader_boot_guard::{
    Active, Config, ContentId, Decision, Event, Guard, GuardError, OpenError, Slot, Store,
    StoreError, TrustedKeys,
};

use crate::rng::{Purpose, Rng};
use crate::sparse::SparseBytes;

/// What happens to the write a power cut hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The first `n` bytes are new, the rest what was there before (a torn sector write).
    Torn(usize),
    /// Nothing reaches the disk.
    Lost,
}

/// The guard's records and stored envelopes, in memory, with power cuts injected at random
/// writes. After a cut the store is dead (writes do nothing) until [`FaultyStore::power_on`]: the
/// machine lost power in the middle of the operation.
#[derive(Debug, Clone)]
pub struct FaultyStore {
    records: [SparseBytes; 2],
    /// Envelopes by content id.
    blobs: Vec<(ContentId, Rc<[u8]>)>,
    rng: Rng,
    cut_probability: f64,
    torn_share: f64,
    dead: bool,
    /// Power cuts so far.
    pub cuts: u64,
}

fn slot_index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

impl FaultyStore {
    /// An empty store: a power cut hits each write with `cut_probability`; a cut tears the
    /// write with `torn_share` (at a random byte), or else loses it whole.
    #[must_use]
    pub fn new(rng: Rng, cut_probability: f64, torn_share: f64) -> FaultyStore {
        FaultyStore {
            records: [SparseBytes::default(), SparseBytes::default()],
            blobs: Vec::new(),
            rng,
            cut_probability,
            torn_share,
            dead: false,
            cuts: 0,
        }
    }

    /// Whether a power cut hit since the last [`FaultyStore::power_on`].
    #[must_use]
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Power is back.
    pub fn power_on(&mut self) {
        self.dead = false;
    }

    /// Decides the fate of a write of `len` bytes.
    fn fate(&mut self, len: usize) -> Fate {
        if self.dead {
            return Fate::Lost;
        }
        if self.cut_probability > 0.0 && self.rng.chance(self.cut_probability) {
            self.dead = true;
            self.cuts = self.cuts.saturating_add(1);
            if self.rng.chance(self.torn_share) {
                let n = usize::try_from(self.rng.below_or_eq(len as u64))
                    .unwrap_or(len)
                    .min(len);
                return Fate::Torn(n);
            }
            return Fate::Lost;
        }
        Fate::Written
    }
}

/// What became of a write.
enum Fate {
    /// Written whole.
    Written,
    /// Its first bytes written (this many), the old bytes after them.
    Torn(usize),
    /// Nothing written.
    Lost,
}

impl Store for FaultyStore {
    fn read_record(&mut self, slot: Slot, buf: &mut Vec<u8>, max: usize) -> Result<(), StoreError> {
        let r = &self.records[slot_index(slot)];
        if r.len() > max {
            return Err(StoreError::TooLarge { max });
        }
        r.read_into(buf);
        Ok(())
    }

    fn write_record(&mut self, slot: Slot, bytes: &[u8]) -> Result<(), StoreError> {
        let i = slot_index(slot);
        match self.fate(bytes.len()) {
            Fate::Written => self.records[i] = SparseBytes::new(bytes),
            Fate::Torn(n) => {
                let mut torn = bytes.get(..n).unwrap_or(bytes).to_vec();
                if let Some(rest) = self.records[i].to_vec().get(n..) {
                    torn.extend_from_slice(rest);
                }
                self.records[i] = SparseBytes::new(&torn);
            }
            Fate::Lost => {}
        }
        Ok(())
    }

    fn put_blob(&mut self, id: &ContentId, bytes: &[u8]) -> Result<(), StoreError> {
        // A blob is written whole or not at all here: a torn blob is caught by the loader's
        // signature check, which the records' fallback already exercises.
        if let Fate::Lost = self.fate(0) {
            return Ok(());
        }
        self.blobs.retain(|(i, _)| i != id);
        self.blobs.push((*id, Rc::from(bytes)));
        Ok(())
    }

    fn get_blob(
        &mut self,
        id: &ContentId,
        buf: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), StoreError> {
        let b = &self
            .blobs
            .iter()
            .find(|(i, _)| i == id)
            .ok_or(StoreError::NotFound)?
            .1;
        if b.len() > max {
            return Err(StoreError::TooLarge { max });
        }
        buf.clear();
        buf.extend_from_slice(b);
        Ok(())
    }

    fn remove_blob(&mut self, id: &ContentId) -> Result<(), StoreError> {
        if !self.dead {
            self.blobs.retain(|(i, _)| i != id);
        }
        Ok(())
    }

    fn retain_blobs(&mut self, keep: &[ContentId]) -> Result<(), StoreError> {
        if !self.dead {
            self.blobs.retain(|(i, _)| keep.contains(i));
        }
        Ok(())
    }
}

/// What a boot came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Booted {
    /// The guard chose this content (candidate or last-known-good) and it loaded.
    Content(ContentId, Active),
    /// No content (nothing staged yet, or nothing usable).
    NoContent,
    /// The guard's records are lost: the driver runs without content and refuses every stage
    /// until an administrator resets the records.
    RecordsLost,
}

/// The guard, or its store when its records could not be opened.
type Records = Result<Guard<FaultyStore>, (OpenError, FaultyStore)>;

/// One endpoint's machine.
pub struct Machine {
    /// Always `Some` between calls (taken only while the records are read again at boot).
    guard: Option<Records>,
    config: Config,
    running: Option<ContentId>,
    up: bool,
    /// Guard events already handed to the service.
    forwarded: u64,
}

impl Machine {
    /// A new machine with an empty store (never booted).
    #[must_use]
    pub fn new(config: Config, store: FaultyStore) -> Machine {
        Machine {
            guard: Some(Guard::try_open(store, config)),
            config,
            running: None,
            up: false,
            forwarded: 0,
        }
    }

    /// A new machine for `endpoint` of the run seeded with `seed`, with the scenario's faults.
    #[must_use]
    pub fn for_endpoint(
        config: Config,
        seed: u64,
        endpoint: u64,
        cut_probability: f64,
        torn_share: f64,
    ) -> Machine {
        Machine::new(
            config,
            FaultyStore::new(
                Rng::stream(seed, endpoint, Purpose::Faults),
                cut_probability,
                torn_share,
            ),
        )
    }

    /// A machine for `endpoint` installed as `template` was: a copy of its store (the guard's
    /// records, and its envelopes, shared), its guard opened from those records, the events it
    /// has handed on counted as handed on; then power cuts with the endpoint's own stream of
    /// faults. Every machine of a fleet is installed alike (the same content, without faults),
    /// so the installation's signature check and record writes are made once, on the template.
    #[must_use]
    pub fn installed_like(
        template: &Machine,
        seed: u64,
        endpoint: u64,
        cut_probability: f64,
        torn_share: f64,
    ) -> Machine {
        let mut store = FaultyStore::new(
            Rng::stream(seed, endpoint, Purpose::Faults),
            cut_probability,
            torn_share,
        );
        if let Some(t) = template.store() {
            store.records = t.records.clone();
            store.blobs = t.blobs.clone();
        }
        let mut m = Machine::new(template.config, store);
        m.forwarded = template.forwarded;
        m
    }

    /// From now on, power cuts hit each write with `cut_probability` and tear it with
    /// `torn_share` (a fleet's machines get theirs from [`Machine::installed_like`]; tests
    /// switch them on and off around one write).
    #[cfg(test)]
    pub(crate) fn set_faults(&mut self, cut_probability: f64, torn_share: f64) {
        let store = match &mut self.guard {
            Some(Ok(g)) => Some(g.store_mut()),
            Some(Err((_, s))) => Some(s),
            None => None,
        };
        if let Some(s) = store {
            s.cut_probability = cut_probability;
            s.torn_share = torn_share;
        }
    }

    /// Whether the machine is up (booted, not crashed or off).
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The content running now.
    #[must_use]
    pub fn running(&self) -> Option<ContentId> {
        self.running.filter(|_| self.up)
    }

    /// The content the machine would run at its next boot as things stand (for the fleet's
    /// share on a release while it is off): the candidate if it has one on trial, else
    /// last-known-good.
    #[must_use]
    pub fn content(&self) -> Option<ContentId> {
        self.guard()
            .map(|g| g.state())
            .and_then(|s| s.candidate.or(s.lkg))
    }

    /// The guard's state (`None` when its records are lost).
    #[must_use]
    pub fn guard(&self) -> Option<&Guard<FaultyStore>> {
        self.guard.as_ref().and_then(|r| r.as_ref().ok())
    }

    /// Asks the processor for what a step reads of the guard's state (the engine's look-ahead):
    /// its content ids, what is running, the event count.
    pub fn touch(&self) {
        if let Some(g) = self.guard() {
            // Its first three lines (see `State`'s layout).
            let s = g.state();
            crate::engine::prefetch(s);
            crate::engine::prefetch(&s.seq);
            crate::engine::prefetch(&s.active);
        }
    }

    fn guard_mut(&mut self) -> Option<&mut Guard<FaultyStore>> {
        self.guard.as_mut().and_then(|r| r.as_mut().ok())
    }

    /// Whether a power cut hit the store while the machine was up: the machine lost power.
    #[must_use]
    pub fn lost_power(&self) -> bool {
        self.up && self.store().is_some_and(FaultyStore::is_dead)
    }

    fn store(&self) -> Option<&FaultyStore> {
        self.guard.as_ref().map(|r| match r {
            Ok(g) => g.store(),
            Err((_, s)) => s,
        })
    }

    #[cfg(test)]
    fn store_mut(&mut self) -> Option<&mut FaultyStore> {
        self.guard.as_mut().map(|r| match r {
            Ok(g) => g.store_mut(),
            Err((_, s)) => s,
        })
    }

    /// Power-on: the driver starts, opens the guard's records and boots.
    pub fn boot(&mut self, keys: &TrustedKeys, now: u64) -> Booted {
        // The records are read again at every boot, as the driver does.
        let Some(records) = self.guard.take() else {
            return Booted::RecordsLost;
        };
        let mut store = match records {
            Ok(g) => g.into_store(),
            Err((_, s)) => s,
        };
        store.power_on();
        self.guard = Some(Guard::try_open(store, self.config));
        self.up = true;
        match self.guard_mut() {
            Some(g) => {
                let boot = g.boot(keys, now);
                self.running = boot.content.as_ref().map(|o| o.id);
                match (boot.decision, self.running) {
                    (Decision::NoContent { .. }, _) | (_, None) => Booted::NoContent,
                    (d, Some(id)) => Booted::Content(id, d.active()),
                }
            }
            None => {
                self.running = None;
                Booted::RecordsLost
            }
        }
    }

    /// The machine goes down without a clean shutdown (a crash, or a power cut).
    pub fn crash(&mut self) {
        self.up = false;
        self.running = None;
    }

    /// A clean shutdown: the running attempt is not a failure.
    pub fn shutdown(&mut self, now: u64) {
        if let Some(g) = self.guard_mut() {
            let _ = g.clean_shutdown(now);
        }
        self.up = false;
        self.running = None;
    }

    /// The service stages an envelope (hot: into the running sensor; otherwise for the next
    /// boot). On success a hot stage runs the new content at once.
    pub fn stage(
        &mut self,
        keys: &TrustedKeys,
        envelope: &[u8],
        hot: bool,
        now: u64,
    ) -> Result<ContentId, GuardError> {
        let g = self
            .guard_mut()
            .ok_or(GuardError::Store(StoreError::Io(u32::from(
                bulwark_loader_boot_guard::CODE_RECORDS_UNUSABLE,
            ))))?;
        let opened = g.stage(keys, envelope, hot, now)?;
        if hot {
            self.running = Some(opened.id);
        }
        Ok(opened.id)
    }

    /// The service asks to go back to last-known-good: the guard quarantines the candidate and
    /// last-known-good runs (if the machine is up).
    pub fn revert(&mut self, keys: &TrustedKeys, now: u64) -> Result<ContentId, GuardError> {
        let g = self.guard_mut().ok_or(GuardError::NothingToRevert)?;
        let opened = g.revert(keys, now)?;
        if self.up {
            self.running = Some(opened.id);
        }
        Ok(opened.id)
    }

    /// The service confirms a healthy boot: the running candidate is blessed.
    pub fn confirm_healthy(&mut self, now: u64) -> Result<ContentId, GuardError> {
        match self.guard_mut() {
            Some(g) => g.confirm_healthy(now),
            None => Err(GuardError::NoCandidateRunning),
        }
    }

    /// Time passes: `secs` seconds of uptime (the driver's timer; blesses a candidate after the
    /// stable period).
    pub fn tick(&mut self, secs: u32, now: u64) {
        if !self.up {
            return;
        }
        if let Some(g) = self.guard_mut() {
            let _ = g.tick(secs, now);
        }
    }

    /// The guard events not yet handed out, oldest first (what the service forwards).
    pub fn take_events(&mut self) -> Vec<Event> {
        let Some(g) = self.guard() else {
            return Vec::new();
        };
        let events: Vec<Event> = g.state().events_after(self.forwarded).copied().collect();
        if let Some(last) = events.last() {
            self.forwarded = last.seq;
        }
        events
    }

    /// The guard's configuration.
    #[must_use]
    pub fn config(&self) -> Config {
        self.config
    }

    /// Power cuts injected so far.
    #[must_use]
    pub fn cuts(&self) -> u64 {
        self.store().map_or(0, |s| s.cuts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_loader_boot_guard::{seal, EventKind};

    const SECRET: [u8; 32] = [3; 32];

    fn keys() -> TrustedKeys {
        TrustedKeys::new(&[bulwark_loader_boot_guard::envelope::public_key(&SECRET)]).unwrap()
    }

    fn envelope(marker: &str, version: u64) -> Vec<u8> {
        let text = format!(
            "rule\n  id \"r-{marker}\"\n  title \"t\"\n  author \"sim\"\n  level high\n  action alert\n  event process_creation\n  str.contains CommandLine \"{marker}\"\n  ret\nend\n"
        );
        let pack = bulwark_interpreter::text::asm(&text).unwrap();
        seal(
            &SECRET,
            1,
            version,
            bulwark_interpreter::schema_hash(),
            &pack,
        )
        .unwrap()
    }

    fn config() -> Config {
        Config {
            channel: 1,
            threshold: 3,
            stable_secs: 600,
        }
    }

    /// Boots the machine into blessed v1.
    fn with_lkg(m: &mut Machine, keys: &TrustedKeys) -> ContentId {
        assert_eq!(m.boot(keys, 0), Booted::NoContent);
        let v1 = m.stage(keys, &envelope("one", 1), true, 1).unwrap();
        m.confirm_healthy(2).unwrap();
        v1
    }

    /// A machine copied from an installed template is the machine installed itself: the same
    /// records, events and content at its next boots, a crash counted alike, and its own faults.
    #[test]
    fn a_machine_installed_like_a_template_is_one_installed_itself() {
        let keys = keys();
        let install = |m: &mut Machine| {
            with_lkg(m, &keys);
            m.shutdown(3);
            let _ = m.take_events();
        };
        let mut template = Machine::for_endpoint(config(), 7, u64::MAX, 0.0, 0.0);
        install(&mut template);
        let mut copied = Machine::installed_like(&template, 7, 5, 0.0, 0.0);
        let mut own = Machine::for_endpoint(config(), 7, 5, 0.0, 0.0);
        install(&mut own);
        let records = |m: &Machine| m.store().map(|s| s.records.clone());
        assert_eq!(records(&copied), records(&own));
        assert!(
            copied.take_events().is_empty(),
            "the install's events were handed on"
        );
        for (t, crash) in [(10, true), (20, false), (30, false)] {
            let a = copied.boot(&keys, t);
            let b = own.boot(&keys, t);
            assert_eq!(a, b);
            assert_eq!(copied.take_events(), own.take_events());
            let _ = copied.stage(&keys, &envelope("two", 2), true, t + 1);
            let _ = own.stage(&keys, &envelope("two", 2), true, t + 1);
            if crash {
                copied.crash();
                own.crash();
            } else {
                copied.shutdown(t + 5);
                own.shutdown(t + 5);
            }
            assert_eq!(records(&copied), records(&own), "at {t}");
        }
        // Its faults are its own: a store that loses every write.
        let mut faulty = Machine::installed_like(&template, 7, 6, 1.0, 0.0);
        let _ = faulty.boot(&keys, 10);
        assert!(faulty.lost_power());
    }

    /// A power cut during a write is the machine losing power: it says so until it is down, and
    /// the next boot counts the interrupted run (the guard cannot tell it from a crash).
    #[test]
    fn a_power_cut_during_a_write_takes_the_machine_down() {
        let keys = keys();
        let mut m = Machine::new(config(), FaultyStore::new(Rng::new(1), 0.0, 0.0));
        let v1 = with_lkg(&mut m, &keys);
        assert!(!m.lost_power());
        m.set_faults(1.0, 0.0);
        let _ = m.stage(&keys, &envelope("two", 2), true, 10);
        assert!(m.lost_power());
        m.crash();
        assert!(!m.lost_power(), "down: nothing more to lose");
        m.set_faults(0.0, 0.0);
        assert!(matches!(m.boot(&keys, 20), Booted::Content(id, _) if id == v1));
        let counted = m
            .take_events()
            .iter()
            .filter(|e| e.kind == EventKind::CrashCounted)
            .count();
        assert_eq!(counted, 1);
    }

    #[test]
    fn a_release_that_crashes_on_load_is_quarantined_after_the_threshold() {
        let keys = keys();
        let mut m = Machine::new(config(), FaultyStore::new(Rng::new(1), 0.0, 0.0));
        let v1 = with_lkg(&mut m, &keys);
        let v2 = m.stage(&keys, &envelope("two", 2), true, 10).unwrap();
        assert_eq!(m.running(), Some(v2));
        // The release crashes the machine on load: the hot update, then each boot with it.
        m.crash();
        let mut boots = Vec::new();
        for t in 0..4 {
            let b = m.boot(&keys, 100 + t);
            boots.push(b);
            if b == Booted::Content(v2, Active::Candidate) {
                m.crash();
            } else {
                m.shutdown(100 + t);
            }
        }
        // Boots 1 and 2 retry the candidate (attempts 2 and 3 of 3, the hot update was 1);
        // the third finds the threshold used up and loads last-known-good.
        assert_eq!(
            boots,
            [
                Booted::Content(v2, Active::Candidate),
                Booted::Content(v2, Active::Candidate),
                Booted::Content(v1, Active::Lkg),
                Booted::Content(v1, Active::Lkg),
            ]
        );
        let kinds: Vec<EventKind> = m.take_events().iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == EventKind::CrashCounted)
                .count(),
            3,
            "{kinds:?}"
        );
        assert!(kinds.contains(&EventKind::Quarantined), "{kinds:?}");
        // Forwarded once: the next call has only what happened since.
        assert!(m.take_events().is_empty());
        // The quarantined release cannot be staged again.
        assert!(m.stage(&keys, &envelope("two", 2), true, 200).is_err());
    }

    #[test]
    fn power_cuts_and_torn_writes_never_lose_the_records_or_last_known_good() {
        // Every write may be cut (one in five), half of the cuts tearing the record. Whatever the
        // guard was doing, the records survive (the other slot), and the machine comes back
        // with content; when cuts hit several runs of last-known-good in a row, the guard
        // suspends content (it cannot tell a power cut from content that crashes), and after a
        // run of the stable period without it, last-known-good is back.
        let keys = keys();
        let envelopes: Vec<Vec<u8>> = (2..12).map(|v| envelope(&format!("v{v}"), v)).collect();
        let (mut suspended, mut cuts) = (0, 0);
        for seed in 0..200 {
            let mut m = Machine::new(config(), FaultyStore::new(Rng::new(seed), 0.0, 0.0));
            with_lkg(&mut m, &keys);
            let set_cuts = |m: &mut Machine, p: f64| {
                let store = m.store_mut().unwrap();
                store.cut_probability = p;
                store.torn_share = 0.5;
            };
            set_cuts(&mut m, 0.2);
            let mut now = 100;
            for env in &envelopes {
                now += 1000;
                let _ = m.stage(&keys, env, true, now);
                if !m.lost_power() {
                    let _ = m.confirm_healthy(now + 1);
                }
                if m.lost_power() {
                    m.crash();
                } else {
                    m.shutdown(now + 2);
                }
                let mut booted = m.boot(&keys, now + 5);
                while m.lost_power() {
                    m.crash();
                    booted = m.boot(&keys, now + 7);
                }
                match booted {
                    Booted::Content(..) => {}
                    Booted::RecordsLost => panic!("seed {seed}: records lost"),
                    Booted::NoContent => {
                        let last = m
                            .take_events()
                            .into_iter()
                            .rev()
                            .find(|e| e.kind == EventKind::BootNoContent)
                            .unwrap();
                        assert_eq!(
                            last.detail,
                            bulwark_loader_boot_guard::Reason::LkgSuspended as u32,
                            "seed {seed}"
                        );
                        suspended += 1;
                        // A run of the stable period without content, without cuts: back.
                        set_cuts(&mut m, 0.0);
                        m.tick(600, now + 700);
                        m.shutdown(now + 701);
                        assert!(
                            matches!(m.boot(&keys, now + 705), Booted::Content(_, Active::Lkg)),
                            "seed {seed}"
                        );
                        set_cuts(&mut m, 0.2);
                    }
                }
            }
            cuts += m.cuts();
        }
        assert!(cuts > 1000, "{cuts}");
        assert!(suspended > 0, "no run of cuts suspended last-known-good");
    }

    #[test]
    fn the_store_tears_and_loses_writes_as_told() {
        let mut s = FaultyStore::new(Rng::new(9), 1.0, 1.0);
        s.records[0] = SparseBytes::new(&[1; 8]);
        s.write_record(Slot::A, &[2; 8]).unwrap();
        assert!(s.is_dead());
        let r = &s.records[0].to_vec();
        let n = r.iter().take_while(|b| **b == 2).count();
        assert!(r[n..].iter().all(|b| *b == 1), "{r:?}");
        // Dead: nothing more is written until power is back.
        s.write_record(Slot::B, &[3; 8]).unwrap();
        assert!(s.records[1].is_empty());
        let mut s = FaultyStore::new(Rng::new(9), 1.0, 0.0);
        s.write_record(Slot::A, &[2; 8]).unwrap();
        assert!(s.records[0].is_empty());
        let mut s = FaultyStore::new(Rng::new(9), 0.0, 1.0);
        s.write_record(Slot::A, &[2; 8]).unwrap();
        assert_eq!(s.records[0].to_vec(), [2; 8]);
        assert!(!s.is_dead());
    }
}
