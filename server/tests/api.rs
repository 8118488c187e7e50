//! The server on loopback over real TLS: a self-signed certificate generated at start, a
//! reqwest (rustls) client that trusts only it. Every test runs twice: on the SQLite store, and on
//! the PostgreSQL store in a fresh schema of the server named by `BULWARK_TEST_POSTGRES`
//! (`.ci/run` starts one; without it the PostgreSQL runs print that they skipped).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bulwark_distribution::TrustState;
use bulwark_loader_boot_guard::envelope::public_key;
use bulwark_rollout::{ChannelRollout, EndpointFacts, EndpointId, Status, WaveThresholds};
use bulwark_server::api::{EnrollResponse, RolloutView};
use bulwark_server::metadata::Signing;
use bulwark_server::store::ApiToken;
use bulwark_server::tls::PemPair;
use bulwark_server::util::{random_token, sha256_hex, unhex};
use bulwark_server::{
    ChannelConfig, Clock, Config, PostgresStore, Role, Running, SqliteStore, Store,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

mod common;
use common::{
    envelope, pack, releases_file, root_file, signing_key, CHANNEL, ONLINE_KEY, OTHER_KEY,
    RELEASE_KEY, SECRET, T0,
};

struct Harness {
    _server: Running,
    time: Arc<AtomicU64>,
    base: String,
    client: reqwest::Client,
    store: Arc<dyn Store>,
    backend: Backend,
    dir: PathBuf,
    signing: Signing,
}

/// Where a harness keeps its data.
#[derive(Clone)]
enum Backend {
    /// A SQLite file in the harness's directory.
    Sqlite,
    /// A fresh schema (dropped at the end) in the PostgreSQL server at the URL.
    Postgres { url: String, schema: String },
}

impl Backend {
    /// The PostgreSQL backend for the test `name`, or `None` (with the reason printed) when no
    /// server was given.
    fn postgres(name: &str) -> Option<Backend> {
        match std::env::var("BULWARK_TEST_POSTGRES") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres {
                url,
                // PostgreSQL names are at most 63 bytes.
                schema: format!(
                    "test_{}_{}",
                    &name[..name.len().min(40)],
                    std::process::id()
                ),
            }),
            _ => {
                eprintln!(
                    "SKIPPED {name} on PostgreSQL: BULWARK_TEST_POSTGRES is not set \
                     (scripts/postgres-for-tests starts a server and prints its URL)"
                );
                None
            }
        }
    }
}

/// A test body run on both stores: `NAME_sqlite` and `NAME_postgres`.
macro_rules! on_both_stores {
    ($name:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $name(Backend::Sqlite).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            if let Some(b) = Backend::postgres(stringify!($name)) {
                $name(b).await;
            }
        }
    };
}

