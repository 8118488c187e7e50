//! The shared [`Store`]: PostgreSQL, for several server instances behind a load balancer.
//!
//! The same schema as [`crate::sqlite`] (BIGINT for integers, BYTEA, BOOLEAN), migrated on
//! connect under an advisory lock (`bulwark_schema_version` holds the number applied), so
//! instances starting together do not race. Every trait method is one transaction at READ
//! COMMITTED; the checks that must hold across instances are made atomic in the statements
//! themselves:
//! * sequence numbers: `UPDATE endpoints ... WHERE id = $ AND last_seq < $` (a concurrent
//!   message with the same number waits for the row lock, then matches nothing: replayed);
//! * the rollout write: a compare-and-swap on the stored state JSON (`UPDATE ... WHERE state =
//!   expected`, or `INSERT ... ON CONFLICT DO NOTHING` when none is expected), so of two
//!   concurrent commands on two instances exactly one writes and the other gets
//!   [`StoreError::Conflict`] (the API's 409);
//! * publishing: a transaction-scoped advisory lock per channel around the "newer than every
//!   release" check.
//!
//! Telemetry batches are one transaction with one multi-row insert per table (`UNNEST` of
//! arrays; detections of the same key within a batch are summed first). A heartbeat is one
//! statement (one round trip, its own transaction): the sequence update and, only if it matched,
//! the upserts of the latest heartbeat and the version record, as data-modifying CTEs.
//!
//! The client is `tokio-postgres` (no TLS: loopback or a trusted network). The store owns a
//! small tokio runtime that drives the connections; the trait's methods are synchronous and
//! wait on the client's futures with a minimal executor, so they may be called from
//! `spawn_blocking` (as the API does), from plain threads, and even from async code. At most
//! [`POOL_MAX`] connections are open at once (a caller waits for a free one), and each keeps its
//! prepared hot statements (authentication, heartbeat, sequence check).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use tokio_postgres::{Client, NoTls, Row, Statement};

use crate::store::{AlertRow, TelemetryBatch, MAX_ALERTS_KEPT};
use crate::store::{
    ApiToken, ChannelData, DetectionRow, DocumentRow, EndpointRow, GuardEventKind, GuardEventRow,
    HeartbeatRow, NewEndpoint, ReleaseRow, Role, RolloutRow, ShareRow, Store, StoreError,
    VersionRow,
};

/// The migrations, in order; `bulwark_schema_version.version` is the number applied.
pub(crate) const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE endpoints (
    id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    host_group TEXT NOT NULL,
    os_build TEXT NOT NULL,
    hw_class TEXT NOT NULL,
    enrolled_at BIGINT NOT NULL,
    last_seen BIGINT,
    last_seq BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE envelopes (
    sha256 TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL,
    stored_at BIGINT NOT NULL
);
CREATE TABLE releases (
    channel TEXT NOT NULL,
    version BIGINT NOT NULL,
    pack_sha256 TEXT NOT NULL,
    envelope_sha256 TEXT NOT NULL REFERENCES envelopes(sha256),
    rules TEXT NOT NULL,
    notes TEXT NOT NULL,
    published_at BIGINT NOT NULL,
    published_by TEXT NOT NULL,
    PRIMARY KEY (channel, version)
);
CREATE TABLE heartbeats (
    id BIGSERIAL PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id),
    at BIGINT NOT NULL,
    channel TEXT NOT NULL,
    content_version BIGINT NOT NULL,
    confirmed_healthy BOOLEAN NOT NULL,
    shutdown BOOLEAN NOT NULL
);
CREATE INDEX heartbeats_by_channel ON heartbeats (channel, at);
CREATE TABLE guard_events (
    id BIGSERIAL PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id),
    channel TEXT NOT NULL,
    release_version BIGINT NOT NULL,
    kind TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX guard_events_by_channel ON guard_events (channel, release_version);
