//! The boot loop of July 2024, replayed against the guard: a simulated machine whose kernel
//! crashes whenever a given pack is active. The guard must bring it back to last-known-good by
//! itself after at most N crashed boots, report the quarantine, and never load that pack again.
//!
//! The machine is real code end to end: signed envelopes, the loader, the interpreter's verifier
//! and VM, the guard, and its records in files (the host store) in a temporary directory. Only
//! the crash is simulated: the "driver bug" fires when the running content detects the trigger
//! command line that the machine's workload always produces.

// Guard errors carry the loader's reasons (hashes included) and are returned once per delivery.
#![allow(clippy::result_large_err)]

use std::path::PathBuf;

use bulwark_interpreter::schema::ProcessCreation;
use bulwark_interpreter::{Event, VerifiedPack};
use bulwark_loader_boot_guard::envelope::public_key;
use bulwark_loader_boot_guard::host::DirStore;
use bulwark_loader_boot_guard::{
    seal, Config, ContentId, Decision, EventKind, Guard, GuardError, LoadError, Reason, TrustedKeys,
};

const SECRET: [u8; 32] = [42; 32];
const CHANNEL: u32 = 7;
const STABLE: u32 = 600;

/// A pack with one rule; `trigger` makes it match the workload's command line, which is where the
/// simulated driver bug lives.
fn pack(name: &str, trigger: bool) -> Vec<u8> {
    let needle = if trigger {
        "update-check"
    } else {
        "never-seen-anywhere"
    };
    let text = format!(
        "rule\n  id \"{name}\"\n  title \"{name}\"\n  author \"boot-loop test\"\n  level high\n  action alert\n  event process_creation\n  str.contains CommandLine \"{needle}\"\n  ret\nend\n"
    );
    bulwark_interpreter::text::asm(&text).unwrap()
}

fn envelope(name: &str, trigger: bool, version: u64) -> Vec<u8> {
    seal(
        &SECRET,
        CHANNEL,
        version,
        bulwark_interpreter::schema_hash(),
        &pack(name, trigger),
    )
    .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bulwark-boot-loop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What one power-on of the machine came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// The kernel crashed with this content active.
    Crashed(ContentId),
    /// The machine ran (the stable period, then a clean shutdown).
    Ran(Option<ContentId>),
}

struct Machine {
    dir: PathBuf,
    config: Config,
    keys: TrustedKeys,
    guard: Option<Guard<DirStore>>,
    active: Option<(ContentId, VerifiedPack)>,
    clock: u64,
    log: Vec<(Decision, Run)>,
    /// Content activated by hot updates.
    hot: Vec<ContentId>,
}

impl Drop for Machine {
    /// The machine's disk is a scratch directory: a run leaves nothing behind in the temp dir.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Machine {
    fn new(name: &str, threshold: u8) -> Machine {
        Machine {
            dir: tmp(name),
            config: Config {
                channel: CHANNEL,
                threshold,
                stable_secs: STABLE,
            },
            keys: TrustedKeys::new(&[public_key(&SECRET)]).unwrap(),
            guard: None,
            active: None,
            clock: 0,
            log: Vec::new(),
            hot: Vec::new(),
        }
    }

    fn guard(&mut self) -> &mut Guard<DirStore> {
        self.guard.as_mut().expect("machine is up")
    }

    /// The kernel's event path: one process creation from the machine's workload through the
    /// active content. The driver bug: reporting a detection of the trigger crashes the kernel.
    fn workload_crashes(&self) -> bool {
        let Some((_, pack)) = &self.active else {
            return false;
        };
        let values = ProcessCreation {
            image: Some("C:\\Program Files\\Vendor\\agent.exe"),
            command_line: Some("agent.exe --update-check"),
            ..Default::default()
        }
        .values();
        let mut hit = false;
        pack.evaluate(&Event::from_typed((&values).into()), &mut |_| hit = true);
        hit
    }

    fn crash(&mut self) -> Run {
        let id = self.active.take().map(|(id, _)| id).unwrap_or_default();
        self.guard = None; // no shutdown: the records stay as they were
        Run::Crashed(id)
    }

