//! The `bulwark-service` binary: `run --config FILE` against a real server enrolls and keeps
//! its enrollment across a kill -9 and a restart; `status` prints the state as JSON; the
//! administrator's `pin`, `unpin`, `pause`, `resume` and `revert` write the controls `status` shows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_distribution::{sign, Root};
use bulwark_server::tls::PemPair;
use bulwark_server::{ChannelConfig, Clock, Config, SqliteStore, Store};

const SECRET: &str = "enrollment-secret-for-tests";

fn root_file() -> String {
    let k = |b: u8| ed25519_dalek::SigningKey::from_bytes(&[b; 32]);
    let public = |b: u8| k(b).verifying_key().to_bytes();
    let root = Root::new(1, bulwark_rollout::Timestamp(4_000_000_000))
        .with_role(bulwark_distribution::Role::Root, &[public(31)], 1)
        .with_role(bulwark_distribution::Role::Releases, &[public(7)], 1)
        .with_role(bulwark_distribution::Role::Rollout, &[public(41)], 1);
    sign(&root, &[&k(31)]).unwrap()
}

fn status(config: &std::path::Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_bulwark-service"))
        .args(["status", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn wait_enrolled(config: &std::path::Path) -> String {
    let start = Instant::now();
    loop {
        let s = status(config);
        if let Some(id) = s["enrolled"].as_str() {
            return id.to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never enrolled: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn run_enrolls_survives_kill_9_and_status_prints_json() {
    let dir = std::env::temp_dir().join(format!("bulwark-service-bin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("server.db")).unwrap());
    let pem = PemPair::self_signed().unwrap();
    let server = rt
        .block_on(bulwark_server::start(
            "127.0.0.1:0".parse().unwrap(),
            &pem,
            store,
            Config {
                enrollment_secret: SECRET.to_owned(),
                trusted_keys: vec![ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                    .verifying_key()
                    .to_bytes()],
                channels: BTreeMap::from([(
                    "stable".to_owned(),
                    ChannelConfig {
                        number: 1,
                        critical: false,
                    },
                )]),
                clock: Clock::system(),
                signing: None,
            },
            None,
        ))
        .unwrap();
    std::fs::write(dir.join("ca.pem"), &pem.cert_pem).unwrap();
    std::fs::write(dir.join("root.json"), root_file()).unwrap();
    std::fs::write(dir.join("secret.txt"), format!("{SECRET}\n")).unwrap();
    let release_key = ed25519_dalek::SigningKey::from_bytes(&[7; 32])
        .verifying_key()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let config = dir.join("service.toml");
    std::fs::write(
        &config,
        format!(
            r#"server_url = "https://localhost:{port}"
ca_cert = "{dir}/ca.pem"
enrollment_secret_file = "{dir}/secret.txt"
channel = "stable"
channel_number = 1
os_build = "26100"
hw_class = "x64-vm"
root = "{dir}/root.json"
release_keys = ["{release_key}"]
state_dir = "{dir}/state"
backoff_base_secs = 1
backoff_max_secs = 1
log_file = "{dir}/logs/bulwark-service.log"
"#,
            port = server.addr.port(),
            dir = dir.display()
        ),
    )
    .unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_bulwark-service"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    let id = wait_enrolled(&config);
    // The step that enrolled saves the enrollment before its log lines are written: wait for
    // the line too (a kill -9 between the two may lose the line, never the enrollment).
    let log_path = dir.join("logs/bulwark-service.log");
    let start = Instant::now();
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains(&format!(" enrolled as {id}\n"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no enrolled line"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // kill -9, then start again: the same enrollment, no second one.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = spawn();
    std::thread::sleep(Duration::from_millis(1500));
    let s = status(&config);
    assert_eq!(s["enrolled"].as_str(), Some(id.as_str()), "{s}");
    assert!(s["next_seq"].as_u64().is_some(), "{s}");
    child.kill().unwrap();
    child.wait().unwrap();
    // The log file has what the service did, stamped in UTC.
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.lines().all(|l| l.len() > 21 && &l[19..21] == "Z "),
        "{log}"
    );
    assert!(log.contains(" started\n"), "{log}");
    assert!(log.contains(&format!(" enrolled as {id}\n")), "{log}");
    // The service control manager's commands are Windows'.
    let out = Command::new(env!("CARGO_BIN_EXE_bulwark-service"))
        .args(["install", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("install: the service control manager is Windows'"));
    // A bad command line is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_bulwark-service"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // The administrator's commands write the controls and print them; status shows them.
    let admin = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bulwark-service"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = admin(&["pin", "7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["pinned"], serde_json::json!(7));
    assert!(admin(&["pause"]).status.success());
    assert!(admin(&["revert"]).status.success());
    let s = status(&config);
    assert_eq!(
        s["admin"],
        serde_json::json!({"pinned": 7, "paused": true, "reverts_requested": 1}),
        "{s}"
    );
    assert!(admin(&["unpin"]).status.success());
    assert!(admin(&["resume"]).status.success());
    assert_eq!(
        status(&config)["admin"],
        serde_json::json!({"pinned": null, "paused": false, "reverts_requested": 1})
    );
    let out = admin(&["pin", "seven"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"seven\" is not a content version"));
    assert_eq!(admin(&["unpin", "7"]).status.code(), Some(2));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
