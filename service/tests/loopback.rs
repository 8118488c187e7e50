//! End to end on loopback: the real bulwark-server over TLS with its signed metadata, and the
//! agent core with the driver core and its guard in process (records on a directory).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bulwark_distribution::{sign, Releases, Root};
use bulwark_loader_boot_guard::envelope::public_key;
use bulwark_loader_boot_guard::seal;
use bulwark_server::metadata::Signing;
use bulwark_server::store::{ApiToken, GuardEventKind};
use bulwark_server::tls::PemPair;
use bulwark_server::util::{random_token, sha256_hex, unhex};
use bulwark_server::{
    ChannelConfig, Clock as ServerClock, Config, Role, Running, SqliteStore, Store,
};
use bulwark_service::agent::{Agent, AgentConfig, Clock, Random};
use bulwark_service::link::{DriverLink, InProcess};
use bulwark_service::net::{ContentSource, Http, Metadata, NetError};
use bulwark_service::spool::SpoolStore;
use bulwark_service::storage::{DirStorage, MemoryStorage, Storage};
use serde_json::{json, Value};

const SECRET: &str = "enrollment-secret-for-tests";
const RELEASE_KEY: [u8; 32] = [7; 32];
const ROOT_KEYS: [[u8; 32]; 3] = [[31; 32], [32; 32], [33; 32]];
const ONLINE_KEY: [u8; 32] = [41; 32];
const CHANNEL: u32 = 1;
const T0: u64 = 1_800_000_000;
const WINDOW: u64 = 600;

fn key(k: &[u8; 32]) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(k)
}

fn root_file() -> String {
    let public = |k: &[u8; 32]| key(k).verifying_key().to_bytes();
    let root = Root::new(1, bulwark_rollout::Timestamp(T0 + 365 * 86_400))
        .with_role(
            bulwark_distribution::Role::Root,
            &ROOT_KEYS.each_ref().map(public),
            2,
        )
        .with_role(
            bulwark_distribution::Role::Releases,
            &[public(&RELEASE_KEY)],
            1,
        )
        .with_role(
            bulwark_distribution::Role::Rollout,
            &[public(&ONLINE_KEY)],
            1,
        );
    sign(&root, &[&key(&ROOT_KEYS[0]), &key(&ROOT_KEYS[2])]).unwrap()
}

fn envelope(version: u64) -> Vec<u8> {
    let text = format!(
        "rule\n  id \"rule-{version}\"\n  title \"test rule {version}\"\n  author \"tests\"\n  level high\n  action alert\n  event process_creation\n  str.contains CommandLine \"marker-{version}\"\n  ret\nend\n"
    );
    let pack = bulwark_interpreter::text::asm(&text).unwrap();
    seal(
        &RELEASE_KEY,
        CHANNEL,
        version,
        bulwark_interpreter::schema_hash(),
        &pack,
    )
    .unwrap()
}

fn releases_file(listed: &[(u64, Vec<u8>)]) -> String {
    let version = listed.len() as u64;
    let r = listed.iter().fold(
        Releases::new(version, bulwark_rollout::Timestamp(T0 + 90 * 86_400)),
        |r, (v, env)| {
            let (_, pack) = bulwark_loader_boot_guard::envelope::parse(env).unwrap();
            r.with(&bulwark_rollout::Release {
                channel: "stable".to_owned(),
                version: *v,
                pack_hash: unhex(&sha256_hex(pack)).unwrap().try_into().unwrap(),
                envelope_sha256: unhex(&sha256_hex(env)).unwrap().try_into().unwrap(),
                notes: String::new(),
            })
        },
    );
    sign(&r, &[&key(&RELEASE_KEY)]).unwrap()
}

/// An envelope, properly signed by the release key, around a pack the verifier refuses (its
/// last instruction is not a `ret`).
fn unverifiable_envelope(version: u64) -> Vec<u8> {
    let text = format!(
        "rule\n  id \"rule-{version}\"\n  title \"test rule {version}\"\n  author \"tests\"\n  level high\n  action alert\n  event process_creation\n  str.contains CommandLine \"marker-{version}\"\n  ret\nend\n"
    );
    let mut pack = bulwark_interpreter::text::asm(&text).unwrap();
    let last = pack.len() - 1;
    pack[last] ^= 0xff;
    assert!(bulwark_interpreter::verify(&pack).is_err());
    seal(
        &RELEASE_KEY,
        CHANNEL,
        version,
        bulwark_interpreter::schema_hash(),
        &pack,
    )
    .unwrap()
}

struct TestClock(Arc<AtomicU64>);
impl Clock for TestClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Deterministic "randomness": always the largest value allowed.
struct MaxRandom;
impl Random for MaxRandom {
    fn below_or_eq(&mut self, max: u64) -> u64 {
        max
    }
}

/// A content source that can be switched to serve altered envelopes or go offline.
struct Tamper {
    inner: Http,
    flip_envelope: Rc<Cell<bool>>,
    offline: Rc<Cell<bool>>,
    garbage: Rc<Cell<bool>>,
}

