//! The controller loop: observations from the telemetry tables into
//! [`bulwark_rollout::HealthObservations`], then [`bulwark_rollout::controller::step`].
//!
//! Each tick reads, per active rollout, one snapshot of the channel: every endpoint, each one's
//! latest heartbeat, and the version records, guard events and detections of the release and
//! its baseline only ([`Store::channel_data_of`]). [`observe`] is linear in those rows (guard
//! events and detections are grouped by endpoint first). A tick also samples the version share
//! once per [`SHARE_BUCKET_SECS`] and prunes version records no rollout can read again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bulwark_rollout::{
    controller, ChannelRollout, ControllerEvent, EndpointFacts, EndpointReports, GuardReport,
    GuardReportKind, HealthConfig, HealthObservations, Status, Timestamp, WaveThresholds,
};

use crate::api::{facts, persist, ApiError};
use crate::store::{ChannelData, GuardEventKind, Store, SHARE_BUCKET_SECS, SHARE_RETENTION_SECS};

pub use bulwark_rollout::Heard;

/// Per endpoint heard from on the channel, what its heartbeats say with respect to `version`.
#[must_use]
pub fn heard(data: &ChannelData, version: u64) -> HashMap<&str, Heard> {
    let mut heard: HashMap<&str, Heard> = HashMap::with_capacity(data.heartbeats.len());
    for h in &data.heartbeats {
        let e = heard.entry(h.endpoint_id.as_str()).or_insert(Heard {
            last: h.at,
            shutdown: h.shutdown,
            staged: None,
            healthy: false,
        });
        if h.at >= e.last {
            e.last = h.at;
            e.shutdown = h.shutdown;
        }
    }
    for v in data.versions.iter().filter(|v| v.version == version) {
        if let Some(e) = heard.get_mut(v.endpoint_id.as_str()) {
            e.staged = Some(e.staged.map_or(v.first_seen, |s| s.min(v.first_seen)));
            e.healthy |= v.confirmed_healthy;
        }
    }
    heard
}

/// The observations of `state`'s rollout in `data` at `now`: the rows grouped by endpoint,
/// then [`bulwark_rollout::observe`] (see it for who counts in which cohort).
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
    let heard = heard(data, state.release.version);
    let mut events_of: HashMap<&str, Vec<GuardReport>> = HashMap::new();
    for g in &data.guard_events {
        events_of
            .entry(g.endpoint_id.as_str())
            .or_default()
            .push(GuardReport {
                release_version: g.release_version,
                kind: match g.kind {
                    GuardEventKind::Crash => GuardReportKind::Crash,
                    GuardEventKind::Revert => GuardReportKind::Revert,
                    GuardEventKind::Quarantine => GuardReportKind::Quarantine,
                    GuardEventKind::Reject => GuardReportKind::Reject,
                },
                at: g.at,
            });
    }
    let mut detections_of: HashMap<&str, Vec<(u64, &str, u64)>> = HashMap::new();
    for d in &data.detections {
        detections_of
            .entry(d.endpoint_id.as_str())
            .or_default()
            .push((d.release_version, d.rule.as_str(), d.count));
    }
    let rows: Vec<(String, EndpointFacts)> = facts(&data.endpoints)
        .into_iter()
        .map(|f| (crate::util::hex(&f.id.0), f))
        .collect();
    let reports = rows.iter().filter_map(|(id, f)| {
        let heard = *heard.get(id.as_str())?;
        Some(EndpointReports {
            wave: thresholds.wave_of(f),
            heard,
            guard_events: events_of.get(id.as_str()).map_or(&[], Vec::as_slice),
            detections: detections_of.get(id.as_str()).map_or(&[], Vec::as_slice),
        })
    });
    bulwark_rollout::observe(state, reports, release_rules, baseline_rules, now, config)
}