    /// Power on: the guard decides before any content loads; the content runs the workload; the
    /// machine either crashes or runs the stable period and shuts down cleanly.
    fn power_on(&mut self) -> Run {
        self.clock += 1;
        let store = DirStore::new(&self.dir).unwrap();
        self.guard = Some(Guard::open(store, self.config).expect("records readable"));
        let keys = self.keys.clone();
        let clock = self.clock;
        let boot = self.guard().boot(&keys, clock);
        self.active = boot.content.map(|o| (o.id, o.pack));
        let run = if self.workload_crashes() {
            self.crash()
        } else {
            let running = self.active.as_ref().map(|(id, _)| *id);
            self.guard().tick(STABLE, clock).unwrap();
            self.guard().clean_shutdown(clock).unwrap();
            self.guard = None;
            Run::Ran(running)
        };
        self.log.push((boot.decision, run));
        run
    }

    /// Power on, and power is lost right after the boot decision (before the workload runs).
    fn power_cut(&mut self) {
        if self.guard.is_none() {
            self.clock += 1;
            let store = DirStore::new(&self.dir).unwrap();
            self.guard = Some(Guard::open(store, self.config).unwrap());
            let (keys, clock) = (self.keys.clone(), self.clock);
            let b = self.guard().boot(&keys, clock);
            let id = b.content.as_ref().map(|o| o.id).unwrap_or_default();
            self.log.push((b.decision, Run::Crashed(id)));
        }
        self.guard = None;
        self.active = None;
    }

    /// While up (after a boot that ran): a hot update arrives through the stage IOCTL.
    fn hot_update(&mut self, envelope: &[u8]) -> Result<Run, GuardError> {
        self.clock += 1;
        let store = DirStore::new(&self.dir).unwrap();
        if self.guard.is_none() {
            self.guard = Some(Guard::open(store, self.config).unwrap());
            let (keys, clock) = (self.keys.clone(), self.clock);
            let b = self.guard().boot(&keys, clock);
            let decision = b.decision;
            self.active = b.content.map(|o| (o.id, o.pack));
            if self.workload_crashes() {
                let run = self.crash();
                self.log.push((decision, run));
                return Ok(run);
            }
            let running = self.active.as_ref().map(|(id, _)| *id);
            self.log.push((decision, Run::Ran(running)));
        }
        let (keys, clock) = (self.keys.clone(), self.clock);
        let opened = self.guard().stage(&keys, envelope, true, clock)?;
        self.hot.push(opened.id);
        self.active = Some((opened.id, opened.pack));
        Ok(if self.workload_crashes() {
            self.crash()
        } else {
            Run::Ran(self.active.as_ref().map(|(id, _)| *id))
        })
    }

    fn state(&self) -> bulwark_loader_boot_guard::State {
        let store = DirStore::new(&self.dir).unwrap();
        Guard::open(store, self.config).unwrap().state().clone()
    }

    fn stage(&mut self, envelope: &[u8]) -> Result<ContentId, GuardError> {
        let store = DirStore::new(&self.dir).unwrap();
        let mut g = Guard::open(store, self.config).unwrap();
        g.stage(&self.keys, envelope, false, self.clock)
            .map(|o| o.id)
    }
}

/// A machine running last-known-good content v1.
fn machine_with_lkg(name: &str, threshold: u8) -> (Machine, ContentId) {
    let mut m = Machine::new(name, threshold);
    let v1 = m.stage(&envelope("baseline", false, 1)).unwrap();
    assert_eq!(m.power_on(), Run::Ran(Some(v1)));
    assert_eq!(m.state().lkg, Some(v1), "blessed after the stable period");
    (m, v1)
}

