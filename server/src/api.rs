//! The HTTP API (see the crate doc for the reference).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bulwark_loader_boot_guard::envelope::MAX_ENVELOPE_BYTES;
use bulwark_loader_boot_guard::{open, Admission, TrustedKeys};
use bulwark_rollout::policy::ActivePin;
use bulwark_rollout::{
    controller, Census, Channel, ChannelRollout, EndpointFacts, EndpointId, Plan, Policy,
    PolicyTable, Release, Timestamp, WaveThresholds,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::metadata::{self, MetadataError, Signing};
use crate::store::{
    AlertRow, ApiToken, DetectionRow, EndpointRow, GuardEventKind, GuardEventRow, HeartbeatRow,
    NewEndpoint, ReleaseRow, Role, RolloutRow, Store, StoreError, TelemetryBatch,
};
use crate::util::{hex, random_token, sha256_hex, unhex};

/// Body limit of the small JSON requests (enrollment, heartbeat, rollout commands).
pub const SMALL_BODY_LIMIT: usize = 16 * 1024;
/// Body limit of a telemetry batch.
pub const TELEMETRY_BODY_LIMIT: usize = 1024 * 1024;
/// Most guard events, and most detection counts, in one telemetry batch.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Longest text field (facts, channel and rule names, reasons).
pub const MAX_TEXT: usize = 256;
/// Longest reason of a rejection (the endpoint's verifier or loader message).
pub const MAX_REJECTION_REASON: usize = 2048;
/// Longest context field of an alert (image, command line, user, parent image, hashes, title,
/// author). The driver's own bounds are smaller; this one keeps a batch within its body limit.
pub const MAX_ALERT_FIELD: usize = 4096;
/// Most alerts or rejections one read returns.
pub const MAX_READ_ITEMS: u32 = 1000;
/// Body limit of a release upload: the largest envelope the loader accepts.
pub const RELEASE_BODY_LIMIT: usize = MAX_ENVELOPE_BYTES;
/// Largest sequence number, version or timestamp the API takes: what both stores hold (a signed
/// 64-bit integer); above it, 400 rather than a store failure.
pub const MAX_INTEGER: u64 = i64::MAX as u64;
/// Largest detection count in one batch item (the stored sums stay far from [`MAX_INTEGER`]).
pub const MAX_DETECTION_COUNT: u64 = u32::MAX as u64;

/// A configured release channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// The channel number in envelope headers.
    pub number: u32,
    /// Critical channels cannot be paused by endpoint policies.
    pub critical: bool,
}

/// The server's configuration (the binary fills it from its flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// The secret an endpoint presents to enroll.
    pub enrollment_secret: String,
    /// The ed25519 public keys release envelopes must be signed with (besides the root's release
    /// keys when `signing` is set).
    pub trusted_keys: Vec<[u8; 32]>,
    /// The signed distribution metadata: the root and the online key that signs the rollout
    /// metadata endpoints fetch. Without it the server serves no metadata (503) and endpoints
    /// cannot take releases from it.
    pub signing: Option<Signing>,
    /// The channels, by name.
    pub channels: BTreeMap<String, ChannelConfig>,
    /// The clock every request reads (the system clock in the binary; tests fix it).
    pub clock: Clock,
}

/// Seconds since the Unix epoch, from a source the tests can control.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl Clock {
    /// The system clock.
    #[must_use]
    pub fn system() -> Self {
        Self(Arc::new(crate::util::now))
    }

    /// A clock reading `f`.
    pub fn from_fn(f: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The time.
    #[must_use]
    pub fn now(&self) -> u64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

/// State shared by the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The configuration.
    pub config: Arc<Config>,
    keys: TrustedKeys,
}

impl AppState {
    /// Checks the configuration (trusted keys) and builds the state.
    pub fn new(store: Arc<dyn Store>, config: Config) -> Result<Self, String> {
        let mut trusted = config.trusted_keys.clone();
        if let Some(signing) = &config.signing {
            for k in signing.release_keys() {
                if !trusted.contains(&k) {
                    trusted.push(k);
                }
            }
            signing
                .install_root(store.as_ref(), config.clock.now())
                .map_err(|e| format!("root metadata: {e}"))?;
        }
        let keys = TrustedKeys::new(&trusted).map_err(|e| e.to_string())?;
        if keys.is_empty() {
            return Err("no trusted release key configured".to_owned());
        }
        Ok(Self {
            store,
            config: Arc::new(config),
            keys,
        })
    }
}

/// An API error: a status and a JSON body `{"error": code, "message": text}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Option<serde_json::Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            e @ StoreError::Replayed { .. } => {
                ApiError::new(StatusCode::CONFLICT, "replayed", e.to_string())
            }
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Backend(m) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.code, "message": self.message });
        if let (Some(extra), Some(obj)) = (self.extra, body.as_object_mut()) {
            obj.insert("details".to_owned(), extra);
        }
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Runs a blocking store call off the async workers.
async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> ApiResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("worker failed: {e}"),
        )
    })?
}

