//! What the server observed of a rollout: per endpoint records, aggregated into cohorts.
//!
//! A *cohort* is a set of endpoints observed together: the endpoints of one wave on the new
//! release, or the baseline cohort held back on the previous release (the endpoints of waves not
//! yet open; once every wave is open, the caller supplies the baseline release's own history from
//! before the rollout as a historical control).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::{Timestamp, HOUR};

/// What the server knows of one endpoint over an observation window.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Start of its observation: when it staged the new release (new cohort), or the window's
    /// start (baseline cohort).
    pub observed_since: Timestamp,
    /// Its last heartbeat, if any.
    pub last_heartbeat: Option<Timestamp>,
    /// Whether its last message announced a clean shutdown (it is then offline, not silent).
    pub shutdown_announced: bool,
    /// Crash-counted guard events (attempts that ended in neither a clean shutdown nor a
    /// blessing) since `observed_since`.
    pub crashes: u32,
    /// Reverts to the last-known-good content.
    pub reverts: u32,
    /// Quarantines (the guard gave up on a candidate after N failed boots).
    pub quarantines: u32,
    /// Refusals of the release by the endpoint itself before it reached the driver (its verifier,
    /// against the running sensor's schema, or its loader): content that does not fit the sensor.
    #[serde(default)]
    pub rejections: u32,
    /// Whether it confirmed a healthy boot or hot update on the release.
    pub confirmed_healthy: bool,
    /// Detections by rule id.
    pub detections: BTreeMap<String, u64>,
}

impl EndpointRecord {
    /// Whether the endpoint is silent at `now`: no clean shutdown announced, and nothing heard for
    /// more than `timeout_secs` since the later of its last heartbeat and the start of its
    /// observation. A machine that crashed cannot report; its silence is the report.
    #[must_use]
    pub fn is_silent(&self, now: Timestamp, timeout_secs: u64) -> bool {
        self.silent_after(timeout_secs).is_some_and(|t| now > t)
    }

    /// The last moment it is not yet silent ([`EndpointRecord::is_silent`] at any later one), if
    /// it ever is: never after a clean shutdown announced, nor when that moment is past the
    /// clock's range.
    #[must_use]
    pub fn silent_after(&self, timeout_secs: u64) -> Option<Timestamp> {
        if self.shutdown_announced {
            return None;
        }
        let heard = self
            .last_heartbeat
            .map_or(self.observed_since, |h| h.max(self.observed_since));
        heard.0.checked_add(timeout_secs).map(Timestamp)
    }

    /// Its exposure in seconds: from the start of its observation to its last heartbeat (or `now`,
    /// if earlier). An endpoint never heard from has none.
    #[must_use]
    pub fn exposure_secs(&self, now: Timestamp) -> u64 {
        self.last_heartbeat
            .map_or(0, |h| h.min(now).secs_since(self.observed_since))
    }
}

/// The counts of one cohort.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CohortObservations {
    /// Endpoints in the cohort (for a wave: those that staged the new release).
    pub endpoints: u64,
    /// Exposure, in endpoint-seconds.
    pub exposure_secs: u64,
    /// Crash-counted guard events.
    pub crashes: u64,
    /// Reverts to last-known-good.
    pub reverts: u64,
    /// Quarantines.
    pub quarantines: u64,
    /// Refusals of the release by the endpoints' own verifier or loader.
    #[serde(default)]
    pub rejections: u64,
    /// Endpoints silent past the timeout (see [`EndpointRecord::is_silent`]).
    pub silent: u64,
    /// Endpoints that confirmed a healthy boot or hot update.
    pub confirmed_healthy: u64,
    /// Detections per rule, for *every* rule of the cohort's release (zero counts included): a rule
    /// absent from the baseline's map is a rule the baseline release does not have.
    pub rules: BTreeMap<String, u64>,
}

impl CohortObservations {
    /// Aggregates endpoint records; `rules` are the rule ids of the cohort's release (detections
    /// of other rules are ignored).
    pub fn aggregate<'a, 'r>(
        records: impl IntoIterator<Item = &'a EndpointRecord>,
        rules: impl IntoIterator<Item = &'r str>,
        now: Timestamp,
        silence_timeout_secs: u64,
    ) -> Self {
        let mut c = Self::with_rules(rules);
        for r in records {
            c.add(r, now, silence_timeout_secs);
            for (rule, n) in &r.detections {
                c.add_detections(rule, *n);
            }
        }
        c
    }

