//! `--transport http`: the fleet through the real network path. The rollout server is the real
//! `bulwark-server` (its API over TLS on loopback, its SQLite store on disk, its controller loop's
//! body [`bulwark_server::controller_pass`]), and each endpoint's agent reaches it through the
//! endpoint service's own HTTPS client ([`bulwark_service::net::Http`]), as the installed
//! service does.
//!
//! The clock is the simulation's: the server reads it on every request and controller pass, so
//! a day passes in however long the fleet's requests take (the accelerated clock). The
//! release engineers' side is the simulation's [`Desk`]: it publishes envelopes and signed
//! releases metadata through the API with a publisher's token, and starts the rollout with an
//! operator's. The server draws endpoint ids and tokens at enrollment, so the waves (which hash
//! the ids) differ from run to run: an HTTP run is not reproducible byte for byte, as the
//! in-process one is.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bulwark_rollout::controller::ControllerEvent;
use bulwark_rollout::{ChannelRollout, Plan, WaveThresholds};
use bulwark_server::metadata::Signing;
use bulwark_server::store::{ApiToken, RolloutRow};
use bulwark_server::tls::PemPair;
use bulwark_server::{ChannelConfig, Clock, Config, Role, SqliteStore, Store};
use bulwark_service::net::{
    ContentSource, Delivered, Enrolled, Enrollment, Http, Metadata, NetError, TelemetrySink,
};

use crate::server::{mark_completed, Desk, Keys, ServerError};

/// The channel the fleet follows.
const CHANNEL: &str = "stable";
/// Seconds a signed rollout file lives (the server re-signs it at half that, or on a change).
const ROLLOUT_LIFETIME: u64 = 7 * 86_400;
/// The most endpoints an HTTP run takes: each is a real agent with its own client and TLS
/// connection to the server, and every request is served for real.
pub const MAX_ENDPOINTS: u64 = 2_000;
/// How long an endpoint's request may take before the agent counts it as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn refused(what: &str, e: impl std::fmt::Display) -> ServerError {
    ServerError::Rollout(format!("bulwark-server: {what}: {e}"))
}

/// A scratch directory for the server's database, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real `bulwark-server`, serving on loopback.
pub struct HttpServer {
    /// Declared first: its drop aborts the server's tasks before the runtime goes.
    _running: bulwark_server::Running,
    runtime: tokio::runtime::Runtime,
    store: Arc<dyn Store>,
    signing: Signing,
    time: Arc<AtomicU64>,
    addr: SocketAddr,
    ca_pem: Vec<u8>,
    admin: reqwest::Client,
    publisher: String,
    operator: String,
    desk: Desk,
    _scratch: Scratch,
}

