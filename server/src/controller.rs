//! The controller loop: observations from the telemetry tables into
//! [`bulwark_rollout::HealthObservations`], then [`bulwark_rollout::controller::step`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bulwark_rollout::{
    controller, ChannelRollout, CohortObservations, ControllerEvent, EndpointRecord, HealthConfig,
    HealthObservations, Status, Timestamp, WaveThresholds,
};

use crate::api::{facts, persist, ApiError};
use crate::store::{ChannelData, GuardEventKind, Store};

/// The observations of `state`'s rollout in `data` at `now`.
///
/// Each endpoint heard from on the channel is placed by `thresholds` (what endpoints were told):
/// in an open wave it belongs to that wave's cohort once it has reported running the release
/// (observed from its first such heartbeat; before that it is not counted); in a wave not yet
/// open it belongs to the baseline cohort (observed from the rollout's start, on the baseline
/// release). Guard events and detections count for the cohort's release only, events from the
/// start of the observation on. Endpoints never heard from on the channel are left out.
#[must_use]
pub fn observe(
    state: &ChannelRollout,
    thresholds: &WaveThresholds,
    data: &ChannelData,
    release_rules: &[String],
    baseline_rules: &[String],
    now: Timestamp,
    config: &HealthConfig,
) -> HealthObservations {
    let version = state.release.version;
    let baseline_version = state.baseline_version;
    let started = state.opened_at(0).unwrap_or(now);
    let open = state.open_waves as usize;
    // Per endpoint: (last heartbeat, shutdown announced then, first heartbeat on the release,
    // confirmed healthy on the release).
    let mut heard: BTreeMap<&str, (u64, bool, Option<u64>, bool)> = BTreeMap::new();
    for h in &data.heartbeats {
        let e = heard
            .entry(h.endpoint_id.as_str())
            .or_insert((h.at, h.shutdown, None, false));
        if h.at >= e.0 {
            e.0 = h.at;
            e.1 = h.shutdown;
        }
        if h.content_version == version {
            e.2 = Some(e.2.map_or(h.at, |s| s.min(h.at)));
            e.3 |= h.confirmed_healthy;
        }
    }
    let mut waves: Vec<Vec<EndpointRecord>> = vec![Vec::new(); open];
    let mut baseline: Vec<EndpointRecord> = Vec::new();
    for f in facts(&data.endpoints) {
        let id = crate::util::hex(&f.id.0);
        let Some(&(last, shutdown, staged, healthy)) = heard.get(id.as_str()) else {
            continue;
        };
        let Some(wave) = thresholds.wave_of(&f) else {
            continue;
        };
        let (cohort_version, since) = if wave < open {
            match staged {
                Some(s) => (Some(version), s),
                None => continue,
            }
        } else {
            (baseline_version, started.0)
        };
        let mut r = EndpointRecord {
            observed_since: Timestamp(since),
            last_heartbeat: Some(Timestamp(last)),
            shutdown_announced: shutdown,
            confirmed_healthy: wave < open && healthy,
            ..EndpointRecord::default()
        };
        for g in data.guard_events.iter().filter(|g| {
            g.endpoint_id == id && Some(g.release_version) == cohort_version && g.at >= since
        }) {
            match g.kind {
                GuardEventKind::Crash => r.crashes = r.crashes.saturating_add(1),
                GuardEventKind::Revert => r.reverts = r.reverts.saturating_add(1),
                GuardEventKind::Quarantine => r.quarantines = r.quarantines.saturating_add(1),
            }
        }
        for d in data
            .detections
            .iter()
            .filter(|d| d.endpoint_id == id && Some(d.release_version) == cohort_version)
        {
            let n = r.detections.entry(d.rule.clone()).or_insert(0);
            *n = n.saturating_add(d.count);
        }
        if wave < open {
            if let Some(w) = waves.get_mut(wave) {
                w.push(r);
            }
        } else {
            baseline.push(r);
        }
    }
    let timeout = config.silence_timeout_secs;
    HealthObservations {
        release_version: version,
        baseline: CohortObservations::aggregate(
            &baseline,
            baseline_rules.iter().map(String::as_str),
            now,
            timeout,
        ),
        waves: waves
            .iter()
            .map(|w| {
                CohortObservations::aggregate(
                    w,
                    release_rules.iter().map(String::as_str),
                    now,
                    timeout,
                )
            })
            .collect(),
    }
}

/// One controller pass over every channel at `now`: steps each progressing or paused rollout
/// and persists (with its events, halts included) every state that changed. Returns the events
/// of the channels that changed.
pub fn tick(store: &dyn Store, now: u64) -> Result<Vec<(String, Vec<ControllerEvent>)>, ApiError> {
    let config = HealthConfig::default();
    let mut out = Vec::new();
    for row in store.rollouts()? {
        let Ok(state) = serde_json::from_str::<ChannelRollout>(&row.state) else {
            continue;
        };
        if matches!(
            state.status,
            Status::Halted { .. } | Status::Complete { .. }
        ) {
            continue;
        }
        let Ok(thresholds) = serde_json::from_str::<WaveThresholds>(&row.thresholds) else {
            continue;
        };
        let data = store.channel_data(&row.channel)?;
        let rules_of = |v: Option<u64>| -> Result<Vec<String>, ApiError> {
            Ok(match v {
                Some(v) => store
                    .release(&row.channel, v)?
                    .map(|r| r.rules)
                    .unwrap_or_default(),
                None => Vec::new(),
            })
        };
        let release_rules = rules_of(Some(state.release.version))?;
        let baseline_rules = rules_of(state.baseline_version)?;
        let ts = Timestamp(now);
        let obs = observe(
            &state,
            &thresholds,
            &data,
            &release_rules,
            &baseline_rules,
            ts,
            &config,
        );
        let (next, events) = controller::step_with(&state, &obs, ts, &config);
        if next != state {
            persist(store, &next, Some(&row.state), "controller", &events, now)?;
            out.push((row.channel, events));
        }
    }
    Ok(out)
}

/// Runs [`tick`] every `interval` until the task is dropped (errors are printed and retried).
pub async fn run(store: Arc<dyn Store>, interval: Duration) {
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        let store = store.clone();
        let result =
            tokio::task::spawn_blocking(move || tick(store.as_ref(), crate::util::now())).await;
        match result {
            Ok(Ok(changed)) => {
                for (channel, events) in changed {
                    for e in events {
                        eprintln!("controller: {channel}: {e:?}");
                    }
                }
            }
            Ok(Err(e)) => eprintln!("controller: {e:?}"),
            Err(e) => eprintln!("controller: task failed: {e}"),
        }
    }
}
