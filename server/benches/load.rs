//! Load benchmark: a loopback load generator against the real server over TLS, on SQLite and on
//! PostgreSQL. The figures measured, the target and how many instances it takes are in
//! `server/BENCHMARKS.md`.
//!
//! ```sh
//! cargo bench -p bulwark-server --bench load                      # fast mode (CI-sized)
//! BULWARK_BENCH=full cargo bench -p bulwark-server --bench load   # 100,000 endpoints, 20 s phases
//! ```
//!
//! PostgreSQL runs when `BULWARK_TEST_POSTGRES` names a server (a fresh schema, dropped after);
//! without it that half prints why it skipped. `BULWARK_BENCH_ENDPOINTS`, `BULWARK_BENCH_SECS`
//! and `BULWARK_BENCH_CONCURRENCY` override the mode's sizes; `BULWARK_BENCH_STORES=sqlite` (or
//! `postgres`) runs one store only.
//!
//! For each store it:
//! 1. pre-fills the database with N enrolled endpoints, each with a first heartbeat (through the
//!    [`Store`] directly, in parallel: the database is the size under test before any request),
//!    and a release with a rollout in progress (default plan, first wave open);
//! 2. runs fixed-duration phases, each from C concurrent workers over HTTPS (reqwest, rustls):
//!    * `enroll`: new endpoints enrolling;
//!    * `heartbeat`: heartbeats from the pre-filled endpoints over kept-alive connections (as an
//!      agent holding its connection);
//!    * `mixed`: 90% heartbeats, 10% telemetry batches (3 detections each, a guard event in one
//!      batch of ten);
//!    * `heartbeat+ticks`: heartbeats while the controller ticks back to back (its reads must
//!      not hold up the writes);
//!    * `heartbeat-fresh-tls`: heartbeats, each on a new TCP connection with a full TLS 1.3
//!      handshake (no resumption), as 1,000,000 agents that do not hold connections would;
//! 3. reports requests/s (successful ones), p50/p99/max latency, errors, and the rate against the
//!    3,300 heartbeats/s of 1,000,000 endpoints checking in every 5 minutes;
//! 4. times the controller's tick (and the dashboard summary) with N endpoints, idle, and prints
//!    the row counts: the heartbeat state is one row per endpoint however long the run.
//!
//! Client and server share the machine (and its cores): the rates are a lower bound for a server
//! with the machine to itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_rollout::{
    Census, Channel, ChannelRollout, EndpointFacts, EndpointId, Plan, Release, Timestamp,
    WaveThresholds,
};
use bulwark_server::store::{EndpointRow, HeartbeatRow, NewEndpoint, ReleaseRow, RolloutRow};
use bulwark_server::tls::PemPair;
use bulwark_server::util::{hex, random_bytes, random_token, sha256_hex, unhex};
use bulwark_server::{ChannelConfig, Clock, Config, PostgresStore, SqliteStore, Store};
use serde_json::json;

const SECRET: &str = "bench-enrollment-secret";
const CHANNEL: &str = "stable";
/// 1,000,000 endpoints, one heartbeat each every 300 s.
const TARGET_PER_SEC: f64 = 1_000_000.0 / 300.0;

/// Sizes of a run.
#[derive(Debug, Clone)]
struct Mode {
    name: &'static str,
    endpoints: usize,
    secs: f64,
    concurrency: usize,
}

impl Mode {
    fn from_env() -> Self {
        let full = std::env::var("BULWARK_BENCH").is_ok_and(|v| v == "full");
        let mut m = if full {
            Mode {
                name: "full",
                endpoints: 100_000,
                secs: 20.0,
                concurrency: 64,
            }
        } else {
            Mode {
                name: "fast",
                endpoints: 2_000,
                secs: 2.0,
                concurrency: 32,
            }
        };
        let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
        if let Some(n) = var("BULWARK_BENCH_ENDPOINTS") {
            m.endpoints = n as usize;
        }
        if let Some(s) = var("BULWARK_BENCH_SECS") {
            m.secs = s;
        }
        if let Some(c) = var("BULWARK_BENCH_CONCURRENCY") {
            m.concurrency = (c as usize).max(1);
        }
        m
    }
}

