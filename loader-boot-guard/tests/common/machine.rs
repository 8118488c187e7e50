//! A simulated machine around a [`Guard`]: a kernel that crashes whenever content it was told is
//! bad is active, power that can be cut at any moment, and checks of the guard's invariants after
//! every step.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use bulwark_loader_boot_guard::{
    Config, ContentId, Decision, Guard, GuardError, State, Store, TrustedKeys,
};

use super::{keys, Fault, MemStore};

pub struct Machine {
    pub cfg: Config,
    keys: TrustedKeys,
    store: Option<MemStore>,
    pub guard: Option<Guard<MemStore>>,
    /// Pack hashes whose activation crashes the kernel.
    pub bad: Vec<[u8; 32]>,
    pub running: Option<ContentId>,
    pub now: u64,
    /// Every activation of content (boot or hot update).
    pub loads: Vec<ContentId>,
    /// Every content that was ever last-known-good, in memory or on disk.
    pub ever_lkg: Vec<ContentId>,
    /// Every content that was ever the candidate.
    pub ever_candidate: Vec<ContentId>,
    /// The newest last-known-good version seen.
    pub lkg_floor: u64,
    /// Every pack hash seen quarantined.
    pub quarantined: Vec<[u8; 32]>,
    /// Decisions taken at boot.
    pub decisions: Vec<Decision>,
    /// Whether the injected fault was a lost write (it may cost one more attempt).
    pub lost_fired: bool,
    lost_handled: bool,
    pub crashes: usize,
    /// The content that was active at each crash.
    pub crashed_with: Vec<ContentId>,
}