impl ContentSource for Tamper {
    fn metadata(&mut self, which: Metadata) -> Result<String, NetError> {
        if self.offline.get() {
            return Err(NetError::Transport("offline".into()));
        }
        if self.garbage.get() {
            return Ok("{\"signed\": [1, 2, 3], \"signatures\": \"\\u0000\"".into());
        }
        self.inner.metadata(which)
    }
    fn envelope(&mut self, sha: &str) -> Result<Vec<u8>, NetError> {
        let mut e = self.inner.envelope(sha)?;
        if self.flip_envelope.get() {
            // A byte of the signature.
            e[100] ^= 1;
        }
        Ok(e)
    }
}

/// The sink, switchable offline.
struct Sink {
    inner: Http,
    offline: Rc<Cell<bool>>,
}

impl bulwark_service::net::TelemetrySink for Sink {
    fn enroll(
        &mut self,
        e: &bulwark_service::net::Enrollment,
    ) -> Result<bulwark_service::net::Enrolled, NetError> {
        if self.offline.get() {
            return Err(NetError::Transport("offline".into()));
        }
        self.inner.enroll(e)
    }
    fn heartbeat(
        &mut self,
        t: &str,
        b: &[u8],
    ) -> Result<bulwark_service::net::Delivered, NetError> {
        if self.offline.get() {
            return Err(NetError::Transport("offline".into()));
        }
        self.inner.heartbeat(t, b)
    }
    fn telemetry(
        &mut self,
        t: &str,
        b: &[u8],
    ) -> Result<bulwark_service::net::Delivered, NetError> {
        if self.offline.get() {
            return Err(NetError::Transport("offline".into()));
        }
        self.inner.telemetry(t, b)
    }
}

type TestAgent<D> = Agent<InProcess, Tamper, Sink, TestClock, MaxRandom, D>;

struct World<D: Storage = DirStorage> {
    _server: Running,
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
    time: Arc<AtomicU64>,
    store: Arc<dyn Store>,
    signing: Signing,
    client: reqwest::Client,
    base: String,
    publisher: String,
    operator: String,
    agent: TestAgent<D>,
    flip: Rc<Cell<bool>>,
    offline: Rc<Cell<bool>>,
    garbage: Rc<Cell<bool>>,
    listed: Vec<(u64, Vec<u8>)>,
    /// Whether a benign process starts at every step (events flow through the sensor).
    traffic: bool,
    next_pid: u32,
}

fn token(store: &Arc<dyn Store>, role: Role) -> String {
    let t = random_token("bwr_").unwrap();
    store
        .insert_api_token(
            &sha256_hex(t.as_bytes()),
            &ApiToken {
                name: format!("{role:?}"),
                role,
            },
            T0,
        )
        .unwrap();
    t
}