CREATE TABLE detections (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id),
    channel TEXT NOT NULL,
    release_version BIGINT NOT NULL,
    rule TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, channel, release_version, rule)
);
CREATE TABLE rollouts (
    channel TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    thresholds TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE rollout_events (
    id BIGSERIAL PRIMARY KEY,
    channel TEXT NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE TABLE api_tokens (
    token_sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE documents (
    name TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    body TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
",
    // 2: bounded heartbeat state instead of a log of every heartbeat (see `crate::store`): the
    // latest heartbeat per (channel, endpoint), the first heartbeat and healthy confirmation per
    // (channel, version, endpoint), and the sampled version share. The log's content is carried over.
    // The tables updated by every heartbeat leave room on their pages for HOT updates.
    r"
CREATE TABLE heartbeats_latest (
    channel TEXT NOT NULL,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id),
    at BIGINT NOT NULL,
    content_version BIGINT NOT NULL,
    confirmed_healthy BOOLEAN NOT NULL,
    shutdown BOOLEAN NOT NULL,
    PRIMARY KEY (channel, endpoint_id)
) WITH (fillfactor = 80);
INSERT INTO heartbeats_latest (channel, endpoint_id, at, content_version, confirmed_healthy, shutdown)
    SELECT DISTINCT ON (channel, endpoint_id)
        channel, endpoint_id, at, content_version, confirmed_healthy, shutdown
    FROM heartbeats ORDER BY channel, endpoint_id, at DESC, id DESC;
CREATE TABLE endpoint_versions (
    channel TEXT NOT NULL,
    version BIGINT NOT NULL,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id),
    first_seen BIGINT NOT NULL,
    confirmed_healthy BOOLEAN NOT NULL,
    PRIMARY KEY (channel, version, endpoint_id)
);
INSERT INTO endpoint_versions (channel, version, endpoint_id, first_seen, confirmed_healthy)
    SELECT channel, content_version, endpoint_id, MIN(at), bool_or(confirmed_healthy)
    FROM heartbeats GROUP BY channel, content_version, endpoint_id;
CREATE TABLE version_share (
    channel TEXT NOT NULL,
    at BIGINT NOT NULL,
    version BIGINT NOT NULL,
    endpoints BIGINT NOT NULL,
    PRIMARY KEY (channel, at, version)
);
CREATE INDEX version_share_by_time ON version_share (at);
DROP TABLE heartbeats;
ALTER TABLE heartbeats_latest RENAME TO heartbeats;
ALTER TABLE heartbeats RENAME CONSTRAINT heartbeats_latest_pkey TO heartbeats_pkey;
ALTER TABLE heartbeats RENAME CONSTRAINT heartbeats_latest_endpoint_id_fkey
    TO heartbeats_endpoint_id_fkey;
ALTER TABLE endpoints SET (fillfactor = 80);
",
    // 3: why an endpoint refused a release (guard events of kind `reject`), and alerts: detections
    // with their context, the newest `MAX_ALERTS_KEPT` kept.
    r"
ALTER TABLE guard_events ADD COLUMN reason TEXT NOT NULL DEFAULT '';
CREATE TABLE alerts (
    id BIGSERIAL PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id),
    channel TEXT NOT NULL,
    release_version BIGINT NOT NULL,
    rule TEXT NOT NULL,
    level TEXT NOT NULL,
    received_at BIGINT NOT NULL,
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

/// The advisory lock key held while migrating (any constant; "bulwark" in ASCII).
const MIGRATION_LOCK: i64 = 0x0062_756c_7761_726b;

/// Most connections open at once (idle ones are kept for reuse).
pub const POOL_MAX: usize = 16;

/// Rows deleted per statement by [`Store::prune_versions`].
const PRUNE_BATCH: i64 = 5000;

const SQL_ENDPOINT_BY_TOKEN: &str = "SELECT id, host_group, os_build, hw_class, enrolled_at, \
     last_seen FROM endpoints WHERE token_sha256 = $1";

/// A heartbeat in one statement: the sequence check and, only if it passed, the upserts.
const SQL_HEARTBEAT: &str = "
WITH s AS (
    UPDATE endpoints SET last_seq = $1::bigint, last_seen = $2::bigint
    WHERE id = $3::text AND last_seq < $1::bigint
    RETURNING id
), h AS (
    INSERT INTO heartbeats
        (channel, endpoint_id, at, content_version, confirmed_healthy, shutdown)
    SELECT $4::text, id, $2::bigint, $5::bigint, $6::boolean, $7::boolean FROM s
    ON CONFLICT (channel, endpoint_id) DO UPDATE SET at = excluded.at,
        content_version = excluded.content_version,
        confirmed_healthy = excluded.confirmed_healthy, shutdown = excluded.shutdown
    WHERE excluded.at >= heartbeats.at
), v AS (
    INSERT INTO endpoint_versions (channel, version, endpoint_id, first_seen, confirmed_healthy)
    SELECT $4::text, $5::bigint, id, $2::bigint, $6::boolean FROM s
    ON CONFLICT (channel, version, endpoint_id) DO UPDATE SET
        first_seen = LEAST(endpoint_versions.first_seen, excluded.first_seen),
        confirmed_healthy = endpoint_versions.confirmed_healthy OR excluded.confirmed_healthy
    WHERE excluded.first_seen < endpoint_versions.first_seen
        OR (excluded.confirmed_healthy AND NOT endpoint_versions.confirmed_healthy)
)
SELECT COUNT(*) FROM s";

const SQL_ADVANCE_SEQ: &str =
    "UPDATE endpoints SET last_seq = $1, last_seen = $2 WHERE id = $3 AND last_seq < $1";

const SQL_LAST_SEQ: &str = "SELECT last_seq FROM endpoints WHERE id = $1";

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => StoreError::Backend(format!("{}: {}", db.code().code(), db.message())),
            None => StoreError::Backend(e.to_string()),
        }
    }
}

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Backend(format!("{v} does not fit in a BIGINT")))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Wakes the thread waiting in [`block_on`].
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` to completion on this thread, parking between wake-ups. The client's futures
/// only talk to the connection tasks (driven by the store's runtime) over channels, so no
/// runtime is needed here.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// PostgreSQL storage: a pool of connections driven by the store's own runtime.
pub struct PostgresStore {
    config: tokio_postgres::Config,
    runtime: Option<tokio::runtime::Runtime>,
    pool: Mutex<Pool>,
    /// Signalled when a connection is returned or closed.
    freed: Condvar,
}

/// The pool's connections.
#[derive(Default)]
struct Pool {
    idle: Vec<Conn>,
    /// Open connections, idle or taken.
    open: usize,
}

/// A connection and its prepared statements.
struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// A connection taken from the pool; returned on drop unless it is closed.
struct Pooled<'a> {
    store: &'a PostgresStore,
    conn: Option<Conn>,
}

impl Pooled<'_> {
    /// `sql` prepared on this connection (once).
    fn prepared(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| StoreError::Backend("connection gone".to_owned()))?;
        if let Some(s) = conn.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = block_on(conn.client.prepare(sql))?;
        conn.statements.insert(sql, s.clone());
        Ok(s)
    }
}

impl Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.conn.as_ref().expect("present until drop").client
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.conn.as_mut().expect("present until drop").client
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let mut pool = self.store.pool();
            if c.client.is_closed() {
                pool.open = pool.open.saturating_sub(1);
            } else {
                pool.idle.push(c);
            }
            drop(pool);
            self.store.freed.notify_one();
        }
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.pool().idle.clear();
        if let Some(rt) = self.runtime.take() {
            // Allowed in async contexts, unlike dropping the runtime.
            rt.shutdown_background();
        }
    }
}

/// A schema name for [`PostgresStore::connect_in_schema`]: lowercase ASCII letters, digits and
/// underscores, not starting with a digit, at most 63 bytes.
fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`, libpq's URL form,
    /// `?options=-csearch_path%3DNAME` included) and applies any migration not yet applied.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("bad PostgreSQL URL: {e}")))?;
        Self::with_config(config, None)
    }

    /// Like [`PostgresStore::connect`], but in the schema `schema` (created if needed; every
    /// connection's `search_path`). Tests use a fresh one each.
    pub fn connect_in_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        if !valid_schema(schema) {
            return Err(StoreError::Backend(format!("bad schema name {schema:?}")));
        }
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("bad PostgreSQL URL: {e}")))?;
        config.options(format!("-c search_path={schema}"));
        Self::with_config(config, Some(schema))
    }

    fn with_config(
        config: tokio_postgres::Config,
        schema: Option<&str>,
    ) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bulwark-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("runtime: {e}")))?;
        let store = Self {
            config,
            runtime: Some(runtime),
            pool: Mutex::new(Pool::default()),
            freed: Condvar::new(),
        };
        store.migrate(schema)?;
        Ok(store)
    }

    /// Drops the schema `schema` and everything in it (tests).
    pub fn drop_schema(&self, schema: &str) -> Result<(), StoreError> {
        if !valid_schema(schema) {
            return Err(StoreError::Backend(format!("bad schema name {schema:?}")));
        }
        let c = self.client()?;
        block_on(c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))?;
        Ok(())
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle connection, else a new one if fewer than [`POOL_MAX`] are open, else the next
    /// one returned.
    fn client(&self) -> Result<Pooled<'_>, StoreError> {
        let mut pool = self.pool();
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok(Pooled {
                    store: self,
                    conn: Some(conn),
                });
            }
            if pool.open < POOL_MAX {
                break;
            }
            pool = self
                .freed
                .wait(pool)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        pool.open = pool.open.saturating_add(1);
        drop(pool);
        match self.open_connection() {
            Ok(client) => Ok(Pooled {
                store: self,
                conn: Some(Conn {
                    client,
                    statements: HashMap::new(),
                }),
            }),
            Err(e) => {
                let mut pool = self.pool();
                pool.open = pool.open.saturating_sub(1);
                drop(pool);
                self.freed.notify_one();
                Err(e)
            }
        }
    }

    fn open_connection(&self) -> Result<Client, StoreError> {
        let rt = self
            .runtime
            .as_ref()
            .ok_or_else(|| StoreError::Backend("store shut down".to_owned()))?;
        let config = self.config.clone();
        let task = rt.spawn(async move {
            let (client, connection) = config.connect(NoTls).await?;
            tokio::spawn(async move {
                // Ends when the client is dropped or the server goes away.
                let _ = connection.await;
            });
            Ok::<_, tokio_postgres::Error>(client)
        });
        Ok(block_on(task).map_err(|e| StoreError::Backend(format!("connection task: {e}")))??)
    }

    fn migrate(&self, schema: Option<&str>) -> Result<(), StoreError> {
        let mut c = self.client()?;
        block_on(async {
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            if let Some(schema) = schema {
                tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                    .await?;
            }
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS bulwark_schema_version (version BIGINT NOT NULL)",
            )
            .await?;
            let applied: Option<i64> = tx
                .query_opt("SELECT version FROM bulwark_schema_version", &[])
                .await?
                .map(|r| r.get(0));
            let applied = usize::try_from(applied.unwrap_or(0)).unwrap_or(0);
            if applied > MIGRATIONS.len() {
                return Err(StoreError::Backend(format!(
                    "the database is at schema version {applied}, newer than this server's {}",
                    MIGRATIONS.len()
                )));
            }
            for sql in MIGRATIONS.iter().skip(applied) {
                tx.batch_execute(sql).await?;
            }
            let version = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
            tx.execute("DELETE FROM bulwark_schema_version", &[])
                .await?;
            tx.execute(
                "INSERT INTO bulwark_schema_version (version) VALUES ($1)",
                &[&version],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

/// Checks and advances an endpoint's sequence number inside `tx`, atomically (`update` is
/// [`SQL_ADVANCE_SEQ`] prepared).
async fn advance_seq(
    tx: &tokio_postgres::Transaction<'_>,
    update: &Statement,
    endpoint_id: &str,
    seq: u64,
    at: u64,
) -> Result<(), StoreError> {
    let seq_i = to_i64(seq)?;
    let n = tx
        .execute(update, &[&seq_i, &to_i64(at)?, &endpoint_id])
        .await?;
    if n == 1 {
        return Ok(());
    }
    replayed_or_unknown(tx, endpoint_id, seq).await
}

/// The error for a message whose sequence update matched nothing: its endpoint is unknown, or
/// its sequence number not above the last accepted.
async fn replayed_or_unknown(
    c: &impl tokio_postgres::GenericClient,
    endpoint_id: &str,
    seq: u64,
) -> Result<(), StoreError> {
    match c.query_opt(SQL_LAST_SEQ, &[&endpoint_id]).await? {
        None => Err(StoreError::NotFound(format!("endpoint {endpoint_id}"))),
        Some(r) => Err(StoreError::Replayed {
            seq,
            last: to_u64(r.get(0)),
        }),
    }
}

const RELEASE_COLUMNS: &str =
    "channel, version, pack_sha256, envelope_sha256, rules, notes, published_at, published_by";

fn release_from_row(r: &Row) -> ReleaseRow {
    let rules: String = r.get(4);
    ReleaseRow {
        channel: r.get(0),
        version: to_u64(r.get(1)),
        pack_sha256: r.get(2),
        envelope_sha256: r.get(3),
        rules: serde_json::from_str(&rules).unwrap_or_default(),
        notes: r.get(5),
        published_at: to_u64(r.get(6)),
        published_by: r.get(7),
    }
}

fn rollout_from_row(r: &Row) -> RolloutRow {
    RolloutRow {
        channel: r.get(0),
        state: r.get(1),
        thresholds: r.get(2),
        updated_at: to_u64(r.get(3)),
    }
}

fn endpoint_from_row(r: &Row) -> EndpointRow {
    EndpointRow {
        id: r.get(0),
        host_group: r.get(1),
        os_build: r.get(2),
        hw_class: r.get(3),
        enrolled_at: to_u64(r.get(4)),
        last_seen: r.get::<_, Option<i64>>(5).map(to_u64),
    }
}

impl Store for PostgresStore {
    fn insert_endpoint(&self, e: &NewEndpoint) -> Result<(), StoreError> {
        let c = self.client()?;
        let n = block_on(c.execute(
            "INSERT INTO endpoints (id, token_sha256, host_group, os_build, hw_class, enrolled_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &e.row.id,
                &e.token_sha256,
                &e.row.host_group,
                &e.row.os_build,
                &e.row.hw_class,
                &to_i64(e.row.enrolled_at)?,
            ],
        ))?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "endpoint {} already exists",
                e.row.id
            )));
        }
        Ok(())
    }

    fn endpoint_by_token(&self, token_sha256: &str) -> Result<Option<EndpointRow>, StoreError> {
        let mut c = self.client()?;
        let stmt = c.prepared(SQL_ENDPOINT_BY_TOKEN)?;
        let row = block_on(c.query_opt(&stmt, &[&token_sha256]))?;
        Ok(row.as_ref().map(endpoint_from_row))
    }

    fn record_heartbeat(&self, seq: u64, h: &HeartbeatRow) -> Result<(), StoreError> {
        let mut c = self.client()?;
        let stmt = c.prepared(SQL_HEARTBEAT)?;
        block_on(async {
            let matched: i64 = c
                .query_one(
                    &stmt,
                    &[
                        &to_i64(seq)?,
                        &to_i64(h.at)?,
                        &h.endpoint_id,
                        &h.channel,
                        &to_i64(h.content_version)?,
                        &h.confirmed_healthy,
                        &h.shutdown,
                    ],
                )
                .await?
                .get(0);
            if matched == 1 {
                return Ok(());
            }
            // Nothing was written; say why.
            replayed_or_unknown(&*c, &h.endpoint_id, seq).await
        })
    }

    fn record_telemetry(
        &self,
        endpoint_id: &str,
        seq: u64,
        at: u64,
        batch: &TelemetryBatch,
    ) -> Result<(), StoreError> {
        let events = &batch.guard_events;
        let detections = &batch.detections;
        // One multi-row insert per table: columns as arrays.
        let mut ev_endpoint = Vec::with_capacity(events.len());
        let mut ev_channel = Vec::with_capacity(events.len());
        let mut ev_version = Vec::with_capacity(events.len());
        let mut ev_kind = Vec::with_capacity(events.len());
        let mut ev_at = Vec::with_capacity(events.len());
        let mut ev_reason = Vec::with_capacity(events.len());
        for e in events {
            ev_reason.push(e.reason.as_str());
            ev_endpoint.push(e.endpoint_id.as_str());
            ev_channel.push(e.channel.as_str());
            ev_version.push(to_i64(e.release_version)?);
            ev_kind.push(e.kind.name());
            ev_at.push(to_i64(e.at)?);
        }
        // ON CONFLICT DO UPDATE may touch a row once per statement: sum repeats first.
        let mut summed: Vec<(&str, &str, i64, &str, i64)> = Vec::new();
        let mut index: BTreeMap<(&str, &str, i64, &str), usize> = BTreeMap::new();
        for d in detections {
            let key = (
                d.endpoint_id.as_str(),
                d.channel.as_str(),
                to_i64(d.release_version)?,
                d.rule.as_str(),
            );
            let count = to_i64(d.count)?;
            if let Some(&i) = index.get(&key) {
                summed[i].4 = summed[i].4.checked_add(count).ok_or_else(|| {
                    StoreError::Backend("detection count overflows a BIGINT".to_owned())
                })?;
            } else {
                index.insert(key, summed.len());
                summed.push((key.0, key.1, key.2, key.3, count));
            }
        }
        let d_endpoint: Vec<&str> = summed.iter().map(|d| d.0).collect();
        let d_channel: Vec<&str> = summed.iter().map(|d| d.1).collect();
        let d_version: Vec<i64> = summed.iter().map(|d| d.2).collect();
        let d_rule: Vec<&str> = summed.iter().map(|d| d.3).collect();
        let d_count: Vec<i64> = summed.iter().map(|d| d.4).collect();

        let mut c = self.client()?;
        let update = c.prepared(SQL_ADVANCE_SEQ)?;
        block_on(async {
            let tx = c.transaction().await?;
            advance_seq(&tx, &update, endpoint_id, seq, at).await?;
            if !events.is_empty() {
                tx.execute(
                    "INSERT INTO guard_events (endpoint_id, channel, release_version, kind, at,
                         reason)
                     SELECT e, c, v, k, a, r FROM UNNEST($1::text[], $2::text[], $3::bigint[],
                         $4::text[], $5::bigint[], $6::text[])
                         WITH ORDINALITY AS t(e, c, v, k, a, r, n)
                     ORDER BY n",
                    &[
                        &ev_endpoint,
                        &ev_channel,
                        &ev_version,
                        &ev_kind,
                        &ev_at,
                        &ev_reason,
                    ],
                )
                .await?;
            }
            if !summed.is_empty() {
                tx.execute(
                    "INSERT INTO detections (endpoint_id, channel, release_version, rule, count)
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[],
                         $5::bigint[])
                     ON CONFLICT (endpoint_id, channel, release_version, rule)
                     DO UPDATE SET count = detections.count + excluded.count",
                    &[&d_endpoint, &d_channel, &d_version, &d_rule, &d_count],
                )
                .await?;
            }
            if !batch.alerts.is_empty() {
                let ins = tx
                    .prepare(
                        "INSERT INTO alerts (endpoint_id, channel, release_version, rule, level,
                             received_at, body)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .await?;
                for a in &batch.alerts {
                    tx.execute(
                        &ins,
                        &[
                            &a.endpoint_id,
                            &a.channel,
                            &to_i64(a.release_version)?,
                            &a.rule,
                            &a.level,
                            &to_i64(a.received_at)?,
                            &a.body,
                        ],
                    )
                    .await?;
                }
                // Ids increase: the oldest are those below the newest minus the bound.
                tx.execute(
                    "DELETE FROM alerts WHERE id <= (SELECT MAX(id) FROM alerts) - $1",
                    &[&to_i64(MAX_ALERTS_KEPT)?],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn publish_release(&self, r: &ReleaseRow, envelope: &[u8]) -> Result<(), StoreError> {
        let rules =
            serde_json::to_string(&r.rules).map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut c = self.client()?;
        block_on(async {
            let tx = c.transaction().await?;
            // Serialises publishers of one channel across instances until commit.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('bulwark.releases.' || $1))",
                &[&r.channel],
            )
            .await?;
            let newest: Option<i64> = tx
                .query_one(
                    "SELECT MAX(version) FROM releases WHERE channel = $1",
                    &[&r.channel],
                )
                .await?
                .get(0);
            if let Some(newest) = newest.map(to_u64).filter(|n| *n >= r.version) {
                return Err(StoreError::Conflict(format!(
                    "channel {} already has release {newest}; a new release must be newer",
                    r.channel
                )));
            }
            tx.execute(
                "INSERT INTO envelopes (sha256, bytes, stored_at) VALUES ($1, $2, $3)
                 ON CONFLICT (sha256) DO NOTHING",
                &[&r.envelope_sha256, &envelope, &to_i64(r.published_at)?],
            )
            .await?;
            tx.execute(
                &format!(
                    "INSERT INTO releases ({RELEASE_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ),
                &[
                    &r.channel,
                    &to_i64(r.version)?,
                    &r.pack_sha256,
                    &r.envelope_sha256,
                    &rules,
                    &r.notes,
                    &to_i64(r.published_at)?,
                    &r.published_by,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn alerts(&self, channel: &str, after: u64, limit: u32) -> Result<Vec<AlertRow>, StoreError> {
        let c = self.client()?;
        let rows = block_on(c.query(
            "SELECT id, endpoint_id, channel, release_version, rule, level, received_at, body
             FROM alerts WHERE channel = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&channel, &to_i64(after)?, &i64::from(limit)],
        ))?;
        Ok(rows
            .iter()
            .map(|r| AlertRow {
                id: to_u64(r.get(0)),
                endpoint_id: r.get(1),
                channel: r.get(2),
                release_version: to_u64(r.get(3)),
                rule: r.get(4),
                level: r.get(5),
                received_at: to_u64(r.get(6)),
                body: r.get(7),
            })
            .collect())
    }

    fn rejections(
        &self,
        channel: &str,
        version: Option<u64>,
        limit: u32,
    ) -> Result<Vec<GuardEventRow>, StoreError> {
        let c = self.client()?;
        let version = version.map(to_i64).transpose()?;
        let rows = block_on(c.query(
            "SELECT endpoint_id, channel, release_version, at, reason FROM guard_events
             WHERE channel = $1 AND kind = 'reject'
                 AND ($2::bigint IS NULL OR release_version = $2)
             ORDER BY id DESC LIMIT $3",
            &[&channel, &version, &i64::from(limit)],
        ))?;
        Ok(rows
            .iter()
            .map(|r| GuardEventRow {
                endpoint_id: r.get(0),
                channel: r.get(1),
                release_version: to_u64(r.get(2)),
                kind: GuardEventKind::Reject,
                at: to_u64(r.get(3)),
                reason: r.get(4),
            })
            .collect())
    }

    fn releases(&self, channel: Option<&str>) -> Result<Vec<ReleaseRow>, StoreError> {
        let c = self.client()?;
        let rows = block_on(c.query(
            &format!(
                "SELECT {RELEASE_COLUMNS} FROM releases WHERE $1::text IS NULL OR channel = $1
                 ORDER BY published_at DESC, channel, version DESC"
            ),
            &[&channel],
        ))?;
        Ok(rows.iter().map(release_from_row).collect())
    }

    fn release(&self, channel: &str, version: u64) -> Result<Option<ReleaseRow>, StoreError> {
        let c = self.client()?;
        let row = block_on(c.query_opt(
            &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE channel = $1 AND version = $2"),
            &[&channel, &to_i64(version)?],
        ))?;
        Ok(row.as_ref().map(release_from_row))
    }

    fn latest_version(&self, channel: &str) -> Result<Option<u64>, StoreError> {
        let c = self.client()?;
        let v: Option<i64> = block_on(c.query_one(
            "SELECT MAX(version) FROM releases WHERE channel = $1",
            &[&channel],
        ))?
        .get(0);
        Ok(v.map(to_u64))
    }

    fn envelope(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let c = self.client()?;
        let row =
            block_on(c.query_opt("SELECT bytes FROM envelopes WHERE sha256 = $1", &[&sha256]))?;
        Ok(row.map(|r| r.get(0)))
    }

    fn envelope_hashes(&self) -> Result<Vec<String>, StoreError> {
        let c = self.client()?;
        let rows = block_on(c.query("SELECT sha256 FROM envelopes ORDER BY sha256", &[]))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn rollout(&self, channel: &str) -> Result<Option<RolloutRow>, StoreError> {
        let c = self.client()?;
        let row = block_on(c.query_opt(
            "SELECT channel, state, thresholds, updated_at FROM rollouts WHERE channel = $1",
            &[&channel],
        ))?;
        Ok(row.as_ref().map(rollout_from_row))
    }

    fn rollouts(&self) -> Result<Vec<RolloutRow>, StoreError> {
        let c = self.client()?;
        let rows = block_on(c.query(
            "SELECT channel, state, thresholds, updated_at FROM rollouts ORDER BY channel",
            &[],
        ))?;
        Ok(rows.iter().map(rollout_from_row).collect())
    }

    fn put_rollout(
        &self,
        row: &RolloutRow,
        expected_state: Option<&str>,
        actor: &str,
        events: &[String],
    ) -> Result<(), StoreError> {
        let updated_at = to_i64(row.updated_at)?;
        let mut c = self.client()?;
        block_on(async {
            let tx = c.transaction().await?;
            // Compare-and-swap: a concurrent writer (on any instance) holds the row lock until
            // it commits; this statement then re-reads the row and no longer matches.
            let written = match expected_state {
                None => {
                    tx.execute(
                        "INSERT INTO rollouts (channel, state, thresholds, updated_at)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (channel) DO NOTHING",
                        &[&row.channel, &row.state, &row.thresholds, &updated_at],
                    )
                    .await?
                }
                Some(expected) => {
                    tx.execute(
                        "UPDATE rollouts SET state = $2, thresholds = $3, updated_at = $4
                         WHERE channel = $1 AND state = $5",
                        &[
                            &row.channel,
                            &row.state,
                            &row.thresholds,
                            &updated_at,
                            &expected,
                        ],
                    )
                    .await?
                }
            };
            if written != 1 {
                return Err(StoreError::Conflict(format!(
                    "the rollout of channel {} changed concurrently; retry",
                    row.channel
                )));
            }
            if !events.is_empty() {
                tx.execute(
                    "INSERT INTO rollout_events (channel, at, actor, event)
                     SELECT $1, $2, $3, e FROM UNNEST($4::text[]) WITH ORDINALITY AS t(e, n)
                     ORDER BY n",
                    &[&row.channel, &updated_at, &actor, &events],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn rollout_events(&self, channel: &str) -> Result<Vec<(u64, String, String)>, StoreError> {
        let c = self.client()?;
        let rows = block_on(c.query(
            "SELECT at, actor, event FROM rollout_events WHERE channel = $1 ORDER BY id",
            &[&channel],
        ))?;
        Ok(rows
            .iter()
            .map(|r| (to_u64(r.get(0)), r.get(1), r.get(2)))
            .collect())
    }

    fn insert_api_token(
        &self,
        token_sha256: &str,
        token: &ApiToken,
        at: u64,
    ) -> Result<(), StoreError> {
        let c = self.client()?;
        block_on(c.execute(
            "INSERT INTO api_tokens (token_sha256, name, role, created_at) VALUES ($1, $2, $3, $4)",
            &[&token_sha256, &token.name, &token.role.name(), &to_i64(at)?],
        ))?;
        Ok(())
    }

    fn api_token(&self, token_sha256: &str) -> Result<Option<ApiToken>, StoreError> {
        let c = self.client()?;
        let row = block_on(c.query_opt(
            "SELECT name, role FROM api_tokens WHERE token_sha256 = $1",
            &[&token_sha256],
        ))?;
        match row {
            None => Ok(None),
            Some(r) => {
                let name: String = r.get(0);
                let role: String = r.get(1);
                match Role::parse(&role) {
                    Some(role) => Ok(Some(ApiToken { name, role })),
                    None => Err(StoreError::Backend(format!(
                        "token {name} has unknown role {role:?}"
                    ))),
                }
            }
        }
    }

    fn channel_data_of(
        &self,
        channel: &str,
        versions: Option<&[u64]>,
    ) -> Result<ChannelData, StoreError> {
        let versions: Option<Vec<i64>> = versions
            .map(|vs| vs.iter().map(|v| to_i64(*v)).collect())
            .transpose()?;
        let mut c = self.client()?;
        block_on(async {
            // One consistent snapshot of the tables.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let endpoints = tx
                .query(
                    "SELECT id, host_group, os_build, hw_class, enrolled_at, last_seen
                     FROM endpoints",
                    &[],
                )
                .await?
                .iter()
                .map(endpoint_from_row)
                .collect();
            let mut data = ChannelData {
                endpoints,
                ..ChannelData::default()
            };
            data.heartbeats = tx
                .query(
                    "SELECT endpoint_id, at, channel, content_version, confirmed_healthy,
                         shutdown
                     FROM heartbeats WHERE channel = $1",
                    &[&channel],
                )
                .await?
                .iter()
                .map(|r| HeartbeatRow {
                    endpoint_id: r.get(0),
                    at: to_u64(r.get(1)),
                    channel: r.get(2),
                    content_version: to_u64(r.get(3)),
                    confirmed_healthy: r.get(4),
                    shutdown: r.get(5),
                })
                .collect();
            data.versions = tx
                .query(
                    "SELECT endpoint_id, version, first_seen, confirmed_healthy
                     FROM endpoint_versions
                     WHERE channel = $1 AND ($2::bigint[] IS NULL OR version = ANY($2))",
                    &[&channel, &versions],
                )
                .await?
                .iter()
                .map(|r| VersionRow {
                    endpoint_id: r.get(0),
                    version: to_u64(r.get(1)),
                    first_seen: to_u64(r.get(2)),
                    confirmed_healthy: r.get(3),
                })
                .collect();
            for r in tx
                .query(
                    "SELECT endpoint_id, channel, release_version, kind, at, reason
                     FROM guard_events
                     WHERE channel = $1 AND ($2::bigint[] IS NULL OR release_version = ANY($2))
                     ORDER BY id",
                    &[&channel, &versions],
                )
                .await?
            {
                let kind: String = r.get(3);
                let Some(kind) = GuardEventKind::parse(&kind) else {
                    return Err(StoreError::Backend(format!(
                        "unknown guard event kind {kind:?}"
                    )));
                };
                data.guard_events.push(GuardEventRow {
                    endpoint_id: r.get(0),
                    channel: r.get(1),
                    release_version: to_u64(r.get(2)),
                    kind,
                    at: to_u64(r.get(4)),
                    reason: r.get(5),
                });
            }
            data.detections = tx
                .query(
                    "SELECT endpoint_id, channel, release_version, rule, count FROM detections
                     WHERE channel = $1 AND ($2::bigint[] IS NULL OR release_version = ANY($2))",
                    &[&channel, &versions],
                )
                .await?
                .iter()
                .map(|r| DetectionRow {
                    endpoint_id: r.get(0),
                    channel: r.get(1),
                    release_version: to_u64(r.get(2)),
                    rule: r.get(3),
                    count: to_u64(r.get(4)),
                })
                .collect();
            tx.commit().await?;
            Ok(data)
        })
    }

    fn record_version_share(&self, at: u64, keep_since: u64) -> Result<bool, StoreError> {
        let at = to_i64(at)?;
        let keep_since = to_i64(keep_since)?;
        let mut c = self.client()?;
        block_on(async {
            if c.query_opt("SELECT 1 FROM version_share WHERE at >= $1 LIMIT 1", &[&at])
                .await?
                .is_some()
            {
                return Ok(false);
            }
            let tx = c.transaction().await?;
            // Of instances sampling together, the first to commit writes the sample.
            let n = tx
                .execute(
                    "INSERT INTO version_share (channel, at, version, endpoints)
                     SELECT channel, $1, content_version, COUNT(*) FROM heartbeats
                     WHERE NOT EXISTS (SELECT 1 FROM version_share WHERE at >= $1)
                     GROUP BY channel, content_version
                     ON CONFLICT DO NOTHING",
                    &[&at],
                )
                .await?;
            tx.execute("DELETE FROM version_share WHERE at < $1", &[&keep_since])
                .await?;
            tx.commit().await?;
            Ok(n > 0)
        })
    }

    fn version_share(&self, channel: &str, since: u64) -> Result<Vec<ShareRow>, StoreError> {
        let c = self.client()?;
        let rows = block_on(c.query(
            "SELECT at, version, endpoints FROM version_share WHERE channel = $1 AND at >= $2
             ORDER BY at, version",
            &[&channel, &to_i64(since)?],
        ))?;
        Ok(rows
            .iter()
            .map(|r| ShareRow {
                at: to_u64(r.get(0)),
                version: to_u64(r.get(1)),
                endpoints: to_u64(r.get(2)),
            })
            .collect())
    }

    fn prune_versions(&self, channel: &str, below: u64) -> Result<u64, StoreError> {
        let below = to_i64(below)?;
        let c = self.client()?;
        let mut total = 0u64;
        loop {
            // In batches, each its own transaction.
            let n = block_on(c.execute(
                "DELETE FROM endpoint_versions WHERE ctid = ANY(ARRAY(
                     SELECT ctid FROM endpoint_versions WHERE channel = $1 AND version < $2
                     LIMIT $3))",
                &[&channel, &below, &PRUNE_BATCH],
            ))?;
            total = total.saturating_add(n);
            if i64::try_from(n).unwrap_or(i64::MAX) < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }

    fn document(&self, name: &str) -> Result<Option<DocumentRow>, StoreError> {
        let c = self.client()?;
        block_on(async {
            Ok(c.query_opt(
                "SELECT version, body, updated_at FROM documents WHERE name = $1",
                &[&name],
            )
            .await?
            .map(|r| DocumentRow {
                version: to_u64(r.get(0)),
                body: r.get(1),
                updated_at: to_u64(r.get(2)),
            }))
        })
    }

    fn put_document(
        &self,
        name: &str,
        row: &DocumentRow,
        expected_version: Option<u64>,
        audit: Option<(&str, &str, &str)>,
    ) -> Result<(), StoreError> {
        let version = to_i64(row.version)?;
        let updated_at = to_i64(row.updated_at)?;
        let mut c = self.client()?;
        block_on(async {
            let tx = c.transaction().await?;
            // Compare-and-swap on the version, atomic across instances (see put_rollout).
            let written = match expected_version {
                None => {
                    tx.execute(
                        "INSERT INTO documents (name, version, body, updated_at)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                        &[&name, &version, &row.body, &updated_at],
                    )
                    .await?
                }
                Some(expected) => {
                    tx.execute(
                        "UPDATE documents SET version = $2, body = $3, updated_at = $4
                         WHERE name = $1 AND version = $5",
                        &[&name, &version, &row.body, &updated_at, &to_i64(expected)?],
                    )
                    .await?
                }
            };
            if written != 1 {
                return Err(StoreError::Conflict(format!(
                    "{name} changed concurrently (expected version {expected_version:?}); retry"
                )));
            }
            if let Some((channel, actor, event)) = audit {
                tx.execute(
                    "INSERT INTO rollout_events (channel, at, actor, event) VALUES ($1, $2, $3, $4)",
                    &[&channel, &updated_at, &actor, &event],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn table_counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut c = self.client()?;
        block_on(async {
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let mut out = BTreeMap::new();
            for t in TABLES {
                let n: i64 = tx
                    .query_one(&format!("SELECT COUNT(*) FROM {t}"), &[])
                    .await?
                    .get(0);
                out.insert((*t).to_owned(), to_u64(n));
            }
            tx.commit().await?;
            Ok(out)
        })
    }
}