/// A pre-filled endpoint the load generator speaks for.
struct Agent {
    token: String,
    id: String,
    seq: AtomicU64,
    /// In the first wave: reports the release, confirmed healthy.
    on_release: bool,
}

/// What one phase measured.
#[derive(Default)]
struct Sample {
    micros: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

fn report(phase: &str, mut s: Sample, elapsed: Duration, heartbeat_share: f64) -> f64 {
    s.micros.sort_unstable();
    let ok = s.micros.len();
    let rate = ok as f64 / elapsed.as_secs_f64();
    let hb_rate = rate * heartbeat_share;
    println!(
        "  {phase:<22} {rate:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms  \
         errors {:>4}  ({ok} in {:.1} s){}",
        percentile(&s.micros, 0.5),
        percentile(&s.micros, 0.99),
        percentile(&s.micros, 1.0),
        s.errors,
        elapsed.as_secs_f64(),
        if heartbeat_share > 0.0 {
            format!(
                "  heartbeats {:.2}x the 3,300/s target",
                hb_rate / TARGET_PER_SEC
            )
        } else {
            String::new()
        }
    );
    if let Some(e) = s.first_error {
        println!("    first error: {e}");
    }
    rate
}

fn client(pem: &PemPair, addr: std::net::SocketAddr, fresh: bool) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if fresh {
        // Every request a full handshake, as from an agent that has not spoken for 5 minutes.
        tls.resumption = rustls::client::Resumption::disabled();
    }
    let mut b = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(30));
    if fresh {
        b = b.pool_max_idle_per_host(0);
    }
    b.build().unwrap()
}

/// The server under test: its runtime, the running server, and what clients need.
struct Server {
    _running: bulwark_server::Running,
    runtime: tokio::runtime::Runtime,
    pem: PemPair,
    addr: std::net::SocketAddr,
}

fn start_server(store: Arc<dyn Store>) -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()
        .unwrap();
    let pem = PemPair::self_signed().unwrap();
    let config = Config {
        enrollment_secret: SECRET.to_owned(),
        trusted_keys: vec![bulwark_loader_boot_guard::envelope::public_key(&[7; 32])],
        signing: None,
        channels: BTreeMap::from([(
            CHANNEL.to_owned(),
            ChannelConfig {
                number: 1,
                critical: false,
            },
        )]),
        clock: Clock::system(),
    };
    let running = runtime
        .block_on(bulwark_server::start(
            "127.0.0.1:0".parse().unwrap(),
            &pem,
            store,
            config,
            None,
        ))
        .unwrap();
    let addr = running.addr;
    Server {
        _running: running,
        runtime,
        pem,
        addr,
    }
}

fn endpoint_row(i: usize, id: String, now: u64) -> EndpointRow {
    const BUILDS: [&str; 4] = ["19045", "22621", "22631", "26100"];
    const CLASSES: [&str; 3] = ["x64-desktop", "x64-laptop", "x64-server"];
    EndpointRow {
        id,
        host_group: format!("group-{}", i % 20),
        os_build: BUILDS[i % BUILDS.len()].to_owned(),
        hw_class: CLASSES[i % CLASSES.len()].to_owned(),
        enrolled_at: now,
        last_seen: None,
    }
}

/// N endpoints with a first heartbeat each, through the store from `threads` threads.
fn prefill(store: &Arc<dyn Store>, n: usize, threads: usize) -> Vec<Agent> {
    let now = bulwark_server::util::now();
    let agents: Vec<Agent> = (0..n)
        .map(|_| Agent {
            token: random_token("bwe_").unwrap(),
            id: hex(&random_bytes::<16>().unwrap()),
            seq: AtomicU64::new(1),
            on_release: false,
        })
        .collect();
    std::thread::scope(|s| {
        for t in 0..threads {
            let agents = &agents;
            let store = store.clone();
            s.spawn(move || {
                for (i, a) in agents.iter().enumerate().skip(t).step_by(threads) {
                    store
                        .insert_endpoint(&NewEndpoint {
                            row: endpoint_row(i, a.id.clone(), now),
                            token_sha256: sha256_hex(a.token.as_bytes()),
                        })
                        .unwrap();
                    store
                        .record_heartbeat(
                            1,
                            &HeartbeatRow {
                                endpoint_id: a.id.clone(),
                                at: now,
                                channel: CHANNEL.to_owned(),
                                content_version: 1,
                                confirmed_healthy: true,
                                shutdown: false,
                            },
                        )
                        .unwrap();
                }
            });
        }
    });
    agents
}