/// The body, or the reason it could not be read (413 for an oversized one).
fn body_bytes(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|r| {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_body"
        };
        ApiError::new(status, code, r.body_text())
    })
}

/// Parses a JSON body (an empty body is `{}`).
fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let bytes = body_bytes(body)?;
    let text: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
    serde_json::from_slice(text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("malformed JSON body: {e}"),
        )
    })
}

fn check_text(field: &str, value: &str) -> ApiResult<()> {
    if value.is_empty() || value.len() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to {MAX_TEXT} bytes without control characters"
        )));
    }
    Ok(())
}

fn check_integer(field: &str, value: u64, max: u64) -> ApiResult<()> {
    if value > max {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {max} ({value} sent)"
        )));
    }
    Ok(())
}

/// [`Path`], refused with the API's error body (a segment that is not UTF-8 is 400
/// `bad_request`, not axum's plain text).
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(r) if r.status() == StatusCode::BAD_REQUEST => {
                Err(ApiError::bad_request(r.body_text()))
            }
            Err(r) => Err(internal(r.body_text())),
        }
    }
}

fn bearer(headers: &HeaderMap) -> ApiResult<String> {
    let missing = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "missing bearer token (Authorization: Bearer <token>)",
        )
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let token = value.strip_prefix("Bearer ").ok_or_else(missing)?.trim();
    if token.is_empty() {
        return Err(missing());
    }
    Ok(token.to_owned())
}

/// The enrolled endpoint presenting the request's token.
async fn endpoint_auth(state: &AppState, headers: &HeaderMap) -> ApiResult<EndpointRow> {
    let token = bearer(headers)?;
    let store = state.store.clone();
    let row = blocking(move || Ok(store.endpoint_by_token(&sha256_hex(token.as_bytes()))?)).await?;
    row.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "unknown endpoint token",
        )
    })
}

/// The release engineer presenting the request's token, if their role is one of `allowed`.
async fn engineer_auth(
    state: &AppState,
    headers: &HeaderMap,
    allowed: &[Role],
) -> ApiResult<ApiToken> {
    let token = bearer(headers)?;
    let store = state.store.clone();
    let holder = blocking(move || Ok(store.api_token(&sha256_hex(token.as_bytes()))?)).await?;
    let holder = holder
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "bad_token", "unknown API token"))?;
    if !allowed.contains(&holder.role) {
        let names: Vec<&str> = allowed.iter().map(|r| r.name()).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_role",
            format!(
                "token {:?} has role {}; this needs {}",
                holder.name,
                holder.role.name(),
                names.join(" or ")
            ),
        ));
    }
    Ok(holder)
}

const ANY_ROLE: &[Role] = &[Role::Publisher, Role::Operator, Role::Viewer];

fn channel_config<'a>(state: &'a AppState, channel: &str) -> ApiResult<&'a ChannelConfig> {
    state
        .config
        .channels
        .get(channel)
        .ok_or_else(|| ApiError::not_found(format!("unknown channel {channel:?}")))
}

/// The router of every `/v1` route.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/enroll",
            post(enroll).layer(DefaultBodyLimit::max(SMALL_BODY_LIMIT)),
        )
        .route(
            "/v1/heartbeat",
            post(heartbeat).layer(DefaultBodyLimit::max(SMALL_BODY_LIMIT)),
        )
        .route(
            "/v1/telemetry",
            post(telemetry).layer(DefaultBodyLimit::max(TELEMETRY_BODY_LIMIT)),
        )
        .route(
            "/v1/releases",
            post(publish)
                .layer(DefaultBodyLimit::max(RELEASE_BODY_LIMIT))
                .get(list_releases),
        )
        .route(
            "/v1/rollouts/{channel}/{command}",
            post(rollout_command).layer(DefaultBodyLimit::max(SMALL_BODY_LIMIT)),
        )
        .route("/v1/rollouts/{channel}", get(get_rollout))
        .route("/v1/alerts", get(list_alerts))
        .route("/v1/rejections", get(list_rejections))
        .route(
            "/v1/metadata/{file}",
            get(get_metadata)
                .put(put_metadata)
                .layer(DefaultBodyLimit::max(bulwark_distribution::MAX_FILE_BYTES)),
        )
        .route("/v1/policies", get(get_policies))
        .route(
            "/v1/policies/default",
            put(put_default_policy).layer(DefaultBodyLimit::max(SMALL_BODY_LIMIT)),
        )
        .route(
            "/v1/policies/{host_group}/{channel}",
            put(put_policy)
                .delete(delete_policy)
                .layer(DefaultBodyLimit::max(SMALL_BODY_LIMIT)),
        )
        .route("/v1/envelopes/{sha256}", get(get_envelope))
        .merge(crate::dashboard::routes())
        .merge(crate::openapi::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not take that method (the Allow header lists those it takes)",
            )
        })
        .with_state(state)
}

// ---- enrollment, heartbeat, telemetry ----

/// `POST /v1/enroll`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The enrollment secret.
    pub secret: String,
    /// Windows build.
    pub os_build: String,
    /// Hardware class.
    pub hw_class: String,
    /// Host group.
    pub host_group: String,
}