impl World {
    fn new(name: &str) -> World {
        let dir =
            std::env::temp_dir().join(format!("bulwark-service-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let storage = DirStorage::open(&dir.join("agent")).unwrap();
        World::new_in(dir, storage, true, true)
    }

    /// An endpoint whose service stages for the next boot.
    fn next_boot(name: &str) -> World {
        let dir =
            std::env::temp_dir().join(format!("bulwark-service-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let storage = DirStorage::open(&dir.join("agent")).unwrap();
        World::new_in(dir, storage, false, true)
    }

    /// An endpoint whose service confirms without waiting for events (the Wine smoke test's).
    fn without_events(name: &str) -> World {
        let dir =
            std::env::temp_dir().join(format!("bulwark-service-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let storage = DirStorage::open(&dir.join("agent")).unwrap();
        World::new_in(dir, storage, true, false)
    }
}

impl<D: Storage> World<D> {
    fn new_in(dir: PathBuf, storage: D, hot: bool, events: bool) -> World<D> {
        let time = Arc::new(AtomicU64::new(T0));
        let t = time.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("server.db")).unwrap());
        let signing = Signing::new(&root_file(), key(&ONLINE_KEY), 6 * 3600).unwrap();
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
            clock: ServerClock::from_fn(move || t.load(Ordering::SeqCst)),
            signing: Some(signing.clone()),
        };
        let pem = PemPair::self_signed().unwrap();
        let server = rt
            .block_on(bulwark_server::start(
                "127.0.0.1:0".parse().unwrap(),
                &pem,
                store.clone(),
                config,
                None,
            ))
            .unwrap();
        let base = format!("https://localhost:{}", server.addr.port());
        let http = || {
            Http::new(
                &base,
                Some(pem.cert_pem.as_bytes()),
                Some(("localhost", server.addr)),
                Duration::from_secs(10),
            )
            .unwrap()
        };
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(pem.cert_pem.as_bytes()).unwrap())
            .resolve("localhost", server.addr)
            .build()
            .unwrap();
        let flip = Rc::new(Cell::new(false));
        let offline = Rc::new(Cell::new(false));
        let garbage = Rc::new(Cell::new(false));
        let link = InProcess::boot(
            &dir.join("guard"),
            bulwark_loader_boot_guard::Config {
                channel: CHANNEL,
                threshold: 3,
                stable_secs: 7 * 86_400,
            },
            &[public_key(&RELEASE_KEY)],
            T0,
        )
        .unwrap();
        let agent = Agent::with_storage(
            AgentConfig {
                channel: "stable".into(),
                channel_number: CHANNEL,
                enrollment_secret: SECRET.into(),
                os_build: "26100".into(),
                hw_class: "x64-vm".into(),
                host_group: "default".into(),
                release_keys: vec![public_key(&RELEASE_KEY)],
                root: root_file(),
                heartbeat_secs: 300,
                health_window_secs: WINDOW,
                backoff_base_secs: 5,
                backoff_max_secs: 600,
                spool_max_bytes: 1 << 20,
                hot,
                health_requires_events: events,
                metadata_memo: bulwark_distribution::MetadataMemo::off(),
            },
            storage,
            link,
            Tamper {
                inner: http(),
                flip_envelope: flip.clone(),
                offline: offline.clone(),
                garbage: garbage.clone(),
            },
            Sink {
                inner: http(),
                offline: offline.clone(),
            },
            TestClock(time.clone()),
            MaxRandom,
        )
        .unwrap();
        let publisher = token(&store, Role::Publisher);
        let operator = token(&store, Role::Operator);
        World {
            _server: server,
            rt,
            dir,
            time,
            store,
            signing,
            client,
            base,
            publisher,
            operator,
            agent,
            flip,
            offline,
            garbage,
            listed: Vec::new(),
            traffic: true,
            next_pid: 1000,
        }
    }

    /// A process starts on the endpoint.
    fn process(&mut self, command_line: &str) {
        let image: Vec<u16> = "\\??\\C:\\Windows\\System32\\cmd.exe"
            .encode_utf16()
            .collect();
        let cmd: Vec<u16> = command_line.encode_utf16().collect();
        self.next_pid += 4;
        self.agent.link.sensor().on_process_create(
            &bulwark_driver_core::events::ProcessCreateFacts {
                process_id: self.next_pid,
                create_time: u64::from(self.next_pid),
                parent_process_id: 4,
                parent_create_time: None,
                image_file_name: Some(&image),
                command_line: Some(&cmd),
                user: None,
                integrity: None,
                logon_id: None,
                session_id: None,
            },
            self.now(),
        );
    }

    fn send(&self, method: reqwest::Method, path: &str, token: &str, body: Vec<u8>) -> Value {
        self.rt.block_on(async {
            let resp = self
                .client
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            assert!(status.is_success(), "{path}: {status} {v}");
            v
        })
    }

    fn publish(&mut self, version: u64) {
        let env = envelope(version);
        self.send(
            reqwest::Method::POST,
            "/v1/releases?channel=stable",
            &self.publisher,
            env.clone(),
        );
        self.listed.push((version, env));
        self.put_releases();
    }

    fn put_releases(&self) {
        self.send(
            reqwest::Method::PUT,
            "/v1/metadata/releases.json",
            &self.publisher,
            releases_file(&self.listed).into_bytes(),
        );
    }

    fn command(&self, cmd: &str, body: Value) {
        self.send(
            reqwest::Method::POST,
            &format!("/v1/rollouts/stable/{cmd}"),
            &self.operator,
            body.to_string().into_bytes(),
        );
        self.signing
            .refresh_rollout(self.store.as_ref(), self.now())
            .unwrap();
    }

    fn start(&self, version: u64) {
        self.command(
            "start",
            json!({"version": version, "plan": {"waves": [
                {"name": "all", "fraction_ppm": 1_000_000, "bake_secs": 3600, "min_healthy": 1}]}}),
        );
    }

    fn now(&self) -> u64 {
        self.time.load(Ordering::SeqCst)
    }

    fn advance(&self, secs: u64) {
        self.time.fetch_add(secs, Ordering::SeqCst);
    }

    /// Steps the agent, advancing the clock by what it asks for, until `secs` have passed.
    fn run_for(&mut self, secs: u64) {
        let end = self.now() + secs;
        while self.now() < end {
            if self.traffic {
                self.process("svchost.exe -k netsvcs");
            }
            let wait = self.agent.step();
            self.advance(wait.min(end - self.now()).max(1));
        }
    }

    fn running(&mut self) -> u64 {
        self.agent.link.status().unwrap().content_version
    }

    fn data(&self) -> bulwark_server::store::ChannelData {
        self.store.channel_data("stable").unwrap()
    }
}

impl<D: Storage> Drop for World<D> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_good_release_is_fetched_verified_staged_confirmed_and_reported() {
    let mut w = World::new("good");
    // Enrolls even before anything is published (the metadata fetch fails: backoff).
    w.agent.step();
    assert!(w.agent.state().enrolled.is_some(), "{:?}", w.agent.log);
    w.publish(1);
    w.start(1);
    w.run_for(60);
    assert_eq!(w.running(), 1, "{:?}", w.agent.log);
    assert!(w.agent.state().staged.is_some());
    assert_eq!(w.agent.link.status().unwrap().last_known_good, None);
    w.run_for(WINDOW + 60);
    assert_eq!(w.agent.state().confirmed, Some(1), "{:?}", w.agent.log);
    assert_eq!(w.agent.link.status().unwrap().last_known_good, Some(1));
    assert!(w.agent.spool().is_empty().unwrap());
    let d = w.data();
    assert!(
        d.versions
            .iter()
            .any(|v| v.version == 1 && v.confirmed_healthy),
        "{:?}",
        d.versions
    );
    assert!(d.heartbeats.iter().all(|h| h.content_version == 1));
    // A process the rule matches: the detection reaches the server under the rule's id.
    let image: Vec<u16> = "\\??\\C:\\Windows\\System32\\cmd.exe"
        .encode_utf16()
        .collect();
    for pid in [100, 101] {
        let cmd: Vec<u16> = format!("cmd /c marker-1 {pid}").encode_utf16().collect();
        w.agent.link.sensor().on_process_create(
            &bulwark_driver_core::events::ProcessCreateFacts {
                process_id: pid,
                create_time: u64::from(pid),
                parent_process_id: 4,
                parent_create_time: None,
                image_file_name: Some(&image),
                command_line: Some(&cmd),
                user: None,
                integrity: None,
                logon_id: None,
                session_id: None,
            },
            w.now(),
        );
    }
    w.run_for(60);
    let d = w.data();
    assert!(
        d.detections
            .iter()
            .any(|x| x.release_version == 1 && x.rule == "rule-1" && x.count == 2),
        "{:?}",
        d.detections
    ); // And as alerts with the rule's title, author and level from the pack, and the event's
       // context from the driver.
    let alerts = w.store.alerts("stable", 0, 100).unwrap();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let a: Value = serde_json::from_str(&alerts[0].body).unwrap();
    assert_eq!(a["rule"], json!("rule-1"));
    assert_eq!(a["title"], json!("test rule 1"));
    assert_eq!(a["author"], json!("tests"));
    assert_eq!(a["level"], json!("high"));
    assert_eq!(a["event_type"], json!("process_creation"));
    assert_eq!(a["process_id"], json!(100));
    assert_eq!(a["parent_process_id"], json!(4));
    assert_eq!(a["image"], json!("C:\\Windows\\System32\\cmd.exe"));
    assert_eq!(a["command_line"], json!("cmd /c marker-1 100"));
    assert_eq!(a["truncated"], json!([]));
}

#[test]
fn a_forged_envelope_is_never_staged_and_is_reported() {
    let mut w = World::new("forged");
    w.agent.step();
    w.publish(1);
    w.start(1);
    w.flip.set(true);
    w.run_for(120);
    assert_eq!(w.running(), 0, "{:?}", w.agent.log);
    let rej = w.agent.state().rejections.clone();
    assert_eq!(rej.len(), 1, "{rej:?}");
    assert!(rej[0].reason.contains("SHA-256"), "{rej:?}");
    assert!(w.agent.status().state.rejections == rej);
    // Reported to the server with the reason, where the controller counts it.
    let reported = w.store.rejections("stable", Some(1), 10).unwrap();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].reason, rej[0].reason);
}

