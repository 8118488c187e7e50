//! The dashboard: one page (`GET /dashboard`, with its script and style sheet, all embedded in
//! the binary and public) that reads `GET /v1/dashboard/summary` (any role, viewer included)
//! every few seconds and draws it.
//!
//! The summary is computed from the store on each request, read-only:
//! * per channel, its releases (newest first, at most [`MAX_RELEASES`]);
//! * its rollout: status, and per wave whether it is open, the bake time left, healthy
//!   confirmations against those needed, the cohort's counts and each test's verdict, from the
//!   same observations and analysis the controller uses (`controller::observe`, which calls `bulwark_rollout::observe`, then
//!   `bulwark_rollout::analyze`) at the server's clock;
//! * every halt in the channel's audit log, with its reason (an operator's words, or the failed
//!   tests with their numbers);
//! * the share of endpoints per content version over time: each endpoint counts for the version
//!   of its latest heartbeat at each sample. The samples are those the controller stores every
//!   [`crate::store::SHARE_BUCKET_SECS`] (at most [`MAX_SAMPLES`] - 1 of them, evenly picked
//!   from the retained history), then one taken now from the latest heartbeats.
//!
//! * the pins in force (`pins.active`): the operators' policy table's pins that have not lapsed
//!   at the server's clock, with the number of policy entries (`pins.entries`).

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bulwark_rollout::health::ExposureUnit;
use bulwark_rollout::state::HaltCause;
use bulwark_rollout::{
    analyze, ChannelRollout, ControllerEvent, HaltRecord, HealthConfig, Outcome, Status,
    TestVerdict, Timestamp, WaveThresholds,
};
use serde::Serialize;
use serde_json::{json, Value};

use crate::api::AppState;
use crate::store::{ChannelData, ShareRow, Store, StoreError, SHARE_RETENTION_SECS};
use crate::util::sha256_hex;

/// Most releases listed per channel.
pub const MAX_RELEASES: usize = 20;
/// Most samples of the version-share series per channel.
pub const MAX_SAMPLES: usize = 48;
/// Most audit events listed per channel (the newest).
pub const MAX_EVENTS: usize = 30;

const HTML: &str = include_str!("../assets/dashboard.html");
const JS: &str = include_str!("../assets/dashboard.js");
const CSS: &str = include_str!("../assets/dashboard.css");

/// The dashboard's routes (merged into [`crate::api::router`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/dashboard.js", get(script))
        .route("/dashboard/dashboard.css", get(style))
        .route("/v1/dashboard/summary", get(summary))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                     img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                ),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": code, "message": message.into() })),
    )
        .into_response()
}

fn backend(e: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

/// `GET /v1/dashboard/summary`: any API token (viewer, operator, publisher).
async fn summary(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let Some(token) = token else {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "missing bearer token (Authorization: Bearer <token>)",
        );
    };
    let store = state.store.clone();
    let channels: Vec<(String, bool)> = state
        .config
        .channels
        .iter()
        .map(|(name, c)| (name.clone(), c.critical))
        .collect();
    let now = state.config.clock.now();
    let result = tokio::task::spawn_blocking(move || -> Result<Option<Value>, StoreError> {
        if store.api_token(&sha256_hex(token.as_bytes()))?.is_none() {
            return Ok(None);
        }
        build(store.as_ref(), &channels, now).map(Some)
    })
    .await;
    match result {
        Ok(Ok(Some(body))) => {
            let mut r = Json(body).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Ok(Ok(None)) => error(StatusCode::UNAUTHORIZED, "bad_token", "unknown API token"),
        Ok(Err(e)) => backend(e),
        Err(e) => backend(format!("worker failed: {e}")),
    }
}

/// The whole summary at `now`.
pub fn build(
    store: &dyn Store,
    channels: &[(String, bool)],
    now: u64,
) -> Result<Value, StoreError> {
    let mut out = Vec::new();
    for (name, critical) in channels {
        out.push(channel_summary(store, name, *critical, now)?);
    }
    let (policies, _) = crate::metadata::stored_policies(store).map_err(|e| match e {
        crate::metadata::MetadataError::Store(e) => e,
        e => StoreError::Backend(e.to_string()),
    })?;
    Ok(json!({
        "now": now,
        "pins": {
            "active": policies.active_pins(bulwark_rollout::Timestamp(now)),
            "entries": policies.entries.len(),
        },
        "channels": out,
    }))
}

#[derive(Serialize)]
struct WaveSummary {
    index: usize,
    name: String,
    fraction_ppm: u32,
    bake_secs: u64,
    min_healthy: u32,
    open: bool,
    opened_at: Option<u64>,
    bake_remaining_secs: Option<u64>,
    confirmed_healthy: Option<u64>,
    endpoints: Option<u64>,
    exposure_hours: Option<f64>,
    crashes: Option<u64>,
    reverts: Option<u64>,
    quarantines: Option<u64>,
    silent: Option<u64>,
    verdicts: Vec<Value>,
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Hold => "hold",
        Outcome::Fail => "fail",
    }
}

