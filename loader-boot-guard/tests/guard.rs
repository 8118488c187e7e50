//! The boot-count guard: each rule in a plain run, then every scenario with every write failed,
//! torn or lost.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod common;

use bulwark_loader_boot_guard::{
    Active, Config, Decision, EventKind, GuardError, LoadError, Reason, RECORD_BYTES,
};
use common::machine::Machine;
use common::*;

fn cfg(threshold: u8) -> Config {
    Config {
        channel: CHANNEL,
        threshold,
        stable_secs: 600,
    }
}

// Content used below: p0 (v1) is last-known-good from the prelude; GOOD (v2) works; BAD (v3)
// crashes the kernel whenever it is active; GOOD2 (v4) works.
const GOOD: (u32, u64) = (1, 2);
const BAD: (u32, u64) = (2, 3);
const GOOD2: (u32, u64) = (3, 4);

fn env(c: (u32, u64)) -> Vec<u8> {
    envelope(c.0, c.1)
}
fn id(c: (u32, u64)) -> bulwark_loader_boot_guard::ContentId {
    id_of(c.0, c.1)
}

/// A machine whose last-known-good is p0, established without faults.
fn prelude(threshold: u8) -> Machine {
    let mut m = Machine::new(cfg(threshold), MemStore::default());
    m.bad.push(id(BAD).hash);
    assert_eq!(
        m.boot(),
        Some(Decision::NoContent {
            reason: Reason::NoLkg
        })
    );
    m.stage(&envelope(0, 1), true).unwrap().unwrap();
    assert_eq!(m.run(600), Some(Some(id_of(0, 1))));
    m.shutdown();
    assert!(matches!(m.boot(), Some(Decision::Lkg { .. })));
    assert_eq!(m.state().lkg, Some(id_of(0, 1)));
    m
}

type Scenario = fn(&mut Machine);

fn stage_boot_bless(m: &mut Machine) {
    m.stage(&env(GOOD), false);
    m.shutdown();
    m.boot();
    m.run(600);
    m.shutdown();
    m.boot();
}

fn bad_candidate(m: &mut Machine) {
    m.stage(&env(BAD), false);
    m.shutdown();
    for _ in 0..5 {
        m.boot();
    }
}

fn hot_good(m: &mut Machine) {
    m.stage(&env(GOOD), true);
    m.run(300);
    m.run(300);
    m.shutdown();
    m.boot();
}

fn hot_bad(m: &mut Machine) {
    m.stage(&env(BAD), true);
    for _ in 0..4 {
        m.boot();
    }
}

fn power_loss_good(m: &mut Machine) {
    m.stage(&env(GOOD), false);
    m.shutdown();
    m.boot();
    m.power_loss();
    m.boot();
    m.run(600);
}

fn healthy(m: &mut Machine) {
    m.stage(&env(GOOD), false);
    m.shutdown();
    m.boot();
    m.healthy();
    m.shutdown();
    m.boot();
}

fn redeliver_quarantined(m: &mut Machine) {
    m.stage(&env(BAD), false);
    m.shutdown();
    for _ in 0..4 {
        m.boot();
    }
    m.stage(&env(BAD), false);
    m.stage(&envelope(BAD.0, 5), true);
    m.stage(&env(GOOD2), false);
    m.shutdown();
    m.boot();
    m.run(600);
}

fn revert_requested(m: &mut Machine) {
    m.stage(&env(GOOD), true);
    m.revert();
    // Reverted: quarantined, refused if offered again; a newer release still comes through.
    m.stage(&env(GOOD), true);
    m.stage(&env(GOOD2), true);
    m.run(600);
}

fn replace_candidate(m: &mut Machine) {
    m.stage(&env(BAD), false);
    m.stage(&env(GOOD2), false);
    m.shutdown();
    m.boot();
    m.run(600);
}

