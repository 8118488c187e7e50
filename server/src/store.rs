//! Storage behind the [`Store`] trait: [`crate::sqlite::SqliteStore`] (embedded, the default) and
//! [`crate::postgres::PostgresStore`] (shared by several instances). Every method is one
//! transaction, identifiers and hashes are lowercase hex text, times are Unix seconds.
//!
//! # Bounded heartbeat state
//!
//! A fleet of 1,000,000 endpoints checking in every 5 minutes sends about 3,300 heartbeats a
//! second, 285 million a day, so heartbeats are not logged. Each one updates, in the same
//! transaction as its sequence check:
//! * `heartbeats`: one row per (channel, endpoint), the endpoint's latest heartbeat on the
//!   channel (the greatest server time; of two at the same second, the later received);
//! * `endpoint_versions`: one row per (channel, content version, endpoint): when the endpoint
//!   first reported running that version, and whether it ever confirmed healthy on it. Rows of
//!   versions below a channel's rollout release are deleted by the controller
//!   ([`Store::prune_versions`]): a new rollout is always of a newer version, so nothing reads them
//!   again. An endpoint therefore has a row for the rollout's release, for the versions above it
//!   that it ran, and nothing else;
//! * `version_share`: the dashboard's "version share over time", one row per (channel, sample
//!   time, version) with the count of endpoints whose latest heartbeat is on that version, sampled
//!   by the controller every [`SHARE_BUCKET_SECS`] and kept [`SHARE_RETENTION_SECS`].
//!
//! Everything the controller's `observe` reads is the same as with a heartbeat log: per endpoint
//! its last heartbeat and whether that announced a shutdown, and per version the first heartbeat
//! on it and whether it confirmed healthy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A release engineer's role. Permissions are distinct, not ordered: a publisher uploads
/// releases, an operator drives rollouts, and every role (viewer included) may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May upload releases (`POST /v1/releases`).
    Publisher,
    /// May start, pause, resume, halt and revert rollouts.
    Operator,
    /// May only read.
    Viewer,
}

impl Role {
    /// The role's name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    /// Parses a role name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "publisher" => Some(Role::Publisher),
            "operator" => Some(Role::Operator),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// An enrolled endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRow {
    /// Its id (32 hex digits).
    pub id: String,
    /// Its host group (for policies).
    pub host_group: String,
    /// Windows build.
    pub os_build: String,
    /// Hardware class.
    pub hw_class: String,
    /// When it enrolled.
    pub enrolled_at: u64,
    /// When it was last heard from.
    pub last_seen: Option<u64>,
}

/// One heartbeat (as received), or in [`ChannelData::heartbeats`] an endpoint's latest on the
/// channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRow {
    /// The endpoint.
    pub endpoint_id: String,
    /// When the server received it.
    pub at: u64,
    /// The channel the endpoint reports on.
    pub channel: String,
    /// The content version it runs.
    pub content_version: u64,
    /// Whether it confirmed a healthy boot or hot update on that version.
    pub confirmed_healthy: bool,
    /// Whether it announced a clean shutdown.
    pub shutdown: bool,
}

/// Kinds of guard events that count against a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardEventKind {
    /// A boot or load attempt that ended in neither a clean shutdown nor a blessing.
    Crash,
    /// A revert to last-known-good.
    Revert,
    /// The guard quarantined the candidate.
    Quarantine,
    /// The endpoint refused the release before it reached the driver (its verifier, against the
    /// running sensor's schema, or its loader); the row's `reason` says why.
    Reject,
}

impl GuardEventKind {
    /// Its name in the database.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            GuardEventKind::Crash => "crash",
            GuardEventKind::Revert => "revert",
            GuardEventKind::Quarantine => "quarantine",
            GuardEventKind::Reject => "reject",
        }
    }

    /// Parses a name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "crash" => Some(GuardEventKind::Crash),
            "revert" => Some(GuardEventKind::Revert),
            "quarantine" => Some(GuardEventKind::Quarantine),
            "reject" => Some(GuardEventKind::Reject),
            _ => None,
        }
    }
}

/// One guard event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardEventRow {
    /// The endpoint.
    pub endpoint_id: String,
    /// The channel.
    pub channel: String,
    /// The release it happened on.
    pub release_version: u64,
    /// What happened.
    pub kind: GuardEventKind,
    /// When the server received it (the endpoint's clock is not trusted).
    pub at: u64,
    /// Why, for a [`GuardEventKind::Reject`] (the endpoint's verifier or loader message); empty
    /// otherwise.
    #[serde(default)]
    pub reason: String,
}

/// One alert: a detection with its context, as the endpoint's service forwarded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRow {
    /// Its number, increasing in the order alerts were stored (0 before it is stored).
    pub id: u64,
    /// The endpoint.
    pub endpoint_id: String,
    /// The channel.
    pub channel: String,
    /// The release whose rule fired.
    pub release_version: u64,
    /// The rule's id.
    pub rule: String,
    /// The rule's level.
    pub level: String,
    /// When the server received it.
    pub received_at: u64,
    /// The alert as the endpoint sent it (JSON: title, author, time, process, command line...).
    pub body: String,
}