#[test]
fn a_stage_the_machines_own_storage_fails_is_retried_and_not_reported_as_a_refusal() {
    let mut w = World::new("storage-fails");
    w.agent.step();
    w.publish(1);
    // The guard's store cannot write the envelope: a directory stands where its temporary file
    // goes (the driver answers 200, a storage failure, whatever the content).
    let env = envelope(1);
    let (_, pack) = bulwark_loader_boot_guard::envelope::parse(&env).unwrap();
    let blocker =
        w.dir
            .join("guard")
            .join("packs")
            .join(format!("{:020}-{}.tmp", 1, sha256_hex(pack)));
    std::fs::create_dir_all(&blocker).unwrap();
    w.start(1);
    w.run_for(120);
    assert_eq!(w.running(), 0, "{:?}", w.agent.log);
    assert!(
        w.agent
            .log
            .iter()
            .any(|l| l.contains("could not be staged")),
        "{:?}",
        w.agent.log
    );
    // Not a refusal of the release: none remembered, none reported, the rollout goes on.
    assert!(
        w.agent.state().rejections.is_empty(),
        "{:?}",
        w.agent.state().rejections
    );
    assert!(w
        .store
        .rejections("stable", Some(1), 10)
        .unwrap()
        .is_empty());
    bulwark_server::controller::tick(w.store.as_ref(), w.now()).unwrap();
    let row = w.store.rollout("stable").unwrap().unwrap();
    let state: bulwark_rollout::ChannelRollout = serde_json::from_str(&row.state).unwrap();
    assert!(!state.is_halted(), "{state:?}");
    // The disk is fixed: the next attempt stages it.
    std::fs::remove_dir(&blocker).unwrap();
    w.run_for(900);
    assert_eq!(w.running(), 1, "{:?}", w.agent.log);
}

