//! Who counts in which cohort, from when, and which reports count (`bulwark_rollout::observe`).

mod common;

use bulwark_rollout::controller::start;
use bulwark_rollout::health::HealthConfig;
use bulwark_rollout::plan::Plan;
use bulwark_rollout::time::Timestamp;
use bulwark_rollout::{observe, EndpointReports, GuardReport, GuardReportKind, Heard};
use common::{detections, release};

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