/// The answer to an enrollment.
#[derive(Debug, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The new endpoint's id.
    pub endpoint_id: String,
    /// Its bearer token (shown once; the server keeps only its SHA-256).
    pub token: String,
}

async fn enroll(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<EnrollResponse>> {
    let req: EnrollRequest = json_body(body)?;
    // Compare hashes so that neither the length nor the content of the secret leaks.
    let offered = sha2_digest(req.secret.as_bytes());
    let expected = sha2_digest(state.config.enrollment_secret.as_bytes());
    if !bool::from(offered.ct_eq(&expected)) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_enrollment_secret",
            "wrong enrollment secret",
        ));
    }
    check_text("os_build", &req.os_build)?;
    check_text("hw_class", &req.hw_class)?;
    check_text("host_group", &req.host_group)?;
    let id = hex(&crate::util::random_bytes::<16>().map_err(internal)?);
    let token = random_token("bwe_").map_err(internal)?;
    let endpoint = NewEndpoint {
        row: EndpointRow {
            id: id.clone(),
            host_group: req.host_group,
            os_build: req.os_build,
            hw_class: req.hw_class,
            enrolled_at: state.config.clock.now(),
            last_seen: None,
        },
        token_sha256: sha256_hex(token.as_bytes()),
    };
    let store = state.store.clone();
    blocking(move || Ok(store.insert_endpoint(&endpoint)?)).await?;
    Ok(Json(EnrollResponse {
        endpoint_id: id,
        token,
    }))
}

fn sha2_digest(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

/// `POST /v1/heartbeat`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// Strictly increasing per endpoint over heartbeats and telemetry (replays are refused).
    pub seq: u64,
    /// The channel.
    pub channel: String,
    /// The content version the endpoint runs on it.
    pub content_version: u64,
    /// Whether it confirmed a healthy boot or hot update on that version.
    #[serde(default)]
    pub confirmed_healthy: bool,
    /// Whether it is shutting down cleanly.
    #[serde(default)]
    pub shutdown: bool,
}

async fn heartbeat(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let endpoint = endpoint_auth(&state, &headers).await?;
    let req: HeartbeatRequest = json_body(body)?;
    channel_config(&state, &req.channel)?;
    check_integer("seq", req.seq, MAX_INTEGER)?;
    check_integer("content_version", req.content_version, MAX_INTEGER)?;
    let row = HeartbeatRow {
        endpoint_id: endpoint.id,
        at: state.config.clock.now(),
        channel: req.channel,
        content_version: req.content_version,
        confirmed_healthy: req.confirmed_healthy,
        shutdown: req.shutdown,
    };
    let seq = req.seq;
    let store = state.store.clone();
    blocking(move || Ok(store.record_heartbeat(seq, &row)?)).await?;
    Ok(Json(serde_json::json!({ "accepted": true })))
}

/// One guard event in a telemetry batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardEventIn {
    /// The release it happened on.
    pub release_version: u64,
    /// `crash`, `revert`, `quarantine` or `reject`.
    pub kind: GuardEventKind,
    /// Why (`reject` only: the endpoint's verifier or loader message).
    #[serde(default)]
    pub reason: Option<String>,
}

/// One alert in a telemetry batch: a detection with its context. The rule's id, title, author
/// and level come from the pack the endpoint staged (the Detection Rule License requires the
/// author); the rest from the event.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertIn {
    /// The release whose rule fired.
    pub release_version: u64,
    /// The rule's id.
    pub rule: String,
    /// The rule's title.
    pub title: String,
    /// The rule's author.
    pub author: String,
    /// The rule's level (`informational`, `low`, `medium`, `high`, `critical`).
    pub level: String,
    /// `alert` or `block`.
    pub action: String,
    /// Whether the process creation was denied.
    #[serde(default)]
    pub blocked: bool,
    /// When the event happened (endpoint clock, milliseconds since the Unix epoch).
    pub time_ms: u64,
    /// The event type (`process_creation`, ...).
    pub event_type: String,
    /// The process.
    pub process_id: u32,
    /// Its parent.
    pub parent_process_id: u32,
    /// The image path.
    #[serde(default)]
    pub image: String,
    /// The command line.
    #[serde(default)]
    pub command_line: String,
    /// The user.
    #[serde(default)]
    pub user: String,
    /// The parent's image path.
    #[serde(default)]
    pub parent_image: String,
    /// The image's hashes.
    #[serde(default)]
    pub hashes: String,
    /// The context fields the driver truncated (names).
    #[serde(default)]
    pub truncated: Vec<String>,
}

/// One detection count in a telemetry batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionIn {
    /// The release.
    pub release_version: u64,
    /// The rule id.
    pub rule: String,
    /// How many since the last batch.
    pub count: u64,
}

/// `POST /v1/telemetry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryRequest {
    /// As for heartbeats.
    pub seq: u64,
    /// The channel.
    pub channel: String,
    /// Guard events (at most [`MAX_BATCH_ITEMS`]).
    #[serde(default)]
    pub guard_events: Vec<GuardEventIn>,
    /// Detection counts (at most [`MAX_BATCH_ITEMS`]).
    #[serde(default)]
    pub detections: Vec<DetectionIn>,
    /// Alerts with context (at most [`MAX_BATCH_ITEMS`]).
    #[serde(default)]
    pub alerts: Vec<AlertIn>,
}