/// Alerts kept by the server: older ones are deleted as new ones arrive.
pub const MAX_ALERTS_KEPT: u64 = 1_000_000;

/// A telemetry batch, stored in one transaction.
#[derive(Debug, Clone, Default)]
pub struct TelemetryBatch {
    /// Guard events (rejections included).
    pub guard_events: Vec<GuardEventRow>,
    /// Detection counts.
    pub detections: Vec<DetectionRow>,
    /// Alerts with context.
    pub alerts: Vec<AlertRow>,
}

/// Detections of one rule by one endpoint on one release (counts add up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectionRow {
    /// The endpoint.
    pub endpoint_id: String,
    /// The channel.
    pub channel: String,
    /// The release.
    pub release_version: u64,
    /// The rule id.
    pub rule: String,
    /// How many.
    pub count: u64,
}

/// A published release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRow {
    /// The channel's name.
    pub channel: String,
    /// The content version.
    pub version: u64,
    /// SHA-256 of the pack (hex).
    pub pack_sha256: String,
    /// SHA-256 of the envelope (hex), its key in the envelope store.
    pub envelope_sha256: String,
    /// The pack's rule ids.
    pub rules: Vec<String>,
    /// Free text.
    pub notes: String,
    /// When it was published.
    pub published_at: u64,
    /// The token name of who published it.
    pub published_by: String,
}

/// A channel's stored rollout: the JSON of `bulwark_rollout::ChannelRollout` and of its
/// `WaveThresholds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRow {
    /// The channel.
    pub channel: String,
    /// JSON of the `ChannelRollout`.
    pub state: String,
    /// JSON of the `WaveThresholds` endpoints use to find their wave.
    pub thresholds: String,
    /// When it was last written.
    pub updated_at: u64,
}

/// An API token's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Its name (for the audit trail).
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// An endpoint's record of one content version on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRow {
    /// The endpoint.
    pub endpoint_id: String,
    /// The content version.
    pub version: u64,
    /// The server time of its first heartbeat on that version.
    pub first_seen: u64,
    /// Whether any of its heartbeats on that version confirmed healthy.
    pub confirmed_healthy: bool,
}

/// One point of the version-share series: `endpoints` had their latest heartbeat on the
/// channel on `version` at `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRow {
    /// The sample's time (a multiple of [`SHARE_BUCKET_SECS`]).
    pub at: u64,
    /// The content version.
    pub version: u64,
    /// How many endpoints.
    pub endpoints: u64,
}

/// Seconds between two samples of the version share (the check-in interval of a fleet).
pub const SHARE_BUCKET_SECS: u64 = 300;
/// How long samples of the version share are kept (14 days: 4,032 samples per channel and
/// version).
pub const SHARE_RETENTION_SECS: u64 = 14 * 24 * 3600;