impl HttpServer {
    /// Starts the server at simulated time `now` with a fresh SQLite store, the desk's root
    /// and the keys' online key, and the enrollment secret the agents present.
    pub fn launch(
        keys: Keys,
        now: u64,
        enrollment_secret: &str,
    ) -> Result<HttpServer, ServerError> {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bulwark-sim-http-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| refused(&dir.display().to_string(), e))?;
        let scratch = Scratch(dir.clone());
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.join("server.db")).map_err(|e| refused("SQLite store", e))?,
        );
        let online = keys.online();
        let desk = Desk::new(keys, CHANNEL, now)?;
        let signing = Signing::new(desk.root(), online, ROLLOUT_LIFETIME)
            .map_err(|e| refused("signing", e))?;
        let time = Arc::new(AtomicU64::new(now));
        let read = time.clone();
        let config = Config {
            enrollment_secret: enrollment_secret.to_owned(),
            trusted_keys: Vec::new(),
            signing: Some(signing.clone()),
            channels: BTreeMap::from([(
                CHANNEL.to_owned(),
                ChannelConfig {
                    number: 1,
                    critical: false,
                },
            )]),
            clock: Clock::from_fn(move || read.load(Ordering::SeqCst)),
        };
        let pem = PemPair::self_signed().map_err(|e| refused("TLS certificate", e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| refused("runtime", e))?;
        // The controller loop is not started: the simulation runs its body at each of its ticks.
        let running = runtime
            .block_on(bulwark_server::start(
                "127.0.0.1:0".parse().map_err(|e| refused("address", e))?,
                &pem,
                store.clone(),
                config,
                None,
            ))
            .map_err(|e| refused("start", e))?;
        let addr = running.addr;
        let ca_pem = pem.cert_pem.into_bytes();
        let admin = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(&ca_pem).map_err(|e| refused("certificate", e))?,
            )
            .resolve("localhost", addr)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| refused("client", e))?;
        // The release engineers' API tokens, as `bulwark-server token add` makes them.
        let token = |role: Role, name: &str| -> Result<String, ServerError> {
            let token =
                bulwark_server::util::random_token("bwr_").map_err(|e| refused("API token", e))?;
            store
                .insert_api_token(
                    &bulwark_server::util::sha256_hex(token.as_bytes()),
                    &ApiToken {
                        name: name.to_owned(),
                        role,
                    },
                    now,
                )
                .map_err(|e| refused("API token", e))?;
            Ok(token)
        };
        let publisher = token(Role::Publisher, "sim-publisher")?;
        let operator = token(Role::Operator, "sim-operator")?;
        Ok(HttpServer {
            _running: running,
            runtime,
            store,
            signing,
            time,
            addr,
            ca_pem,
            admin,
            publisher,
            operator,
            desk,
            _scratch: scratch,
        })
    }

    /// The server's clock.
    pub fn set_now(&self, now: u64) {
        self.time.store(now, Ordering::SeqCst);
    }

    /// The root the endpoints ship with.
    #[must_use]
    pub fn root(&self) -> &str {
        self.desk.root()
    }

    /// The keys.
    #[must_use]
    pub fn keys(&self) -> &Keys {
        self.desk.keys()
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), ServerError> {
        let url = format!("https://localhost:{}{path}", self.addr.port());
        let req = self
            .admin
            .request(method.clone(), &url)
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body);
        let (status, text) = self
            .runtime
            .block_on(async {
                let resp = req.send().await?;
                let status = resp.status();
                Ok::<_, reqwest::Error>((status, resp.text().await.unwrap_or_default()))
            })
            .map_err(|e| refused(&format!("{method} {path}"), e))?;
        if !status.is_success() {
            return Err(refused(
                &format!("{method} {path}"),
                format!("{status}: {text}"),
            ));
        }
        Ok(())
    }

    /// Publishes `envelope` as release `version`: the envelope through the API, then the
    /// releases metadata the desk signs listing it.
    pub fn publish(&mut self, version: u64, envelope: &[u8]) -> Result<(), ServerError> {
        self.desk
            .publish(version, envelope, self.time.load(Ordering::SeqCst))?;
        self.request(
            reqwest::Method::POST,
            &format!("/v1/releases?channel={CHANNEL}"),
            &self.publisher,
            envelope.to_vec(),
            "application/octet-stream",
        )?;
        self.request(
            reqwest::Method::PUT,
            "/v1/metadata/releases.json",
            &self.publisher,
            self.desk.releases().as_bytes().to_vec(),
            "application/json",
        )?;
        Ok(())
    }

    /// Starts rolling out `version` with `plan` (the operator's `start` command).
    pub fn start(&mut self, version: u64, plan: &Plan) -> Result<(), ServerError> {
        let body = serde_json::json!({ "version": version, "plan": plan });
        self.request(
            reqwest::Method::POST,
            &format!("/v1/rollouts/{CHANNEL}/start"),
            &self.operator,
            body.to_string().into_bytes(),
            "application/json",
        )
    }

    /// Records that `version` was rolled out to the whole fleet and completed before now (the
    /// baseline the next release is compared with): started through the API with one wave of
    /// the whole fleet, then marked complete in the store, as its history would have it.
    pub fn completed(&mut self, version: u64) -> Result<(), ServerError> {
        self.start(version, &crate::scenario::one_wave())?;
        let row = self
            .store
            .rollout(CHANNEL)
            .map_err(|e| refused("rollout", e))?
            .ok_or_else(|| refused("rollout", "the started rollout is not stored"))?;
        let mut state: ChannelRollout =
            serde_json::from_str(&row.state).map_err(|e| refused("rollout state", e))?;
        let now = bulwark_rollout::Timestamp(self.time.load(Ordering::SeqCst));
        mark_completed(&mut state, now)?;
        let next = RolloutRow {
            state: serde_json::to_string(&state).map_err(|e| refused("rollout state", e))?,
            updated_at: now.0,
            ..row.clone()
        };
        self.store
            .put_rollout(&next, Some(&row.state), "sim (history)", &[])
            .map_err(|e| refused("rollout", e))?;
        self.signing
            .refresh_rollout(self.store.as_ref(), now.0)
            .map_err(|e| refused("signing", e))?;
        Ok(())
    }

    /// One pass of the server's controller loop at `now` ([`bulwark_server::controller_pass`]):
    /// the channel's events.
    pub fn tick(&mut self, now: u64) -> Result<Vec<ControllerEvent>, ServerError> {
        self.set_now(now);
        let pass = bulwark_server::controller_pass(self.store.as_ref(), Some(&self.signing), now);
        let changed = pass
            .changed
            .map_err(|e| refused("controller", format!("{e:?}")))?;
        if let Some(Err(e)) = pass.signed {
            return Err(refused("signing rollout.json", e));
        }
        Ok(changed
            .into_iter()
            .filter(|(c, _)| c == CHANNEL)
            .flat_map(|(_, events)| events)
            .collect())
    }

    /// The channel's rollout and its waves' thresholds, as stored.
    pub fn rollout(&self) -> Result<Option<(ChannelRollout, WaveThresholds)>, ServerError> {
        let Some(row) = self
            .store
            .rollout(CHANNEL)
            .map_err(|e| refused("rollout", e))?
        else {
            return Ok(None);
        };
        let state = serde_json::from_str(&row.state).map_err(|e| refused("rollout state", e))?;
        let thresholds =
            serde_json::from_str(&row.thresholds).map_err(|e| refused("thresholds", e))?;
        Ok(Some((state, thresholds)))
    }

    /// An endpoint's connection to the server: the endpoint service's own HTTPS client, trusting
    /// the server's certificate.
    pub fn client(&self) -> Result<Client, NetError> {
        let base = format!("https://localhost:{}", self.addr.port());
        let http = Http::new(
            &base,
            Some(&self.ca_pem),
            Some(("localhost", self.addr)),
            REQUEST_TIMEOUT,
        )?;
        Ok(Client(Rc::new(RefCell::new(http))))
    }
}