fn check_long_text(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.len() > max || value.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {max} bytes without NUL characters"
        )));
    }
    Ok(())
}

async fn telemetry(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let endpoint = endpoint_auth(&state, &headers).await?;
    let req: TelemetryRequest = json_body(body)?;
    channel_config(&state, &req.channel)?;
    if req.guard_events.len() > MAX_BATCH_ITEMS
        || req.detections.len() > MAX_BATCH_ITEMS
        || req.alerts.len() > MAX_BATCH_ITEMS
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "a batch holds at most {MAX_BATCH_ITEMS} guard events, {MAX_BATCH_ITEMS} detection counts and {MAX_BATCH_ITEMS} alerts ({}, {} and {} sent)",
                req.guard_events.len(),
                req.detections.len(),
                req.alerts.len()
            ),
        ));
    }
    check_integer("seq", req.seq, MAX_INTEGER)?;
    for e in &req.guard_events {
        check_integer("release_version", e.release_version, MAX_INTEGER)?;
        match (e.kind, &e.reason) {
            (GuardEventKind::Reject, Some(reason)) => {
                if reason.is_empty() {
                    return Err(ApiError::bad_request("a reject's reason must not be empty"));
                }
                check_long_text("reason", reason, MAX_REJECTION_REASON)?;
            }
            (GuardEventKind::Reject, None) => {
                return Err(ApiError::bad_request(
                    "a guard event of kind reject needs a reason",
                ))
            }
            (_, Some(_)) => {
                return Err(ApiError::bad_request(format!(
                    "only a reject has a reason (a {} was sent with one)",
                    e.kind.name()
                )))
            }
            (_, None) => {}
        }
    }
    for a in &req.alerts {
        check_integer("release_version", a.release_version, MAX_INTEGER)?;
        check_integer("time_ms", a.time_ms, MAX_INTEGER)?;
        check_text("rule", &a.rule)?;
        check_text("level", &a.level)?;
        check_text("action", &a.action)?;
        check_text("event_type", &a.event_type)?;
        for (field, value) in [
            ("title", &a.title),
            ("author", &a.author),
            ("image", &a.image),
            ("command_line", &a.command_line),
            ("user", &a.user),
            ("parent_image", &a.parent_image),
            ("hashes", &a.hashes),
        ] {
            check_long_text(field, value, MAX_ALERT_FIELD)?;
        }
        if a.truncated.len() > 16 {
            return Err(ApiError::bad_request("truncated names at most 16 fields"));
        }
        for t in &a.truncated {
            check_text("truncated", t)?;
        }
    }
    for d in &req.detections {
        check_text("rule", &d.rule)?;
        check_integer("release_version", d.release_version, MAX_INTEGER)?;
        check_integer("count", d.count, MAX_DETECTION_COUNT)?;
    }
    let at = state.config.clock.now();
    let events: Vec<GuardEventRow> = req
        .guard_events
        .iter()
        .map(|e| GuardEventRow {
            endpoint_id: endpoint.id.clone(),
            channel: req.channel.clone(),
            release_version: e.release_version,
            kind: e.kind,
            at,
            reason: e.reason.clone().unwrap_or_default(),
        })
        .collect();
    let detections: Vec<DetectionRow> = req
        .detections
        .into_iter()
        .map(|d| DetectionRow {
            endpoint_id: endpoint.id.clone(),
            channel: req.channel.clone(),
            release_version: d.release_version,
            rule: d.rule,
            count: d.count,
        })
        .collect();
    let alerts = req
        .alerts
        .iter()
        .map(|a| {
            Ok(AlertRow {
                id: 0,
                endpoint_id: endpoint.id.clone(),
                channel: req.channel.clone(),
                release_version: a.release_version,
                rule: a.rule.clone(),
                level: a.level.clone(),
                received_at: at,
                body: serde_json::to_string(a).map_err(internal)?,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let (n_events, n_detections, n_alerts) = (events.len(), detections.len(), alerts.len());
    let batch = TelemetryBatch {
        guard_events: events,
        detections,
        alerts,
    };
    let seq = req.seq;
    let store = state.store.clone();
    blocking(move || Ok(store.record_telemetry(&endpoint.id, seq, at, &batch)?)).await?;
    Ok(Json(serde_json::json!({
        "accepted": true, "guard_events": n_events, "detections": n_detections,
        "alerts": n_alerts
    })))
}

// ---- releases ----

/// Query of `POST /v1/releases`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishQuery {
    /// The channel's name (its number must match the envelope's).
    pub channel: String,
    /// Free text.
    #[serde(default)]
    pub notes: String,
}

async fn publish(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<PublishQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<ReleaseRow>> {
    let who = engineer_auth(&state, &headers, &[Role::Publisher]).await?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let envelope = body_bytes(body)?;
    let channel = channel_config(&state, &q.channel)?.clone();
    if q.notes.len() > 4096 {
        return Err(ApiError::bad_request("notes are at most 4096 bytes"));
    }
    let store = state.store.clone();
    let keys = state.keys.clone();
    let published_at = state.config.clock.now();
    let row = blocking(move || {
        let newest = store.latest_version(&q.channel)?.unwrap_or(0);
        let admission = Admission::Update {
            channel: channel.number,
            newest,
            quarantine: &[],
        };
        let opened = open(&envelope, &keys, admission).map_err(|e| ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "envelope_rejected",
            message: e.to_string(),
            extra: Some(serde_json::json!({ "loader_code": e.code() })),
        })?;
        if opened.header.version > MAX_INTEGER {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "envelope_rejected",
                format!(
                    "version {} is above {MAX_INTEGER}, the largest the server stores",
                    opened.header.version
                ),
            ));
        }
        let rules = (0..opened.pack.rule_count())
            .filter_map(|i| opened.pack.rule(i).map(|r| r.id.to_owned()))
            .collect();
        let row = ReleaseRow {
            channel: q.channel,
            version: opened.header.version,
            pack_sha256: hex(&opened.id.hash),
            envelope_sha256: sha256_hex(&envelope),
            rules,
            notes: q.notes,
            published_at,
            published_by: who.name,
        };
        store.publish_release(&row, &envelope)?;
        Ok(row)
    })
    .await?;
    Ok(Json(row))
}