impl Machine {
    pub fn new(cfg: Config, store: MemStore) -> Machine {
        Machine {
            cfg,
            keys: keys(),
            store: Some(store),
            guard: None,
            bad: Vec::new(),
            running: None,
            now: 1000,
            loads: Vec::new(),
            ever_lkg: Vec::new(),
            ever_candidate: Vec::new(),
            lkg_floor: 0,
            quarantined: Vec::new(),
            decisions: Vec::new(),
            lost_fired: false,
            lost_handled: false,
            crashes: 0,
            crashed_with: Vec::new(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.guard.is_some()
    }

    /// The store, whether the machine is up or down.
    pub fn store(&self) -> &MemStore {
        match &self.guard {
            Some(g) => g.store(),
            None => self.store.as_ref().unwrap(),
        }
    }

    pub fn store_mut(&mut self) -> &mut MemStore {
        match &mut self.guard {
            Some(g) => g.store_mut(),
            None => self.store.as_mut().unwrap(),
        }
    }

    pub fn state(&self) -> &State {
        self.guard.as_ref().unwrap().state()
    }

    fn tick_clock(&mut self) {
        self.now += 10_000_000;
    }

    /// Power goes off without a shutdown (a crash, or a power cut).
    pub fn power_loss(&mut self) {
        if let Some(g) = self.guard.take() {
            let mut s = g.into_store();
            s.dead = false;
            self.store = Some(s);
            if let Some(r) = self.running.take() {
                self.crashed_with.push(r);
            }
            self.crashes += 1;
        }
    }

    /// After every operation: a torn write killed the machine; a lost write is followed by a power
    /// cut (that is when it matters); invariants hold on what the guard now believes.
    fn after(&mut self) {
        if let Some(g) = &self.guard {
            let s = g.store();
            if s.dead {
                self.power_loss();
                return;
            }
            if s.fired == Some(Fault::Lost) && !self.lost_handled {
                self.lost_handled = true;
                self.lost_fired = true;
                self.power_loss();
                return;
            }
            let state = g.state().clone();
            self.observe(&state, false);
        }
    }

    /// Invariants on a state the guard holds.
    fn observe(&mut self, s: &State, from_disk: bool) {
        if !self.ever_lkg.is_empty() {
            let lkg = s.lkg.expect("last-known-good is never lost");
            assert!(
                self.ever_lkg.contains(&lkg) || self.ever_candidate.contains(&lkg),
                "last-known-good {lkg:?} was never a candidate"
            );
            assert!(
                !self.quarantined.contains(&lkg.hash),
                "quarantined content became last-known-good"
            );
            if !self.lost_fired {
                assert!(
                    lkg.version >= self.lkg_floor,
                    "last-known-good went back from version {} to {}",
                    self.lkg_floor,
                    lkg.version
                );
            }
            if from_disk {
                let mut buf = Vec::new();
                let store = self.store_mut();
                store
                    .get_blob(&lkg, &mut buf, usize::MAX)
                    .expect("last-known-good's pack is stored");
            }
        }
        if let Some(c) = s.candidate {
            if !self.ever_candidate.contains(&c) {
                self.ever_candidate.push(c);
            }
        }
        if let Some(l) = s.lkg {
            if !self.ever_lkg.contains(&l) {
                self.ever_lkg.push(l);
            }
            self.lkg_floor = self.lkg_floor.max(l.version);
        }
        for q in s.quarantine() {
            if !self.quarantined.contains(&q.hash) {
                self.quarantined.push(q.hash);
            }
        }
    }

    fn activate(&mut self, id: ContentId) {
        assert!(
            !self.quarantined.contains(&id.hash),
            "quarantined content {id:?} was loaded again"
        );
        self.loads.push(id);
        self.running = Some(id);
        if self.bad.contains(&id.hash) {
            // The kernel dies with this content active.
            self.power_loss();
        }
    }

    /// Power on (after a crash if the machine was still up).
    pub fn boot(&mut self) -> Option<Decision> {
        self.power_loss();
        self.tick_clock();
        let store = self.store.take().unwrap();
        let g = Guard::open(store, self.cfg)
            .unwrap_or_else(|e| panic!("records unusable after a single fault: {e}"));
        let state = g.state().clone();
        self.guard = Some(g);
        self.observe(&state, true);
        let now = self.now;
        let b = self.guard.as_mut().unwrap().boot(&self.keys, now);
        self.decisions.push(b.decision);
        assert_eq!(b.content.is_some(), b.decision.content().is_some());
        if let Some(o) = &b.content {
            assert_eq!(Some(o.id), b.decision.content());
            assert_eq!(o.pack.content_hash(), o.id.hash);
        }
        let id = b.content.map(|o| o.id);
        self.after();
        if let Some(id) = id {
            if self.is_up() {
                self.activate(id);
            }
        }
        Some(b.decision)
    }

    pub fn stage(&mut self, env: &[u8], hot: bool) -> Option<Result<ContentId, GuardError>> {
        self.tick_clock();
        let now = self.now;
        let g = self.guard.as_mut()?;
        let r = g.stage(&self.keys, env, hot, now).map(|o| o.id);
        self.after();
        if let Ok(id) = r {
            if hot && self.is_up() {
                self.activate(id);
            }
        }
        Some(r)
    }

    pub fn run(&mut self, secs: u32) -> Option<Option<ContentId>> {
        self.tick_clock();
        let now = self.now;
        let g = self.guard.as_mut()?;
        let r = g.tick(secs, now).ok();
        self.after();
        r
    }

    pub fn healthy(&mut self) -> Option<Result<ContentId, GuardError>> {
        self.tick_clock();
        let now = self.now;
        let g = self.guard.as_mut()?;
        let r = g.confirm_healthy(now);
        self.after();
        Some(r)
    }

    /// The service asks to go back to last-known-good.
    pub fn revert(&mut self) -> Option<Result<ContentId, GuardError>> {
        self.tick_clock();
        let now = self.now;
        let g = self.guard.as_mut()?;
        let r = g.revert(&self.keys, now).map(|o| o.id);
        self.after();
        if let Ok(id) = r {
            if self.is_up() {
                self.activate(id);
            }
        }
        Some(r)
    }

    pub fn shutdown(&mut self) {
        self.tick_clock();
        let now = self.now;
        if let Some(g) = self.guard.as_mut() {
            let _ = g.clean_shutdown(now);
            self.after();
            if let Some(g) = self.guard.take() {
                self.store = Some(g.into_store());
                self.running = None;
            }
        }
    }

    /// Boots and runs until the machine runs stably with no candidate left (bounded).
    pub fn settle(&mut self) {
        for _ in 0..(2 * usize::from(self.cfg.threshold) + 6) {
            if !self.is_up() {
                self.boot();
            }
            if self.is_up() {
                self.run(self.cfg.stable_secs);
                self.run(self.cfg.stable_secs);
            }
            if self.is_up() && self.state().candidate.is_none() {
                self.shutdown();
                self.boot();
                if self.is_up() {
                    return;
                }
            } else {
                self.shutdown();
            }
        }
        panic!("the machine did not settle: {:?}", self.decisions);
    }

    /// How often content with this hash was activated.
    pub fn loads_of(&self, hash: &[u8; 32]) -> usize {
        self.loads.iter().filter(|l| &l.hash == hash).count()
    }
}
