//! The dashboard in a real headless Chromium (Debian's `chromium`, driven by `playwright-core`
//! from npm through `tests/dashboard/drive.js`): the server runs on loopback over TLS with a
//! self-signed certificate (the browser is told to accept it), a release is published and rolled
//! out, the page shows it with its first wave open; then telemetry makes the controller halt the
//! rollout and the page shows the halt and its reason without a reload.
//!
//! `scripts/browser-for-tests` installs both (`.ci/run` calls it). Without Node, Chromium or
//! playwright-core the test prints why and passes without running the browser. Set
//! `BULWARK_CHROMIUM` and `BULWARK_PLAYWRIGHT_CORE` to use other copies. The screenshots go to
//! `target/tmp/dashboard/`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bulwark_loader_boot_guard::envelope::public_key;
use bulwark_loader_boot_guard::seal;
use bulwark_rollout::{EndpointFacts, EndpointId};
use bulwark_server::api::{EnrollResponse, RolloutView};
use bulwark_server::store::ApiToken;
use bulwark_server::tls::PemPair;
use bulwark_server::util::{random_token, sha256_hex, unhex};
use bulwark_server::{ChannelConfig, Clock, Config, Role, SqliteStore, Store};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SECRET: &str = "enrollment-secret-for-dashboard-tests";
const RELEASE_KEY: [u8; 32] = [7; 32];
const T0: u64 = 1_800_000_000;

fn envelope(version: u64) -> Vec<u8> {
    let text = "rule\n  id \"rule-1\"\n  title \"test rule 1\"\n  author \"tests\"\n  level high\n  action alert\n  event process_creation\n  str.contains CommandLine \"marker-1\"\n  ret\nend\n";
    let pack = bulwark_interpreter::text::asm(text).expect("assemble test pack");
    seal(
        &RELEASE_KEY,
        1,
        version,
        bulwark_interpreter::schema_hash(),
        &pack,
    )
    .unwrap()
}

/// What the browser needs, or why it cannot run.
struct Browser {
    chromium: PathBuf,
    playwright_core: PathBuf,
}

fn browser() -> Result<Browser, String> {
    let node = Command::new("node").arg("--version").output();
    match node {
        Ok(o) if o.status.success() => {}
        _ => return Err("node is not installed (scripts/browser-for-tests installs it)".into()),
    }
    let chromium = match std::env::var_os("BULWARK_CHROMIUM") {
        Some(p) => PathBuf::from(p),
        None => ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or("Debian's chromium is not installed (scripts/browser-for-tests installs it)")?,
    };
    let playwright_core = std::env::var_os("BULWARK_PLAYWRIGHT_CORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/bulwark-node/node_modules/playwright-core"));
    if !playwright_core.join("package.json").exists() {
        return Err(format!(
            "playwright-core is not at {} (scripts/browser-for-tests installs it)",
            playwright_core.display()
        ));
    }
    Ok(Browser {
        chromium,
        playwright_core,
    })
}

fn facts(id: &str) -> EndpointFacts {
    EndpointFacts {
        id: EndpointId(unhex(id).unwrap().try_into().unwrap()),
        os_build: "22631".to_owned(),
        hw_class: "x64-desktop".to_owned(),
        host_group: "default".to_owned(),
    }
}