/// Query of `GET /v1/releases`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this channel.
    pub channel: Option<String>,
}

async fn list_releases(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<ReleaseRow>>> {
    engineer_auth(&state, &headers, ANY_ROLE).await?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let store = state.store.clone();
    Ok(Json(
        blocking(move || Ok(store.releases(q.channel.as_deref())?)).await?,
    ))
}

// ---- alerts and rejections ----

/// Query of `GET /v1/alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// The channel.
    pub channel: String,
    /// Only alerts with a larger id (the `next` of the previous read; 0 from the start).
    #[serde(default)]
    pub after: u64,
    /// At most this many (1..=[`MAX_READ_ITEMS`], default 100).
    pub limit: Option<u32>,
}

/// One alert as `GET /v1/alerts` returns it.
#[derive(Debug, Serialize, Deserialize)]
pub struct AlertView {
    /// Its id (increasing).
    pub id: u64,
    /// The endpoint.
    pub endpoint_id: String,
    /// When the server received it.
    pub received_at: u64,
    /// What the endpoint sent.
    #[serde(flatten)]
    pub alert: AlertIn,
}

/// `GET /v1/alerts`'s answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct AlertsView {
    /// Oldest first.
    pub alerts: Vec<AlertView>,
    /// The `after` of the next read (the last id returned, or the one asked for).
    pub next: u64,
}

fn read_limit(limit: Option<u32>) -> ApiResult<u32> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > MAX_READ_ITEMS {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_READ_ITEMS} ({limit} sent)"
        )));
    }
    Ok(limit)
}

async fn list_alerts(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<AlertsView>> {
    engineer_auth(&state, &headers, ANY_ROLE).await?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_integer("after", q.after, MAX_INTEGER)?;
    let limit = read_limit(q.limit)?;
    channel_config(&state, &q.channel)?;
    let store = state.store.clone();
    let channel = q.channel.clone();
    let rows = blocking(move || Ok(store.alerts(&channel, q.after, limit)?)).await?;
    let next = rows.last().map_or(q.after, |r| r.id);
    let alerts = rows
        .into_iter()
        .map(|r| {
            Ok(AlertView {
                id: r.id,
                endpoint_id: r.endpoint_id,
                received_at: r.received_at,
                alert: serde_json::from_str(&r.body).map_err(internal)?,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(AlertsView { alerts, next }))
}

/// Query of `GET /v1/rejections`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectionsQuery {
    /// The channel.
    pub channel: String,
    /// Only this release.
    pub version: Option<u64>,
    /// At most this many (1..=[`MAX_READ_ITEMS`], default 100).
    pub limit: Option<u32>,
}

/// One rejection as `GET /v1/rejections` returns it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RejectionView {
    /// The endpoint that refused the release.
    pub endpoint_id: String,
    /// The release.
    pub release_version: u64,
    /// Its verifier's or loader's message.
    pub reason: String,
    /// When the server received it.
    pub at: u64,
}

async fn list_rejections(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RejectionsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<RejectionView>>> {
    engineer_auth(&state, &headers, ANY_ROLE).await?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(v) = q.version {
        check_integer("version", v, MAX_INTEGER)?;
    }
    let limit = read_limit(q.limit)?;
    channel_config(&state, &q.channel)?;
    let store = state.store.clone();
    let rows = blocking(move || Ok(store.rejections(&q.channel, q.version, limit)?)).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| RejectionView {
                endpoint_id: r.endpoint_id,
                release_version: r.release_version,
                reason: r.reason,
                at: r.at,
            })
            .collect(),
    ))
}

// ---- rollouts ----