#[test]
fn a_halted_and_reverted_rollout_makes_the_agent_revert() {
    let mut w = World::new("revert");
    w.agent.step();
    w.publish(1);
    w.start(1);
    w.run_for(WINDOW + 120);
    assert_eq!(w.agent.state().confirmed, Some(1), "{:?}", w.agent.log);
    // Complete release 1 so release 2 can start.
    w.advance(3600);
    bulwark_server::controller::tick(w.store.as_ref(), w.now()).unwrap();
    w.publish(2);
    w.start(2);
    w.run_for(60);
    assert_eq!(w.running(), 2, "{:?}", w.agent.log);
    w.command("halt", json!({"reason": "bad"}));
    w.command("revert", json!({}));
    w.run_for(60);
    assert_eq!(w.running(), 1, "{:?}", w.agent.log);
    assert_eq!(w.agent.state().reverted, vec![2]);
    assert!(w.agent.spool().is_empty().unwrap());
    // The guard quarantined 2: a reboot runs last-known-good, not the reverted candidate.
    let now = w.now();
    w.agent.link.reboot(now).unwrap();
    assert_eq!(w.running(), 1, "{:?}", w.agent.log);
    w.agent.link.crash_and_reboot(now).unwrap();
    assert_eq!(w.running(), 1, "{:?}", w.agent.log);
    let d = w.data();
    assert!(
        d.guard_events
            .iter()
            .any(|g| g.release_version == 2 && g.kind == GuardEventKind::Revert),
        "{:?}",
        d.guard_events
    );
    // And it stays reverted.
    w.run_for(WINDOW + 60);
    assert_eq!(w.running(), 1);
}

#[test]
fn offline_then_back_nothing_in_the_spool_is_lost() {
    let mut w = World::new("offline");
    w.agent.step();
    w.publish(1);
    w.start(1);
    w.run_for(60);
    assert_eq!(w.running(), 1);
    w.offline.set(true);
    // Heartbeats pile up while the server is unreachable; the health window passes offline.
    w.run_for(WINDOW + 3600);
    let waiting = w.agent.spool().len().unwrap();
    assert!(waiting >= 3, "{waiting}");
    assert_eq!(w.agent.spool().dropped().unwrap(), 0);
    let before = w.data().heartbeats.len();
    let _ = before;
    w.offline.set(false);
    w.run_for(60);
    assert!(w.agent.spool().is_empty().unwrap(), "{:?}", w.agent.log);
    let d = w.data();
    // The confirmation made offline reached the server.
    assert!(
        d.versions
            .iter()
            .any(|v| v.version == 1 && v.confirmed_healthy),
        "{:?}",
        d.versions
    );
}

#[test]
fn a_pack_the_verifier_refuses_is_never_staged_and_is_reported() {
    let mut w = World::new("unverifiable");
    w.agent.step();
    // The server's upload path would refuse it: it goes straight into the store, as a
    // compromised server (or a release key that signs anything) could serve it.
    let env = unverifiable_envelope(1);
    let (_, pack) = bulwark_loader_boot_guard::envelope::parse(&env).unwrap();
    w.store
        .publish_release(
            &bulwark_server::store::ReleaseRow {
                channel: "stable".into(),
                version: 1,
                pack_sha256: sha256_hex(pack),
                envelope_sha256: sha256_hex(&env),
                rules: vec!["rule-1".into()],
                notes: String::new(),
                published_at: T0,
                published_by: "mallory".into(),
            },
            &env,
        )
        .unwrap();
    w.listed.push((1, env));
    w.put_releases();
    w.start(1);
    w.run_for(WINDOW + 60);
    assert_eq!(w.running(), 0, "{:?}", w.agent.log);
    let rej = w.agent.state().rejections.clone();
    assert_eq!(rej.len(), 1, "{rej:?}");
    // Refused by the service itself, with the verifier's message, not by the driver.
    assert!(
        rej[0].reason.starts_with("loader:") || rej[0].reason.starts_with("verifier:"),
        "{rej:?}"
    );
    assert!(rej[0].reason.contains("verif"), "{rej:?}");
    // The driver's guard never saw it: no refusal recorded there either.
    assert_eq!(w.agent.link.status().unwrap().last_known_good, None);
    // The server has the refusal with the verifier's message, and its controller halts the
    // rollout on it (one refusal in a wave of one endpoint reaches the rejection ceiling).
    let reported = w.store.rejections("stable", Some(1), 10).unwrap();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].reason, rej[0].reason);
    bulwark_server::controller::tick(w.store.as_ref(), w.now()).unwrap();
    let row = w.store.rollout("stable").unwrap().unwrap();
    let state: bulwark_rollout::ChannelRollout = serde_json::from_str(&row.state).unwrap();
    assert!(state.is_halted(), "{state:?}");
}

#[test]
fn a_release_is_not_confirmed_until_events_flow_through_it() {
    let mut w = World::new("quiet");
    w.traffic = false;
    w.agent.step();
    w.publish(1);
    w.start(1);
    w.run_for(WINDOW + 600);
    assert_eq!(w.running(), 1, "{:?}", w.agent.log);
    assert_eq!(w.agent.state().confirmed, None, "{:?}", w.agent.log);
    assert!(w.agent.state().staged.is_some());
    assert_eq!(w.agent.link.status().unwrap().last_known_good, None);
    assert_eq!(
        w.agent
            .log
            .iter()
            .filter(|l| l.contains("no event has gone through it yet"))
            .count(),
        1,
        "logged once: {:?}",
        w.agent.log
    );
    // Waiting polls; it does not spin.
    let wait = w.agent.step();
    assert_eq!(wait, bulwark_service::agent::EVENTS_POLL_SECS);
    // A process starts: events flow, and the next step confirms.
    w.process("notepad.exe");
    w.run_for(60);
    assert_eq!(w.agent.state().confirmed, Some(1), "{:?}", w.agent.log);
    assert_eq!(w.agent.link.status().unwrap().last_known_good, Some(1));
    // Configured not to wait for events, the same quiet machine confirms after the window.
    let mut w = World::without_events("quiet-ok");
    w.traffic = false;
    w.agent.step();
    w.publish(1);
    w.start(1);
    w.run_for(WINDOW + 120);
    assert_eq!(w.agent.state().confirmed, Some(1), "{:?}", w.agent.log);
}

