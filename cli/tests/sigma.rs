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
    // 1-based lines, as compile reports rules
    assert_eq!(positions, [1, 3, 5, 6, 8, 10]);
    for l in &lines {
        assert_eq!(
            l["author"], "Bulwark sample content",
            "the author is kept for attribution"
        );
        assert!(l["rule_id"].as_str().is_some_and(|s| s.len() == 36));
        assert!(l["title"].as_str().is_some_and(|s| !s.is_empty()));
    }
    // the malformed last line is reported and skipped, never fatal; the Security 4688 on the
    // line before it is a process creation
    assert!(
        err.contains("workstation.jsonl:13: skipped: not JSON"),
        "{err}"
    );
    assert!(!err.contains("workstation.jsonl:12:"), "{err}");
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
    assert!(err.contains("bad.yml:8: rule 11111111-1111-4111-8111-111111111111 \"bad\": skipped: can never fire: it needs NoSuchField"), "{err}");
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
                .starts_with(".concurrent.pack.tmp")
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or("")
}

/// A process_creation rule file with the given detection body (indented by 4); `id` may be none.
fn rule_text(id: Option<&str>, title: &str, detection: &str) -> String {
    let id = id.map(|i| format!("id: {i}\n")).unwrap_or_default();
    format!(
        "title: {title}\n{id}level: medium\nlogsource:\n    category: process_creation\n    product: windows\ndetection:\n{detection}"
    )
}

