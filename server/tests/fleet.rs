//! End to end on loopback: bulwark-server over TLS with its signed distribution metadata, and a
//! fleet of simulated endpoints that do what the endpoint service does through the real API:
//! enroll, verify the metadata from the root they ship with, decide with the rollout model's
//! decision function, fetch envelopes by hash, heartbeat, confirm healthy, report guard events.
//!
//! A good release rolls out to every endpoint wave by wave; a bad one (every endpoint that
//! loads it crashes three times, and its guard quarantines it) halts in its first wave, the
//! revert instruction reaches the endpoints that took it, and no endpoint outside the first wave
//! ever loads it. The endpoint side refuses forged, rolled-back and expired metadata and stops
//! acting on a rollout the server stopped re-signing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bulwark_distribution::{Error as TrustError, Role as MetadataRole, TrustState};
use bulwark_rollout::{decide, Decision, EndpointFacts, EndpointId, Status, Timestamp};
use bulwark_server::api::EnrollResponse;
use bulwark_server::metadata::Signing;
use bulwark_server::store::ApiToken;
use bulwark_server::tls::PemPair;
use bulwark_server::util::{random_token, sha256_hex, unhex};
use bulwark_server::{ChannelConfig, Clock, Config, Role, Running, SqliteStore, Store};
use reqwest::StatusCode;
use serde_json::{json, Value};

mod common;
use common::{
    envelope, releases_file, root_file, signing_key, CHANNEL, ONLINE_KEY, RELEASE_KEY, SECRET, T0,
};

const BUILDS: [&str; 3] = ["19045", "22631", "26100"];
const FLEET: usize = 120;
const ROUND_SECS: u64 = 300;
const LIFETIME: u64 = 6 * 3600;

/// One simulated endpoint: what its service and guard hold.
struct Endpoint {
    facts: EndpointFacts,
    token: String,
    seq: u64,
    trust: TrustState,
    /// The content version loaded (0: none yet).
    running: u64,
    /// The guard's last-known-good.
    last_known_good: u64,
    /// Versions its guard quarantined.
    quarantined: BTreeSet<u64>,
    /// Every version it ever loaded (or tried to).
    loaded: BTreeSet<u64>,
    /// Whether the running version was confirmed healthy (reported once).
    confirmed: bool,
}