/// A rule that fires on every process is a storm: the content stays on trial (its blocks stay
/// alerts, and a revert can still take it back) instead of being confirmed healthy.
#[test]
fn content_whose_rule_fires_on_most_events_is_not_confirmed_healthy() {
    let mut w = World::new("storm");
    w.traffic = false;
    w.agent.step();
    w.publish(1);
    w.start(1);
    w.run_for(60);
    assert_eq!(w.running(), 1, "{:?}", w.agent.log);
    // Every process matches rule-1 (its marker in every command line).
    let end = w.now() + WINDOW + 600;
    while w.now() < end {
        for _ in 0..5 {
            w.process("cmd /c marker-1");
        }
        let wait = w.agent.step();
        w.advance(wait.clamp(1, 30));
    }
    assert_eq!(w.agent.state().confirmed, None, "{:?}", w.agent.log);
    assert_eq!(w.agent.link.status().unwrap().last_known_good, None);
    let storm: Vec<_> = w
        .agent
        .log
        .iter()
        .filter(|l| l.contains("rule rule-1 fired") && l.contains("a storm"))
        .collect();
    assert_eq!(storm.len(), 1, "logged once: {:?}", w.agent.log);
    // The same content with processes it does not match is confirmed.
    let mut w = World::new("no-storm");
    w.agent.step();
    w.publish(1);
    w.start(1);
    w.run_for(WINDOW + 600);
    assert_eq!(w.agent.state().confirmed, Some(1), "{:?}", w.agent.log);
}

#[test]
fn the_administrators_pause_pin_and_revert_are_obeyed() {
    use bulwark_service::admin::{apply, Command};
    let mut w = World::new("admin");
    let state_dir = w.dir.join("agent");
    w.agent.step();
    w.publish(1);
    w.start(1);
    w.run_for(WINDOW + 120);
    assert_eq!(w.agent.state().confirmed, Some(1), "{:?}", w.agent.log);
    w.advance(3600);
    bulwark_server::controller::tick(w.store.as_ref(), w.now()).unwrap();
    // Paused: release 2 is not taken; reporting goes on.
    apply(&state_dir, Command::Pause).unwrap();
    w.publish(2);
    w.start(2);
    let seq = w.agent.spool().next_seq().unwrap();
    w.run_for(600);
    assert_eq!(w.running(), 1, "{:?}", w.agent.log);
    assert!(
        w.agent.spool().next_seq().unwrap() > seq,
        "heartbeats go on"
    );
    // Resumed: it is.
    apply(&state_dir, Command::Resume).unwrap();
    w.run_for(60);
    assert_eq!(w.running(), 2, "{:?}", w.agent.log);
    // Revert asked locally: back to last-known-good at once, reported, and 2 not taken again.
    apply(&state_dir, Command::Revert).unwrap();
    w.run_for(60);
    assert_eq!(w.running(), 1, "{:?}", w.agent.log);
    assert_eq!(w.agent.state().reverted, vec![2]);
    assert_eq!(w.agent.state().admin_reverts_done, 1);
    w.run_for(WINDOW + 60);
    assert_eq!(w.running(), 1, "{:?}", w.agent.log);
    assert!(w
        .data()
        .guard_events
        .iter()
        .any(|g| g.release_version == 2 && g.kind == GuardEventKind::Revert));
    // Pinned to a newer release: it is fetched and staged whatever the rollout says; a restart
    // of the service keeps the pin (it is in the state directory).
    w.publish(3);
    apply(&state_dir, Command::Pin(3)).unwrap();
    w.agent.restart().unwrap();
    w.run_for(60);
    assert_eq!(w.running(), 3, "{:?}", w.agent.log);
    // A damaged controls file is logged once and the pin read before it stays in force.
    std::fs::write(state_dir.join("admin.json"), b"{\"pinned\": ").unwrap();
    w.run_for(600);
    assert_eq!(w.running(), 3, "{:?}", w.agent.log);
    assert_eq!(
        w.agent
            .log
            .iter()
            .filter(|l| l.contains("admin.json: not valid admin controls"))
            .count(),
        1,
        "{:?}",
        w.agent.log
    );
    // The status shows the file's error.
    let s = bulwark_service::agent::offline_status(&state_dir).unwrap();
    assert!(
        s["admin"]["error"].as_str().unwrap().contains("admin.json"),
        "{s}"
    );
}