#[test]
fn a_pack_that_crashes_the_kernel_is_reverted_after_n_reboots_and_reported() {
    for n in 1..=5u8 {
        for hot in [false, true] {
            let (mut m, v1) = machine_with_lkg(&format!("n{n}-{hot}"), n);
            let bad = envelope("channel-file-291", true, 2);
            let mut crashes = 0;
            if hot {
                // Delivered at run time: the crash happens at once, before any reboot.
                assert!(matches!(m.hot_update(&bad).unwrap(), Run::Crashed(_)));
                crashes += 1;
            } else {
                m.stage(&bad).unwrap();
            }
            let mut reboots = 0;
            loop {
                reboots += 1;
                assert!(
                    reboots <= usize::from(n) + 1,
                    "N={n}: still looping: {:?}",
                    m.log
                );
                match m.power_on() {
                    Run::Crashed(id) => {
                        assert_eq!(id.version, 2);
                        crashes += 1;
                    }
                    Run::Ran(running) => {
                        assert_eq!(running, Some(v1), "N={n}: runs last-known-good");
                        break;
                    }
                }
            }
            assert_eq!(
                crashes,
                usize::from(n),
                "N={n} hot={hot}: exactly N failed boots"
            );
            let (decision, _) = m.log.last().copied().unwrap();
            assert_eq!(
                decision,
                Decision::Lkg {
                    id: v1,
                    reason: Reason::CandidateQuarantined
                }
            );
            let s = m.state();
            assert_eq!(s.lkg, Some(v1));
            assert_eq!(s.candidate, None);
            assert_eq!(s.quarantine().len(), 1);
            assert_eq!(s.quarantine()[0].version, 2);
            let reported: Vec<EventKind> = s.events().map(|e| e.kind).collect();
            assert!(reported.contains(&EventKind::Quarantined), "{reported:?}");
            assert!(reported.contains(&EventKind::Reverted), "{reported:?}");

            // Never again: many more boots run last-known-good, and re-delivery is refused.
            for _ in 0..3 {
                assert_eq!(m.power_on(), Run::Ran(Some(v1)));
            }
            for again in [bad.clone(), envelope("channel-file-291", true, 3)] {
                let e = m.stage(&again).unwrap_err();
                assert!(
                    matches!(
                        e,
                        GuardError::Load(LoadError::Quarantined { version: 2, .. })
                    ),
                    "{e}"
                );
            }

            // The fixed content ships as a newer version and becomes last-known-good.
            let fixed = m
                .stage(&envelope("channel-file-291-fixed", false, 3))
                .unwrap();
            assert_eq!(m.power_on(), Run::Ran(Some(fixed)));
            assert_eq!(m.state().lkg, Some(fixed));
        }
    }
}

/// A small deterministic generator (xorshift64*), so the random runs are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random deliveries of good and bad content, hot or staged, random power cuts: the machine
/// always ends up running, never loses last-known-good, never loads a bad pack more than N times
/// or a quarantined one at all.
#[test]
fn seeded_random_deliveries_and_power_cuts_never_loop_or_lose_lkg() {
    for seed in 1..=4u64 {
        let n = 1 + (seed % 3) as u8;
        let (mut m, _) = machine_with_lkg(&format!("seed{seed}"), n);
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut version = 1;
        let mut bad_hashes = Vec::new();
        let mut power_cuts = 0usize;
        for step in 0..40 {
            match rng.below(6) {
                0 | 1 => {
                    version += 1;
                    let trigger = rng.below(2) == 0;
                    let env = envelope(&format!("seed{seed}-step{step}"), trigger, version);
                    if trigger {
                        bad_hashes.push(
                            bulwark_interpreter::verify(&pack(
                                &format!("seed{seed}-step{step}"),
                                true,
                            ))
                            .unwrap()
                            .content_hash(),
                        );
                    }
                    if rng.below(2) == 0 {
                        if let Ok(Run::Ran(_)) = m.hot_update(&env) {
                            m.power_cut();
                        }
                    } else {
                        let _ = m.stage(&env);
                    }
                }
                2 => {
                    m.power_cut();
                    power_cuts += 1;
                }
                _ => {
                    m.power_on();
                }
            }
            let s = m.state();
            assert!(s.lkg.is_some(), "seed {seed} step {step}: LKG lost");
            assert!(
                !bad_hashes.contains(&s.lkg.unwrap().hash),
                "seed {seed}: bad pack blessed"
            );
        }
        // Settle: within N + power cuts boots the machine runs and stays up.
        let mut ran = false;
        for _ in 0..(usize::from(n) + 2) {
            if let Run::Ran(_) = m.power_on() {
                ran = true;
                break;
            }
        }
        assert!(ran, "seed {seed}: machine did not come back: {:?}", m.log);
        // Each bad pack was loaded at most N times in all (power cuts can only make it fewer
        // crashes, since a cut counts as one of its N).
        for h in &bad_hashes {
            let loads = m
                .log
                .iter()
                .filter(|(d, _)| d.content().is_some_and(|c| &c.hash == h))
                .count()
                + m.hot.iter().filter(|c| &c.hash == h).count();
            assert!(
                loads <= usize::from(n),
                "seed {seed}: a bad pack booted {loads} times (N = {n})"
            );
        }
        assert!(
            power_cuts > 0 || seed > 1,
            "seed {seed}: the run had no power cut"
        );
    }
}