/// Body of the rollout commands. `start` takes `version` and optionally `plan` (the default
/// plan otherwise); `pause` and `halt` take `reason`; `resume` and `revert` take nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// The release to roll out (`start`).
    pub version: Option<u64>,
    /// The plan (`start`).
    pub plan: Option<Plan>,
    /// Why (`pause`, `halt`).
    pub reason: Option<String>,
}

/// A channel's rollout as the API returns it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RolloutView {
    /// The state.
    pub state: ChannelRollout,
    /// The wave thresholds endpoints use.
    pub thresholds: WaveThresholds,
    /// What the last command or step did (`GET` returns the whole audit log instead).
    pub events: Vec<serde_json::Value>,
}

/// The endpoints' facts, for the census.
pub(crate) fn facts(endpoints: &[EndpointRow]) -> Vec<EndpointFacts> {
    endpoints
        .iter()
        .filter_map(|e| {
            let id: [u8; 16] = unhex(&e.id)?.try_into().ok()?;
            Some(EndpointFacts {
                id: EndpointId(id),
                os_build: e.os_build.clone(),
                hw_class: e.hw_class.clone(),
                host_group: e.host_group.clone(),
            })
        })
        .collect()
}

/// Computes the thresholds of `state` over the current census and writes both, with the events,
/// if nobody changed the rollout since `previous` was read.
pub(crate) fn persist(
    store: &dyn Store,
    state: &ChannelRollout,
    previous: Option<&str>,
    actor: &str,
    events: &[bulwark_rollout::ControllerEvent],
    at: u64,
) -> Result<RolloutRow, ApiError> {
    let data = store.channel_data(&state.channel.name)?;
    let census = Census::from_endpoints(&state.channel.name, facts(&data.endpoints).iter());
    let thresholds =
        WaveThresholds::compute(&state.plan, &census, &state.channel.name).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "thresholds",
                e.to_string(),
            )
        })?;
    let row = RolloutRow {
        channel: state.channel.name.clone(),
        state: serde_json::to_string(state).map_err(internal)?,
        thresholds: serde_json::to_string(&thresholds).map_err(internal)?,
        updated_at: at,
    };
    let events: Vec<String> = events
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()
        .map_err(internal)?;
    store.put_rollout(&row, previous, actor, &events)?;
    Ok(row)
}

fn view(row: &RolloutRow, events: Vec<serde_json::Value>) -> ApiResult<RolloutView> {
    Ok(RolloutView {
        state: serde_json::from_str(&row.state).map_err(internal)?,
        thresholds: serde_json::from_str(&row.thresholds).map_err(internal)?,
        events,
    })
}

async fn rollout_command(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((channel, command)): ApiPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<RolloutView>> {
    if !matches!(
        command.as_str(),
        "start" | "pause" | "resume" | "halt" | "revert"
    ) {
        return Err(ApiError::not_found(format!(
            "unknown rollout command {command:?} (start, pause, resume, halt, revert)"
        )));
    }
    let who = engineer_auth(&state, &headers, &[Role::Operator]).await?;
    let req: CommandRequest = json_body(body)?;
    let config = channel_config(&state, &channel)?.clone();
    let store = state.store.clone();
    let signing = state.config.signing.clone();
    let at = state.config.clock.now();
    let view = blocking(move || {
        let ts = Timestamp(at);
        let previous = store.rollout(&channel)?;
        let current: Option<ChannelRollout> = previous
            .as_ref()
            .map(|r| serde_json::from_str(&r.state))
            .transpose()
            .map_err(internal)?;
        let refused = |e: controller::CommandError| {
            ApiError::new(StatusCode::CONFLICT, "command_refused", e.to_string())
        };
        let no_rollout = || ApiError::not_found(format!("channel {channel:?} has no rollout"));
        let reason = || {
            let r = req
                .reason
                .clone()
                .ok_or_else(|| ApiError::bad_request(format!("{command} needs a \"reason\"")))?;
            check_text("reason", &r)?;
            Ok::<_, ApiError>(r)
        };
        let (next, events) = match command.as_str() {
            "start" => {
                let version = req
                    .version
                    .ok_or_else(|| ApiError::bad_request("start needs a \"version\""))?;
                check_integer("version", version, MAX_INTEGER)?;
                let release = store.release(&channel, version)?.ok_or_else(|| {
                    ApiError::not_found(format!("no release {version} on channel {channel:?}"))
                })?;
                let release = Release {
                    channel: channel.clone(),
                    version,
                    pack_hash: to_hash(&release.pack_sha256)?,
                    envelope_sha256: to_hash(&release.envelope_sha256)?,
                    notes: release.notes,
                };
                if let Some(signing) = &signing {
                    if !signing
                        .is_listed(store.as_ref(), &channel, version)
                        .map_err(metadata_error)?
                    {
                        return Err(ApiError::new(
                            StatusCode::CONFLICT,
                            "not_in_releases_metadata",
                            format!(
                                "release {version} of channel {channel:?} is not in the releases \
                                 metadata signed by the release keys; endpoints would refuse it \
                                 (upload releases.json listing it first)"
                            ),
                        ));
                    }
                }
                let plan = req.plan.clone().unwrap_or_else(Plan::default_plan);
                controller::start(
                    Channel::new(&channel, config.critical),
                    release,
                    plan,
                    current.as_ref(),
                    ts,
                )
                .map_err(refused)?
            }
            "pause" => controller::pause(current.as_ref().ok_or_else(no_rollout)?, &reason()?, ts)
                .map_err(refused)?,
            "resume" => {
                controller::resume(current.as_ref().ok_or_else(no_rollout)?, ts).map_err(refused)?
            }
            "halt" => controller::halt(current.as_ref().ok_or_else(no_rollout)?, &reason()?, ts)
                .map_err(refused)?,
            _ => {
                controller::revert(current.as_ref().ok_or_else(no_rollout)?, ts).map_err(refused)?
            }
        };
        let actor = format!("{} ({})", who.name, who.role.name());
        let row = persist(
            store.as_ref(),
            &next,
            previous.as_ref().map(|r| r.state.as_str()),
            &actor,
            &events,
            at,
        )?;
        if let Some(signing) = &signing {
            signing
                .refresh_rollout(store.as_ref(), at)
                .map_err(metadata_error)?;
        }
        let events = events
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()
            .map_err(internal)?;
        view(&row, events)
    })
    .await?;
    Ok(Json(view))
}

fn to_hash(h: &str) -> ApiResult<[u8; 32]> {
    unhex(h)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| internal(format!("stored hash {h:?} is not 32 bytes of hex")))
}