/// The invariants at the end of a run (the machine has settled).
fn check_end(m: &Machine, name: &str, what: &str) {
    let n = usize::from(m.cfg.threshold);
    let s = m.state();
    assert!(
        s.candidate.is_none(),
        "{name} {what}: candidate left: {s:?}"
    );
    let bad = id(BAD).hash;
    let allowed = n + usize::from(m.lost_fired);
    assert!(
        m.loads_of(&bad) <= allowed,
        "{name} {what}: the bad pack loaded {} times (N = {n}): {:?}",
        m.loads_of(&bad),
        m.decisions
    );
    assert_ne!(
        s.lkg.map(|l| l.hash),
        Some(bad),
        "{name} {what}: bad pack blessed"
    );
    // A good candidate that ran and crashed fewer than N times ends as last-known-good.
    let last_good =
        if name.contains("quarantined") || name.contains("replace") || name.contains("revert") {
            id(GOOD2)
        } else {
            id(GOOD)
        };
    let crashes = m.crashed_with.iter().filter(|c| **c == last_good).count();
    if m.loads_of(&last_good.hash) > 0 && crashes < n {
        assert_eq!(
            s.lkg,
            Some(last_good),
            "{name} {what}: good candidate not blessed"
        );
    }
    if name.contains("bad") {
        assert_eq!(
            s.lkg,
            Some(id_of(0, 1)),
            "{name} {what}: last-known-good changed"
        );
    }
    // Every record the guard trusts was written completely.
    let used = bulwark_loader_boot_guard::record::encode(s);
    assert_eq!(used.len(), RECORD_BYTES);
    assert!(
        m.store()
            .records
            .iter()
            .any(|r| m.store().complete.contains(r)),
        "{name} {what}: no complete record on disk"
    );
}

fn writes_of(threshold: u8, scenario: Scenario) -> (Machine, usize) {
    let m = prelude(threshold);
    let start = m.store().writes;
    let mut plain = prelude(threshold);
    scenario(&mut plain);
    plain.settle();
    (m, plain.store().writes - start)
}

/// Runs `scenario` once without faults and then once per write with that write failed, lost, or
/// torn at several points, for N = 1 and N = 3; returns the number of runs.
fn exhaust(name: &str, scenario: Scenario) -> usize {
    let mut runs = 0;
    for threshold in [1u8, 3] {
        let (base, writes) = writes_of(threshold, scenario);
        let mut m = prelude(threshold);
        scenario(&mut m);
        m.settle();
        check_end(&m, name, "without faults");
        let start = base.store().writes;
        for k in 0..writes {
            for fault in [
                Fault::Fail,
                Fault::Lost,
                Fault::Torn(0),
                Fault::Torn(RECORD_BYTES / 2),
                Fault::Torn(RECORD_BYTES - 1),
            ] {
                let mut m = prelude(threshold);
                m.store_mut().fault = Some((start + k, fault));
                scenario(&mut m);
                m.settle();
                assert!(m.store().fired.is_some() || m.store().writes <= start + k);
                check_end(&m, name, &format!("N={threshold}, write {k} {fault:?}"));
                runs += 1;
            }
        }
    }
    assert!(runs >= 10, "{name}: {runs} runs");
    eprintln!("{name}: {runs} fault-injected runs");
    runs
}

macro_rules! exhaustive {
    ($($test:ident => $scenario:ident,)*) => {$(
        #[test]
        fn $test() {
            exhaust(stringify!($scenario), $scenario);
        }
    )*};
}

exhaustive! {
    faults_stage_boot_bless => stage_boot_bless,
    faults_bad_candidate => bad_candidate,
    faults_hot_good => hot_good,
    faults_hot_bad => hot_bad,
    faults_power_loss_good => power_loss_good,
    faults_healthy => healthy,
    faults_redeliver_quarantined => redeliver_quarantined,
    faults_replace_candidate => replace_candidate,
    faults_revert_requested => revert_requested,
}