/// Release 2 published and its rollout started (default plan), as an operator would; marks the
/// agents of the first wave. Returns the time the census and thresholds took.
fn start_rollout(store: &dyn Store, agents: &mut [Agent]) -> Duration {
    let now = bulwark_server::util::now();
    let envelope = b"bench envelope (the store does not open it)".to_vec();
    let release = ReleaseRow {
        channel: CHANNEL.to_owned(),
        version: 2,
        pack_sha256: sha256_hex(b"pack"),
        envelope_sha256: sha256_hex(&envelope),
        rules: vec!["rule-1".to_owned(), "rule-2".to_owned()],
        notes: "bench".to_owned(),
        published_at: now,
        published_by: "bench".to_owned(),
    };
    store.publish_release(&release, &envelope).unwrap();
    let plan = Plan::default_plan();
    let (state, events) = bulwark_rollout::start(
        Channel::new(CHANNEL, false),
        Release {
            channel: CHANNEL.to_owned(),
            version: 2,
            pack_hash: unhex(&release.pack_sha256).unwrap().try_into().unwrap(),
            envelope_sha256: unhex(&release.envelope_sha256).unwrap().try_into().unwrap(),
            notes: String::new(),
        },
        plan.clone(),
        None,
        Timestamp(now),
    )
    .unwrap();
    let t = Instant::now();
    let data = store.channel_data_of(CHANNEL, Some(&[])).unwrap();
    let facts: Vec<EndpointFacts> = data.endpoints.iter().map(facts_of).collect();
    let census = Census::from_endpoints(CHANNEL, facts.iter());
    let thresholds = WaveThresholds::compute(&plan, &census, CHANNEL).unwrap();
    let took = t.elapsed();
    for (i, a) in agents.iter_mut().enumerate() {
        let row = endpoint_row(i, a.id.clone(), now);
        a.on_release = thresholds.wave_of(&facts_of(&row)) == Some(0);
    }
    store
        .put_rollout(
            &RolloutRow {
                channel: CHANNEL.to_owned(),
                state: serde_json::to_string::<ChannelRollout>(&state).unwrap(),
                thresholds: serde_json::to_string(&thresholds).unwrap(),
                updated_at: now,
            },
            None,
            "bench",
            &events
                .iter()
                .map(|e| serde_json::to_string(e).unwrap())
                .collect::<Vec<_>>(),
        )
        .unwrap();
    took
}

fn facts_of(e: &EndpointRow) -> EndpointFacts {
    EndpointFacts {
        id: EndpointId(unhex(&e.id).unwrap().try_into().unwrap()),
        os_build: e.os_build.clone(),
        hw_class: e.hw_class.clone(),
        host_group: e.host_group.clone(),
    }
}

/// What a worker sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    Enroll,
    Heartbeat,
    /// One request in ten a telemetry batch.
    Mixed,
}