async fn get_rollout(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(channel): ApiPath<String>,
) -> ApiResult<Json<RolloutView>> {
    engineer_auth(&state, &headers, ANY_ROLE).await?;
    channel_config(&state, &channel)?;
    let store = state.store.clone();
    let view = blocking(move || {
        let row = store
            .rollout(&channel)?
            .ok_or_else(|| ApiError::not_found(format!("channel {channel:?} has no rollout")))?;
        let events = store
            .rollout_events(&channel)?
            .into_iter()
            .map(|(at, actor, event)| {
                let event: serde_json::Value = serde_json::from_str(&event).map_err(internal)?;
                Ok(serde_json::json!({ "at": at, "actor": actor, "event": event }))
            })
            .collect::<ApiResult<_>>()?;
        view(&row, events)
    })
    .await?;
    Ok(Json(view))
}

// ---- the static fetch path: signed metadata and envelopes ----

/// The API error for a metadata refusal.
pub(crate) fn metadata_error(e: MetadataError) -> ApiError {
    match e {
        MetadataError::Refused(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "metadata_refused",
            e.to_string(),
        ),
        MetadataError::Unpublished(m) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unpublished_release", m)
        }
        MetadataError::NoReleases => {
            ApiError::new(StatusCode::CONFLICT, "no_releases_metadata", e.to_string())
        }
        MetadataError::Store(e) => e.into(),
        e @ (MetadataError::Config(_) | MetadataError::Corrupt(..)) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    }
}

fn no_signing() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_metadata",
        "this server signs no distribution metadata (start it with --root and --online-key)",
    )
}

/// `GET /v1/metadata/{root,releases,rollout}.json`: the signed files, as stored (public: the
/// endpoints verify them).
async fn get_metadata(
    State(state): State<AppState>,
    ApiPath(file): ApiPath<String>,
) -> ApiResult<Response> {
    let name = match file.as_str() {
        "root.json" => metadata::ROOT,
        "releases.json" => metadata::RELEASES,
        "rollout.json" => metadata::ROLLOUT,
        _ => {
            return Err(ApiError::not_found(format!(
                "no metadata file {file:?} (root.json, releases.json, rollout.json)"
            )))
        }
    };
    if state.config.signing.is_none() {
        return Err(no_signing());
    }
    let store = state.store.clone();
    let doc = blocking(move || Ok(store.document(name)?))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no {name} yet")))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        doc.body,
    )
        .into_response())
}

/// `PUT /v1/metadata/releases.json`: a publisher uploads the releases metadata signed by the
/// release keys (listing only envelopes published here); the rollout file is re-signed.
async fn put_metadata(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(file): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    match file.as_str() {
        "releases.json" => {}
        "root.json" | "rollout.json" => {
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "read_only",
                format!("{file} cannot be uploaded (only releases.json)"),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
            return Ok(response);
        }
        _ => {
            return Err(ApiError::not_found(format!(
                "no metadata file {file:?} (root.json, releases.json, rollout.json)"
            )))
        }
    }
    let who = engineer_auth(&state, &headers, &[Role::Publisher]).await?;
    let bytes = body_bytes(body)?;
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::bad_request("releases.json is not UTF-8"))?;
    let signing = state.config.signing.clone().ok_or_else(no_signing)?;
    let store = state.store.clone();
    let at = state.config.clock.now();
    let actor = format!("{} ({})", who.name, who.role.name());
    let version = blocking(move || {
        let version = signing
            .upload_releases(store.as_ref(), &text, at, &actor)
            .map_err(metadata_error)?;
        signing
            .refresh_rollout(store.as_ref(), at)
            .map_err(metadata_error)?;
        Ok(version)
    })
    .await?;
    Ok(Json(serde_json::json!({ "releases_version": version })).into_response())
}