#[test]
fn a_revert_quarantines_the_candidate_and_last_known_good_runs_from_then_on() {
    // Nothing to revert.
    let mut m = prelude(3);
    assert_eq!(
        m.revert().unwrap().unwrap_err(),
        GuardError::NothingToRevert
    );
    // A running candidate (hot update).
    m.stage(&env(GOOD), true).unwrap().unwrap();
    assert_eq!(m.running, Some(id(GOOD)));
    assert_eq!(m.revert().unwrap().unwrap(), id_of(0, 1));
    assert_eq!(m.running, Some(id_of(0, 1)));
    let s = m.state();
    assert_eq!(
        (s.candidate, s.active, s.lkg),
        (None, Active::Lkg, Some(id_of(0, 1)))
    );
    assert!(s.is_quarantined(&id(GOOD).hash));
    let events: Vec<(EventKind, u32)> = s.events().map(|e| (e.kind, e.detail)).collect();
    assert!(events.ends_with(&[
        (EventKind::Quarantined, Reason::RevertRequested as u32),
        (EventKind::Reverted, Reason::RevertRequested as u32)
    ]));
    // No boot tries it again, and it is refused if offered again.
    m.shutdown();
    assert!(matches!(m.boot(), Some(Decision::Lkg { .. })));
    assert_eq!(m.loads_of(&id(GOOD).hash), 1);
    assert!(matches!(
        m.stage(&env(GOOD), false).unwrap().unwrap_err(),
        GuardError::Load(LoadError::Quarantined { .. })
    ));
    // A newer release stages; staged for the next boot, it can be reverted before it ever runs.
    m.stage(&env(GOOD2), false).unwrap().unwrap();
    assert_eq!(m.revert().unwrap().unwrap(), id_of(0, 1));
    m.shutdown();
    assert!(matches!(m.boot(), Some(Decision::Lkg { .. })));
    assert_eq!(m.loads_of(&id(GOOD2).hash), 0);
}

#[test]
fn without_last_known_good_a_revert_is_refused_and_changes_nothing() {
    let mut m = Machine::new(cfg(3), MemStore::default());
    m.boot();
    m.stage(&env(GOOD), true).unwrap().unwrap();
    let before = m.state().clone();
    let writes = m.store().writes;
    assert_eq!(m.revert().unwrap().unwrap_err(), GuardError::NoLkg);
    assert_eq!(m.state(), &before);
    assert_eq!(m.store().writes, writes);
    assert_eq!(m.running, Some(id(GOOD)));
    assert_eq!(GuardError::NoLkg.code(), 212);
    assert_eq!(GuardError::NothingToRevert.code(), 211);
}

#[test]
fn a_bad_candidate_fails_exactly_n_boots_then_last_known_good_runs_for_good() {
    for n in 1..=4u8 {
        let mut m = prelude(n);
        let bad = id(BAD);
        m.stage(&env(BAD), false).unwrap().unwrap();
        m.shutdown();
        for attempt in 1..=n {
            assert_eq!(m.boot(), Some(Decision::Candidate { id: bad, attempt }));
            assert!(!m.is_up(), "the kernel crashed");
        }
        assert_eq!(
            m.boot(),
            Some(Decision::Lkg {
                id: id_of(0, 1),
                reason: Reason::CandidateQuarantined
            })
        );
        assert!(m.is_up());
        assert_eq!(m.loads_of(&bad.hash), usize::from(n));
        let s = m.state();
        assert_eq!(s.candidate, None);
        assert_eq!(s.quarantine(), &[bad]);
        let kinds: Vec<EventKind> = s.events().map(|e| e.kind).collect();
        for k in [
            EventKind::BootCandidate,
            EventKind::CrashCounted,
            EventKind::Quarantined,
            EventKind::Reverted,
            EventKind::BootLkg,
        ] {
            assert!(kinds.contains(&k), "{k:?} in {kinds:?}");
        }
        // Many more boots: never again.
        for _ in 0..5 {
            m.shutdown();
            assert!(matches!(m.boot(), Some(Decision::Lkg { .. })));
        }
        assert_eq!(m.loads_of(&bad.hash), usize::from(n));
        // Delivered again, as it was or re-signed newer: refused.
        let e = m.stage(&env(BAD), false).unwrap().unwrap_err();
        assert!(
            matches!(e, GuardError::Load(LoadError::Quarantined { .. })),
            "{e}"
        );
        let e = m.stage(&envelope(BAD.0, 9), true).unwrap().unwrap_err();
        assert!(
            matches!(e, GuardError::Load(LoadError::Quarantined { .. })),
            "{e}"
        );
        assert_eq!(e.code(), 121);
        assert_eq!(m.state().events().last().unwrap().kind, EventKind::Refused);
    }
}