/// One endpoint's HTTPS client, shared by its agent's fetch path and its reports (the service
/// keeps one client per server, too).
#[derive(Clone)]
pub struct Client(Rc<RefCell<Http>>);

impl ContentSource for Client {
    fn metadata(&mut self, which: Metadata) -> Result<String, NetError> {
        self.0.borrow_mut().metadata(which)
    }

    fn metadata_newer(
        &mut self,
        which: Metadata,
        held: Option<u64>,
    ) -> Result<Option<String>, NetError> {
        self.0.borrow_mut().metadata_newer(which, held)
    }

    fn envelope(&mut self, sha256_hex: &str) -> Result<Vec<u8>, NetError> {
        self.0.borrow_mut().envelope(sha256_hex)
    }
}

impl TelemetrySink for Client {
    fn enroll(&mut self, enrollment: &Enrollment) -> Result<Enrolled, NetError> {
        self.0.borrow_mut().enroll(enrollment)
    }

    fn heartbeat(&mut self, token: &str, body: &[u8]) -> Result<Delivered, NetError> {
        self.0.borrow_mut().heartbeat(token, body)
    }

    fn telemetry(&mut self, token: &str, body: &[u8]) -> Result<Delivered, NetError> {
        self.0.borrow_mut().telemetry(token, body)
    }
}