impl Harness {
    async fn new(name: &str, backend: Backend) -> Self {
        let kind = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres { .. } => "postgres",
        };
        // Both stores' runs of a test go on at once: each has a directory of its own.
        let dir = std::env::temp_dir().join(format!(
            "bulwark-server-test-{name}-{kind}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("server.db");
        let time = Arc::new(AtomicU64::new(T0));
        let clock_time = time.clone();
        let store: Arc<dyn Store> = match &backend {
            Backend::Sqlite => Arc::new(SqliteStore::open(&db).unwrap()),
            Backend::Postgres { url, schema } => {
                let fresh = PostgresStore::connect_in_schema(url, schema).unwrap();
                fresh.drop_schema(schema).unwrap();
                drop(fresh);
                Arc::new(PostgresStore::connect_in_schema(url, schema).unwrap())
            }
        };
        let signing = Signing::new(
            &root_file(),
            signing_key(&ONLINE_KEY),
            bulwark_server::metadata::DEFAULT_ROLLOUT_LIFETIME_SECS,
        )
        .unwrap();
        let config = Config {
            enrollment_secret: SECRET.to_owned(),
            trusted_keys: vec![public_key(&RELEASE_KEY)],
            channels: BTreeMap::from([(
                "stable".to_owned(),
                ChannelConfig {
                    number: CHANNEL,
                    critical: false,
                },
            )]),
            clock: Clock::from_fn(move || clock_time.load(Ordering::SeqCst)),
            signing: Some(signing.clone()),
        };
        let pem = PemPair::self_signed().unwrap();
        let server = bulwark_server::start(
            "127.0.0.1:0".parse().unwrap(),
            &pem,
            store.clone(),
            config,
            None,
        )
        .await
        .unwrap();
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(pem.cert_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        let base = format!("https://localhost:{}", server.addr.port());
        let client_resolved = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(pem.cert_pem.as_bytes()).unwrap())
            .resolve("localhost", server.addr)
            // The server closes a connection whose body it refused; never reuse one.
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        drop(client);
        Self {
            _server: server,
            time,
            base,
            client: client_resolved,
            store,
            backend,
            dir,
            signing,
        }
    }

    /// The controller's step, then the signing of what changed (what the server's loop does).
    fn tick(&self, now: u64) -> Vec<(String, Vec<bulwark_rollout::ControllerEvent>)> {
        let changed = bulwark_server::controller::tick(self.store.as_ref(), now).unwrap();
        self.signing
            .refresh_rollout(self.store.as_ref(), now)
            .unwrap();
        changed
    }

    /// What an endpoint holding root v1 accepts from the served metadata.
    async fn verified(&self) -> TrustState {
        let now = bulwark_rollout::Timestamp(self.time.load(Ordering::SeqCst));
        let mut trust = TrustState::bootstrap(&root_file()).unwrap();
        let served_root = self.text("/v1/metadata/root.json").await;
        assert_eq!(served_root, root_file());
        trust
            .update_releases(&self.text("/v1/metadata/releases.json").await, now)
            .unwrap();
        trust
            .update_rollout(&self.text("/v1/metadata/rollout.json").await, now)
            .unwrap();
        trust
    }

    async fn text(&self, path: &str) -> String {
        let resp = self.get(path, None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        resp.text().await.unwrap()
    }

    async fn put_raw(&self, path: &str, token: Option<&str>, body: String) -> (StatusCode, Value) {
        let mut req = self.client.put(self.url(path)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn set_time(&self, t: u64) {
        self.time.store(t, Ordering::SeqCst);
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn token(&self, role: Role, name: &str) -> String {
        let token = random_token("bwr_").unwrap();
        self.store
            .insert_api_token(
                &sha256_hex(token.as_bytes()),
                &ApiToken {
                    name: name.to_owned(),
                    role,
                },
                1,
            )
            .unwrap();
        token
    }

    async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Value) {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
        content_type: &str,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    async fn enroll(&self, os_build: &str) -> EnrollResponse {
        let (status, body) = self
            .post_json(
                "/v1/enroll",
                None,
                &json!({"secret": SECRET, "os_build": os_build, "hw_class": "x64-desktop", "host_group": "default"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body).unwrap()
    }

    /// Every row of every table, as text: the whole database.
    fn snapshot(&self) -> String {
        match &self.backend {
            Backend::Sqlite => sqlite_snapshot(&self.dir.join("server.db")),
            Backend::Postgres { url, schema } => postgres_snapshot(url, schema),
        }
    }
}

/// Every row of every table of the PostgreSQL schema, as text (on a thread of its own: the
/// tests call it from async code).
fn postgres_snapshot(url: &str, schema: &str) -> String {
    let (url, schema) = (url.to_owned(), schema.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let tables: Vec<String> = client
                .query(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = $1 ORDER BY table_name",
                    &[&schema],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(!tables.is_empty(), "no tables in schema {schema}");
            let mut out = String::new();
            for t in tables {
                out.push_str(&format!("== {t}\n"));
                let rows = client
                    .query(
                        &format!("SELECT row_to_json(x)::text AS j FROM {schema}.{t} x ORDER BY j"),
                        &[],
                    )
                    .await
                    .unwrap();
                for r in rows {
                    let j: String = r.get(0);
                    out.push_str(&j);
                    out.push('\n');
                }
            }
            out
        })
    })
    .join()
    .unwrap()
}

/// Every row of every table of the SQLite file, as text.
fn sqlite_snapshot(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut out = String::new();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for t in tables {
        out.push_str(&format!("== {t}\n"));
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {t} ORDER BY rowid"))
            .unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..n {
                let v: rusqlite::types::Value = row.get(i).unwrap();
                out.push_str(&format!("{v:?}|"));
            }
            out.push('\n');
        }
    }
    out
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Backend::Postgres { url, schema } = &self.backend {
            // Another connection than the store's (still open here, and dropped after).
            if let Ok(store) = PostgresStore::connect_in_schema(url, schema) {
                let _ = store.drop_schema(schema);
            }
        }
    }
}

fn facts(id: &str, os_build: &str) -> EndpointFacts {
    EndpointFacts {
        id: EndpointId(unhex(id).unwrap().try_into().unwrap()),
        os_build: os_build.to_owned(),
        hw_class: "x64-desktop".to_owned(),
        host_group: "default".to_owned(),
    }
}

on_both_stores!(
    enroll_report_publish_roll_out_and_fetch,
    enroll_report_publish_roll_out_and_fetch_sqlite,
    enroll_report_publish_roll_out_and_fetch_postgres
);
async fn enroll_report_publish_roll_out_and_fetch(backend: Backend) {
    let h = Harness::new("flow", backend).await;
    let endpoint = h.enroll("22631").await;
    assert_eq!(endpoint.endpoint_id.len(), 32);
    assert!(endpoint.token.starts_with("bwe_"));
    // Only the token's hash is stored.
    assert!(!h.snapshot().contains(&endpoint.token));
    assert!(h
        .snapshot()
        .contains(&sha256_hex(endpoint.token.as_bytes())));

    let (status, body) = h
        .post_json(
            "/v1/heartbeat",
            Some(&endpoint.token),
            &json!({"seq": 1, "channel": "stable", "content_version": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = h
        .post_json(
            "/v1/telemetry",
            Some(&endpoint.token),
            &json!({"seq": 2, "channel": "stable",
                "guard_events": [{"release_version": 0, "kind": "crash"}, {"release_version": 0, "kind": "revert"}],
                "detections": [{"release_version": 0, "rule": "rule-0", "count": 5}, {"release_version": 0, "rule": "rule-0", "count": 2}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"accepted": true, "guard_events": 2, "detections": 2, "alerts": 0})
    );
    let counts = h.store.table_counts().unwrap();
    assert_eq!(counts["heartbeats"], 1);
    assert_eq!(counts["guard_events"], 2);
    assert_eq!(
        counts["detections"], 1,
        "counts of one rule add up in one row"
    );
    let data = h.store.channel_data("stable").unwrap();
    assert_eq!(data.detections[0].count, 7);

    // Publish a real signed envelope.
    let publisher = h.token(Role::Publisher, "pat");
    let env = envelope(&RELEASE_KEY, 1);
    let (status, body) = h
        .post_raw(
            "/v1/releases?channel=stable&notes=first",
            Some(&publisher),
            env.clone(),
            "application/octet-stream",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let env_sha = sha256_hex(&env);
    assert_eq!(body["envelope_sha256"], json!(env_sha));
    assert_eq!(body["pack_sha256"], json!(sha256_hex(&pack(1))));
    assert_eq!(body["rules"], json!(["rule-1"]));
    assert_eq!(body["published_by"], json!("pat"));

    let viewer = h.token(Role::Viewer, "vic");
    let list: Value = h
        .get("/v1/releases?channel=stable", Some(&viewer))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["version"], json!(1));

    // No rollout of a release the release keys have not listed: endpoints would refuse it.
    let operator = h.token(Role::Operator, "olga");
    let (status, body) = h
        .post_json(
            "/v1/rollouts/stable/start",
            Some(&operator),
            &json!({"version": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], json!("not_in_releases_metadata"), "{body}");
    // The publisher uploads the releases metadata listing it.
    let (status, body) = h
        .put_raw(
            "/v1/metadata/releases.json",
            Some(&publisher),
            releases_file(&RELEASE_KEY, 1, &[(1, &env)]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["releases_version"], json!(1));

    // Start a rollout.
    let (status, body) = h
        .post_json(
            "/v1/rollouts/stable/start",
            Some(&operator),
            &json!({"version": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view: RolloutView = serde_json::from_value(body).unwrap();
    assert_eq!(view.state.release.version, 1);
    assert_eq!(
        view.state.release.envelope_sha256.to_vec(),
        unhex(&env_sha).unwrap()
    );
    assert_eq!(view.state.status, Status::Progressing);
    assert_eq!(view.state.open_waves, 1);
    // The only endpoint is in the first wave with room for one endpoint (the 50% wave).
    assert_eq!(
        view.thresholds
            .wave_of(&facts(&endpoint.endpoint_id, "22631")),
        Some(3)
    );

    // A reason is bounded text like every other: refused, nothing stored.
    let before = h.snapshot();
    for reason in ["x".repeat(257), "line\nbreak".to_owned(), String::new()] {
        let (status, body) = h
            .post_json(
                "/v1/rollouts/stable/pause",
                Some(&operator),
                &json!({ "reason": reason }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("reason must be 1 to 256 bytes"),
            "{body}"
        );
    }
    assert_eq!(h.snapshot(), before);

    let (status, body) = h
        .post_json(
            "/v1/rollouts/stable/pause",
            Some(&operator),
            &json!({"reason": "weekend"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = h
        .post_json("/v1/rollouts/stable/resume", Some(&operator), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got: Value = h
        .get("/v1/rollouts/stable", Some(&viewer))
        .await
        .json()
        .await
        .unwrap();
    let events = got["events"].as_array().unwrap();
    assert_eq!(events.len(), 4, "{got}"); // started, wave 0 opened, paused, resumed
    assert_eq!(events[2]["actor"], json!("olga (operator)"));
    assert!(events[2]["event"]["Paused"].is_object(), "{got}");

    // The static fetch path: signed metadata an endpoint verifies from the root it ships with.
    let trust = h.verified().await;
    let doc = trust
        .current(bulwark_rollout::Timestamp(T0))
        .unwrap()
        .unwrap();
    let stable: &ChannelRollout = doc.state.channel("stable").unwrap();
    assert_eq!(stable.revision, 3);
    assert_eq!(stable.release.version, 1);
    let thresholds: &WaveThresholds = &doc.thresholds["stable"];
    assert_eq!(thresholds, &view.thresholds);
    // Signed at the releases upload (no rollout yet), the start, the pause and the resume; the
    // commands that changed nothing were not re-signed.
    assert_eq!(doc.version, 4);

    let resp = h.get(&format!("/v1/envelopes/{env_sha}"), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(resp.headers()["etag"], format!("\"{env_sha}\"").as_str());
    assert_eq!(resp.bytes().await.unwrap().to_vec(), env);
    let missing = "0".repeat(64);
    let resp = h.get(&format!("/v1/envelopes/{missing}"), None).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // export writes exactly the fetch path.
    let out = h.dir.join("export");
    let written = bulwark_server::export::export(h.store.as_ref(), &out).unwrap();
    assert_eq!(written.len(), 4);
    for name in ["root.json", "releases.json", "rollout.json"] {
        let served = h
            .get(&format!("/v1/metadata/{name}"), None)
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("v1/metadata").join(name)).unwrap(),
            served,
            "{name}"
        );
    }
    assert_eq!(
        std::fs::read(out.join("v1/envelopes").join(&env_sha)).unwrap(),
        env
    );
    assert_eq!(
        std::fs::read_dir(out.join("v1/envelopes")).unwrap().count(),
        1
    );
    // Exactly the three files: no temporary file left behind.
    assert_eq!(
        Path::new(&out.join("v1/metadata"))
            .read_dir()
            .unwrap()
            .count(),
        3
    );
}

/// 20 endpoints enrolled, release 1 published and listed, and its rollout started with a 25%
/// canary wave: the endpoints of the canary and the rest.
async fn canary_rollout(h: &Harness) -> (Vec<EnrollResponse>, Vec<EnrollResponse>) {
    let publisher = h.token(Role::Publisher, "pat");
    let operator = h.token(Role::Operator, "olga");
    let mut endpoints = Vec::new();
    for _ in 0..20 {
        endpoints.push(h.enroll("22631").await);
    }
    let (status, body) = h
        .post_raw(
            "/v1/releases?channel=stable",
            Some(&publisher),
            envelope(&RELEASE_KEY, 1),
            "application/octet-stream",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = h
        .put_raw(
            "/v1/metadata/releases.json",
            Some(&publisher),
            releases_file(&RELEASE_KEY, 1, &[(1, &envelope(&RELEASE_KEY, 1))]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = h
        .post_json(
            "/v1/rollouts/stable/start",
            Some(&operator),
            &json!({"version": 1, "plan": {"waves": [
            {"name": "canary", "fraction_ppm": 250_000, "bake_secs": 3600, "min_healthy": 1},
            {"name": "all", "fraction_ppm": 1_000_000, "bake_secs": 3600, "min_healthy": 1}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view: RolloutView = serde_json::from_value(body).unwrap();
    let (first, rest): (Vec<_>, Vec<_>) = endpoints
        .into_iter()
        .partition(|e| view.thresholds.wave_of(&facts(&e.endpoint_id, "22631")) == Some(0));
    (first, rest)
}

on_both_stores!(
    controller_halts_on_quarantines_in_the_first_wave,
    controller_halts_on_quarantines_in_the_first_wave_sqlite,
    controller_halts_on_quarantines_in_the_first_wave_postgres
);
async fn controller_halts_on_quarantines_in_the_first_wave(backend: Backend) {
    let h = Harness::new("controller", backend).await;
    let (first, rest) = canary_rollout(&h).await;
    assert_eq!((first.len(), rest.len()), (5, 15));
    // Everyone reports at T0 (the canaries on the release), and again ten minutes later.
    let canary = &first[0];
    for (seq, t) in [(1, T0), (2, T0 + 600)] {
        h.set_time(t);
        for (e, version) in rest
            .iter()
            .map(|e| (e, 0))
            .chain(first.iter().map(|e| (e, 1)))
        {
            let (status, _) = h
                .post_json(
                    "/v1/heartbeat",
                    Some(&e.token),
                    &json!({"seq": seq, "channel": "stable", "content_version": version}),
                )
                .await;
            assert_eq!(status, StatusCode::OK);
        }
    }

    // One quarantine in 3000 canary endpoint-seconds against none in 9000 on the baseline
    // (p = 0.25) changes nothing: the controller only holds (bake time, confirmations).
    let (status, _) = h
        .post_json(
            "/v1/telemetry",
            Some(&canary.token),
            &json!({"seq": 3, "channel": "stable",
            "guard_events": [{"release_version": 1, "kind": "quarantine"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let now = T0 + 600;
    let changed = h.tick(now);
    assert!(changed.is_empty(), "{changed:?}");
    let trust = h.verified().await;
    let doc = trust
        .current(bulwark_rollout::Timestamp(now))
        .unwrap()
        .unwrap();
    assert_eq!(
        doc.state.channel("stable").unwrap().status,
        Status::Progressing
    );

    // A second quarantine on the release reaches the ceiling: halted with revert.
    let (status, _) = h
        .post_json(
            "/v1/telemetry",
            Some(&canary.token),
            &json!({"seq": 4, "channel": "stable",
            "guard_events": [{"release_version": 1, "kind": "quarantine"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let changed = h.tick(now);
    assert_eq!(changed.len(), 1);
    let trust = h.verified().await;
    let doc = trust
        .current(bulwark_rollout::Timestamp(now))
        .unwrap()
        .unwrap();
    let stable = doc.state.channel("stable").unwrap();
    assert!(stable.is_halted(), "{:?}", stable.status);
    assert!(stable.revert);
    let viewer = h.token(Role::Viewer, "vic");
    let got: Value = h
        .get("/v1/rollouts/stable", Some(&viewer))
        .await
        .json()
        .await
        .unwrap();
    let last = got["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"], json!("controller"));
    assert!(
        last["event"]["Halted"]["record"]["cause"]["Automatic"].is_object(),
        "{last}"
    );
    // A halted rollout is not stepped again.
    assert!(
        bulwark_server::controller::tick(h.store.as_ref(), now + 3600)
            .unwrap()
            .is_empty()
    );
}

/// An alert as an endpoint's service sends it.
fn alert_json(version: u64, rule: &str, command_line: &str) -> Value {
    json!({"release_version": version, "rule": rule, "title": format!("Title of {rule}"),
        "author": "Florian Roth", "level": "high", "action": "alert", "blocked": false,
        "time_ms": 1_700_000_000_000u64, "event_type": "process_creation", "process_id": 4242,
        "parent_process_id": 7, "image": "C:\\Windows\\System32\\cmd.exe",
        "command_line": command_line, "user": "CORP\\alice",
        "parent_image": "C:\\Windows\\explorer.exe", "hashes": "SHA256=00ff", "truncated": []})
}

on_both_stores!(
    rejections_and_alerts_are_kept_read_back_and_a_rejection_halts,
    rejections_and_alerts_are_kept_read_back_and_a_rejection_halts_sqlite,
    rejections_and_alerts_are_kept_read_back_and_a_rejection_halts_postgres
);
async fn rejections_and_alerts_are_kept_read_back_and_a_rejection_halts(backend: Backend) {
    let h = Harness::new("rejections", backend).await;
    let viewer = h.token(Role::Viewer, "vic");
    let (first, rest) = canary_rollout(&h).await;
    // Everyone reports on the baseline at T0: the canaries have not taken the release.
    h.set_time(T0);
    for e in rest.iter().chain(first.iter()) {
        let (status, _) = h
            .post_json(
                "/v1/heartbeat",
                Some(&e.token),
                &json!({"seq": 1, "channel": "stable", "content_version": 0}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let now = T0 + 600;
    h.set_time(now);
    assert!(h.tick(now).is_empty());

    // One canary's verifier refuses the release, and another sends two alerts of the baseline.
    let reason =
        "verifier: rule 3 (\"Suspicious Child\"): field 21 of process_creation does not exist";
    let (status, body) = h
        .post_json(
            "/v1/telemetry",
            Some(&first[0].token),
            &json!({"seq": 2, "channel": "stable",
                "guard_events": [{"release_version": 1, "kind": "reject", "reason": reason}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let long = "ü".repeat(2000);
    let (status, body) = h
        .post_json(
            "/v1/telemetry",
            Some(&first[1].token),
            &json!({"seq": 2, "channel": "stable",
                "alerts": [alert_json(0, "rule-a", "cmd.exe /c whoami"), alert_json(0, "rule-b", &long)]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["alerts"], json!(2));

    // Read back: the rejection with its reason, the alerts with their context and ids.
    let got: Value = h
        .get("/v1/rejections?channel=stable&version=1", Some(&viewer))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        got,
        json!([{"endpoint_id": first[0].endpoint_id, "release_version": 1, "reason": reason, "at": now}])
    );
    let none: Value = h
        .get("/v1/rejections?channel=stable&version=2", Some(&viewer))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none, json!([]));
    let page: Value = h
        .get("/v1/alerts?channel=stable&limit=1", Some(&viewer))
        .await
        .json()
        .await
        .unwrap();
    let alerts = page["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["rule"], json!("rule-a"));
    assert_eq!(alerts[0]["author"], json!("Florian Roth"));
    assert_eq!(alerts[0]["command_line"], json!("cmd.exe /c whoami"));
    assert_eq!(alerts[0]["endpoint_id"], json!(first[1].endpoint_id));
    assert_eq!(alerts[0]["received_at"], json!(now));
    let next = page["next"].as_u64().unwrap();
    let page: Value = h
        .get(
            &format!("/v1/alerts?channel=stable&after={next}"),
            Some(&viewer),
        )
        .await
        .json()
        .await
        .unwrap();
    let alerts = page["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["command_line"], json!(long));
    let after = page["next"].as_u64().unwrap();
    assert!(after > next);
    let page: Value = h
        .get(
            &format!("/v1/alerts?channel=stable&after={after}"),
            Some(&viewer),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page, json!({"alerts": [], "next": after}));
    let resp = h
        .get("/v1/alerts?channel=stable&limit=0", Some(&viewer))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = h.get("/v1/alerts?channel=nope", Some(&viewer)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = h.get("/v1/alerts?channel=stable", None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // The controller counts the rejection: the canary wave fails its ceiling and the rollout halts.
    let changed = h.tick(now);
    assert_eq!(changed.len(), 1, "{changed:?}");
    let got: Value = h
        .get("/v1/rollouts/stable", Some(&viewer))
        .await
        .json()
        .await
        .unwrap();
    let last = got["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"], json!("controller"));
    let failed = &last["event"]["Halted"]["record"]["cause"]["Automatic"]["failed"];
    assert!(
        failed
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["test"] == json!("rejection-ceiling")),
        "{last}"
    );
}

/// Sends a request that must be refused and checks the status, the error code, a part of the
/// message, and that the database did not change.
async fn refused(
    h: &Harness,
    response: (StatusCode, Value),
    status: StatusCode,
    code: &str,
    message: &str,
    before: &str,
) {
    let (got, body) = response;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"], json!(code), "{body}");
    let text = body["message"].as_str().unwrap();
    assert!(
        text.contains(message),
        "{text:?} does not contain {message:?}"
    );
    assert_eq!(h.snapshot(), before, "the database changed");
}

on_both_stores!(
    refusals_store_nothing,
    refusals_store_nothing_sqlite,
    refusals_store_nothing_postgres
);
async fn refusals_store_nothing(backend: Backend) {
    let h = Harness::new("refusals", backend).await;
    let e = h.enroll("22631").await;
    let (status, _) = h
        .post_json(
            "/v1/heartbeat",
            Some(&e.token),
            &json!({"seq": 5, "channel": "stable", "content_version": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let publisher = h.token(Role::Publisher, "pat");
    let viewer = h.token(Role::Viewer, "vic");
    let operator = h.token(Role::Operator, "olga");
    let before = h.snapshot();
    let s = &before;

    let enroll = |secret: &str| json!({"secret": secret, "os_build": "1", "hw_class": "x", "host_group": "g"});
    refused(
        &h,
        h.post_json("/v1/enroll", None, &enroll("wrong")).await,
        StatusCode::UNAUTHORIZED,
        "bad_enrollment_secret",
        "wrong enrollment secret",
        s,
    )
    .await;
    refused(
        &h,
        h.post_json("/v1/enroll", None, &enroll(&SECRET[..SECRET.len() - 1]))
            .await,
        StatusCode::UNAUTHORIZED,
        "bad_enrollment_secret",
        "wrong enrollment secret",
        s,
    )
    .await;
    refused(
        &h,
        h.post_raw(
            "/v1/enroll",
            None,
            b"{\"secret\": ".to_vec(),
            "application/json",
        )
        .await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
        "malformed JSON body: EOF while parsing",
        s,
    )
    .await;
    refused(&h, h.post_json("/v1/enroll", None, &json!({"secret": SECRET, "os_build": "1", "hw_class": "x", "host_group": "g", "admin": true})).await,
        StatusCode::BAD_REQUEST, "malformed_json", "unknown field `admin`", s).await;
    refused(
        &h,
        h.post_json("/v1/enroll", None, &enroll(&"a".repeat(20_000)))
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "length limit exceeded",
        s,
    )
    .await;

    // Endpoint tokens.
    let hb = |seq: u64| json!({"seq": seq, "channel": "stable", "content_version": 0});
    refused(
        &h,
        h.post_json("/v1/heartbeat", None, &hb(6)).await,
        StatusCode::UNAUTHORIZED,
        "missing_token",
        "missing bearer token",
        s,
    )
    .await;
    refused(
        &h,
        h.post_json("/v1/heartbeat", Some("bwe_0000"), &hb(6)).await,
        StatusCode::UNAUTHORIZED,
        "bad_token",
        "unknown endpoint token",
        s,
    )
    .await;
    refused(
        &h,
        h.post_json("/v1/heartbeat", Some(&publisher), &hb(6)).await,
        StatusCode::UNAUTHORIZED,
        "bad_token",
        "unknown endpoint token",
        s,
    )
    .await;
    refused(
        &h,
        h.post_json("/v1/heartbeat", Some(&e.token), &hb(5)).await,
        StatusCode::CONFLICT,
        "replayed",
        "sequence 5 is not above the last accepted 5",
        s,
    )
    .await;
    refused(
        &h,
        h.post_json(
            "/v1/telemetry",
            Some(&e.token),
            &json!({"seq": 4, "channel": "stable", "guard_events": [{"release_version": 0, "kind": "crash"}]}),
        )
        .await,
        StatusCode::CONFLICT,
        "replayed",
        "sequence 4 is not above the last accepted 5",
        s,
    )
    .await;
    refused(
        &h,
        h.post_json(
            "/v1/heartbeat",
            Some(&e.token),
            &json!({"seq": 6, "channel": "beta", "content_version": 0}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "unknown channel \"beta\"",
        s,
    )
    .await;
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"release_version": 0, "kind": "crash"}))
        .collect();
    refused(
        &h,
        h.post_json(
            "/v1/telemetry",
            Some(&e.token),
            &json!({"seq": 6, "channel": "stable", "guard_events": many}),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "batch_too_large",
        "at most 1000 guard events",
        s,
    )
    .await;
    refused(&h, h.post_json("/v1/telemetry", Some(&e.token), &json!({"seq": 6, "channel": "stable", "guard_events": [{"release_version": 0, "kind": "explosion"}]})).await,
        StatusCode::BAD_REQUEST, "malformed_json", "unknown variant `explosion`", s).await;
    refused(&h, h.post_json("/v1/telemetry", Some(&e.token), &json!({"seq": 6, "channel": "stable", "guard_events": [{"release_version": 0, "kind": "reject"}]})).await,
        StatusCode::BAD_REQUEST, "bad_request", "a guard event of kind reject needs a reason", s).await;
    refused(&h, h.post_json("/v1/telemetry", Some(&e.token), &json!({"seq": 6, "channel": "stable", "guard_events": [{"release_version": 0, "kind": "crash", "reason": "why"}]})).await,
        StatusCode::BAD_REQUEST, "bad_request", "only a reject has a reason (a crash was sent with one)", s).await;
    refused(&h, h.post_json("/v1/telemetry", Some(&e.token), &json!({"seq": 6, "channel": "stable", "guard_events": [{"release_version": 0, "kind": "reject", "reason": "x".repeat(2049)}]})).await,
        StatusCode::BAD_REQUEST, "bad_request", "reason must be at most 2048 bytes", s).await;
    refused(
        &h,
        h.post_json(
            "/v1/telemetry",
            Some(&e.token),
            &json!({"seq": 6, "channel": "stable", "alerts": [alert_json(1, "r", "cmd\u{0}line")]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "command_line must be at most 4096 bytes without NUL",
        s,
    )
    .await;
    refused(&h, h.post_json("/v1/telemetry", Some(&e.token), &json!({"seq": 6, "channel": "stable", "alerts": [alert_json(1, "r", &"x".repeat(4097))]})).await,
        StatusCode::BAD_REQUEST, "bad_request", "command_line must be at most 4096 bytes", s).await;
    let many_alerts: Vec<Value> = (0..1001).map(|_| alert_json(1, "r", "c")).collect();
    refused(
        &h,
        h.post_json(
            "/v1/telemetry",
            Some(&e.token),
            &json!({"seq": 6, "channel": "stable", "alerts": many_alerts}),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "batch_too_large",
        "1000 alerts (0, 0 and 1001 sent)",
        s,
    )
    .await;

    // Roles.
    let good = envelope(&RELEASE_KEY, 1);
    refused(
        &h,
        h.post_raw(
            "/v1/releases?channel=stable",
            Some(&viewer),
            good.clone(),
            "application/octet-stream",
        )
        .await,
        StatusCode::FORBIDDEN,
        "wrong_role",
        "token \"vic\" has role viewer; this needs publisher",
        s,
    )
    .await;
    refused(
        &h,
        h.post_raw(
            "/v1/releases?channel=stable",
            Some(&operator),
            good.clone(),
            "application/octet-stream",
        )
        .await,
        StatusCode::FORBIDDEN,
        "wrong_role",
        "has role operator; this needs publisher",
        s,
    )
    .await;
    refused(
        &h,
        h.post_raw(
            "/v1/releases?channel=stable",
            Some(&e.token),
            good.clone(),
            "application/octet-stream",
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "bad_token",
        "unknown API token",
        s,
    )
    .await;
    refused(
        &h,
        h.post_json(
            "/v1/rollouts/stable/start",
            Some(&publisher),
            &json!({"version": 1}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "wrong_role",
        "this needs operator",
        s,
    )
    .await;

    // Envelopes the loader refuses, with the loader's message.
    refused(
        &h,
        h.post_raw(
            "/v1/releases?channel=stable",
            Some(&publisher),
            envelope(&OTHER_KEY, 1),
            "application/octet-stream",
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "envelope_rejected",
        "is not a trusted key",
        s,
    )
    .await;
    let mut tampered = good.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let (status, body) = h
        .post_raw(
            "/v1/releases?channel=stable",
            Some(&publisher),
            tampered,
            "application/octet-stream",
        )
        .await;
    assert_eq!(body["details"]["loader_code"], json!(111), "{body}");
    refused(
        &h,
        (status, body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "envelope_rejected",
        "signature",
        s,
    )
    .await;
    refused(
        &h,
        h.post_raw(
            "/v1/releases?channel=stable",
            Some(&publisher),
            b"not an envelope".to_vec(),
            "application/octet-stream",
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "envelope_rejected",
        "shorter than its 152-byte header",
        s,
    )
    .await;
    refused(
        &h,
        h.post_raw(
            "/v1/releases?channel=beta",
            Some(&publisher),
            good.clone(),
            "application/octet-stream",
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "unknown channel \"beta\"",
        s,
    )
    .await;
    refused(
        &h,
        h.post_raw(
            "/v1/releases?channel=stable",
            Some(&publisher),
            vec![0; 9 << 20],
            "application/octet-stream",
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "length limit exceeded",
        s,
    )
    .await;

    // Rollout commands.
    refused(
        &h,
        h.post_json(
            "/v1/rollouts/stable/start",
            Some(&operator),
            &json!({"version": 1}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "no release 1 on channel \"stable\"",
        s,
    )
    .await;
    refused(
        &h,
        h.post_json(
            "/v1/rollouts/stable/pause",
            Some(&operator),
            &json!({"reason": "x"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "channel \"stable\" has no rollout",
        s,
    )
    .await;
    refused(
        &h,
        h.post_json("/v1/rollouts/stable/explode", Some(&operator), &json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "unknown rollout command \"explode\"",
        s,
    )
    .await;
    refused(
        &h,
        h.post_json("/v1/nothing-here", None, &json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint",
        s,
    )
    .await;

    // Anti-downgrade once a release exists, refused by the loader.
    let (status, body) = h
        .post_raw(
            "/v1/releases?channel=stable",
            Some(&publisher),
            good.clone(),
            "application/octet-stream",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Releases metadata: forged, listing a pack never published, from a viewer, not UTF-8, or
    // not newer than the stored one: refused, nothing stored.
    let s = &h.snapshot();
    let other_env = envelope(&RELEASE_KEY, 2);
    for (file, status, code, message) in [
        (
            releases_file(&OTHER_KEY, 1, &[(1, &good)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "metadata_refused",
            "0 valid signatures by the releases keys of root v1, 1 required (1 by keys not in the role",
        ),
        (
            releases_file(&RELEASE_KEY, 1, &[(1, &good), (2, &other_env)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unpublished_release",
            "lists \"stable\" version 2, which was never published here",
        ),
        (
            "{\"signed\": 1}".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "metadata_refused",
            "releases metadata is malformed",
        ),
    ] {
        refused(
            &h,
            h.put_raw("/v1/metadata/releases.json", Some(&publisher), file)
                .await,
            status,
            code,
            message,
            s,
        )
        .await;
    }
    let viewer = h.token(Role::Viewer, "vic");
    let s = &h.snapshot();
    refused(
        &h,
        h.put_raw(
            "/v1/metadata/releases.json",
            Some(&viewer),
            releases_file(&RELEASE_KEY, 1, &[(1, &good)]),
        )
        .await,
        StatusCode::FORBIDDEN,
        "wrong_role",
        "this needs publisher",
        s,
    )
    .await;
    refused(
        &h,
        h.put_raw(
            "/v1/metadata/rollout.json",
            Some(&publisher),
            releases_file(&RELEASE_KEY, 1, &[(1, &good)]),
        )
        .await,
        StatusCode::METHOD_NOT_ALLOWED,
        "read_only",
        "only releases.json",
        s,
    )
    .await;
    let (status, body) = h
        .put_raw(
            "/v1/metadata/releases.json",
            Some(&publisher),
            releases_file(&RELEASE_KEY, 2, &[(1, &good)]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s = &h.snapshot();
    refused(
        &h,
        h.put_raw(
            "/v1/metadata/releases.json",
            Some(&publisher),
            releases_file(&RELEASE_KEY, 1, &[(1, &good)]),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "metadata_refused",
        "releases metadata rolled back: version 1, the newest seen is 2",
        s,
    )
    .await;
    let after_publish = h.snapshot();
    refused(
        &h,
        h.post_raw(
            "/v1/releases?channel=stable",
            Some(&publisher),
            good,
            "application/octet-stream",
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "envelope_rejected",
        "version 1 is not newer than version 1",
        &after_publish,
    )
    .await;
    // A command the controller refuses.
    refused(
        &h,
        h.post_json(
            "/v1/rollouts/stable/start",
            Some(&operator),
            &json!({"version": 1, "plan": {"waves": []}}),
        )
        .await,
        StatusCode::CONFLICT,
        "command_refused",
        "invalid plan",
        &after_publish,
    )
    .await;
}