#[test]
fn one_power_cut_does_not_quarantine_good_content_and_a_clean_shutdown_is_no_failure() {
    let mut m = prelude(3);
    let good = id(GOOD);
    m.stage(&env(GOOD), false).unwrap().unwrap();
    m.shutdown();
    assert_eq!(
        m.boot(),
        Some(Decision::Candidate {
            id: good,
            attempt: 1
        })
    );
    m.power_loss();
    assert_eq!(
        m.boot(),
        Some(Decision::Candidate {
            id: good,
            attempt: 2
        })
    );
    // Clean shutdowns take the running attempt back, however many.
    for _ in 0..5 {
        m.shutdown();
        assert_eq!(
            m.boot(),
            Some(Decision::Candidate {
                id: good,
                attempt: 2
            })
        );
    }
    assert_eq!(m.run(599), Some(None));
    assert_eq!(m.state().attempts, 2);
    assert_eq!(m.run(1), Some(Some(good)));
    let s = m.state();
    assert_eq!(s.lkg, Some(good));
    assert_eq!(s.candidate, None);
    assert_eq!(s.attempts, 0);
    assert_eq!(s.active, Active::Lkg);
    assert!(s.quarantine().is_empty());
}

#[test]
fn with_n_1_one_power_cut_quarantines() {
    let mut m = prelude(1);
    m.stage(&env(GOOD), false).unwrap().unwrap();
    m.shutdown();
    m.boot();
    m.power_loss();
    assert!(matches!(
        m.boot(),
        Some(Decision::Lkg {
            reason: Reason::CandidateQuarantined,
            ..
        })
    ));
}

#[test]
fn a_crash_during_a_hot_update_counts_at_the_next_boot() {
    let mut m = prelude(2);
    let bad = id(BAD);
    m.stage(&env(BAD), true).unwrap().unwrap();
    assert!(!m.is_up(), "the kernel crashed with the hot update active");
    assert_eq!(
        m.boot(),
        Some(Decision::Candidate {
            id: bad,
            attempt: 2
        })
    );
    assert_eq!(
        m.boot(),
        Some(Decision::Lkg {
            id: id_of(0, 1),
            reason: Reason::CandidateQuarantined
        })
    );
    assert_eq!(m.loads_of(&bad.hash), 2);
}

#[test]
fn the_service_blesses_only_a_running_candidate() {
    let mut m = prelude(3);
    m.stage(&env(GOOD), false).unwrap().unwrap();
    // Staged, not running yet.
    assert_eq!(
        m.healthy().unwrap().unwrap_err(),
        GuardError::NoCandidateRunning
    );
    m.shutdown();
    m.boot();
    assert_eq!(m.healthy().unwrap().unwrap(), id(GOOD));
    let blessed = m
        .state()
        .events()
        .filter(|e| e.kind == EventKind::Blessed)
        .last()
        .unwrap();
    assert_eq!(blessed.detail, Reason::ServiceConfirmed as u32);
    // A newer pack can follow; an older one cannot come back.
    let e = m.stage(&envelope(9, 2), false).unwrap().unwrap_err();
    assert!(
        matches!(
            e,
            GuardError::Load(LoadError::Downgrade {
                offered: 2,
                current: 2
            })
        ),
        "{e}"
    );
}

#[test]
fn last_known_good_that_itself_keeps_crashing_is_suspended_until_a_stable_run() {
    let mut m = prelude(2);
    let lkg = id_of(0, 1);
    assert_eq!(m.state().lkg, Some(lkg));
    m.power_loss(); // the prelude's boot loaded LKG: 1 unfinished run
    assert!(matches!(m.boot(), Some(Decision::Lkg { .. })));
    m.power_loss();
    assert_eq!(
        m.boot(),
        Some(Decision::NoContent {
            reason: Reason::LkgSuspended
        })
    );
    assert_eq!(m.state().lkg, Some(lkg), "suspended, not lost");
    // A stable period without content gives it its attempts back.
    m.run(600);
    m.shutdown();
    assert!(matches!(m.boot(), Some(Decision::Lkg { .. })));
}

#[test]
fn a_candidate_whose_stored_pack_is_damaged_is_dropped_and_lkg_loads() {
    let mut m = prelude(3);
    let good = id(GOOD);
    m.stage(&env(GOOD), false).unwrap().unwrap();
    m.shutdown();
    let blob = m
        .store_mut()
        .blobs
        .iter_mut()
        .find(|(i, _)| *i == good)
        .unwrap();
    let n = blob.1.len();
    blob.1[n - 3] ^= 1;
    assert_eq!(
        m.boot(),
        Some(Decision::Lkg {
            id: id_of(0, 1),
            reason: Reason::CandidateUnusable
        })
    );
    let s = m.state();
    assert_eq!(s.candidate, None);
    assert!(
        s.quarantine().is_empty(),
        "a damaged copy is not proof the content is bad"
    );
    let ev = s
        .events()
        .find(|e| e.kind == EventKind::CandidateUnusable)
        .unwrap();
    assert_eq!(ev.detail, 111, "bad signature");
}