#[test]
fn status_reads_the_state_directory_and_never_shows_the_token() {
    let mut w = World::new("status");
    w.agent.step();
    w.publish(1);
    w.start(1);
    w.run_for(WINDOW + 60);
    let s = bulwark_service::agent::offline_status(&w.dir.join("agent")).unwrap();
    assert_eq!(s["confirmed"], json!(1), "{s}");
    assert_eq!(s["spooled"], json!(0), "{s}");
    assert!(s["trusted_metadata"]["rollout"].as_u64().is_some(), "{s}");
    assert!(s["next_seq"].as_u64().unwrap() > 2, "{s}");
    let token = w.agent.state().enrolled.clone().unwrap().token;
    assert!(!s.to_string().contains(&token));
}

#[test]
fn a_restart_keeps_the_enrollment_the_sequence_and_the_newest_metadata() {
    let mut w = World::new("restart");
    w.agent.step();
    w.publish(1);
    w.start(1);
    let old_rollout =
        w.rt.block_on(async {
            w.client
                .get(format!("{}/v1/metadata/rollout.json", w.base))
                .send()
                .await
                .unwrap()
                .text()
                .await
        })
        .unwrap();
    w.run_for(60);
    w.command("pause", json!({"reason": "look at it"}));
    w.run_for(60);
    let versions = w.agent.trust().versions();
    let enrolled = w.agent.state().enrolled.clone();
    let next_seq = w.agent.spool().next_seq().unwrap();
    w.agent.restart().unwrap();
    assert_eq!(w.agent.trust().versions(), versions);
    assert_eq!(w.agent.state().enrolled, enrolled);
    assert_eq!(w.agent.spool().next_seq().unwrap(), next_seq);
    // The rollout metadata from before the pause is a rollback, also after the restart.
    let mut trust = w.agent.trust().clone();
    assert!(matches!(
        trust.update_rollout(&old_rollout, bulwark_rollout::Timestamp(w.now())),
        Err(bulwark_distribution::Error::Rollback { .. })
    ));
    // And the server takes its next messages (no replayed sequence numbers).
    w.run_for(WINDOW + 60);
    assert!(w.agent.spool().is_empty().unwrap(), "{:?}", w.agent.log);
    assert_eq!(w.agent.state().confirmed, Some(1));
}

#[test]
fn a_candidate_that_crashes_three_boots_is_quarantined_by_the_guard_and_reported() {
    let mut w = World::new("crash");
    w.agent.step();
    w.publish(1);
    w.start(1);
    w.run_for(WINDOW + 120);
    assert_eq!(w.agent.state().confirmed, Some(1), "{:?}", w.agent.log);
    w.advance(3600);
    bulwark_server::controller::tick(w.store.as_ref(), w.now()).unwrap();
    w.publish(2);
    w.start(2);
    w.run_for(60);
    assert_eq!(w.running(), 2, "{:?}", w.agent.log);
    // The simulated kernel crashes while 2 runs, and at each boot that loads it again.
    for _ in 0..3 {
        let now = w.now();
        w.agent.link.crash_and_reboot(now).unwrap();
        w.run_for(30);
    }
    assert_eq!(w.running(), 1, "{:?}", w.agent.log);
    w.run_for(WINDOW + 60);
    assert_eq!(w.running(), 1, "{:?}", w.agent.log);
    assert!(w.agent.spool().is_empty().unwrap());
    let d = w.data();
    let kinds: Vec<GuardEventKind> = d
        .guard_events
        .iter()
        .filter(|g| g.release_version == 2)
        .map(|g| g.kind)
        .collect();
    assert!(kinds.contains(&GuardEventKind::Quarantine), "{kinds:?}");
    assert!(kinds.contains(&GuardEventKind::Crash), "{kinds:?}");
    // Offered again, the guard refuses the quarantined release: not a refusal of the content by
    // this endpoint's verifier (which would count against the release a second time).
    assert!(!kinds.contains(&GuardEventKind::Reject), "{kinds:?}");
    assert!(
        w.agent.state().rejections.is_empty(),
        "{:?}",
        w.agent.state().rejections
    );
    assert!(w.agent.state().reverted.contains(&2));
}

#[test]
fn malformed_metadata_stages_nothing_and_failures_back_off_exponentially() {
    let mut w = World::new("garbage");
    w.agent.step();
    w.publish(1);
    w.start(1);
    w.garbage.set(true);
    w.run_for(WINDOW + 60);
    assert_eq!(w.running(), 0, "{:?}", w.agent.log);
    assert!(
        w.agent
            .log
            .iter()
            .any(|l| l.contains("rollout.json refused")),
        "{:?}",
        w.agent.log
    );
    w.garbage.set(false);
    // Unreachable: each failed step waits twice as long (MaxRandom takes the whole jitter
    // range), up to the maximum.
    w.offline.set(true);
    let waits: Vec<u64> = (0..9).map(|_| w.agent.step()).collect();
    assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600]);
    assert_eq!(w.agent.status().failures, 9);
    w.offline.set(false);
    w.run_for(60);
    assert_eq!(w.running(), 1, "{:?}", w.agent.log);
    assert_eq!(w.agent.status().failures, 0);
}