async fn post(
    client: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    let mut req = client.post(url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_a_rollout_and_its_halt_live_in_chromium() {
    let dir = std::env::temp_dir().join(format!("bulwark-dashboard-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let time = Arc::new(AtomicU64::new(T0));
    let clock_time = time.clone();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("server.db")).unwrap());
    let config = Config {
        enrollment_secret: SECRET.to_owned(),
        trusted_keys: vec![public_key(&RELEASE_KEY)],
        channels: BTreeMap::from([(
            "stable".to_owned(),
            ChannelConfig {
                number: 1,
                critical: false,
            },
        )]),
        clock: Clock::from_fn(move || clock_time.load(Ordering::SeqCst)),
        signing: None,
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
    let url = |p: &str| format!("{base}{p}");
    let token = |role: Role, name: &str| {
        let t = random_token("bwr_").unwrap();
        store
            .insert_api_token(
                &sha256_hex(t.as_bytes()),
                &ApiToken {
                    name: name.to_owned(),
                    role,
                },
                1,
            )
            .unwrap();
        t
    };
    let publisher = token(Role::Publisher, "pat");
    let operator = token(Role::Operator, "olga");
    let viewer = token(Role::Viewer, "vic");

    // The page is public; its data is not.
    let page = client.get(url("/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("/dashboard/dashboard.js"));
    let js = client
        .get(url("/dashboard/dashboard.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    let summary = client
        .get(url("/v1/dashboard/summary"))
        .send()
        .await
        .unwrap();
    assert_eq!(summary.status(), StatusCode::UNAUTHORIZED);
    let summary = client
        .get(url("/v1/dashboard/summary"))
        .bearer_auth("bwr_unknown")
        .send()
        .await
        .unwrap();
    assert_eq!(summary.status(), StatusCode::UNAUTHORIZED);

    // 20 endpoints, a release, a rollout with a 25% first wave (as in tests/api.rs).
    let mut endpoints: Vec<EnrollResponse> = Vec::new();
    for _ in 0..20 {
        let (status, body) = post(
            &client,
            url("/v1/enroll"),
            None,
            &json!({"secret": SECRET, "os_build": "22631", "hw_class": "x64-desktop", "host_group": "default"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        endpoints.push(serde_json::from_value(body).unwrap());
    }
    let resp = client
        .post(url(
            "/v1/releases?channel=stable&notes=published%20by%20the%20test",
        ))
        .bearer_auth(&publisher)
        .header("content-type", "application/octet-stream")
        .body(envelope(1))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
    let (status, body) = post(
        &client,
        url("/v1/rollouts/stable/start"),
        Some(&operator),
        &json!({"version": 1, "plan": {"waves": [
            {"name": "canary", "fraction_ppm": 250_000, "bake_secs": 3600, "min_healthy": 1},
            {"name": "all", "fraction_ppm": 1_000_000, "bake_secs": 3600, "min_healthy": 1}]}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view: RolloutView = serde_json::from_value(body).unwrap();
    // An operator pins the servers to release 1 for a day: the page lists the pin.
    let resp = client
        .put(url("/v1/policies/servers/stable"))
        .bearer_auth(&operator)
        .json(&json!({"Pin": {"version": 1, "expires_at": T0 + 86_400}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
    let (first, rest): (Vec<_>, Vec<_>) = endpoints
        .iter()
        .partition(|e| view.thresholds.wave_of(&facts(&e.endpoint_id)) == Some(0));
    assert_eq!((first.len(), rest.len()), (5, 15));
    for (seq, t) in [(1, T0), (2, T0 + 600)] {
        time.store(t, Ordering::SeqCst);
        for (e, version) in rest
            .iter()
            .map(|e| (e, 0))
            .chain(first.iter().map(|e| (e, 1)))
        {
            let (status, _) = post(
                &client,
                url("/v1/heartbeat"),
                Some(&e.token),
                &json!({"seq": seq, "channel": "stable", "content_version": version}),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
        }
    }

    // The summary the page draws.
    let summary: Value = client
        .get(url("/v1/dashboard/summary"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stable = &summary["channels"][0];
    assert_eq!(stable["name"], json!("stable"));
    assert_eq!(stable["releases"][0]["version"], json!(1));
    let rollout = &stable["rollout"];
    assert_eq!(rollout["status"], json!("progressing"));
    assert_eq!(rollout["waves"][0]["open"], json!(true));
    assert_eq!(rollout["waves"][0]["endpoints"], json!(5));
    assert_eq!(rollout["waves"][0]["bake_remaining_secs"], json!(3000));
    assert_eq!(rollout["waves"][0]["confirmed_healthy"], json!(0));
    assert_eq!(rollout["waves"][1]["open"], json!(false));
    assert!(!rollout["waves"][0]["verdicts"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(stable["halts"], json!([]));
    let last = stable["version_share"]["samples"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["counts"], json!({"0": 15, "1": 5}));
    assert_eq!(summary["pins"]["entries"], json!(1));
    assert_eq!(
        summary["pins"]["active"],
        json!([{"host_group": "servers", "channel": "stable", "version": 1,
            "expires_at": T0 + 86_400}])
    );

    let browser = match browser() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("SKIPPED the browser part of the dashboard test: {why}");
            drop(server);
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
    };
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/drive.js");
    let mut child = Command::new("node")
        .arg(&script)
        // The browser reaches the server by its address; it accepts the self-signed certificate.
        .env("DASHBOARD_URL", format!("https://{}", server.addr))
        .env("DASHBOARD_TOKEN", &viewer)
        .env("CHROMIUM", &browser.chromium)
        .env("PLAYWRIGHT_CORE", &browser.playwright_core)
        .env("SCREENSHOT_DIR", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = |what: &str| {
        let rx = &rx;
        let line = tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(90)));
        match line {
            Ok(l) => l,
            Err(e) => panic!("drive.js did not say {what} ({e}); see its output above"),
        }
    };
    let ready = next_line("READY");
    assert_eq!(ready, "READY");

    // Two quarantines in the canaries: the controller halts the rollout (with revert).
    let canary = first[0];
    for seq in [3, 4] {
        let (status, _) = post(
            &client,
            url("/v1/telemetry"),
            Some(&canary.token),
            &json!({"seq": seq, "channel": "stable",
                "guard_events": [{"release_version": 1, "kind": "quarantine"}]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let changed = bulwark_server::controller::tick(store.as_ref(), T0 + 600).unwrap();
    assert_eq!(changed.len(), 1, "{changed:?}");
    writeln!(stdin, "HALTED").unwrap();
    let ok = next_line("OK");
    assert_eq!(ok, "OK");
    let status = tokio::task::block_in_place(|| child.wait()).unwrap();
    assert!(status.success(), "drive.js: {status}");
    eprintln!(
        "screenshots: {} and {}",
        shots.join("dashboard-before-halt.png").display(),
        shots.join("dashboard-halted.png").display()
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