#[test]
fn when_the_attempt_cannot_be_recorded_the_candidate_is_not_tried() {
    let mut m = prelude(3);
    m.stage(&env(GOOD), false).unwrap().unwrap();
    m.shutdown();
    let next = m.store().writes;
    m.store_mut().fault = Some((next, Fault::Fail));
    assert_eq!(
        m.boot(),
        Some(Decision::Lkg {
            id: id_of(0, 1),
            reason: Reason::AttemptNotRecorded
        })
    );
    assert!(m.state().events().any(|e| e.kind == EventKind::StoreFailed));
    assert_eq!(m.loads_of(&id(GOOD).hash), 0);
}

#[test]
fn events_carry_increasing_sequence_numbers_and_the_ring_keeps_the_newest() {
    let mut m = prelude(3);
    for _ in 0..40 {
        m.shutdown();
        m.boot();
    }
    let s = m.state();
    let seqs: Vec<u64> = s.events().map(|e| e.seq).collect();
    assert_eq!(seqs.len(), 32);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(*seqs.last().unwrap() + 1, s.next_event_seq());
    let after: Vec<u64> = s.events_after(seqs[29]).map(|e| e.seq).collect();
    assert_eq!(after, seqs[30..].to_vec());
}

/// Random operation sequences (deliveries of good and bad packs, staged or hot, boots, runs,
/// confirmations, clean shutdowns, power cuts) with one random write failed, torn or lost: the
/// same invariants hold. Seeded, so every failure reproduces.
#[test]
fn seeded_random_sequences_with_a_random_fault_keep_every_invariant() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let (mut fired, mut bad_loads, mut quarantines, mut blessings) = (0, 0, 0, 0);
    for run in 0..24u32 {
        let threshold = 1 + next(3) as u8;
        let mut m = prelude(threshold);
        let start = m.store().writes;
        let fault = match next(3) {
            0 => Fault::Fail,
            1 => Fault::Lost,
            _ => Fault::Torn(next(RECORD_BYTES as u64) as usize),
        };
        m.store_mut().fault = Some((start + next(12) as usize, fault));
        let mut version = 10;
        let mut bad = Vec::new();
        for _ in 0..14 {
            match next(8) {
                0 | 1 => {
                    version += 1;
                    let n = 100 + version as u32;
                    if next(2) == 0 {
                        bad.push(id_of(n, version).hash);
                        m.bad.push(id_of(n, version).hash);
                    }
                    m.stage(&envelope(n, version), next(2) == 0);
                }
                2 | 3 => {
                    m.boot();
                }
                4 => {
                    m.run(next(2) as u32 * 600 + 1);
                }
                5 => {
                    m.healthy();
                }
                6 => m.shutdown(),
                _ => m.power_loss(),
            }
        }
        m.settle();
        let what = format!("run {run}, N={threshold}, {fault:?}, {:?}", m.decisions);
        let s = m.state();
        assert!(s.candidate.is_none(), "{what}");
        let allowed = usize::from(threshold) + usize::from(m.lost_fired);
        for h in &bad {
            assert!(
                m.loads_of(h) <= allowed,
                "{what}: a bad pack loaded {} times",
                m.loads_of(h)
            );
            assert_ne!(
                s.lkg.map(|l| l.hash),
                Some(*h),
                "{what}: a bad pack was blessed"
            );
        }
        assert!(s.lkg.is_some(), "{what}");
        fired += usize::from(m.store().fired.is_some());
        bad_loads += bad.iter().map(|h| m.loads_of(h)).sum::<usize>();
        quarantines += s.quarantine().len();
        blessings += usize::from(s.lkg != Some(id_of(0, 1)));
    }
    // The runs really exercised faults, crashes, quarantines and blessings.
    eprintln!("faults fired {fired}, bad loads {bad_loads}, quarantined {quarantines}, new LKG {blessings}");
    assert!(fired >= 12 && bad_loads > 0 && quarantines > 0 && blessings > 0);
}
