//! `bulwark compile` and `bulwark scan`: exit codes, summaries, skips that never stop a scan.

mod common;
use common::bulwark;

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tmp(name: &str) -> PathBuf {
    common::tmp("sigma", name)
}

#[test]
fn compile_and_scan_the_samples() {
    let pack = tmp("sample.pack");
    let rules = root().join("examples/sigma");
    let (code, _, err) = bulwark(&[
        "compile",
        rules.to_str().unwrap_or(""),
        "-o",
        pack.to_str().unwrap_or(""),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("compiled 6 of 6 rules"), "{err}");
    let (code, _, err) = bulwark(&["verify", pack.to_str().unwrap_or("")]);
    assert_eq!(code, Some(0), "{err}");
    let events = root().join("examples/events/workstation.jsonl");
    let (code, out, err) = bulwark(&[
        "scan",
        "--pack",
        pack.to_str().unwrap_or(""),
        events.to_str().unwrap_or(""),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 6, "{out}");
    let positions: Vec<u64> = lines
        .iter()
        .map(|l| l["position"].as_u64().unwrap_or(u64::MAX))
        .collect();
    assert_eq!(positions, [0, 2, 4, 5, 7, 9]);
    for l in &lines {
        assert_eq!(
            l["author"], "Bulwark sample content",
            "the author is kept for attribution"
        );
        assert!(l["rule_id"].as_str().is_some_and(|s| s.len() == 36));
        assert!(l["title"].as_str().is_some_and(|s| !s.is_empty()));
    }
    // the malformed last line and the non-Sysmon event are reported and skipped, never fatal
    assert!(
        err.contains("workstation.jsonl:12: skipped: not JSON"),
        "{err}"
    );
    assert!(
        err.contains("workstation.jsonl:11: skipped: EventID 4688"),
        "{err}"
    );
    assert!(err.contains("read 13 events"), "{err}");
}

#[test]
fn compile_reports_skips_and_strict_fails_without_writing() {
    let dir = tmp("rules");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.join("bad.yml"),
        "title: bad\nid: 11111111-1111-4111-8111-111111111111\nlogsource:\n    category: process_creation\n    product: windows\ndetection:\n    sel:\n        NoSuchField: x\n    condition: sel\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        root().join("examples/sigma/encoded-powershell.yml"),
        dir.join("good.yml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pack = tmp("strict.pack");
    let _ = std::fs::remove_file(&pack);
    let (code, _, err) = bulwark(&[
        "compile",
        dir.to_str().unwrap_or(""),
        "-o",
        pack.to_str().unwrap_or(""),
        "--strict",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("bad.yml:8: rule 11111111-1111-4111-8111-111111111111 \"bad\": skipped: field NoSuchField"), "{err}");
    assert!(
        err.contains("compiled 1 of 2 rules (50.0%); skipped 1: 1 unknown field"),
        "{err}"
    );
    assert!(!pack.exists(), "strict mode writes nothing");
    let (code, _, err) = bulwark(&[
        "compile",
        dir.to_str().unwrap_or(""),
        "-o",
        pack.to_str().unwrap_or(""),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(pack.exists());
    let (code, _, err) = bulwark(&[
        "compile",
        "/nonexistent/rules",
        "-o",
        pack.to_str().unwrap_or(""),
    ]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn scan_refuses_bad_packs_and_missing_files() {
    let garbage = tmp("garbage.pack");
    std::fs::write(&garbage, b"not a pack").unwrap_or_else(|e| panic!("{e}"));
    let events = root().join("examples/events/workstation.jsonl");
    let (code, _, err) = bulwark(&[
        "scan",
        "--pack",
        garbage.to_str().unwrap_or(""),
        events.to_str().unwrap_or(""),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("rejected"), "{err}");
    let pack = tmp("ok.pack");
    let rules = root().join("examples/sigma");
    bulwark(&[
        "compile",
        rules.to_str().unwrap_or(""),
        "-o",
        pack.to_str().unwrap_or(""),
    ]);
    let (code, _, err) = bulwark(&[
        "scan",
        "--pack",
        pack.to_str().unwrap_or(""),
        "/nonexistent.jsonl",
    ]);
    assert_eq!(code, Some(2), "{err}");
}

/// Several compiles to one output at once all succeed, and what is left is a whole pack: each
/// writes its own temporary file before renaming it into place.
#[test]
fn concurrent_compiles_to_one_output() {
    let pack = tmp("concurrent.pack");
    let rules = root().join("examples/sigma");
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (rules, pack) = (rules.clone(), pack.clone());
            std::thread::spawn(move || {
                bulwark(&[
                    "compile",
                    rules.to_str().unwrap_or(""),
                    "-o",
                    pack.to_str().unwrap_or(""),
                ])
            })
        })
        .collect();
    for run in runs {
        let (code, _, err) = run.join().unwrap_or_else(|_| panic!("compile thread"));
        assert_eq!(code, Some(0), "{err}");
    }
    let (code, _, err) = bulwark(&["verify", pack.to_str().unwrap_or("")]);
    assert_eq!(code, Some(0), "{err}");
    let dir = pack.parent().unwrap_or(Path::new("."));
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("concurrent.pack.tmp")
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