    /// An empty cohort of a release with rule ids `rules` (each counted from zero).
    pub fn with_rules<'r>(rules: impl IntoIterator<Item = &'r str>) -> Self {
        Self {
            rules: rules.into_iter().map(|r| (r.to_owned(), 0)).collect(),
            ..Self::default()
        }
    }

    /// Adds one endpoint's record, all but its detections (see
    /// [`CohortObservations::add_detections`]): what [`CohortObservations::aggregate`] does for
    /// each, so that a caller can aggregate without building records' detection maps.
    pub fn add(&mut self, r: &EndpointRecord, now: Timestamp, silence_timeout_secs: u64) {
        self.endpoints = self.endpoints.saturating_add(1);
        self.exposure_secs = self.exposure_secs.saturating_add(r.exposure_secs(now));
        self.crashes = self.crashes.saturating_add(u64::from(r.crashes));
        self.reverts = self.reverts.saturating_add(u64::from(r.reverts));
        self.quarantines = self.quarantines.saturating_add(u64::from(r.quarantines));
        self.rejections = self.rejections.saturating_add(u64::from(r.rejections));
        self.silent = self
            .silent
            .saturating_add(u64::from(r.is_silent(now, silence_timeout_secs)));
        self.confirmed_healthy = self
            .confirmed_healthy
            .saturating_add(u64::from(r.confirmed_healthy));
    }

    /// Adds `n` detections of `rule` by an endpoint of the cohort (ignored if the cohort's
    /// release has no such rule). Saturating sums of counts do not depend on their grouping, so
    /// adding an endpoint's detections one report at a time equals adding its record's totals.
    pub fn add_detections(&mut self, rule: &str, n: u64) {
        if let Some(total) = self.rules.get_mut(rule) {
            *total = total.saturating_add(n);
        }
    }

    /// Exposure in endpoint-hours.
    #[must_use]
    pub fn exposure_hours(&self) -> f64 {
        self.exposure_secs as f64 / HOUR as f64
    }
}

/// Everything the controller is told at one step: the new release's cohorts, one per open wave
/// (index = wave), and the baseline cohort.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HealthObservations {
    /// The release observed (must be the rollout's release, or the observations are ignored).
    pub release_version: u64,
    /// The baseline cohort, on the previous release.
    pub baseline: CohortObservations,
    /// One cohort per open wave, in wave order.
    pub waves: Vec<CohortObservations>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_and_exposure() {
        let r = EndpointRecord {
            observed_since: Timestamp(1000),
            last_heartbeat: Some(Timestamp(1600)),
            ..EndpointRecord::default()
        };
        assert!(!r.is_silent(Timestamp(1600 + 3600), 3600));
        assert!(r.is_silent(Timestamp(1601 + 3600), 3600));
        assert_eq!(r.exposure_secs(Timestamp(5000)), 600);
        assert_eq!(r.exposure_secs(Timestamp(1200)), 200);
        let announced = EndpointRecord {
            shutdown_announced: true,
            ..r.clone()
        };
        assert!(!announced.is_silent(Timestamp(100_000), 3600));
        // Staged and never heard from again: silent once the timeout has passed since staging,
        // even if it sent heartbeats before staging.
        let never = EndpointRecord {
            observed_since: Timestamp(1000),
            last_heartbeat: Some(Timestamp(900)),
            ..EndpointRecord::default()
        };
        assert!(!never.is_silent(Timestamp(4600), 3600));
        assert!(never.is_silent(Timestamp(4601), 3600));
        assert_eq!(never.exposure_secs(Timestamp(4601)), 0);
    }

    #[test]
    fn aggregate_counts_everything() {
        let mut a = EndpointRecord {
            observed_since: Timestamp(0),
            last_heartbeat: Some(Timestamp(7200)),
            crashes: 2,
            reverts: 1,
            quarantines: 1,
            confirmed_healthy: false,
            ..EndpointRecord::default()
        };
        a.detections.insert("r1".into(), 5);
        a.detections.insert("not-in-release".into(), 9);
        let b = EndpointRecord {
            observed_since: Timestamp(0),
            last_heartbeat: Some(Timestamp(3600)),
            confirmed_healthy: true,
            ..EndpointRecord::default()
        };
        let c = CohortObservations::aggregate([&a, &b], ["r1", "r2"], Timestamp(7200), 1800);
        assert_eq!(c.endpoints, 2);
        assert_eq!(c.exposure_secs, 10_800);
        assert_eq!(c.exposure_hours(), 3.0);
        assert_eq!((c.crashes, c.reverts, c.quarantines), (2, 1, 1));
        assert_eq!(c.silent, 1); // b: 3600 s without a heartbeat > 1800
        assert_eq!(c.confirmed_healthy, 1);
        assert_eq!(c.rules.get("r1"), Some(&5));
        assert_eq!(c.rules.get("r2"), Some(&0));
        assert_eq!(c.rules.get("not-in-release"), None);
    }
}
