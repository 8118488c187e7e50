//! The embedded [`Store`]: one SQLite file in WAL mode, migrated on open.
//!
//! Writes go through one connection (SQLite serialises writers anyway); reads through a few
//! read-only connections of their own, so that a long read (the controller's snapshot of a large
//! fleet) never holds up heartbeats: in WAL mode readers and the writer do not block each other.
//! An in-memory database has only the one connection.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};

use crate::store::{AlertRow, MAX_ALERTS_KEPT};
use crate::store::{
    ApiToken, ChannelData, DetectionRow, DocumentRow, EndpointRow, GuardEventKind, GuardEventRow,
    HeartbeatRow, NewEndpoint, ReleaseRow, Role, RolloutRow, ShareRow, Store, StoreError,
    TelemetryBatch, VersionRow,
};

/// Read-only connections of a file database.
const READERS: usize = 3;

/// Rows deleted per transaction by [`Store::prune_versions`] (the writer is released between).
const PRUNE_BATCH: i64 = 5000;

/// The migrations, in order; `PRAGMA user_version` is the number applied.
pub(crate) const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE endpoints (
    id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    host_group TEXT NOT NULL,
    os_build TEXT NOT NULL,
    hw_class TEXT NOT NULL,
    enrolled_at INTEGER NOT NULL,
    last_seen INTEGER,
    last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE envelopes (
    sha256 TEXT PRIMARY KEY,
    bytes BLOB NOT NULL,
    stored_at INTEGER NOT NULL
);
CREATE TABLE releases (
    channel TEXT NOT NULL,
    version INTEGER NOT NULL,
    pack_sha256 TEXT NOT NULL,
    envelope_sha256 TEXT NOT NULL REFERENCES envelopes(sha256),
    rules TEXT NOT NULL,
    notes TEXT NOT NULL,
    published_at INTEGER NOT NULL,
    published_by TEXT NOT NULL,
    PRIMARY KEY (channel, version)
);
CREATE TABLE heartbeats (
    id INTEGER PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id),
    at INTEGER NOT NULL,
    channel TEXT NOT NULL,
    content_version INTEGER NOT NULL,
    confirmed_healthy INTEGER NOT NULL,
    shutdown INTEGER NOT NULL
);
CREATE INDEX heartbeats_by_channel ON heartbeats (channel, at);
CREATE TABLE guard_events (
    id INTEGER PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id),
    channel TEXT NOT NULL,
    release_version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX guard_events_by_channel ON guard_events (channel, release_version);
CREATE TABLE detections (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id),
    channel TEXT NOT NULL,
    release_version INTEGER NOT NULL,
    rule TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, channel, release_version, rule)
);
CREATE TABLE rollouts (
    channel TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    thresholds TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE rollout_events (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE TABLE api_tokens (
    token_sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE documents (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
",
    // 2: bounded heartbeat state instead of a log of every heartbeat (see `crate::store`): the
    // latest heartbeat per (channel, endpoint), the first heartbeat and healthy confirmation per
    // (channel, version, endpoint), and the sampled version share. The log's content is carried over.
    r"
CREATE INDEX heartbeats_latest_first ON heartbeats (channel, endpoint_id, at DESC, id DESC);
CREATE TABLE heartbeats_latest (
    channel TEXT NOT NULL,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id),
    at INTEGER NOT NULL,
    content_version INTEGER NOT NULL,
    confirmed_healthy INTEGER NOT NULL,
    shutdown INTEGER NOT NULL,
    PRIMARY KEY (channel, endpoint_id)
);
INSERT INTO heartbeats_latest (channel, endpoint_id, at, content_version, confirmed_healthy, shutdown)
    SELECT h.channel, h.endpoint_id, h.at, h.content_version, h.confirmed_healthy, h.shutdown
    FROM heartbeats h
    WHERE h.id = (SELECT l.id FROM heartbeats l
                  WHERE l.channel = h.channel AND l.endpoint_id = h.endpoint_id
                  ORDER BY l.at DESC, l.id DESC LIMIT 1);
CREATE TABLE endpoint_versions (
    channel TEXT NOT NULL,
    version INTEGER NOT NULL,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id),
    first_seen INTEGER NOT NULL,
    confirmed_healthy INTEGER NOT NULL,
    PRIMARY KEY (channel, version, endpoint_id)
);
INSERT INTO endpoint_versions (channel, version, endpoint_id, first_seen, confirmed_healthy)
    SELECT channel, content_version, endpoint_id, MIN(at), MAX(confirmed_healthy)
    FROM heartbeats GROUP BY channel, content_version, endpoint_id;
CREATE TABLE version_share (
    channel TEXT NOT NULL,
    at INTEGER NOT NULL,
    version INTEGER NOT NULL,
    endpoints INTEGER NOT NULL,
    PRIMARY KEY (channel, at, version)
);
CREATE INDEX version_share_by_time ON version_share (at);
DROP TABLE heartbeats;
ALTER TABLE heartbeats_latest RENAME TO heartbeats;
",
    // 3: why an endpoint refused a release (guard events of kind `reject`), and alerts: detections
    // with their context, the newest `MAX_ALERTS_KEPT` kept.
    r"
ALTER TABLE guard_events ADD COLUMN reason TEXT NOT NULL DEFAULT '';
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id),
    channel TEXT NOT NULL,
    release_version INTEGER NOT NULL,
    rule TEXT NOT NULL,
    level TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX alerts_by_channel ON alerts (channel, id);
",
];