struct Fleet {
    _server: Running,
    _dir: tempdir::Dir,
    time: Arc<AtomicU64>,
    client: reqwest::Client,
    base: String,
    store: Arc<dyn Store>,
    signing: Signing,
    endpoints: Vec<Endpoint>,
    /// Versions whose load crashes the kernel.
    bad: BTreeSet<u64>,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Fleet {
    async fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("bulwark-fleet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let time = Arc::new(AtomicU64::new(T0));
        let clock_time = time.clone();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("server.db")).unwrap());
        let signing = Signing::new(&root_file(), signing_key(&ONLINE_KEY), LIFETIME).unwrap();
        let config = Config {
            enrollment_secret: SECRET.to_owned(),
            trusted_keys: Vec::new(),
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
            .resolve("localhost", server.addr)
            .build()
            .unwrap();
        let base = format!("https://localhost:{}", server.addr.port());
        let mut fleet = Self {
            _server: server,
            _dir: tempdir::Dir(dir),
            time,
            client,
            base,
            store,
            signing,
            endpoints: Vec::new(),
            bad: BTreeSet::new(),
        };
        for i in 0..FLEET {
            let os_build = BUILDS[i % BUILDS.len()];
            let (status, body) = fleet
                .post(
                    "/v1/enroll",
                    None,
                    &json!({"secret": SECRET, "os_build": os_build, "hw_class": "x64-vm",
                        "host_group": "default"}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let e: EnrollResponse = serde_json::from_value(body).unwrap();
            fleet.endpoints.push(Endpoint {
                facts: EndpointFacts {
                    id: EndpointId(unhex(&e.endpoint_id).unwrap().try_into().unwrap()),
                    os_build: os_build.to_owned(),
                    hw_class: "x64-vm".to_owned(),
                    host_group: "default".to_owned(),
                },
                token: e.token,
                seq: 0,
                // The root ships with the endpoint (out of band).
                trust: TrustState::bootstrap(&root_file()).unwrap(),
                running: 0,
                last_known_good: 0,
                quarantined: BTreeSet::new(),
                loaded: BTreeSet::new(),
                confirmed: false,
            });
        }
        fleet
    }

    fn now(&self) -> u64 {
        self.time.load(Ordering::SeqCst)
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
                T0,
            )
            .unwrap();
        token
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }

    async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Vec<u8>,
    ) -> Value {
        let resp = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    /// A publisher publishes `version` and signs the releases metadata listing every version
    /// published so far (`releases_version` = the count).
    async fn publish(&self, publisher: &str, version: u64) {
        let env = envelope(&RELEASE_KEY, version);
        self.send_raw(
            reqwest::Method::POST,
            "/v1/releases?channel=stable",
            publisher,
            env,
        )
        .await;
        let all: Vec<(u64, Vec<u8>)> = (1..=version)
            .map(|v| (v, envelope(&RELEASE_KEY, v)))
            .collect();
        let listed: Vec<(u64, &[u8])> = all.iter().map(|(v, e)| (*v, e.as_slice())).collect();
        self.send_raw(
            reqwest::Method::PUT,
            "/v1/metadata/releases.json",
            publisher,
            releases_file(&RELEASE_KEY, version, &listed).into_bytes(),
        )
        .await;
    }

    /// The server's loop body: the controller's step, then signing what changed.
    fn controller(&self) -> Vec<(String, Vec<bulwark_rollout::ControllerEvent>)> {
        let now = self.now();
        let changed = bulwark_server::controller::tick(self.store.as_ref(), now).unwrap();
        self.signing
            .refresh_rollout(self.store.as_ref(), now)
            .unwrap();
        changed
    }

    /// One round: every endpoint fetches the metadata, decides, acts and reports.
    async fn round(&mut self) {
        let now = self.now();
        let (_, releases) = self.get_text("/v1/metadata/releases.json").await;
        let (_, rollout) = self.get_text("/v1/metadata/rollout.json").await;
        let mut endpoints = std::mem::take(&mut self.endpoints);
        for e in &mut endpoints {
            self.endpoint_round(e, &releases, &rollout, now).await;
        }
        self.endpoints = endpoints;
    }

    async fn endpoint_round(&self, e: &mut Endpoint, releases: &str, rollout: &str, now: u64) {
        let ts = Timestamp(now);
        // What a service does with fetched metadata: update, and keep the newest it has seen.
        let _ = e.trust.update_releases(releases, ts);
        let _ = e.trust.update_rollout(rollout, ts);
        let mut guard_events = Vec::new();
        if let Ok(Some(signed)) = e.trust.current(ts) {
            let state = signed.state.channel("stable").unwrap();
            let policy = signed.policies.resolve(&e.facts.host_group, "stable");
            let decision = decide(state, &e.facts, policy, &signed.thresholds["stable"], ts);
            match decision {
                Decision::Run { version, pack_hash }
                    if version != e.running && !e.quarantined.contains(&version) =>
                {
                    // Fetch the envelope by content address and check it.
                    let sha = bulwark_rollout::hex::encode(&state.release.envelope_sha256);
                    let resp = self
                        .client
                        .get(format!("{}/v1/envelopes/{sha}", self.base))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), StatusCode::OK);
                    let bytes = resp.bytes().await.unwrap();
                    assert_eq!(sha256_hex(&bytes), sha);
                    assert_eq!(pack_hash, state.release.pack_hash);
                    e.loaded.insert(version);
                    if self.bad.contains(&version) {
                        // Three crashed boots; the guard reverts and quarantines.
                        for kind in ["crash", "crash", "crash", "revert", "quarantine"] {
                            guard_events.push(json!({"release_version": version, "kind": kind}));
                        }
                        e.quarantined.insert(version);
                    } else {
                        e.running = version;
                        e.confirmed = false;
                    }
                }
                Decision::RevertToLastKnownGood { halted_version }
                    if e.running == halted_version =>
                {
                    guard_events.push(json!({"release_version": halted_version, "kind": "revert"}));
                    e.running = e.last_known_good;
                    e.confirmed = true;
                }
                _ => {}
            }
        }
        if !guard_events.is_empty() {
            e.seq += 1;
            let (status, body) = self
                .post(
                    "/v1/telemetry",
                    Some(&e.token),
                    &json!({"seq": e.seq, "channel": "stable", "guard_events": guard_events}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        // Healthy after a round on the version: the guard blesses it.
        let confirm = e.running != 0 && !e.confirmed;
        e.seq += 1;
        let (status, body) = self
            .post(
                "/v1/heartbeat",
                Some(&e.token),
                &json!({"seq": e.seq, "channel": "stable", "content_version": e.running,
                    "confirmed_healthy": confirm}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if confirm {
            e.confirmed = true;
            e.last_known_good = e.running;
        }
    }

    fn advance(&self, secs: u64) {
        self.time.fetch_add(secs, Ordering::SeqCst);
    }

    fn state(&self) -> bulwark_rollout::ChannelRollout {
        serde_json::from_str(&self.store.rollout("stable").unwrap().unwrap().state).unwrap()
    }
}

fn plan() -> Value {
    json!({"waves": [
        {"name": "canary", "fraction_ppm": 10_000, "bake_secs": 3600, "min_healthy": 1},
        {"name": "early", "fraction_ppm": 200_000, "bake_secs": 3600, "min_healthy": 5},
        {"name": "all", "fraction_ppm": 1_000_000, "bake_secs": 3600, "min_healthy": 5}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_release_halts_in_its_first_wave_and_the_revert_reaches_the_fleet() {
    let mut f = Fleet::new().await;
    let publisher = f.token(Role::Publisher, "pat");
    let operator = f.token(Role::Operator, "olga");

    // Release 1 is good: it reaches every endpoint, wave by wave.
    f.publish(&publisher, 1).await;
    let (status, body) = f
        .post(
            "/v1/rollouts/stable/start",
            Some(&operator),
            &json!({"version": 1, "plan": plan()}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut rounds = 0;
    while !matches!(f.state().status, Status::Complete { .. }) {
        f.round().await;
        f.advance(ROUND_SECS);
        f.controller();
        rounds += 1;
        if rounds >= 60 {
            let viewer = f.token(Role::Viewer, "vic");
            let resp = f
                .client
                .get(format!("{}/v1/dashboard/summary", f.base))
                .bearer_auth(viewer)
                .send()
                .await
                .unwrap();
            panic!(
                "release 1 did not complete: {:?}\n{}",
                f.state(),
                resp.text().await.unwrap()
            );
        }
    }
    assert!(f.endpoints.iter().all(|e| e.running == 1));
    // Waves opened in turn: at least three bake hours.
    assert!(rounds * ROUND_SECS >= 3 * 3600, "{rounds} rounds");

    // Release 2 crashes every machine that loads it.
    f.bad.insert(2);
    f.publish(&publisher, 2).await;
    let (status, body) = f
        .post(
            "/v1/rollouts/stable/start",
            Some(&operator),
            &json!({"version": 2, "plan": plan()}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, pre_halt) = f.get_text("/v1/metadata/rollout.json").await;
    let thresholds = serde_json::from_str::<bulwark_rollout::WaveThresholds>(
        &f.store.rollout("stable").unwrap().unwrap().thresholds,
    )
    .unwrap();
    let first_wave: BTreeSet<usize> = f
        .endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| thresholds.wave_of(&e.facts) == Some(0))
        .map(|(i, _)| i)
        .collect();
    // Stratified: every Windows build is in the first wave.
    let builds: BTreeSet<&str> = first_wave
        .iter()
        .map(|i| f.endpoints[*i].facts.os_build.as_str())
        .collect();
    assert_eq!(builds.len(), BUILDS.len(), "{builds:?}");

    let mut halted = false;
    for _ in 0..12 {
        f.round().await;
        f.advance(ROUND_SECS);
        let changed = f.controller();
        if !changed.is_empty() {
            let state = f.state();
            if let Status::Halted { halt } = &state.status {
                // Halted in the first wave, with the reason recorded.
                assert_eq!(halt.open_waves, 1, "{halt:?}");
                assert!(state.revert);
                let cause = format!("{:?}", halt.cause);
                assert!(cause.contains("quarantine"), "{cause}");
                halted = true;
                break;
            }
        }
    }
    assert!(halted, "release 2 was not halted: {:?}", f.state().status);
    // The revert instruction reaches the fleet: one round later nobody runs release 2, the
    // endpoints are back on their last-known-good, and only first-wave endpoints ever loaded it.
    f.round().await;
    for (i, e) in f.endpoints.iter().enumerate() {
        assert_eq!(e.running, 1, "endpoint {i}");
        if e.loaded.contains(&2) {
            assert!(
                first_wave.contains(&i),
                "endpoint {i} outside the first wave loaded 2"
            );
        }
    }
    assert!(f.endpoints.iter().any(|e| e.loaded.contains(&2)));
    // Every endpoint's decision is now the revert (or staying): none would take release 2.
    let now = Timestamp(f.now());
    for e in &f.endpoints {
        let signed = e.trust.current(now).unwrap().unwrap();
        let state = signed.state.channel("stable").unwrap();
        let d = decide(
            state,
            &e.facts,
            signed.policies.resolve("default", "stable"),
            &signed.thresholds["stable"],
            now,
        );
        assert!(
            matches!(d, Decision::RevertToLastKnownGood { halted_version: 2 }),
            "{d:?}"
        );
    }

    // The endpoint side refuses the pre-halt state (rolled back), a forged one (the revert
    // flipped off in the signed bytes) and one signed by a key that is not the online key.
    let e = &mut f.endpoints[0];
    let before = e.trust.versions();
    assert!(matches!(
        e.trust.update_rollout(&pre_halt, now),
        Err(TrustError::Rollback {
            role: MetadataRole::Rollout,
            ..
        })
    ));
    let (_, current) = f_get(&f.client, &f.base, "/v1/metadata/rollout.json").await;
    let e = &mut f.endpoints[0];
    assert!(current.contains("\"revert\":true"));
    let forged = current.replace("\"revert\":true", "\"revert\":false");
    assert!(matches!(
        e.trust.update_rollout(&forged, now),
        Err(TrustError::InsufficientSignatures { .. })
    ));
    let mut body: Value = serde_json::from_str(&current).unwrap();
    body["signed"]["version"] = json!(body["signed"]["version"].as_u64().unwrap() + 1);
    body["signed"]["state"]["channels"]["stable"]["revert"] = json!(false);
    let stranger = bulwark_distribution::sign(
        &serde_json::from_value::<bulwark_distribution::Rollout>(body["signed"].clone()).unwrap(),
        &[&signing_key(&RELEASE_KEY)],
    )
    .unwrap();
    assert!(matches!(
        e.trust.update_rollout(&stranger, now),
        Err(TrustError::InsufficientSignatures {
            role: MetadataRole::Rollout,
            ..
        })
    ));
    assert_eq!(
        e.trust.versions(),
        before,
        "a refused file changed what is trusted"
    );

    // A server that stops re-signing: past the lifetime, the endpoint no longer acts on the
    // rollout it holds, and the stale file is refused as expired.
    f.advance(LIFETIME + 1);
    let now = Timestamp(f.now());
    let (_, stale) = f.get_text("/v1/metadata/rollout.json").await;
    let e = &mut f.endpoints[0];
    assert!(matches!(
        e.trust.current(now),
        Err(TrustError::Expired {
            role: MetadataRole::Rollout,
            ..
        })
    ));
    assert!(matches!(
        e.trust.update_rollout(&stale, now),
        Err(TrustError::Expired { .. }) | Ok(bulwark_distribution::Update::Unchanged)
    ));
    // The server's loop re-signs; the endpoint acts again.
    f.controller();
    let (_, fresh) = f.get_text("/v1/metadata/rollout.json").await;
    let e = &mut f.endpoints[0];
    e.trust.update_rollout(&fresh, now).unwrap();
    assert!(e.trust.current(now).unwrap().is_some());
}

async fn f_get(client: &reqwest::Client, base: &str, path: &str) -> (StatusCode, String) {
    let resp = client.get(format!("{base}{path}")).send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}
