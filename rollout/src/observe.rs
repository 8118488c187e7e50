//! From what endpoints reported to the [`HealthObservations`] the health analysis reads: who
//! counts in which cohort, from when, and which of their reports count. A pure function over
//! per-endpoint reports, so the server (from its tables) and the fleet simulator (from its
//! endpoints in memory) observe a rollout the same way.
//!
//! Each endpoint heard from on the channel is placed by its wave (from the wave thresholds the
//! endpoints were told): in an open wave it belongs to that wave's cohort once it has reported
//! running the release or a guard event on it after the wave opened (observed from the first
//! such report; before that it is not counted), so a machine whose guard reverted the release
//! before it ever ran is counted; in a wave not yet open it belongs to the baseline cohort
//! (observed from the rollout's start, on the baseline release). Guard events and detections
//! count for the cohort's release only, events from the start of the observation on.

use crate::health::HealthConfig;
use crate::observations::{CohortObservations, EndpointRecord, HealthObservations};
use crate::state::ChannelRollout;
use crate::time::Timestamp;

/// What an endpoint's heartbeats say with respect to the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    /// Its last heartbeat (server time, seconds).
    pub last: u64,
    /// Whether that one announced a shutdown.
    pub shutdown: bool,
    /// Its first heartbeat on the release.
    pub staged: Option<u64>,
    /// Whether it confirmed healthy on the release.
    pub healthy: bool,
}

/// Kinds of guard events that count against a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardReportKind {
    /// An attempt that ended in neither a clean shutdown nor a blessing.
    Crash,
    /// A revert to last-known-good.
    Revert,
    /// The guard gave up on the candidate.
    Quarantine,
    /// The endpoint refused the release before its driver saw it.
    Reject,
}

/// One guard event an endpoint reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardReport {
    /// The release it happened on.
    pub release_version: u64,
    /// What happened.
    pub kind: GuardReportKind,
    /// When the server received it (seconds).
    pub at: u64,
}

/// Everything one endpoint reported on the channel.
#[derive(Debug, Clone, Copy)]
pub struct EndpointReports<'a> {
    /// Its wave under the rollout's thresholds (`None`: in none).
    pub wave: Option<usize>,
    /// Its heartbeats.
    pub heard: Heard,
    /// Its guard events on the release or the baseline.
    pub guard_events: &'a [GuardReport],
    /// Its detection counts: (release, rule id, count).
    pub detections: &'a [(u64, &'a str, u64)],
}

/// The observations of `state`'s rollout at `now` from every endpoint heard from on the
/// channel. Linear in the reports.
#[must_use]
pub fn observe<'a>(
    state: &ChannelRollout,
    reports: impl IntoIterator<Item = EndpointReports<'a>>,
    release_rules: &[String],
    baseline_rules: &[String],
    now: Timestamp,
    config: &HealthConfig,
) -> HealthObservations {
    let version = state.release.version;
    let baseline_version = state.baseline_version;
    let started = state.opened_at(0).unwrap_or(now);
    let open = state.open_waves as usize;
    let timeout = config.silence_timeout_secs;
    // Each endpoint's record is added to its cohort as it is made (no record kept, no detection
    // map built): the same counts as aggregating the records.
    let mut waves: Vec<CohortObservations> = (0..open)
        .map(|_| CohortObservations::with_rules(release_rules.iter().map(String::as_str)))
        .collect();
    let mut baseline = CohortObservations::with_rules(baseline_rules.iter().map(String::as_str));
    for e in reports {
        let Some(wave) = e.wave else {
            continue;
        };
        let heard = e.heard;
        let (cohort_version, since) = if wave < open {
            // Staged: its first heartbeat on the release, or, for a machine that never got to run
            // it (crashed on load until its guard reverted, or refused it), its first guard event
            // on the release after the wave opened: those are the reports that matter most.
            let opened = state.opened_at(wave).map_or(started.0, |t| t.0);
            let first_event = e
                .guard_events
                .iter()
                .filter(|g| g.release_version == version && g.at >= opened)
                .map(|g| g.at)
                .min();
            match (heard.staged, first_event) {
                (Some(s), Some(f)) => (Some(version), s.min(f)),
                (Some(s), None) | (None, Some(s)) => (Some(version), s),
                (None, None) => continue,
            }
        } else {
            (baseline_version, started.0)
        };
        let mut r = EndpointRecord {
            observed_since: Timestamp(since),
            last_heartbeat: Some(Timestamp(heard.last)),
            shutdown_announced: heard.shutdown,
            confirmed_healthy: wave < open && heard.healthy,
            ..EndpointRecord::default()
        };
        for g in e
            .guard_events
            .iter()
            .filter(|g| Some(g.release_version) == cohort_version && g.at >= since)
        {
            match g.kind {
                GuardReportKind::Crash => r.crashes = r.crashes.saturating_add(1),
                GuardReportKind::Revert => r.reverts = r.reverts.saturating_add(1),
                GuardReportKind::Quarantine => r.quarantines = r.quarantines.saturating_add(1),
                GuardReportKind::Reject => r.rejections = r.rejections.saturating_add(1),
            }
        }
        let cohort = if wave < open {
            waves.get_mut(wave)
        } else {
            Some(&mut baseline)
        };
        if let Some(c) = cohort {
            c.add(&r, now, timeout);
            for &(v, rule, count) in e.detections {
                if Some(v) == cohort_version {
                    c.add_detections(rule, count);
                }
            }
        }
    }
    HealthObservations {
        release_version: version,
        baseline,
        waves,
    }
}