/// Everything the controller needs to observe a channel.
#[derive(Debug, Clone, Default)]
pub struct ChannelData {
    /// Every endpoint.
    pub endpoints: Vec<EndpointRow>,
    /// Each endpoint's latest heartbeat on the channel (one per endpoint heard from on it).
    pub heartbeats: Vec<HeartbeatRow>,
    /// Per endpoint and content version: its first heartbeat on it, confirmed healthy (of the
    /// versions asked for, see [`Store::channel_data_of`]).
    pub versions: Vec<VersionRow>,
    /// Guard events on the channel (on the versions asked for).
    pub guard_events: Vec<GuardEventRow>,
    /// Detection counts on the channel (on the versions asked for).
    pub detections: Vec<DetectionRow>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness or precondition conflict (nothing was written).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A message's sequence number is not above the last one accepted from its endpoint.
    #[error("replayed message: sequence {seq} is not above the last accepted {last}")]
    Replayed {
        /// The message's.
        seq: u64,
        /// The last accepted.
        last: u64,
    },
    /// The row to update does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The database failed.
    #[error("database error: {0}")]
    Backend(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// A new endpoint.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    /// The row.
    pub row: EndpointRow,
    /// SHA-256 of its bearer token (hex).
    pub token_sha256: String,
}

/// The server's storage. Every method is atomic: it writes everything or nothing.
pub trait Store: Send + Sync {
    /// Adds an endpoint.
    fn insert_endpoint(&self, endpoint: &NewEndpoint) -> Result<(), StoreError>;
    /// The endpoint holding a token (by the token's SHA-256).
    fn endpoint_by_token(&self, token_sha256: &str) -> Result<Option<EndpointRow>, StoreError>;
    /// Records a heartbeat after checking that `seq` is above the endpoint's last accepted
    /// sequence number (and moves it forward): the endpoint's latest heartbeat on the channel,
    /// and its first heartbeat and healthy confirmation on the version (see the module doc).
    fn record_heartbeat(&self, seq: u64, heartbeat: &HeartbeatRow) -> Result<(), StoreError>;
    /// Records a telemetry batch in one transaction, after the same sequence check; keeps the
    /// newest [`MAX_ALERTS_KEPT`] alerts.
    fn record_telemetry(
        &self,
        endpoint_id: &str,
        seq: u64,
        at: u64,
        batch: &TelemetryBatch,
    ) -> Result<(), StoreError>;
    /// A channel's alerts with an id above `after`, oldest first, at most `limit`.
    fn alerts(&self, channel: &str, after: u64, limit: u32) -> Result<Vec<AlertRow>, StoreError>;
    /// A channel's rejections (guard events of kind [`GuardEventKind::Reject`]), of one version
    /// or all, newest first, at most `limit`.
    fn rejections(
        &self,
        channel: &str,
        version: Option<u64>,
        limit: u32,
    ) -> Result<Vec<GuardEventRow>, StoreError>;
    /// Stores an envelope by its SHA-256 and publishes a release in one transaction. A release
    /// not newer than every release already on its channel is a [`StoreError::Conflict`].
    fn publish_release(&self, release: &ReleaseRow, envelope: &[u8]) -> Result<(), StoreError>;
    /// Releases, newest first, of one channel or all.
    fn releases(&self, channel: Option<&str>) -> Result<Vec<ReleaseRow>, StoreError>;
    /// One release.
    fn release(&self, channel: &str, version: u64) -> Result<Option<ReleaseRow>, StoreError>;
    /// The highest published version on a channel.
    fn latest_version(&self, channel: &str) -> Result<Option<u64>, StoreError>;
    /// An envelope by its SHA-256 (hex).
    fn envelope(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The hashes of every stored envelope.
    fn envelope_hashes(&self) -> Result<Vec<String>, StoreError>;
    /// A channel's rollout.
    fn rollout(&self, channel: &str) -> Result<Option<RolloutRow>, StoreError>;
    /// Every channel's rollout.
    fn rollouts(&self) -> Result<Vec<RolloutRow>, StoreError>;
    /// Writes a channel's rollout and its audit events (JSON, with the actor) in one transaction.
    /// `expected_state` guards against a concurrent writer: the stored state JSON must be exactly
    /// it (or absent when `None`), else [`StoreError::Conflict`] and nothing is written.
    fn put_rollout(
        &self,
        row: &RolloutRow,
        expected_state: Option<&str>,
        actor: &str,
        events: &[String],
    ) -> Result<(), StoreError>;
    /// The audit events of a channel, oldest first: (at, actor, event JSON).
    fn rollout_events(&self, channel: &str) -> Result<Vec<(u64, String, String)>, StoreError>;
    /// Adds a release engineer's token (by its SHA-256).
    fn insert_api_token(
        &self,
        token_sha256: &str,
        token: &ApiToken,
        at: u64,
    ) -> Result<(), StoreError>;
    /// The holder of an API token.
    fn api_token(&self, token_sha256: &str) -> Result<Option<ApiToken>, StoreError>;
    /// Everything stored about a channel (every version still kept), in one snapshot.
    fn channel_data(&self, channel: &str) -> Result<ChannelData, StoreError> {
        self.channel_data_of(channel, None)
    }
    /// What the controller observes of a channel, in one snapshot: every endpoint, each one's
    /// latest heartbeat on the channel, and with `versions`, only the version records, guard
    /// events and detections of those versions (all of them with `None`).
    fn channel_data_of(
        &self,
        channel: &str,
        versions: Option<&[u64]>,
    ) -> Result<ChannelData, StoreError>;
    /// Records the version share of every channel at `at` (a sample time), unless a sample at
    /// `at` or later is already stored (so that instances sampling together write it once), and
    /// deletes the samples before `keep_since`. Returns whether it sampled.
    fn record_version_share(&self, at: u64, keep_since: u64) -> Result<bool, StoreError>;
    /// A channel's version-share samples from `since` on, oldest first.
    fn version_share(&self, channel: &str, since: u64) -> Result<Vec<ShareRow>, StoreError>;
    /// Deletes a channel's version records below `below` (see the module doc); returns how many.
    fn prune_versions(&self, channel: &str, below: u64) -> Result<u64, StoreError>;
    /// A named document (the signed metadata files, the policy table), if stored.
    fn document(&self, name: &str) -> Result<Option<DocumentRow>, StoreError>;
    /// Writes a named document if its stored version is `expected_version` (absent when
    /// `None`), else [`StoreError::Conflict`] and nothing is written; with `audit` = (channel,
    /// actor, event JSON), an audit event in the same transaction.
    fn put_document(
        &self,
        name: &str,
        row: &DocumentRow,
        expected_version: Option<u64>,
        audit: Option<(&str, &str, &str)>,
    ) -> Result<(), StoreError>;
    /// Row counts per table (for tests and the status page).
    fn table_counts(&self) -> Result<BTreeMap<String, u64>, StoreError>;
}

/// A named, versioned document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRow {
    /// Its version (each write names the version it replaces).
    pub version: u64,
    /// The text.
    pub body: String,
    /// When it was written.
    pub updated_at: u64,
}
