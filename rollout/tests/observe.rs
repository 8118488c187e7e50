//! Who counts in which cohort, from when, and which reports count (`bulwark_rollout::observe`).

mod common;

use bulwark_rollout::controller::start;
use bulwark_rollout::health::HealthConfig;
use bulwark_rollout::plan::Plan;
use bulwark_rollout::time::Timestamp;
use bulwark_rollout::{observe, EndpointReports, GuardReport, GuardReportKind, Heard, Observer};
use common::{detections, release, Rng};

const T0: Timestamp = Timestamp(1_700_000_000);

fn heard(last: u64, staged: Option<u64>, healthy: bool) -> Heard {
    Heard {
        last,
        shutdown: false,
        staged,
        healthy,
    }
}

fn event(version: u64, kind: GuardReportKind, at: u64) -> GuardReport {
    GuardReport {
        release_version: version,
        kind,
        at,
    }
}

#[test]
fn cohorts_are_formed_from_the_reports_that_count() {
    let ch = detections();
    // Release 7 on a baseline of 6: wave 0 opens at T0.
    let (mut state, _) =
        start(ch.clone(), release(&ch, 7), Plan::default_plan(), None, T0).unwrap();
    state.baseline_version = Some(6);
    let t = T0.0;
    let crashed_before_running = [
        event(7, GuardReportKind::Crash, t + 60),
        event(7, GuardReportKind::Crash, t + 120),
        event(7, GuardReportKind::Quarantine, t + 180),
    ];
    let refused = [event(7, GuardReportKind::Reject, t + 30)];
    let old_news = [
        // Before the wave opened, and on the baseline: neither counts for wave 0.
        event(7, GuardReportKind::Crash, t - 10),
        event(6, GuardReportKind::Revert, t + 50),
    ];
    let base_events = [event(6, GuardReportKind::Crash, t + 100)];
    // Two reports of one rule add up; a rule the release does not have is not counted.
    let dets: [(u64, &str, u64); 4] = [
        (7, "rule-7", 4),
        (6, "rule-7", 100),
        (7, "rule-7", 2),
        (7, "not-a-rule", 9),
    ];
    let base_dets: [(u64, &str, u64); 2] = [(6, "rule-6", 3), (7, "rule-6", 50)];
    let reports = [
        // Staged and confirmed, with detections of both versions.
        EndpointReports {
            wave: Some(0),
            heard: heard(t + 600, Some(t + 10), true),
            guard_events: &[],
            detections: &dets,
        },
        // Never ran the release: its guard's events bring it into the cohort.
        EndpointReports {
            wave: Some(0),
            heard: heard(t + 600, None, false),
            guard_events: &crashed_before_running,
            detections: &[],
        },
        // Refused it.
        EndpointReports {
            wave: Some(0),
            heard: heard(t + 600, None, false),
            guard_events: &refused,
            detections: &[],
        },
        // Heard from but no report on the release after its wave opened: not counted.
        EndpointReports {
            wave: Some(0),
            heard: heard(t + 600, None, false),
            guard_events: &old_news,
            detections: &[],
        },
        // In a wave not yet open: the baseline, its release's reports only.
        EndpointReports {
            wave: Some(3),
            heard: heard(t + 600, None, false),
            guard_events: &base_events,
            detections: &base_dets,
        },
        // In no wave: ignored.
        EndpointReports {
            wave: None,
            heard: heard(t + 600, Some(t), true),
            guard_events: &refused,
            detections: &dets,
        },
    ];
    let obs = observe(
        &state,
        reports,
        &["rule-7".to_owned()],
        &["rule-6".to_owned()],
        Timestamp(t + 600),
        &HealthConfig::default(),
    );
    assert_eq!(obs.release_version, 7);
    assert_eq!(obs.waves.len(), 1);
    let w = &obs.waves[0];
    assert_eq!(w.endpoints, 3);
    assert_eq!(
        (w.crashes, w.quarantines, w.rejections, w.reverts),
        (2, 1, 1, 0)
    );
    assert_eq!(w.confirmed_healthy, 1);
    assert_eq!(w.rules["rule-7"], 6);
    assert_eq!(w.rules.len(), 1, "{:?}", w.rules);
    // Exposure: from staging (t + 10), the first event (t + 60) and the refusal (t + 30) to the
    // last heartbeat (t + 600).
    assert_eq!(w.exposure_secs, 590 + 540 + 570);
    let b = &obs.baseline;
    assert_eq!(b.endpoints, 1);
    assert_eq!((b.crashes, b.reverts), (1, 0));
    assert_eq!(b.rules["rule-6"], 3);
    assert_eq!(b.exposure_secs, 600);
}

/// One endpoint's reports in the randomized comparison below.
#[derive(Clone, Default)]
struct Reported {
    wave: Option<usize>,
    heard: Option<Heard>,
    events: Vec<GuardReport>,
    detections: Vec<(u64, &'static str, u64)>,
}

impl Reported {
    fn reports(&self) -> Option<EndpointReports<'_>> {
        Some(EndpointReports {
            wave: self.wave,
            heard: self.heard?,
            guard_events: &self.events,
            detections: &self.detections,
        })
    }
}