/// One controller pass over every channel at `now`: samples the version share (once per
/// [`SHARE_BUCKET_SECS`]), prunes the version records below each rollout's release, steps each
/// progressing or paused rollout and persists (with its events, halts included) every state
/// that changed. Returns the events of the channels that changed.
pub fn tick(store: &dyn Store, now: u64) -> Result<Vec<(String, Vec<ControllerEvent>)>, ApiError> {
    let config = HealthConfig::default();
    let bucket = now.saturating_sub(now % SHARE_BUCKET_SECS);
    store.record_version_share(bucket, bucket.saturating_sub(SHARE_RETENTION_SECS))?;
    let mut out = Vec::new();
    for row in store.rollouts()? {
        let Ok(state) = serde_json::from_str::<ChannelRollout>(&row.state) else {
            continue;
        };
        // A later rollout on the channel is of a newer version: nothing reads these again.
        store.prune_versions(&row.channel, state.release.version)?;
        if matches!(
            state.status,
            Status::Halted { .. } | Status::Complete { .. }
        ) {
            continue;
        }
        let Ok(thresholds) = serde_json::from_str::<WaveThresholds>(&row.thresholds) else {
            continue;
        };
        let versions: Vec<u64> = std::iter::once(state.release.version)
            .chain(state.baseline_version)
            .collect();
        let data = store.channel_data_of(&row.channel, Some(&versions))?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;
    use crate::store::{EndpointRow, HeartbeatRow, NewEndpoint};
    use crate::SqliteStore;

    /// What the heartbeat log said before it was replaced by bounded state: the old `observe`'s
    /// own loop over every heartbeat, oldest first.
    fn from_log(log: &[HeartbeatRow], version: u64) -> HashMap<&str, Heard> {
        let mut heard: HashMap<&str, Heard> = HashMap::new();
        for h in log {
            let e = heard.entry(h.endpoint_id.as_str()).or_insert(Heard {
                last: h.at,
                shutdown: h.shutdown,
                staged: None,
                healthy: false,
            });
            if h.at >= e.last {
                e.last = h.at;
                e.shutdown = h.shutdown;
            }
            if h.content_version == version {
                e.staged = Some(e.staged.map_or(h.at, |s| s.min(h.at)));
                e.healthy |= h.confirmed_healthy;
            }
        }
        heard
    }

    fn endpoint(i: usize) -> NewEndpoint {
        let id = format!("{i:032x}");
        NewEndpoint {
            row: EndpointRow {
                id: id.clone(),
                host_group: "g".into(),
                os_build: "1".into(),
                hw_class: "h".into(),
                enrolled_at: 0,
                last_seen: None,
            },
            token_sha256: format!("t{id}"),
        }
    }

    const ENDPOINTS: usize = 12;

    /// A pseudo-random history of (sequence number, heartbeat) in arrival order: times out of
    /// order (as from several instances), ties, versions moving back and forth, confirmations
    /// and shutdowns, two channels.
    fn history() -> Vec<(u64, HeartbeatRow)> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut seq = [0u64; ENDPOINTS];
        (0..600)
            .map(|_| {
                let e = usize::try_from(next(ENDPOINTS as u64)).unwrap();
                seq[e] += 1;
                let h = HeartbeatRow {
                    endpoint_id: endpoint(e).row.id,
                    at: 1000 + next(40),
                    channel: if next(5) == 0 { "beta" } else { "stable" }.to_owned(),
                    content_version: next(4),
                    confirmed_healthy: next(3) == 0,
                    shutdown: next(4) == 0,
                };
                (seq[e], h)
            })
            .collect()
    }

    /// The stored state says exactly what the log said, for every version.
    fn check(store: &dyn Store, history: &[(u64, HeartbeatRow)]) {
        // The old query's order: by time, then by arrival.
        let mut log: Vec<HeartbeatRow> = history.iter().map(|(_, h)| h.clone()).collect();
        log.sort_by_key(|h| h.at);
        for channel in ["stable", "beta"] {
            let on: Vec<HeartbeatRow> = log
                .iter()
                .filter(|h| h.channel == channel)
                .cloned()
                .collect();
            let data = store.channel_data(channel).unwrap();
            for version in 0..5 {
                let expected = from_log(&on, version);
                assert_eq!(heard(&data, version), expected, "{channel} v{version}");
                let only = store.channel_data_of(channel, Some(&[version])).unwrap();
                assert_eq!(
                    heard(&only, version),
                    expected,
                    "{channel} v{version} alone"
                );
            }
        }
    }

    fn record(store: &dyn Store) -> Vec<(u64, HeartbeatRow)> {
        for i in 0..ENDPOINTS {
            store.insert_endpoint(&endpoint(i)).unwrap();
        }
        let history = history();
        for (seq, h) in &history {
            store.record_heartbeat(*seq, h).unwrap();
        }
        history
    }

    #[test]
    fn bounded_state_says_what_the_log_said_sqlite() {
        let store = SqliteStore::open_in_memory().unwrap();
        let history = record(&store);
        check(&store, &history);
    }

    /// A database of the first schema, with its heartbeat log, migrated.
    #[test]
    fn the_log_is_carried_over_by_the_migration_sqlite() {
        let dir = std::env::temp_dir().join(format!("bulwark-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v1.db");
        let history = history();
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(crate::sqlite::MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            for i in 0..ENDPOINTS {
                let e = endpoint(i);
                conn.execute(
                    "INSERT INTO endpoints (id, token_sha256, host_group, os_build, hw_class,
                         enrolled_at) VALUES (?1, ?2, 'g', '1', 'h', 0)",
                    [&e.row.id, &e.token_sha256],
                )
                .unwrap();
            }
            for (_, h) in &history {
                conn.execute(
                    "INSERT INTO heartbeats (endpoint_id, at, channel, content_version,
                         confirmed_healthy, shutdown) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    rusqlite::params![
                        h.endpoint_id,
                        h.at,
                        h.channel,
                        h.content_version,
                        h.confirmed_healthy,
                        h.shutdown
                    ],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path).unwrap();
        check(&store, &history);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn postgres(test: &str) -> Option<(String, String)> {
        match std::env::var("BULWARK_TEST_POSTGRES") {
            Ok(url) if !url.is_empty() => {
                Some((url, format!("test_{test}_{}", std::process::id())))
            }
            _ => {
                eprintln!("SKIPPED {test} on PostgreSQL: BULWARK_TEST_POSTGRES is not set");
                None
            }
        }
    }

    #[test]
    fn bounded_state_says_what_the_log_said_postgres() {
        let Some((url, schema)) = postgres("bounded_state") else {
            return;
        };
        let store = crate::PostgresStore::connect_in_schema(&url, &schema).unwrap();
        store.drop_schema(&schema).unwrap();
        drop(store);
        let store = crate::PostgresStore::connect_in_schema(&url, &schema).unwrap();
        let history = record(&store);
        check(&store, &history);
        store.drop_schema(&schema).unwrap();
    }

    #[test]
    fn the_log_is_carried_over_by_the_migration_postgres() {
        let Some((url, schema)) = postgres("migrate_log") else {
            return;
        };
        let store = crate::PostgresStore::connect_in_schema(&url, &schema).unwrap();
        store.drop_schema(&schema).unwrap();
        drop(store);
        let history = history();
        // The first schema and its log, written with a plain client.
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(conn);
                    c.batch_execute(&format!(
                        "CREATE SCHEMA {schema}; SET search_path = {schema};
                         CREATE TABLE bulwark_schema_version (version BIGINT NOT NULL);
                         INSERT INTO bulwark_schema_version VALUES (1);"
                    ))
                    .await
                    .unwrap();
                    c.batch_execute(crate::postgres::MIGRATIONS[0])
                        .await
                        .unwrap();
                    for i in 0..ENDPOINTS {
                        let e = endpoint(i);
                        c.execute(
                            "INSERT INTO endpoints (id, token_sha256, host_group, os_build,
                                 hw_class, enrolled_at) VALUES ($1, $2, 'g', '1', 'h', 0)",
                            &[&e.row.id, &e.token_sha256],
                        )
                        .await
                        .unwrap();
                    }
                    for (_, h) in &history {
                        c.execute(
                            "INSERT INTO heartbeats (endpoint_id, at, channel, content_version,
                                 confirmed_healthy, shutdown) VALUES ($1, $2, $3, $4, $5, $6)",
                            &[
                                &h.endpoint_id,
                                &i64::try_from(h.at).unwrap(),
                                &h.channel,
                                &i64::try_from(h.content_version).unwrap(),
                                &h.confirmed_healthy,
                                &h.shutdown,
                            ],
                        )
                        .await
                        .unwrap();
                    }
                });
            });
        });
        let store = crate::PostgresStore::connect_in_schema(&url, &schema).unwrap();
        check(&store, &history);
        store.drop_schema(&schema).unwrap();
    }
}