fn verdict_json(v: &TestVerdict) -> Value {
    json!({
        "test": v.test,
        "wave": v.wave,
        "wave_name": v.wave_name,
        "rule": v.rule,
        "new_count": v.new_count,
        "new_exposure": finite(v.new_exposure),
        "base_count": v.base_count,
        "base_exposure": finite(v.base_exposure),
        "unit": match v.unit {
            ExposureUnit::EndpointHours => "endpoint-hours",
            ExposureUnit::Endpoints => "endpoints",
        },
        "p_value": v.p_value.and_then(finite),
        "halt_below": v.halt_below.and_then(finite),
        "ceiling": v.ceiling,
        "outcome": outcome_name(v.outcome),
        "reason": v.reason,
    })
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// A halt's reason in words.
fn halt_reason(record: &HaltRecord) -> String {
    match &record.cause {
        HaltCause::Operator { reason } => format!("halted by an operator: {reason}"),
        HaltCause::Automatic { failed } => {
            let parts: Vec<String> = failed
                .iter()
                .map(|v| {
                    let rule = v
                        .rule
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default();
                    format!(
                        "{}{rule} failed in wave {} ({}): {}",
                        v.test, v.wave, v.wave_name, v.reason
                    )
                })
                .collect();
            if parts.is_empty() {
                "halted by the controller".to_owned()
            } else {
                format!("halted by the controller: {}", parts.join("; "))
            }
        }
    }
}

fn halt_json(version: Option<u64>, actor: &str, record: &HaltRecord) -> Value {
    let (cause, failed) = match &record.cause {
        HaltCause::Operator { .. } => ("operator", Vec::new()),
        HaltCause::Automatic { failed } => ("automatic", failed.iter().map(verdict_json).collect()),
    };
    json!({
        "at": record.at.0,
        "version": version,
        "actor": actor,
        "open_waves": record.open_waves,
        "cause": cause,
        "reason": halt_reason(record),
        "failed": failed,
    })
}

fn channel_summary(
    store: &dyn Store,
    channel: &str,
    critical: bool,
    now: u64,
) -> Result<Value, StoreError> {
    let mut releases = store.releases(Some(channel))?;
    releases.truncate(MAX_RELEASES);
    let stored = store.rollout(channel)?;
    let parsed = stored.as_ref().map(|row| {
        (
            serde_json::from_str::<ChannelRollout>(&row.state),
            serde_json::from_str::<WaveThresholds>(&row.thresholds),
        )
    });
    // The records of the rollout's release and baseline only (of none without a rollout).
    let versions: Vec<u64> = match &parsed {
        Some((Ok(state), _)) => std::iter::once(state.release.version)
            .chain(state.baseline_version)
            .collect(),
        _ => Vec::new(),
    };
    let data = store.channel_data_of(channel, Some(&versions))?;

    // Halts and recent events from the audit log; `Started` tells which release each is about.
    let mut halts = Vec::new();
    let mut events = Vec::new();
    let mut version = None;
    for (at, actor, text) in store.rollout_events(channel)? {
        let Ok(event) = serde_json::from_str::<ControllerEvent>(&text) else {
            continue;
        };
        match &event {
            ControllerEvent::Started { version: v, .. } => version = Some(*v),
            ControllerEvent::Halted { record } => halts.push(halt_json(version, &actor, record)),
            _ => {}
        }
        events.push(json!({
            "at": at,
            "actor": actor,
            "version": version,
            "text": event_text(&event),
        }));
    }
    halts.reverse();
    let skip = events.len().saturating_sub(MAX_EVENTS);
    let mut events: Vec<Value> = events.into_iter().skip(skip).collect();
    events.reverse();

    let rollout = match parsed {
        Some((Ok(state), Ok(thresholds))) => {
            Some(rollout_summary(store, &state, &thresholds, &data, now)?)
        }
        Some(_) => Some(json!({ "error": "the stored rollout could not be read" })),
        None => None,
    };
    let history = store.version_share(channel, now.saturating_sub(SHARE_RETENTION_SECS))?;

    Ok(json!({
        "name": channel,
        "critical": critical,
        "releases": releases,
        "rollout": rollout,
        "halts": halts,
        "events": events,
        "version_share": version_share(&history, &data, now),
    }))
}

fn event_text(e: &ControllerEvent) -> String {
    match e {
        ControllerEvent::Started {
            version,
            baseline_version,
            ..
        } => match baseline_version {
            Some(b) => format!("started release {version} (baseline {b})"),
            None => format!("started release {version} (no baseline)"),
        },
        ControllerEvent::WaveOpened {
            wave,
            name,
            fraction_ppm,
            ..
        } => format!(
            "opened wave {wave} ({name}, {}% of the fleet)",
            f64::from(*fraction_ppm) / 10_000.0
        ),
        ControllerEvent::Held { wave, reasons } => {
            format!("held at wave {wave}: {}", reasons.join("; "))
        }
        ControllerEvent::Halted { record } => halt_reason(record),
        ControllerEvent::Completed { .. } => "completed".to_owned(),
        ControllerEvent::Paused { reason, .. } => format!("paused: {reason}"),
        ControllerEvent::Resumed { .. } => "resumed".to_owned(),
        ControllerEvent::RevertOrdered { version, .. } => {
            format!("ordered endpoints on release {version} back to their last-known-good")
        }
    }
}

fn rollout_summary(
    store: &dyn Store,
    state: &ChannelRollout,
    thresholds: &WaveThresholds,
    data: &ChannelData,
    now: u64,
) -> Result<Value, StoreError> {
    let config = HealthConfig::default();
    let rules_of = |v: Option<u64>| -> Result<Vec<String>, StoreError> {
        Ok(match v {
            Some(v) => store
                .release(&state.channel.name, v)?
                .map(|r| r.rules)
                .unwrap_or_default(),
            None => Vec::new(),
        })
    };
    let obs = crate::controller::observe(
        state,
        thresholds,
        data,
        &rules_of(Some(state.release.version))?,
        &rules_of(state.baseline_version)?,
        Timestamp(now),
        &config,
    );
    let open = state.open_waves as usize;
    let report = analyze(&obs, &state.plan, open, &config);
    let waves: Vec<WaveSummary> = state
        .plan
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let opened_at = state.opened_at(i).map(|t| t.0);
            let cohort = obs.waves.get(i).filter(|_| i < open);
            WaveSummary {
                index: i,
                name: w.name.clone(),
                fraction_ppm: w.fraction_ppm,
                bake_secs: w.bake_secs,
                min_healthy: w.min_healthy,
                open: i < open,
                opened_at,
                bake_remaining_secs: opened_at
                    .map(|t| t.saturating_add(w.bake_secs).saturating_sub(now)),
                confirmed_healthy: cohort.map(|c| c.confirmed_healthy),
                endpoints: cohort.map(|c| c.endpoints),
                exposure_hours: cohort.and_then(|c| finite(c.exposure_hours())),
                crashes: cohort.map(|c| c.crashes),
                reverts: cohort.map(|c| c.reverts),
                quarantines: cohort.map(|c| c.quarantines),
                silent: cohort.map(|c| c.silent),
                verdicts: report
                    .verdicts
                    .iter()
                    .filter(|v| v.wave == i)
                    .map(verdict_json)
                    .collect(),
            }
        })
        .collect();
    let (status, detail) = match &state.status {
        Status::Progressing => ("progressing", Value::Null),
        Status::Paused { at, reason } => ("paused", json!({ "at": at.0, "reason": reason })),
        Status::Halted { halt } => ("halted", halt_json(Some(state.release.version), "", halt)),
        Status::Complete { at } => ("complete", json!({ "at": at.0 })),
    };
    Ok(json!({
        "version": state.release.version,
        "baseline_version": state.baseline_version,
        "revision": state.revision,
        "status": status,
        "status_detail": detail,
        "revert": state.revert,
        "open_waves": state.open_waves,
        "health": {
            "outcome": outcome_name(report.outcome),
            "baseline": {
                "endpoints": obs.baseline.endpoints,
                "exposure_hours": finite(obs.baseline.exposure_hours()),
                "crashes": obs.baseline.crashes,
                "reverts": obs.baseline.reverts,
                "quarantines": obs.baseline.quarantines,
            },
        },
        "waves": waves,
    }))
}