/// The tables, for [`Store::table_counts`].
const TABLES: &[&str] = &[
    "endpoints",
    "envelopes",
    "releases",
    "heartbeats",
    "endpoint_versions",
    "version_share",
    "guard_events",
    "detections",
    "alerts",
    "rollouts",
    "rollout_events",
    "api_tokens",
    "documents",
];

/// SQLite storage: the writing connection behind a mutex, and read-only connections.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Backend(format!("{v} does not fit in an INTEGER")))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, turns on WAL and foreign keys, and
    /// applies any migration not yet applied.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // A process that finds the file being created or switched to WAL by another gets
        // SQLITE_BUSY without the busy handler being asked: retry for up to 5 s.
        let mut attempts = 0u32;
        let mut store = loop {
            match Self::init(Connection::open(path)?) {
                Err(StoreError::Backend(m))
                    if m.contains("database is locked") && attempts < 100 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | rusqlite::OpenFlags::SQLITE_OPEN_URI,
            )?;
            r.busy_timeout(std::time::Duration::from_secs(5))?;
            store.readers.push(Mutex::new(r));
        }
        Ok(store)
    }

    /// An in-memory database (tests).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        // Wait for another process holding the file (two instances or commands starting at
        // once) rather than failing at once.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Each migration reads the version applied inside its own write transaction, so two
        // processes migrating one fresh file apply each step once.
        loop {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let applied: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            let applied = usize::try_from(applied).unwrap_or(0);
            if applied > MIGRATIONS.len() {
                return Err(StoreError::Backend(format!(
                    "the database is at schema version {applied}, newer than this server's {}",
                    MIGRATIONS.len()
                )));
            }
            let Some(sql) = MIGRATIONS.get(applied) else {
                break;
            };
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", applied.saturating_add(1))?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
            readers: Vec::new(),
            next_reader: AtomicUsize::new(0),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A read-only connection: a free one if any, else the next in turn (the writer for an
    /// in-memory database).
    fn reader(&self) -> MutexGuard<'_, Connection> {
        for r in &self.readers {
            match r.try_lock() {
                Ok(g) => return g,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let n = self.readers.len();
        if n == 0 {
            return self.conn();
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % n;
        match self.readers.get(i) {
            Some(r) => r.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            None => self.conn(),
        }
    }
}

/// Checks and advances an endpoint's sequence number inside `tx`.
fn advance_seq(
    tx: &rusqlite::Transaction<'_>,
    endpoint_id: &str,
    seq: u64,
    at: u64,
) -> Result<(), StoreError> {
    let last: Option<i64> = tx
        .prepare_cached("SELECT last_seq FROM endpoints WHERE id = ?1")?
        .query_row([endpoint_id], |r| r.get(0))
        .optional()?;
    let Some(last) = last else {
        return Err(StoreError::NotFound(format!("endpoint {endpoint_id}")));
    };
    let last = to_u64(last);
    if seq <= last {
        return Err(StoreError::Replayed { seq, last });
    }
    tx.prepare_cached("UPDATE endpoints SET last_seq = ?1, last_seen = ?2 WHERE id = ?3")?
        .execute(params![to_i64(seq)?, to_i64(at)?, endpoint_id])?;
    Ok(())
}

fn release_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReleaseRow> {
    let rules: String = r.get(4)?;
    Ok(ReleaseRow {
        channel: r.get(0)?,
        version: to_u64(r.get(1)?),
        pack_sha256: r.get(2)?,
        envelope_sha256: r.get(3)?,
        rules: serde_json::from_str(&rules).unwrap_or_default(),
        notes: r.get(5)?,
        published_at: to_u64(r.get(6)?),
        published_by: r.get(7)?,
    })
}

const RELEASE_COLUMNS: &str =
    "channel, version, pack_sha256, envelope_sha256, rules, notes, published_at, published_by";

fn rollout_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RolloutRow> {
    Ok(RolloutRow {
        channel: r.get(0)?,
        state: r.get(1)?,
        thresholds: r.get(2)?,
        updated_at: to_u64(r.get(3)?),
    })
}

impl Store for SqliteStore {
    fn insert_endpoint(&self, e: &NewEndpoint) -> Result<(), StoreError> {
        let conn = self.conn();
        let n = conn.execute(
            "INSERT INTO endpoints (id, token_sha256, host_group, os_build, hw_class, enrolled_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            params![
                e.row.id,
                e.token_sha256,
                e.row.host_group,
                e.row.os_build,
                e.row.hw_class,
                to_i64(e.row.enrolled_at)?
            ],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "endpoint {} already exists",
                e.row.id
            )));
        }
        Ok(())
    }

    fn endpoint_by_token(&self, token_sha256: &str) -> Result<Option<EndpointRow>, StoreError> {
        let conn = self.reader();
        Ok(conn
            .query_row(
                "SELECT id, host_group, os_build, hw_class, enrolled_at, last_seen
                 FROM endpoints WHERE token_sha256 = ?1",
                [token_sha256],
                |r| {
                    Ok(EndpointRow {
                        id: r.get(0)?,
                        host_group: r.get(1)?,
                        os_build: r.get(2)?,
                        hw_class: r.get(3)?,
                        enrolled_at: to_u64(r.get(4)?),
                        last_seen: r.get::<_, Option<i64>>(5)?.map(to_u64),
                    })
                },
            )
            .optional()?)
    }

    fn record_heartbeat(&self, seq: u64, h: &HeartbeatRow) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        advance_seq(&tx, &h.endpoint_id, seq, h.at)?;
        let at = to_i64(h.at)?;
        let version = to_i64(h.content_version)?;
        // The latest heartbeat: replaced unless the stored one is newer (a later receipt wins a
        // tie, as in a log read in order).
        tx.prepare_cached(
            "INSERT INTO heartbeats
                 (channel, endpoint_id, at, content_version, confirmed_healthy, shutdown)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (channel, endpoint_id) DO UPDATE SET at = excluded.at,
                 content_version = excluded.content_version,
                 confirmed_healthy = excluded.confirmed_healthy, shutdown = excluded.shutdown
             WHERE excluded.at >= heartbeats.at",
        )?
        .execute(params![
            h.channel,
            h.endpoint_id,
            at,
            version,
            h.confirmed_healthy,
            h.shutdown
        ])?;
        // The version record: written only when it changes (first heartbeat on the version, an
        // earlier one, or the first healthy confirmation).
        tx.prepare_cached(
            "INSERT INTO endpoint_versions
                 (channel, version, endpoint_id, first_seen, confirmed_healthy)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (channel, version, endpoint_id) DO UPDATE SET
                 first_seen = MIN(endpoint_versions.first_seen, excluded.first_seen),
                 confirmed_healthy = endpoint_versions.confirmed_healthy
                     OR excluded.confirmed_healthy
             WHERE excluded.first_seen < endpoint_versions.first_seen
                 OR (excluded.confirmed_healthy AND NOT endpoint_versions.confirmed_healthy)",
        )?
        .execute(params![
            h.channel,
            version,
            h.endpoint_id,
            at,
            h.confirmed_healthy
        ])?;
        tx.commit()?;
        Ok(())
    }

    fn record_telemetry(
        &self,
        endpoint_id: &str,
        seq: u64,
        at: u64,
        batch: &TelemetryBatch,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        advance_seq(&tx, endpoint_id, seq, at)?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO guard_events (endpoint_id, channel, release_version, kind, at, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for e in &batch.guard_events {
                ins.execute(params![
                    e.endpoint_id,
                    e.channel,
                    to_i64(e.release_version)?,
                    e.kind.name(),
                    to_i64(e.at)?,
                    e.reason
                ])?;
            }
            let mut up = tx.prepare_cached(
                "INSERT INTO detections (endpoint_id, channel, release_version, rule, count)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (endpoint_id, channel, release_version, rule)
                 DO UPDATE SET count = count + excluded.count",
            )?;
            for d in &batch.detections {
                up.execute(params![
                    d.endpoint_id,
                    d.channel,
                    to_i64(d.release_version)?,
                    d.rule,
                    to_i64(d.count)?
                ])?;
            }
            if !batch.alerts.is_empty() {
                let mut alert = tx.prepare_cached(
                    "INSERT INTO alerts (endpoint_id, channel, release_version, rule, level,
                         received_at, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for a in &batch.alerts {
                    alert.execute(params![
                        a.endpoint_id,
                        a.channel,
                        to_i64(a.release_version)?,
                        a.rule,
                        a.level,
                        to_i64(a.received_at)?,
                        a.body
                    ])?;
                }
                // Ids increase: the oldest are those below the newest minus the bound.
                tx.execute(
                    "DELETE FROM alerts WHERE id <= (SELECT MAX(id) FROM alerts) - ?1",
                    [to_i64(MAX_ALERTS_KEPT)?],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn alerts(&self, channel: &str, after: u64, limit: u32) -> Result<Vec<AlertRow>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT id, endpoint_id, channel, release_version, rule, level, received_at, body
             FROM alerts WHERE channel = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![channel, to_i64(after)?, i64::from(limit)], |r| {
                Ok(AlertRow {
                    id: to_u64(r.get(0)?),
                    endpoint_id: r.get(1)?,
                    channel: r.get(2)?,
                    release_version: to_u64(r.get(3)?),
                    rule: r.get(4)?,
                    level: r.get(5)?,
                    received_at: to_u64(r.get(6)?),
                    body: r.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn rejections(
        &self,
        channel: &str,
        version: Option<u64>,
        limit: u32,
    ) -> Result<Vec<GuardEventRow>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT endpoint_id, channel, release_version, at, reason FROM guard_events
             WHERE channel = ?1 AND kind = 'reject' AND (?2 IS NULL OR release_version = ?2)
             ORDER BY id DESC LIMIT ?3",
        )?;
        let version = version.map(to_i64).transpose()?;
        let rows = stmt
            .query_map(params![channel, version, i64::from(limit)], |r| {
                Ok(GuardEventRow {
                    endpoint_id: r.get(0)?,
                    channel: r.get(1)?,
                    release_version: to_u64(r.get(2)?),
                    kind: GuardEventKind::Reject,
                    at: to_u64(r.get(3)?),
                    reason: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn publish_release(&self, r: &ReleaseRow, envelope: &[u8]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let newest: Option<i64> = tx.query_row(
            "SELECT MAX(version) FROM releases WHERE channel = ?1",
            [&r.channel],
            |row| row.get(0),
        )?;
        if let Some(newest) = newest.map(to_u64).filter(|n| *n >= r.version) {
            return Err(StoreError::Conflict(format!(
                "channel {} already has release {newest}; a new release must be newer",
                r.channel
            )));
        }
        tx.execute(
            "INSERT INTO envelopes (sha256, bytes, stored_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (sha256) DO NOTHING",
            params![r.envelope_sha256, envelope, to_i64(r.published_at)?],
        )?;
        let rules =
            serde_json::to_string(&r.rules).map_err(|e| StoreError::Backend(e.to_string()))?;
        tx.execute(
            &format!(
                "INSERT INTO releases ({RELEASE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ),
            params![
                r.channel,
                to_i64(r.version)?,
                r.pack_sha256,
                r.envelope_sha256,
                rules,
                r.notes,
                to_i64(r.published_at)?,
                r.published_by
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn releases(&self, channel: Option<&str>) -> Result<Vec<ReleaseRow>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE ?1 IS NULL OR channel = ?1
             ORDER BY published_at DESC, channel, version DESC"
        ))?;
        let rows = stmt.query_map([channel], release_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn release(&self, channel: &str, version: u64) -> Result<Option<ReleaseRow>, StoreError> {
        let conn = self.reader();
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {RELEASE_COLUMNS} FROM releases WHERE channel = ?1 AND version = ?2"
                ),
                params![channel, to_i64(version)?],
                release_from_row,
            )
            .optional()?)
    }

    fn latest_version(&self, channel: &str) -> Result<Option<u64>, StoreError> {
        let conn = self.reader();
        let v: Option<i64> = conn.query_row(
            "SELECT MAX(version) FROM releases WHERE channel = ?1",
            [channel],
            |r| r.get(0),
        )?;
        Ok(v.map(to_u64))
    }

    fn envelope(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.reader();
        Ok(conn
            .query_row(
                "SELECT bytes FROM envelopes WHERE sha256 = ?1",
                [sha256],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn envelope_hashes(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare("SELECT sha256 FROM envelopes ORDER BY sha256")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn rollout(&self, channel: &str) -> Result<Option<RolloutRow>, StoreError> {
        let conn = self.reader();
        Ok(conn
            .query_row(
                "SELECT channel, state, thresholds, updated_at FROM rollouts WHERE channel = ?1",
                [channel],
                rollout_from_row,
            )
            .optional()?)
    }

    fn rollouts(&self) -> Result<Vec<RolloutRow>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT channel, state, thresholds, updated_at FROM rollouts ORDER BY channel",
        )?;
        let rows = stmt.query_map([], rollout_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_rollout(
        &self,
        row: &RolloutRow,
        expected_state: Option<&str>,
        actor: &str,
        events: &[String],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<String> = tx
            .query_row(
                "SELECT state FROM rollouts WHERE channel = ?1",
                [&row.channel],
                |r| r.get(0),
            )
            .optional()?;
        if current.as_deref() != expected_state {
            return Err(StoreError::Conflict(format!(
                "the rollout of channel {} changed concurrently; retry",
                row.channel
            )));
        }
        tx.execute(
            "INSERT INTO rollouts (channel, state, thresholds, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (channel) DO UPDATE SET state = excluded.state,
                 thresholds = excluded.thresholds, updated_at = excluded.updated_at",
            params![
                row.channel,
                row.state,
                row.thresholds,
                to_i64(row.updated_at)?
            ],
        )?;
        for e in events {
            tx.execute(
                "INSERT INTO rollout_events (channel, at, actor, event) VALUES (?1, ?2, ?3, ?4)",
                params![row.channel, to_i64(row.updated_at)?, actor, e],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn rollout_events(&self, channel: &str) -> Result<Vec<(u64, String, String)>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT at, actor, event FROM rollout_events WHERE channel = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([channel], |r| Ok((to_u64(r.get(0)?), r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn insert_api_token(
        &self,
        token_sha256: &str,
        token: &ApiToken,
        at: u64,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO api_tokens (token_sha256, name, role, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![token_sha256, token.name, token.role.name(), to_i64(at)?],
        )?;
        Ok(())
    }

    fn api_token(&self, token_sha256: &str) -> Result<Option<ApiToken>, StoreError> {
        let conn = self.reader();
        let row: Option<(String, String)> = conn
            .query_row(
                "SELECT name, role FROM api_tokens WHERE token_sha256 = ?1",
                [token_sha256],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((name, role)) => match Role::parse(&role) {
                Some(role) => Ok(Some(ApiToken { name, role })),
                None => Err(StoreError::Backend(format!(
                    "token {name} has unknown role {role:?}"
                ))),
            },
        }
    }

    fn channel_data_of(
        &self,
        channel: &str,
        versions: Option<&[u64]>,
    ) -> Result<ChannelData, StoreError> {
        // `AND version IN (?2, ...)` when filtered.
        let (filter, values) = match versions {
            None => (String::new(), Vec::new()),
            Some(vs) => {
                let values = vs
                    .iter()
                    .map(|v| to_i64(*v))
                    .collect::<Result<Vec<_>, _>>()?;
                let marks: Vec<String> = (0..values.len()).map(|i| format!("?{}", i + 2)).collect();
                (format!(" AND {{v}} IN ({})", marks.join(", ")), values)
            }
        };
        let filter_on = |column: &str| filter.replace("{v}", column);
        let mut conn = self.reader();
        // One snapshot of every table.
        let tx = conn.transaction()?;
        let mut data = ChannelData::default();
        let mut stmt = tx.prepare_cached(
            "SELECT id, host_group, os_build, hw_class, enrolled_at, last_seen FROM endpoints",
        )?;
        data.endpoints = stmt
            .query_map([], |r| {
                Ok(EndpointRow {
                    id: r.get(0)?,
                    host_group: r.get(1)?,
                    os_build: r.get(2)?,
                    hw_class: r.get(3)?,
                    enrolled_at: to_u64(r.get(4)?),
                    last_seen: r.get::<_, Option<i64>>(5)?.map(to_u64),
                })
            })?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        let mut stmt = tx.prepare_cached(
            "SELECT endpoint_id, at, channel, content_version, confirmed_healthy, shutdown
             FROM heartbeats WHERE channel = ?1",
        )?;
        data.heartbeats = stmt
            .query_map([channel], |r| {
                Ok(HeartbeatRow {
                    endpoint_id: r.get(0)?,
                    at: to_u64(r.get(1)?),
                    channel: r.get(2)?,
                    content_version: to_u64(r.get(3)?),
                    confirmed_healthy: r.get(4)?,
                    shutdown: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        let args = || {
            std::iter::once(rusqlite::types::Value::Text(channel.to_owned()))
                .chain(values.iter().map(|v| rusqlite::types::Value::Integer(*v)))
        };
        let mut stmt = tx.prepare(&format!(
            "SELECT endpoint_id, version, first_seen, confirmed_healthy FROM endpoint_versions
             WHERE channel = ?1{}",
            filter_on("version")
        ))?;
        data.versions = stmt
            .query_map(params_from_iter(args()), |r| {
                Ok(VersionRow {
                    endpoint_id: r.get(0)?,
                    version: to_u64(r.get(1)?),
                    first_seen: to_u64(r.get(2)?),
                    confirmed_healthy: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        let mut stmt = tx.prepare(&format!(
            "SELECT endpoint_id, channel, release_version, kind, at, reason FROM guard_events
             WHERE channel = ?1{} ORDER BY id",
            filter_on("release_version")
        ))?;
        let events: Vec<(String, String, i64, String, i64, String)> = stmt
            .query_map(params_from_iter(args()), |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        for (endpoint_id, channel, version, kind, at, reason) in events {
            let Some(kind) = GuardEventKind::parse(&kind) else {
                return Err(StoreError::Backend(format!(
                    "unknown guard event kind {kind:?}"
                )));
            };
            data.guard_events.push(GuardEventRow {
                endpoint_id,
                channel,
                release_version: to_u64(version),
                kind,
                at: to_u64(at),
                reason,
            });
        }
        let mut stmt = tx.prepare(&format!(
            "SELECT endpoint_id, channel, release_version, rule, count FROM detections
             WHERE channel = ?1{}",
            filter_on("release_version")
        ))?;
        data.detections = stmt
            .query_map(params_from_iter(args()), |r| {
                Ok(DetectionRow {
                    endpoint_id: r.get(0)?,
                    channel: r.get(1)?,
                    release_version: to_u64(r.get(2)?),
                    rule: r.get(3)?,
                    count: to_u64(r.get(4)?),
                })
            })?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        tx.commit()?;
        Ok(data)
    }

    fn record_version_share(&self, at: u64, keep_since: u64) -> Result<bool, StoreError> {
        let at_i = to_i64(at)?;
        let exists = |conn: &Connection| -> Result<bool, StoreError> {
            Ok(conn
                .prepare_cached("SELECT 1 FROM version_share WHERE at >= ?1 LIMIT 1")?
                .query_row([at_i], |_| Ok(()))
                .optional()?
                .is_some())
        };
        if exists(&self.reader())? {
            return Ok(false);
        }
        // Counted on a reader (a scan of every endpoint's latest heartbeat), written briefly.
        let counts: Vec<(String, i64, i64)> = {
            let conn = self.reader();
            let mut stmt = conn.prepare_cached(
                "SELECT channel, content_version, COUNT(*) FROM heartbeats
                 GROUP BY channel, content_version",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if exists(&tx)? {
            return Ok(false);
        }
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO version_share (channel, at, version, endpoints) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (channel, version, n) in &counts {
                ins.execute(params![channel, at_i, version, n])?;
            }
        }
        tx.execute(
            "DELETE FROM version_share WHERE at < ?1",
            [to_i64(keep_since)?],
        )?;
        tx.commit()?;
        Ok(!counts.is_empty())
    }

    fn version_share(&self, channel: &str, since: u64) -> Result<Vec<ShareRow>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT at, version, endpoints FROM version_share WHERE channel = ?1 AND at >= ?2
             ORDER BY at, version",
        )?;
        let rows = stmt.query_map(params![channel, to_i64(since)?], |r| {
            Ok(ShareRow {
                at: to_u64(r.get(0)?),
                version: to_u64(r.get(1)?),
                endpoints: to_u64(r.get(2)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn prune_versions(&self, channel: &str, below: u64) -> Result<u64, StoreError> {
        let below = to_i64(below)?;
        let mut total = 0u64;
        loop {
            let n = self.conn().execute(
                "DELETE FROM endpoint_versions WHERE (channel, version, endpoint_id) IN
                     (SELECT channel, version, endpoint_id FROM endpoint_versions
                      WHERE channel = ?1 AND version < ?2 LIMIT ?3)",
                params![channel, below, PRUNE_BATCH],
            )?;
            total = total.saturating_add(n as u64);
            if i64::try_from(n).unwrap_or(i64::MAX) < PRUNE_BATCH {
                return Ok(total);
            }
            // Let waiting heartbeats have the writer (the mutex is not fair).
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn document(&self, name: &str) -> Result<Option<DocumentRow>, StoreError> {
        let conn = self.reader();
        Ok(conn
            .query_row(
                "SELECT version, body, updated_at FROM documents WHERE name = ?1",
                [name],
                |r| {
                    Ok(DocumentRow {
                        version: to_u64(r.get(0)?),
                        body: r.get(1)?,
                        updated_at: to_u64(r.get(2)?),
                    })
                },
            )
            .optional()?)
    }

    fn put_document(
        &self,
        name: &str,
        row: &DocumentRow,
        expected_version: Option<u64>,
        audit: Option<(&str, &str, &str)>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<i64> = tx
            .query_row(
                "SELECT version FROM documents WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        if current.map(to_u64) != expected_version {
            return Err(StoreError::Conflict(format!(
                "{name} changed concurrently (version {current:?}, expected {expected_version:?}); retry"
            )));
        }
        tx.execute(
            "INSERT INTO documents (name, version, body, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET version = excluded.version, body = excluded.body,
                 updated_at = excluded.updated_at",
            params![
                name,
                to_i64(row.version)?,
                row.body,
                to_i64(row.updated_at)?
            ],
        )?;
        if let Some((channel, actor, event)) = audit {
            tx.execute(
                "INSERT INTO rollout_events (channel, at, actor, event) VALUES (?1, ?2, ?3, ?4)",
                params![channel, to_i64(row.updated_at)?, actor, event],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn table_counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let conn = self.reader();
        let mut out = BTreeMap::new();
        for t in TABLES {
            let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))?;
            out.insert((*t).to_owned(), to_u64(n));
        }
        Ok(out)
    }
}