#[test]
fn a_pin_to_last_known_good_takes_the_endpoint_back_to_it() {
    let mut w = World::new("pin");
    w.agent.step();
    w.publish(1);
    w.start(1);
    w.run_for(WINDOW + 120);
    assert_eq!(w.agent.state().confirmed, Some(1), "{:?}", w.agent.log);
    w.advance(3600);
    bulwark_server::controller::tick(w.store.as_ref(), w.now()).unwrap();
    w.publish(2);
    w.start(2);
    w.run_for(60);
    assert_eq!(w.running(), 2, "{:?}", w.agent.log);
    let pin = serde_json::to_vec(&bulwark_rollout::policy::Policy::Pin {
        version: 1,
        expires_at: bulwark_rollout::Timestamp(w.now() + 86_400),
    })
    .unwrap();
    w.send(
        reqwest::Method::PUT,
        "/v1/policies/default/stable",
        &w.operator,
        pin,
    );
    w.signing
        .refresh_rollout(w.store.as_ref(), w.now())
        .unwrap();
    w.run_for(60);
    assert_eq!(w.running(), 1, "{:?}", w.agent.log);
    // Release 2 was never confirmed: the guard's last-known-good is still 1.
    w.run_for(WINDOW + 60);
    assert_eq!(w.running(), 1, "{:?}", w.agent.log);
    assert_eq!(w.agent.link.status().unwrap().last_known_good, Some(1));
    assert_eq!(w.agent.state().confirmed, Some(1));
}

#[test]
fn the_local_directory_source_reads_what_export_writes() {
    let mut w = World::new("export");
    w.agent.step();
    w.publish(1);
    w.start(1);
    let out = w.dir.join("export");
    bulwark_server::export::export(w.store.as_ref(), &out).unwrap();
    let mut local = bulwark_service::net::LocalDir(out.clone());
    for which in [Metadata::Releases, Metadata::Rollout] {
        assert_eq!(
            local.metadata(which).unwrap(),
            w.agent.source.inner.metadata(which).unwrap()
        );
    }
    let sha = sha256_hex(&envelope(1));
    assert_eq!(local.envelope(&sha).unwrap(), envelope(1));
    assert!(matches!(
        local.envelope("../../../etc/passwd"),
        Err(NetError::Malformed(_))
    ));
    // Over the bound: refused.
    let big = out.join("v1/envelopes").join("ab".repeat(32));
    std::fs::write(
        &big,
        vec![0u8; bulwark_service::net::MAX_ENVELOPE_BYTES + 1],
    )
    .unwrap();
    assert!(matches!(
        local.envelope(&"ab".repeat(32)),
        Err(NetError::TooLarge { .. })
    ));
}

#[test]
fn the_same_agent_runs_over_memory_storage() {
    let dir = std::env::temp_dir().join(format!("bulwark-service-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut w = World::new_in(dir.clone(), MemoryStorage::new(), true, true);
    w.agent.step();
    w.publish(1);
    w.start(1);
    w.run_for(WINDOW + 120);
    assert_eq!(w.agent.state().confirmed, Some(1), "{:?}", w.agent.log);
    assert!(w.agent.spool().is_empty().unwrap());
    // A restart reads back the enrollment, the metadata and the spool's numbering from memory.
    let enrolled = w.agent.state().enrolled.clone();
    let next = w.agent.spool().next_seq().unwrap();
    let versions = w.agent.trust().versions();
    w.agent.restart().unwrap();
    assert_eq!(w.agent.state().enrolled, enrolled);
    assert_eq!(w.agent.spool().next_seq().unwrap(), next);
    assert_eq!(w.agent.trust().versions(), versions);
    w.run_for(600);
    assert!(w.agent.spool().is_empty().unwrap(), "{:?}", w.agent.log);
    // Nothing of the agent's went to disk (the guard's records are the in-process driver's).
    assert!(!dir.join("agent").exists());
}

#[test]
fn a_release_staged_for_the_next_boot_runs_and_is_confirmed_after_it() {
    let mut w = World::next_boot("nextboot");
    w.agent.step();
    w.publish(1);
    w.start(1);
    w.run_for(60);
    // Staged, not running: the guard holds it as the candidate for the next boot.
    assert_eq!(w.running(), 0, "{:?}", w.agent.log);
    assert!(w.agent.state().staged.is_some(), "{:?}", w.agent.log);
    assert!(
        w.agent
            .log
            .iter()
            .any(|l| l.contains("staged as the candidate for the next boot")),
        "{:?}",
        w.agent.log
    );
    // Not confirmed while it does not run, however long, and not offered again (the guard would
    // refuse it as a replay, which must not read as a refusal of the release).
    w.run_for(WINDOW + 60);
    assert_eq!(w.agent.state().confirmed, None, "{:?}", w.agent.log);
    assert!(w.agent.state().rejections.is_empty(), "{:?}", w.agent.log);
    // The machine reboots: it runs, events flow, and it is confirmed after the window.
    let now = w.now();
    w.agent.link.reboot(now).unwrap();
    assert_eq!(w.running(), 1);
    w.run_for(WINDOW + 120);
    assert_eq!(w.agent.state().confirmed, Some(1), "{:?}", w.agent.log);
    assert_eq!(w.agent.link.status().unwrap().last_known_good, Some(1));
}