/// The count of endpoints per content version at up to [`MAX_SAMPLES`] times: up to
/// `MAX_SAMPLES - 1` of the stored samples before `now` (evenly spread, the newest included),
/// then the latest heartbeats' versions at `now`.
fn version_share(history: &[ShareRow], data: &ChannelData, now: u64) -> Value {
    let mut stored: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
    for r in history.iter().filter(|r| r.at < now) {
        stored
            .entry(r.at)
            .or_default()
            .insert(r.version.to_string(), r.endpoints);
    }
    let mut versions: BTreeSet<u64> = history.iter().map(|r| r.version).collect();
    let mut current: BTreeMap<String, u64> = BTreeMap::new();
    for h in &data.heartbeats {
        versions.insert(h.content_version);
        *current.entry(h.content_version.to_string()).or_insert(0) += 1;
    }
    let times: Vec<u64> = stored.keys().copied().collect();
    let keep = MAX_SAMPLES.saturating_sub(1);
    let picked: BTreeSet<usize> = if times.len() <= keep {
        (0..times.len()).collect()
    } else {
        // `keep` indices from 0 to the last, evenly spaced.
        let last = times.len().saturating_sub(1);
        (0..keep)
            .map(|i| i * last / keep.saturating_sub(1).max(1))
            .collect()
    };
    let mut samples: Vec<Value> = picked
        .into_iter()
        .filter_map(|i| times.get(i))
        .map(|t| json!({ "at": t, "counts": stored.get(t) }))
        .collect();
    if !current.is_empty() {
        samples.push(json!({ "at": now, "counts": current }));
    }
    json!({ "versions": versions.into_iter().collect::<Vec<_>>(), "samples": samples })
}
