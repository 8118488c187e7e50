//! The boot decision is a pure function of the records: checked for every combination of
//! candidate, last-known-good, both attempt counters and what was running, against the rules as
//! the README states them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use bulwark_loader_boot_guard::{Active, Config, ContentId, Decision, EventKind, Reason, State};

fn id(v: u64) -> ContentId {
    ContentId {
        version: v,
        hash: [v as u8; 32],
    }
}

/// The rules, written independently of the implementation.
fn expected(
    n: u8,
    candidate: Option<ContentId>,
    attempts: u8,
    lkg: Option<ContentId>,
    lkg_attempts: u8,
) -> Decision {
    // A candidate loads while it has attempts left; the attempt is counted before it loads.
    if let Some(c) = candidate {
        if attempts < n {
            return Decision::Candidate {
                id: c,
                attempt: attempts + 1,
            };
        }
    }
    let reason = if candidate.is_some() {
        Reason::CandidateQuarantined
    } else {
        Reason::NoCandidate
    };
    match lkg {
        None => Decision::NoContent {
            reason: Reason::NoLkg,
        },
        Some(_) if lkg_attempts >= n => Decision::NoContent {
            reason: Reason::LkgSuspended,
        },
        Some(l) => Decision::Lkg { id: l, reason },
    }
}

#[test]
fn every_combination_of_records_gives_the_documented_decision() {
    let mut cases = 0;
    for n in 1..=4u8 {
        let cfg = Config {
            channel: 1,
            threshold: n,
            stable_secs: 600,
        };
        for candidate in [None, Some(id(3))] {
            for lkg in [None, Some(id(1))] {
                for attempts in 0..=n + 1 {
                    for lkg_attempts in 0..=n + 1 {
                        for active in [Active::None, Active::Lkg, Active::Candidate] {
                            let mut s = State::new(1);
                            s.candidate = candidate;
                            s.attempts = if candidate.is_some() { attempts } else { 0 };
                            s.lkg = lkg;
                            s.lkg_attempts = lkg_attempts;
                            s.active = active;
                            s.newest = 3;
                            let before = s.clone();
                            let mut again = s.clone();
                            let d = s.boot(&cfg, 5);
                            // Pure: the same records give the same decision and the same records.
                            assert_eq!(again.boot(&cfg, 5), d);
                            assert_eq!(again, s);
                            let want = expected(n, candidate, before.attempts, lkg, lkg_attempts);
                            assert_eq!(d, want, "{before:?}");
                            // Bookkeeping that goes with the decision.
                            assert_eq!(s.active, d.active());
                            assert_eq!(s.lkg, lkg, "last-known-good never changes at boot");
                            assert_eq!(s.boots, before.boots + 1);
                            match d {
                                Decision::Candidate { attempt, .. } => {
                                    assert_eq!(s.attempts, attempt);
                                    assert!(attempt <= n);
                                }
                                _ if candidate.is_some() => {
                                    assert_eq!(s.candidate, None);
                                    assert_eq!(s.quarantine(), &[id(3)]);
                                    assert!(s.events().any(|e| e.kind == EventKind::Quarantined));
                                }
                                _ => assert!(s.quarantine().is_empty()),
                            }
                            if let Decision::Lkg { .. } = d {
                                assert_eq!(s.lkg_attempts, lkg_attempts + 1);
                            }
                            let crashed = match active {
                                Active::Candidate => candidate.is_some(),
                                Active::Lkg => lkg.is_some(),
                                Active::None => false,
                            };
                            assert_eq!(
                                s.events().any(|e| e.kind == EventKind::CrashCounted),
                                crashed,
                                "{before:?}"
                            );
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, 2 * 2 * 3 * (9 + 16 + 25 + 36));
}

#[test]
fn clean_shutdown_takes_back_exactly_the_running_attempt() {
    let cfg = Config::new(1);
    let mut s = State::new(1);
    s.lkg = Some(id(1));
    s.stage(id(2), false, 1);
    assert!(matches!(
        s.boot(&cfg, 2),
        Decision::Candidate { attempt: 1, .. }
    ));
    s.clean_shutdown(3);
    assert_eq!((s.attempts, s.active), (0, Active::None));
    // A crash (no shutdown) keeps it.
    s.boot(&cfg, 4);
    let d = s.boot(&cfg, 5);
    assert_eq!(
        d,
        Decision::Candidate {
            id: id(2),
            attempt: 2
        }
    );
    // Shutting down twice takes back nothing more.
    s.clean_shutdown(6);
    s.clean_shutdown(7);
    assert_eq!(s.attempts, 1);
}

#[test]
fn the_stable_period_blesses_only_a_running_candidate() {
    let mut s = State::new(1);
    s.lkg = Some(id(1));
    s.stage(id(2), false, 1);
    assert!(!s.stable(Reason::StablePeriod, 2), "staged, not running");
    assert_eq!(s.lkg, Some(id(1)));
    s.boot(&Config::new(1), 3);
    assert!(s.stable(Reason::StablePeriod, 4));
    assert_eq!(s.lkg, Some(id(2)));
    assert_eq!(s.candidate, None);
    assert_eq!((s.attempts, s.lkg_attempts, s.active), (0, 0, Active::Lkg));
    assert!(!s.stable(Reason::StablePeriod, 5), "nothing more to do");
}
