//! `bulwark sim` on a small scenario file: the figures as JSON (the same for the same seed), the
//! table, the HTML report, and a clear error for an unknown scenario.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const SCENARIO: &str = r#"
name = "small-crash"
description = "A release crashing every machine, on 300 endpoints with a 10% canary."
[fleet]
endpoints = 300
hours = 6
heartbeat_secs = 300
boot_secs = 60
baseline_crashes_per_endpoint_day = 0.0
[release]
behaviour = "crash-on-load"
start_minute = 60
[rollout]
plan = "custom"
controller_tick_secs = 60
health_window_secs = 300
[[rollout.waves]]
name = "canary"
fraction_ppm = 100000
bake_secs = 3600
min_healthy = 5
[[rollout.waves]]
name = "all"
fraction_ppm = 1000000
bake_secs = 3600
min_healthy = 5
"#;

/// [`SCENARIO`] with a good release, over 3 hours.
fn good_scenario() -> String {
    SCENARIO
        .replace("crash-on-load", "good")
        .replace("small-crash", "small-good")
        .replace("hours = 6", "hours = 3")
}

fn bulwark(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn sim_prints_the_blast_radius_and_writes_a_report() {
    let dir = std::env::temp_dir().join(format!("bulwark-cli-sim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("small.toml");
    std::fs::write(&file, SCENARIO).unwrap();
    let file = file.to_str().unwrap();
    let report = dir.join("report");
    let out = bulwark(&[
        "sim",
        "--scenario",
        file,
        "--seed",
        "3",
        "--json",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["scenario"], "small-crash");
    assert_eq!(v["endpoints"], 300);
    assert_eq!(v["halted"], true);
    assert_eq!(v["bricked"], 0);
    assert!(v["crashed_once"].as_u64().unwrap() > 0);
    assert_eq!(v["waves"][1]["exposed"], 0, "{v}");
    // Deterministic: the same seed, the same bytes.
    let again = bulwark(&["sim", "--scenario", file, "--seed", "3", "--json"]);
    assert_eq!(again.stdout, out.stdout);
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("small-crash"));
    for chart in ["share.svg", "crashes.svg", "waves.svg"] {
        let svg = std::fs::read_to_string(report.join(chart)).unwrap();
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"") && svg.ends_with("</svg>"),
            "{chart}"
        );
    }
    // The table.
    let table = bulwark(&["sim", "--scenario", file, "--seed", "3"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("halted                    true"), "{text}");
    assert!(text.contains("wave canary"), "{text}");
    // An unknown scenario is a usage error naming the built-ins.
    let bad = bulwark(&["sim", "--scenario", "no-such-scenario"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a built-in (good, crash-on-load"));
    // --releases counts false halts, of good releases only.
    let notgood = bulwark(&["sim", "--scenario", file, "--releases", "2"]);
    assert_eq!(notgood.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&notgood.stderr).contains("not good"));
    let good = dir.join("good.toml");
    std::fs::write(&good, good_scenario()).unwrap();
    let k = bulwark(&[
        "sim",
        "--scenario",
        good.to_str().unwrap(),
        "--releases",
        "3",
        "--json",
    ]);
    assert!(k.status.success(), "{}", String::from_utf8_lossy(&k.stderr));
    let v: serde_json::Value = serde_json::from_slice(&k.stdout).unwrap();
    assert_eq!(v["releases"], 3, "{v}");
    assert_eq!(v["false_halts"], 0, "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--transport http`: the same scenario through the real bulwark-server on loopback (TLS, its
/// SQLite store, its controller) and each endpoint's service HTTPS client. The crashing release
/// halts in its canary and reaches no endpoint beyond it, as in process; a good one goes on past
/// the canary; a fleet too large for real connections is a usage error.
#[test]
fn sim_over_http_runs_the_real_server_and_clients() {
    let dir = std::env::temp_dir().join(format!("bulwark-cli-sim-http-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let crash = dir.join("crash.toml");
    std::fs::write(&crash, SCENARIO.replace("hours = 6", "hours = 2")).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, good_scenario()).unwrap();
    let run = |file: &std::path::Path, transport: &str| {
        let out = bulwark(&[
            "sim",
            "--scenario",
            file.to_str().unwrap(),
            "--transport",
            transport,
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };

    let v = run(&crash, "http");
    assert_eq!(v["transport"], "http", "{v}");
    assert_eq!(v["endpoints"], 300, "{v}");
    assert_eq!(v["halted"], true, "{v}");
    assert_eq!(v["bricked"], 0, "{v}");
    let crashed = v["crashed_once"].as_u64().unwrap();
    let canary = v["waves"][0]["endpoints"].as_u64().unwrap();
    assert!(crashed > 0 && crashed <= canary, "{v}");
    assert_eq!(v["waves"][1]["exposed"], 0, "{v}");
    assert!(v["halt_after_minutes"].as_f64().unwrap() <= 15.0, "{v}");
    // The same scenario in process halts too; the canary is drawn from other ids (the server
    // gives them), so the counts are close, not equal.
    let inproc = run(&crash, "inproc");
    assert_eq!(inproc["transport"], "inproc");
    assert_eq!(inproc["halted"], true);

    let v = run(&good, "http");
    assert_eq!(v["halted"], false, "{v}");
    assert_eq!(v["crashed_once"], 0, "{v}");
    assert!(
        v["waves"][1]["opened_after_minutes"].as_u64().is_some(),
        "{v}"
    );
    assert!(v["waves"][1]["exposed"].as_u64().unwrap() > 0, "{v}");
    assert!(
        v["final_fraction_on_release"].as_f64().unwrap() > 0.2,
        "{v}"
    );

    let big = bulwark(&["sim", "--scenario", "good", "--transport", "http"]);
    assert_eq!(big.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&big.stderr).contains("at most 2000"),
        "{}",
        String::from_utf8_lossy(&big.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