const RULES: [&str; 4] = ["rule-a", "rule-b", "rule-c", "rule-x"];

/// A time near `t`: mostly a little after, sometimes before, sometimes at the clock's end, and
/// sometimes exactly a silence timeout before the next tick (silent only at the one after).
fn around(rng: &mut Rng, t: u64) -> u64 {
    match rng.below(20) {
        0 => u64::MAX - rng.below(3),
        1 => t.saturating_sub(rng.below(7200)),
        2 => t + 60 - HealthConfig::default().silence_timeout_secs,
        _ => t + rng.below(7200),
    }
}

/// Changes endpoint `e`'s reports at random, as heartbeats and telemetry would (and as they
/// would not: a wave changed, events removed, counts at the edge of the range).
fn change(rng: &mut Rng, e: &mut Reported, now: u64) {
    match rng.below(8) {
        0 => e.wave = [None, Some(0), Some(1), Some(2), Some(4)][rng.below(5) as usize],
        1 | 2 => {
            let last = around(rng, now);
            let staged = e
                .heard
                .and_then(|h| h.staged)
                .or_else(|| (rng.below(3) == 0).then(|| around(rng, now)));
            e.heard = Some(Heard {
                last,
                shutdown: rng.below(4) == 0,
                staged,
                healthy: rng.below(2) == 0,
            });
        }
        3 | 4 => e.events.push(GuardReport {
            release_version: [6, 7, 8][rng.below(3) as usize],
            kind: [
                GuardReportKind::Crash,
                GuardReportKind::Revert,
                GuardReportKind::Quarantine,
                GuardReportKind::Reject,
            ][rng.below(4) as usize],
            at: around(rng, now),
        }),
        5 => {
            let n = if rng.below(10) == 0 {
                u64::MAX - rng.below(5)
            } else {
                rng.below(50)
            };
            e.detections.push((
                [6, 7][rng.below(2) as usize],
                RULES[rng.below(4) as usize],
                n,
            ));
        }
        6 => {
            e.events.clear();
            e.detections.clear();
        }
        _ => e.heard = None,
    }
}

#[test]
fn an_observer_sees_what_observe_sees_tick_after_tick() {
    let ch = detections();
    let config = HealthConfig::default();
    for seed in 0..40 {
        let mut rng = Rng(seed);
        let (mut state, _) =
            start(ch.clone(), release(&ch, 7), Plan::default_plan(), None, T0).unwrap();
        state.baseline_version = Some(6);
        let mut release_rules = vec!["rule-a".to_owned(), "rule-b".to_owned()];
        let mut baseline_rules = vec!["rule-a".to_owned(), "rule-c".to_owned()];
        let mut fleet: Vec<Reported> = vec![Reported::default(); 30];
        let mut observer = Observer::new();
        let mut now = T0.0;
        let mut reads = 0;
        for tick in 0..300 {
            now = match rng.below(30) {
                // The clock goes back, or jumps.
                0 => now - rng.below(600),
                1 => now + 20_000,
                _ => now + 60,
            };
            // Some endpoints report (now and then many, more than the observer keeps track of
            // between observations); some join.
            let reports = if tick % 50 == 25 { 300 } else { rng.below(6) };
            for _ in 0..reports {
                let i = rng.below(fleet.len() as u64) as usize;
                if let Some(e) = fleet.get_mut(i) {
                    change(&mut rng, e, now);
                    observer.update(i, e.reports());
                }
            }
            match rng.below(50) {
                0 | 1 => fleet.push(Reported::default()),
                2 => fleet.truncate(fleet.len() - 1),
                _ => {}
            }
            // The rollout moves on now and then; the rules change once.
            match rng.below(40) {
                0 if state.open_waves < 5 => {
                    state.wave_opened_at[state.open_waves as usize] = Some(Timestamp(now));
                    state.open_waves += 1;
                }
                1 => state.baseline_version = [None, Some(6)][rng.below(2) as usize],
                2 => release_rules.push("rule-c".to_owned()),
                3 => baseline_rules.push("rule-b".to_owned()),
                _ => {}
            }
            if tick % 97 == 96 {
                // Every endpoint moved between waves: the caller says so.
                for e in &mut fleet {
                    e.wave = e.wave.map(|w| (w + 1) % 5);
                }
                observer.changed_all();
            }
            let expected = observe(
                &state,
                fleet.iter().filter_map(Reported::reports),
                &release_rules,
                &baseline_rules,
                Timestamp(now),
                &config,
            );
            let got = observer.observe(
                &state,
                fleet.len(),
                |i| fleet.get(i).and_then(Reported::reports),
                &release_rules,
                &baseline_rules,
                Timestamp(now),
                &config,
            );
            assert_eq!(got, expected, "seed {seed}, tick {tick}");
            reads += usize::from(expected.waves.iter().any(|w| w.silent > 0));
        }
        assert!(reads > 0, "seed {seed}: no silence was ever observed");
    }
}