/// Runs `load` from `workers` tasks for `secs` on `client`; agents are split between workers.
fn phase(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    base: &str,
    agents: &Arc<Vec<Agent>>,
    workers: usize,
    secs: f64,
    load: Load,
) -> (Sample, Duration) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let samples = rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..workers {
            let client = client.clone();
            let base = base.to_owned();
            let agents = agents.clone();
            tasks.push(tokio::spawn(async move {
                let mut s = Sample::default();
                let mut n: usize = 0;
                let mine: Vec<usize> = (w..agents.len()).step_by(workers).collect();
                while Instant::now() < deadline {
                    let req = match load {
                        Load::Enroll => client.post(format!("{base}/v1/enroll")).json(&json!({
                            "secret": SECRET, "os_build": "22631",
                            "hw_class": "x64-desktop", "host_group": "bench"})),
                        Load::Heartbeat | Load::Mixed => {
                            let Some(&i) = mine.get(n % mine.len().max(1)) else {
                                break;
                            };
                            let a = &agents[i];
                            let seq = a.seq.fetch_add(1, Ordering::Relaxed) + 1;
                            let version = if a.on_release { 2 } else { 1 };
                            let body = if load == Load::Mixed && n % 10 == 9 {
                                let guard: Vec<serde_json::Value> = if n % 100 == 99 {
                                    // On the baseline: the rollout goes on (crashes on the
                                    // release would halt it, and the ticks then do nothing).
                                    vec![json!({"release_version": 1, "kind": "crash"})]
                                } else {
                                    Vec::new()
                                };
                                (
                                    "telemetry",
                                    json!({"seq": seq, "channel": CHANNEL,
                                        "guard_events": guard,
                                        "detections": [
                                            {"release_version": version, "rule": "rule-1", "count": 2},
                                            {"release_version": version, "rule": "rule-2", "count": 1},
                                            {"release_version": version, "rule": "rule-9", "count": 5}]}),
                                )
                            } else {
                                (
                                    "heartbeat",
                                    json!({"seq": seq, "channel": CHANNEL,
                                        "content_version": version,
                                        "confirmed_healthy": a.on_release}),
                                )
                            };
                            client
                                .post(format!("{base}/v1/{}", body.0))
                                .bearer_auth(&a.token)
                                .json(&body.1)
                        }
                    };
                    n = n.wrapping_add(1);
                    let t = Instant::now();
                    let result = req.send().await;
                    let outcome = match result {
                        Ok(r) if r.status().is_success() => r.bytes().await.map(|_| ()).map_err(|e| e.to_string()),
                        Ok(r) => {
                            let status = r.status();
                            Err(format!("{status}: {}", r.text().await.unwrap_or_default()))
                        }
                        Err(e) => Err(format!("{e:?}")),
                    };
                    match outcome {
                        Ok(()) => s.micros.push(
                            u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX),
                        ),
                        Err(e) => {
                            s.errors += 1;
                            s.first_error.get_or_insert(e);
                        }
                    }
                }
                s
            }));
        }
        let mut all = Sample::default();
        for t in tasks {
            let s = t.await.unwrap();
            all.micros.extend(s.micros);
            all.errors += s.errors;
            if all.first_error.is_none() {
                all.first_error = s.first_error;
            }
        }
        all
    });
    (samples, start.elapsed())
}

fn time_ms(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1000.0
}