// ---- endpoint policies ----

/// `GET /v1/policies`: the table and the pins in force.
#[derive(Debug, Serialize, Deserialize)]
pub struct PoliciesView {
    /// The policy of every (host group, channel) without an entry.
    pub default: Policy,
    /// The entries.
    pub entries: Vec<bulwark_rollout::policy::PolicyEntry>,
    /// The pins in force now (lapsed pins are not listed).
    pub active_pins: Vec<ActivePin>,
}

fn policies_view(table: PolicyTable, now: u64) -> PoliciesView {
    PoliciesView {
        active_pins: table.active_pins(Timestamp(now)),
        default: table.default,
        entries: table.entries,
    }
}

async fn get_policies(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<PoliciesView>> {
    engineer_auth(&state, &headers, ANY_ROLE).await?;
    let store = state.store.clone();
    let now = state.config.clock.now();
    let table = blocking(move || {
        Ok(metadata::stored_policies(store.as_ref())
            .map_err(metadata_error)?
            .0)
    })
    .await?;
    Ok(Json(policies_view(table, now)))
}

/// Changes the policy table with `change`, validates it against the configured channels (and,
/// when signing, against the releases metadata as endpoints will), stores it with an audit event
/// and re-signs the rollout.
async fn change_policies(
    state: AppState,
    who: ApiToken,
    audit_channel: String,
    event: serde_json::Value,
    change: impl FnOnce(&mut PolicyTable) + Send + 'static,
) -> ApiResult<Json<PoliciesView>> {
    let store = state.store.clone();
    let signing = state.config.signing.clone();
    let channels: Vec<Channel> = state
        .config
        .channels
        .iter()
        .map(|(name, c)| Channel::new(name, c.critical))
        .collect();
    let at = state.config.clock.now();
    let actor = format!("{} ({})", who.name, who.role.name());
    let table = blocking(move || {
        let (mut table, version) =
            metadata::stored_policies(store.as_ref()).map_err(metadata_error)?;
        change(&mut table);
        table.validate(&channels).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_policy",
                e.to_string(),
            )
        })?;
        if let Some(signing) = &signing {
            signing
                .check_policies(store.as_ref(), &table)
                .map_err(metadata_error)?;
        }
        let row = crate::store::DocumentRow {
            version: version.map_or(1, |v| v.saturating_add(1)),
            body: serde_json::to_string(&table).map_err(internal)?,
            updated_at: at,
        };
        let event = serde_json::json!({ "policy": event }).to_string();
        store.put_document(
            metadata::POLICIES,
            &row,
            version,
            Some((&audit_channel, &actor, &event)),
        )?;
        if let Some(signing) = &signing {
            signing
                .refresh_rollout(store.as_ref(), at)
                .map_err(metadata_error)?;
        }
        Ok(table)
    })
    .await?;
    Ok(Json(policies_view(table, at)))
}

async fn put_default_policy(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<PoliciesView>> {
    let who = engineer_auth(&state, &headers, &[Role::Operator]).await?;
    let policy: Policy = json_body(body)?;
    let event = serde_json::json!({ "default": policy });
    change_policies(state, who, "*".to_owned(), event, move |t| {
        t.default = policy;
    })
    .await
}

async fn put_policy(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((host_group, channel)): ApiPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<PoliciesView>> {
    let who = engineer_auth(&state, &headers, &[Role::Operator]).await?;
    check_text("host group", &host_group)?;
    channel_config(&state, &channel)?;
    let policy: Policy = json_body(body)?;
    let event = serde_json::json!({ "host_group": host_group, "set": policy });
    let ch = channel.clone();
    change_policies(state, who, channel, event, move |t| {
        t.set(&host_group, &ch, policy);
    })
    .await
}

async fn delete_policy(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((host_group, channel)): ApiPath<(String, String)>,
) -> ApiResult<Json<PoliciesView>> {
    let who = engineer_auth(&state, &headers, &[Role::Operator]).await?;
    check_text("host group", &host_group)?;
    channel_config(&state, &channel)?;
    let event = serde_json::json!({ "host_group": host_group, "removed": true });
    let ch = channel.clone();
    change_policies(state, who, channel, event, move |t| {
        t.entries
            .retain(|e| !(e.host_group == host_group && e.channel == ch));
    })
    .await
}

/// Whether `s` is a lowercase hex SHA-256.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

async fn get_envelope(
    State(state): State<AppState>,
    ApiPath(sha256): ApiPath<String>,
) -> ApiResult<Response> {
    if !is_sha256_hex(&sha256) {
        return Err(ApiError::bad_request(
            "an envelope is named by its SHA-256: 64 lowercase hex digits",
        ));
    }
    let store = state.store.clone();
    let key = sha256.clone();
    let bytes = blocking(move || Ok(store.envelope(&key)?))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no envelope {sha256}")))?;
    let etag = HeaderValue::from_str(&format!("\"{sha256}\"")).map_err(internal)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
            (header::ETAG, etag),
        ],
        bytes,
    )
        .into_response())
}