/// A field the schema lacks is absent, as Sigma reads it: a filter on it never excludes, and
/// the rule compiles (with a warning naming rule and field) instead of being skipped. A rule
/// that needs such a field to fire at all is still reported as never firing.
#[test]
fn fields_the_schema_lacks_compile_as_absent() {
    let dir = tmp("absent-rules");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.join("conhost.yml"),
        rule_text(
            Some("22222222-0000-4000-8000-000000000001"),
            "child of conhost",
            "    selection:\n        ParentImage|endswith: '\\conhost.exe'\n    filter_provider:\n        Provider_Name: 'SystemTraceProvider-Process'\n    condition: selection and not 1 of filter_*\n",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.join("never.yml"),
        rule_text(
            Some("22222222-0000-4000-8000-000000000002"),
            "only a missing field",
            "    selection:\n        Provider_Name: 'x'\n    condition: selection\n",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pack = tmp("absent.pack");
    let (code, _, err) = bulwark(&["compile", s(&dir), "-o", s(&pack)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("conhost.yml:11: rule 22222222-0000-4000-8000-000000000001 \"child of conhost\": warning: field Provider_Name does not exist in process_creation events: compiled as absent"),
        "{err}"
    );
    assert!(
        err.contains("never.yml:9: rule 22222222-0000-4000-8000-000000000002 \"only a missing field\": skipped: can never fire: it needs Provider_Name, which process_creation events do not have"),
        "{err}"
    );
    assert!(err.contains("compiled 1 of 2 rules"), "{err}");
    assert!(err.contains("1 warnings"), "{err}");
    let events = tmp("conhost.jsonl");
    std::fs::write(
        &events,
        "{\"EventID\": 1, \"Image\": \"C:\\\\x.exe\", \"ParentImage\": \"C:\\\\Windows\\\\System32\\\\conhost.exe\"}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (code, out, err) = bulwark(&["scan", "--pack", s(&pack), s(&events)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("22222222-0000-4000-8000-000000000001"),
        "{out}"
    );

    // SigmaHQ's own rule, skipped before for its filter on Provider_Name.
    let corpus = root().join("../shared/corpus/sigma/rules/windows/process_creation");
    let Some(conhost) = bulwark_sigma::find_files(&corpus, ".yml")
        .into_iter()
        .find(|f| {
            std::fs::read_to_string(f)
                .is_ok_and(|t| t.contains("title: Uncommon Child Process Of Conhost"))
        })
    else {
        println!("skipped the SigmaHQ rule: ../shared/corpus/sigma is absent");
        return;
    };
    let (code, _, err) = bulwark(&["compile", s(&conhost), "--check"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("compiled 1 of 1 rules"), "{err}");
    assert!(
        err.contains("\"Uncommon Child Process Of Conhost.EXE\": warning: field Provider_Name"),
        "{err}"
    );
}

/// `-o` replaces a regular file or makes a new one, and nothing else: not a folder (which left
/// a temporary file behind), not a device (`-o /dev/null` as root replaced the device node), not
/// in a folder that does not exist (which was created silently). An empty result is an error.
#[test]
fn compile_output_is_a_regular_file_or_nothing() {
    let rules = root().join("examples/sigma");
    let dir = tmp("out-dir");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = bulwark(&["compile", s(&rules), "-o", s(&dir)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is a folder"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .collect();
    assert!(left.is_empty(), "nothing left in the folder: {left:?}");

    let (code, _, err) = bulwark(&["compile", s(&rules), "-o", "/dev/null"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    let null = std::fs::metadata("/dev/null").unwrap_or_else(|e| panic!("{e}"));
    assert!(!null.is_file(), "/dev/null is still a device");

    let missing = dir.join("no/such/folder/x.pack");
    let (code, _, err) = bulwark(&["compile", s(&rules), "-o", s(&missing)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(!dir.join("no").exists(), "no folder is created");

    // --check writes nothing and needs no -o
    let (code, _, err) = bulwark(&["compile", s(&rules), "--check"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("nothing written"), "{err}");

    // an empty result
    let empty = tmp("empty-rules");
    std::fs::create_dir_all(&empty).unwrap_or_else(|e| panic!("{e}"));
    let pack = tmp("empty.pack");
    let _ = std::fs::remove_file(&pack);
    let (code, _, err) = bulwark(&["compile", s(&empty), "-o", s(&pack)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no rule compiled"), "{err}");
    assert!(!pack.exists());
    let (code, _, err) = bulwark(&["compile", s(&empty), "-o", s(&pack), "--allow-empty"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(pack.exists());

    // a regular file is replaced
    let (code, _, err) = bulwark(&["compile", s(&rules), "-o", s(&pack)]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = bulwark(&["verify", s(&pack)]);
    assert_eq!(code, Some(0), "{err}");
}

/// A rule without an id compiles with one derived from its text (the same each time); a UTF-8
/// BOM before a rule is ignored; an unsupported Sigma modifier and a name Sigma does not define
/// are told apart.
#[test]
fn ids_boms_and_modifiers() {
    let dir = tmp("id-rules");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let sel = "    selection:\n        Image|endswith: '\\whoami.exe'\n    condition: selection\n";
    std::fs::write(dir.join("a-no-id.yml"), rule_text(None, "no id", sel))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.join("b-bom.yml"),
        format!(
            "\u{feff}{}",
            rule_text(Some("33333333-0000-4000-8000-000000000001"), "bom", sel)
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.join("c-wide.yml"),
        rule_text(
            Some("33333333-0000-4000-8000-000000000002"),
            "wide base64",
            "    selection:\n        CommandLine|wide|base64offset|contains: 'whoami'\n    condition: selection\n",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.join("d-expand.yml"),
        rule_text(
            Some("33333333-0000-4000-8000-000000000003"),
            "expand",
            "    selection:\n        Image|expand: '%Admins%'\n    condition: selection\n",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.join("e-typo.yml"),
        rule_text(
            Some("33333333-0000-4000-8000-000000000004"),
            "typo",
            "    selection:\n        Image|endwith: 'x'\n    condition: selection\n",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pack = tmp("ids.pack");
    let (code, _, err) = bulwark(&["compile", s(&dir), "-o", s(&pack)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("compiled 3 of 5 rules"), "{err}");
    assert!(err.contains("\"no id\": warning: no id"), "{err}");
    assert!(err.contains("1 invalid modifier"), "{err}");
    assert!(err.contains("1 unsupported"), "{err}");
    assert!(err.contains("invalid modifier 'endwith'"), "{err}");
    assert!(err.contains("unsupported: modifier expand"), "{err}");
    // the derived id is the same on every compile
    let id_of = |err: &str| {
        err.lines()
            .find(|l| l.contains("\"no id\""))
            .and_then(|l| l.split(": rule ").nth(1))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_owned)
    };
    let first = id_of(&err);
    let (_, _, again) = bulwark(&["compile", s(&dir), "--check"]);
    assert!(first.is_some() && first == id_of(&again), "{err}\n{again}");
    // the wide rule fires on PowerShell's -EncodedCommand form of its text
    let encoded = bulwark_sigma::field::base64(
        &"whoami /all"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<u8>>(),
    );
    let events = tmp("ids.jsonl");
    std::fs::write(
        &events,
        format!("{{\"EventID\": 1, \"Image\": \"C:\\\\Windows\\\\System32\\\\WindowsPowerShell\\\\v1.0\\\\powershell.exe\", \"CommandLine\": \"powershell -enc {encoded}\"}}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (code, out, err) = bulwark(&["scan", "--pack", s(&pack), s(&events)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("33333333-0000-4000-8000-000000000002"),
        "{out}"
    );
}