/// The whole run on one store. Returns the number of failed requests.
fn run(kind: &str, store: Arc<dyn Store>, mode: &Mode) -> u64 {
    println!(
        "\n== {kind}: {} endpoints pre-filled, {} workers, {} s per phase",
        mode.endpoints, mode.concurrency, mode.secs
    );
    let t = Instant::now();
    let mut agents = prefill(&store, mode.endpoints, 8);
    let took = t.elapsed().as_secs_f64();
    println!(
        "  pre-fill: {} endpoints with a heartbeat each in {took:.1} s ({:.0}/s through the store)",
        mode.endpoints,
        mode.endpoints as f64 / took
    );
    let census = start_rollout(store.as_ref(), &mut agents);
    println!(
        "  rollout start: census and thresholds over {} endpoints in {:.0} ms; {} in the first wave",
        mode.endpoints,
        census.as_secs_f64() * 1000.0,
        agents.iter().filter(|a| a.on_release).count()
    );
    let agents = Arc::new(agents);
    let server = start_server(store.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", server.addr.port());
    let kept = client(&server.pem, server.addr, false);
    let fresh = client(&server.pem, server.addr, true);
    let c = mode.concurrency;
    let mut errors = 0;

    let mut go = |name: &str, client: &reqwest::Client, load: Load, share: f64| {
        let (s, elapsed) = phase(&rt, client, &base, &agents, c, mode.secs, load);
        errors += s.errors;
        report(name, s, elapsed, share)
    };
    go("enroll", &kept, Load::Enroll, 0.0);
    go("heartbeat", &kept, Load::Heartbeat, 1.0);
    go("mixed (10% telemetry)", &kept, Load::Mixed, 0.9);

    // Heartbeats while the controller ticks back to back on a thread of its own.
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut times = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                bulwark_server::controller::tick(store.as_ref(), bulwark_server::util::now())
                    .unwrap();
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            times
        })
    };
    go("heartbeat+ticks", &kept, Load::Heartbeat, 1.0);
    stop.store(true, Ordering::Relaxed);
    let mut ticks = ticker.join().unwrap();
    ticks.sort_by(f64::total_cmp);
    println!(
        "    ({} controller ticks meanwhile, median {:.0} ms)",
        ticks.len(),
        ticks.get(ticks.len() / 2).copied().unwrap_or(0.0)
    );
    go("heartbeat-fresh-tls", &fresh, Load::Heartbeat, 1.0);

    // The controller and the dashboard with every endpoint, idle.
    let n = store.table_counts().unwrap()["endpoints"];
    let mut ticks: Vec<f64> = (0..3)
        .map(|_| {
            time_ms(|| {
                bulwark_server::controller::tick(store.as_ref(), bulwark_server::util::now())
                    .unwrap();
            })
        })
        .collect();
    ticks.sort_by(f64::total_cmp);
    let read = time_ms(|| {
        store.channel_data_of(CHANNEL, Some(&[2, 1])).unwrap();
    });
    let dashboard = time_ms(|| {
        bulwark_server::dashboard::build(
            store.as_ref(),
            &[(CHANNEL.to_owned(), false)],
            bulwark_server::util::now(),
        )
        .unwrap();
    });
    let status = store.rollout(CHANNEL).unwrap().map(|r| {
        serde_json::from_str::<ChannelRollout>(&r.state)
            .unwrap()
            .status
            .name()
    });
    println!("  rollout status: {status:?}");
    println!(
        "  controller tick with {n} endpoints: median {:.0} ms (of which the snapshot read {read:.0} ms); \
         dashboard summary {dashboard:.0} ms",
        ticks[1]
    );
    let counts = store.table_counts().unwrap();
    println!(
        "  rows: endpoints {}, heartbeats {}, endpoint_versions {}, version_share {}, guard_events {}, detections {}",
        counts["endpoints"],
        counts["heartbeats"],
        counts["endpoint_versions"],
        counts["version_share"],
        counts["guard_events"],
        counts["detections"]
    );
    drop(rt);
    drop(server.runtime);
    errors
}

fn main() {
    let mode = Mode::from_env();
    println!(
        "bulwark-server load benchmark ({} mode; {} cores; target {TARGET_PER_SEC:.0} heartbeats/s = 1,000,000 endpoints every 300 s)",
        mode.name,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    let which = std::env::var("BULWARK_BENCH_STORES").unwrap_or_default();
    let mut errors = 0;
    if which.is_empty() || which == "sqlite" {
        let dir = std::env::temp_dir().join(format!("bulwark-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("bench.db")).unwrap());
        errors += run("SQLite", store, &mode);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if which.is_empty() || which == "postgres" {
        match std::env::var("BULWARK_TEST_POSTGRES") {
            Ok(url) if !url.is_empty() => {
                let schema = format!("bench_{}", std::process::id());
                let store = PostgresStore::connect_in_schema(&url, &schema).unwrap();
                store.drop_schema(&schema).unwrap();
                drop(store);
                let store = Arc::new(PostgresStore::connect_in_schema(&url, &schema).unwrap());
                errors += run("PostgreSQL", store.clone(), &mode);
                store.drop_schema(&schema).unwrap();
            }
            _ => println!(
                "\n== PostgreSQL: SKIPPED: BULWARK_TEST_POSTGRES is not set \
                 (scripts/postgres-for-tests starts a server and prints its URL)"
            ),
        }
    }
    if errors > 0 {
        eprintln!("{errors} requests failed");
        std::process::exit(1);
    }
}
