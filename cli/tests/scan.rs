//! `bulwark scan` end to end: the reference semantics through the real binary (case, absent versus
//! empty, windash's five dashes), JSON-lines positions and skips, several files with one missing,
//! and SigmaHQ's regression data scanned both as `.evtx` and as exported `.json` with one pack
//! holding every rule that compiles: each rule's expected match count, and the same detections
//! (rule, EventRecordID) from both forms of every recording.

mod common;
use common::bulwark;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn tmp(name: &str) -> PathBuf {
    common::tmp("scan", name)
}

fn s(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

fn write(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

/// A Sigma rule for process creation with the given detection body (indented by 4).
fn rule(id: &str, title: &str, detection: &str) -> String {
    format!(
        "title: {title}\nid: {id}\nauthor: scan tests\nlevel: high\ntags:\n    - attack.execution\n\
         logsource:\n    category: process_creation\n    product: windows\ndetection:\n{detection}"
    )
}

/// Compiles `rules` (file name, text) into a pack; fails the test if any rule is skipped.
fn pack_of(name: &str, rules: &[(&str, String)]) -> PathBuf {
    let dir = tmp(&format!("{name}-rules"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    for (file, text) in rules {
        write(&dir.join(file), text);
    }
    let pack = tmp(&format!("{name}.pack"));
    let (code, _, err) = bulwark(&["compile", s(&dir), "-o", s(&pack), "--strict"]);
    assert_eq!(code, Some(0), "{err}");
    pack
}

/// Detections printed by a scan, parsed.
fn detections(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// (rule id, position) of every detection.
fn hits(out: &str) -> Vec<(String, u64)> {
    detections(out)
        .iter()
        .map(|d| {
            (
                d["rule_id"].as_str().unwrap_or("").to_owned(),
                d["position"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

const CASE: &str = "11111111-0000-4000-8000-000000000001";
const EMPTY: &str = "11111111-0000-4000-8000-000000000002";
const ABSENT: &str = "11111111-0000-4000-8000-000000000003";
const WINDASH: &str = "11111111-0000-4000-8000-000000000004";
const CASED: &str = "11111111-0000-4000-8000-000000000005";
const NO_FIELD: &str = "11111111-0000-4000-8000-000000000006";

/// The semantics rules' pack, compiled once per test binary: the tests that use it run in
/// parallel, and compiling it to one path from several threads at once races on the rename of
/// the compiler's temporary file.
fn semantics_pack() -> PathBuf {
    static PACK: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PACK.get_or_init(compile_semantics_pack).clone()
}

fn compile_semantics_pack() -> PathBuf {
    pack_of(
        "semantics",
        &[
            (
                "case.yml",
                rule(
                    CASE,
                    "cmd by path",
                    "    sel:\n        Image|endswith: '\\cmd.exe'\n        CommandLine|contains: 'WhoAmI'\n    condition: sel\n",
                ),
            ),
            (
                "empty.yml",
                rule(
                    EMPTY,
                    "empty command line",
                    "    sel:\n        CommandLine: ''\n    condition: sel\n",
                ),
            ),
            (
                "absent.yml",
                rule(
                    ABSENT,
                    "no command line",
                    "    sel:\n        CommandLine: null\n    condition: sel\n",
                ),
            ),
            (
                "windash.yml",
                rule(
                    WINDASH,
                    "encoded command",
                    "    sel:\n        CommandLine|windash|contains: ' -enc '\n    condition: sel\n",
                ),
            ),
            (
                "exists.yml",
                rule(
                    NO_FIELD,
                    "command line does not exist",
                    "    sel:\n        CommandLine|exists: false\n    condition: sel\n",
                ),
            ),
            (
                "cased.yml",
                rule(
                    CASED,
                    "cased token",
                    "    sel:\n        CommandLine|cased|contains: 'SeDebug'\n    condition: sel\n",
                ),
            ),
        ],
    )
}

#[test]
fn reference_semantics_through_the_binary() {
    let pack = semantics_pack();
    let events = tmp("semantics.jsonl");
    // One event per line; the comment after each says which rules must fire.
    let lines = [
        // 0: case-insensitive by default, in the value and in the path
        (
            r#"{"EventID": 1, "Image": "C:\\WINDOWS\\SYSTEM32\\CMD.EXE", "CommandLine": "cmd /c WHOAMI /all"}"#,
            vec![CASE],
        ),
        // 1: "" is an empty field, not an absent one
        (
            r#"{"EventID": 1, "Image": "C:\\x.exe", "CommandLine": ""}"#,
            vec![EMPTY],
        ),
        // 2: a missing key is absent, not empty
        (
            r#"{"EventID": 1, "Image": "C:\\x.exe"}"#,
            vec![ABSENT, NO_FIELD],
        ),
        // 3: JSON null is absent too, as in rsigma-eval 0.23 (its `exists` is `!value.is_null()`
        // and its `null` matches a JSON null: src/matcher/matching.rs)
        (
            r#"{"EventID": 1, "Image": "C:\\x.exe", "CommandLine": null}"#,
            vec![ABSENT, NO_FIELD],
        ),
        // 4-8: windash: '-', '/', en dash, em dash, horizontal bar
        (
            r#"{"EventID": 1, "CommandLine": "powershell -enc AAAA"}"#,
            vec![WINDASH],
        ),
        (
            r#"{"EventID": 1, "CommandLine": "powershell /enc AAAA"}"#,
            vec![WINDASH],
        ),
        (
            r#"{"EventID": 1, "CommandLine": "powershell \u2013enc AAAA"}"#,
            vec![WINDASH],
        ),
        (
            r#"{"EventID": 1, "CommandLine": "powershell \u2014enc AAAA"}"#,
            vec![WINDASH],
        ),
        (
            r#"{"EventID": 1, "CommandLine": "powershell \u2015enc AAAA"}"#,
            vec![WINDASH],
        ),
        // 9: other dashes are not windash's: a hyphen-minus sign (U+2212) does not match
        (
            r#"{"EventID": 1, "CommandLine": "powershell \u2212enc AAAA"}"#,
            vec![],
        ),
        // 10: |cased is exact
        (
            r#"{"EventID": 1, "CommandLine": "x SeDebugPrivilege"}"#,
            vec![CASED],
        ),
        (
            r#"{"EventID": 1, "CommandLine": "x sedebugprivilege"}"#,
            vec![],
        ),
        // 12: EventID as a string selects the type too
        (
            r#"{"EventID": "1", "Image": "c:\\windows\\system32\\cmd.exe", "CommandLine": "whoami"}"#,
            vec![CASE],
        ),
        // 13: a registry event never fires process_creation rules, even with a matching field name
        (
            r#"{"EventID": 13, "TargetObject": "HKLM\\x", "Details": "-enc"}"#,
            vec![],
        ),
    ];
    let text: String = lines.iter().map(|(l, _)| format!("{l}\n")).collect();
    write(&events, &text);
    let (code, out, err) = bulwark(&["scan", "--pack", s(&pack), s(&events)]);
    assert_eq!(code, Some(0), "{err}");
    let mut got: BTreeSet<(String, u64)> = hits(&out).into_iter().collect();
    for (i, (line, want)) in lines.iter().enumerate() {
        for id in want {
            assert!(
                got.remove(&((*id).to_owned(), i as u64 + 1)),
                "line {i} ({line}) should fire {id}; got {out}"
            );
        }
    }
    assert!(got.is_empty(), "unexpected detections: {got:?}");
    for d in detections(&out) {
        assert_eq!(d["author"], "scan tests");
        assert_eq!(d["level"], "high");
        assert_eq!(d["tags"], serde_json::json!(["attack.execution"]));
        assert_eq!(d["file"], s(&events));
    }
    assert!(
        err.contains(&format!("read {} events", lines.len())),
        "{err}"
    );
}

#[test]
fn positions_skips_and_summary() {
    let pack = semantics_pack();
    let events = tmp("skips.jsonl");
    write(
        &events,
        concat!(
            "{\"EventID\": 1, \"CommandLine\": \"\"}\n",
            "\n",
            "{\"EventID\": 1, \"CommandLine\": \"a\", \"ProcessId\": \"not a number\"}\n",
            "{\"EventID\": 1, \"CommandLine\": \n",
            "{\"EventID\": 4624, \"TargetUserName\": \"x\"}\n",
            "{\"Image\": \"C:\\\\cmd.exe\"}\n",
            "{\"EventID\": 1, \"CommandLine\": \"\", \"ProcessId\": \"77\", \"NotInSchema\": 1}\n",
        ),
    );
    let (code, out, err) = bulwark(&["scan", "--pack", s(&pack), s(&events)]);
    assert_eq!(code, Some(0), "malformed lines are never fatal: {err}");
    // 1-based line numbers, blank lines counted
    assert_eq!(
        hits(&out),
        [(EMPTY.to_owned(), 1), (EMPTY.to_owned(), 7)],
        "{out}"
    );
    let f = s(&events);
    for want in [
        format!("{f}:3: skipped: field ProcessId"),
        format!("{f}:4: skipped: not JSON"),
        format!("{f}:5: skipped: EventID 4624"),
        format!("{f}:6: skipped: no EventID"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in {err}");
    }
    let summary = err.lines().last().unwrap_or("");
    for want in [
        "read 6 events from 1 files",
        "scanned 2",
        "skipped 4",
        "1 bad field",
        "1 not JSON",
        "1 other event type",
        "1 no EventID",
        "2 detections from 1 rules",
        "events/s",
    ] {
        assert!(summary.contains(want), "missing {want:?} in {summary}");
    }
    assert!(
        !err.contains('\r'),
        "no progress output when stderr is not a terminal"
    );
}

#[test]
fn a_missing_file_fails_the_scan_but_not_the_other_files() {
    let pack = semantics_pack();
    let events = tmp("one.jsonl");
    write(&events, "{\"EventID\": 1}\n");
    let (code, out, err) = bulwark(&[
        "scan",
        "--pack",
        s(&pack),
        "/nonexistent/a.jsonl",
        s(&events),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/a.jsonl"), "{err}");
    let got: BTreeSet<(String, u64)> = hits(&out).into_iter().collect();
    let want: BTreeSet<(String, u64)> = [(ABSENT.to_owned(), 1), (NO_FIELD.to_owned(), 1)].into();
    assert_eq!(got, want, "the file after the missing one is scanned");
    let (code, _, err) = bulwark(&["scan", "--pack", "/nonexistent.pack", s(&events)]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = bulwark(&["scan", s(&events)]);
    assert_eq!(code, Some(2), "--pack is required: {err}");
}

fn corpus() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    (p.join("sigma-regression").is_dir() && p.join("sigma/rules").is_dir()).then_some(p)
}

/// The value of `key: value` on the first line of `text` that has it (the YAML is regular
/// enough: every info.yml and rule has these keys at the start of a line).
fn yaml_value<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    text.lines()
        .find_map(|l| l.trim_start_matches([' ', '-']).strip_prefix(key))
        .map(|v| v.trim().trim_matches(['\'', '"']))
}

/// Disagreements with SigmaHQ's regression data, each explained (the same two as
/// sigma/tests/regression.rs, checked there per rule with its own pack).
const KNOWN: &[(&str, &str)] = &[
    (
        "45e112d0-7759-4c2a-aa36-9f8fb79d3393",
        "data: match_count 1, but the EVTX holds three SetValue events under \\ZoneMap\\Domains\\ \
         with DWORD (0x00000002), each satisfying `selection_domains and not filter`",
    ),
    (
        "c7dcacd0-cc59-4004-b0a4-1d6cdebe6f3e",
        "data: match_count 1, but the EVTX sets both AutoShareServer and AutoShareWks to \
         DWORD (0x00000000), and the rule lists both names",
    ),
];

struct Case {
    rule_id: String,
    evtx: PathBuf,
    json: Option<PathBuf>,
    expected: Option<u64>,
}

#[test]
fn regression_data_through_bulwark_scan() {
    let Some(corpus) = corpus() else {
        println!("skipped: ../shared/corpus/sigma-regression or ../shared/corpus/sigma is absent");
        return;
    };
    let mut rule_files = Vec::new();
    for d in ["rules", "rules-emerging-threats", "rules-threat-hunting"] {
        rule_files.extend(bulwark_sigma::find_files(
            &corpus.join("sigma").join(d),
            ".yml",
        ));
    }
    let mut by_id: HashMap<String, PathBuf> = HashMap::new();
    for f in rule_files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("id: ")) {
            by_id.insert(id.trim().to_owned(), f);
        }
    }
    let infos = bulwark_sigma::find_files(&corpus.join("sigma-regression"), "info.yml");
    let mut cases = Vec::new();
    let mut rules = BTreeSet::new();
    let mut not_in_corpus = 0;
    for info in &infos {
        let text = std::fs::read_to_string(info).unwrap_or_else(|e| panic!("{e}"));
        // rule_metadata's id is the rule's; the document's own `id:` (first line) is the test's
        let rule_id = text
            .split("rule_metadata:")
            .nth(1)
            .and_then(|t| yaml_value(t, "id:"))
            .unwrap_or_else(|| panic!("{}: no rule_metadata id", info.display()))
            .to_owned();
        let Some(rule) = by_id.get(&rule_id) else {
            not_in_corpus += 1;
            continue;
        };
        rules.insert(rule.clone());
        let dir = info.parent().unwrap_or(Path::new("."));
        let tests = text.split("regression_tests_info:").nth(1).unwrap_or("");
        for t in tests.split("- name:").skip(1) {
            let Some(name) = yaml_value(t, "path:").and_then(|p| Path::new(p).file_name()) else {
                continue;
            };
            let evtx = dir.join(name);
            let json = evtx.with_extension("json");
            cases.push(Case {
                rule_id: rule_id.clone(),
                json: json.is_file().then_some(json),
                evtx,
                expected: yaml_value(t, "match_count:").and_then(|v| v.parse().ok()),
            });
        }
    }
    assert!(cases.len() >= 100, "only {} recordings", cases.len());

    // One pack with every rule that compiles; the compiler reports the others with a reason.
    let pack = tmp("regression.pack");
    let mut args = vec!["compile", "-o", s(&pack)];
    let rule_args: Vec<String> = rules.iter().map(|r| s(r).to_owned()).collect();
    args.extend(rule_args.iter().map(String::as_str));
    let (code, _, err) = bulwark(&args);
    assert_eq!(code, Some(0), "{err}");
    let skipped: BTreeSet<String> = err
        .lines()
        .filter(|l| l.contains(": skipped: "))
        .filter_map(|l| l.split(": rule ").nth(1))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let summary = err.lines().last().unwrap_or("").to_owned();

    // EVTX positions are EventRecordIDs; an exported document's is its line, and it carries its
    // EventRecordID as record_id.
    let scan = |files: Vec<&Path>, position: &str| -> BTreeMap<(String, String), Vec<u64>> {
        let mut args = vec!["scan", "--pack", s(&pack)];
        args.extend(files.iter().map(|f| s(f)));
        let (code, out, err) = bulwark(&args);
        assert_eq!(code, Some(0), "{err}");
        let mut by: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
        for d in detections(&out) {
            let key = (
                d["rule_id"].as_str().unwrap_or("").to_owned(),
                d["file"].as_str().unwrap_or("").to_owned(),
            );
            by.entry(key)
                .or_default()
                .push(d[position].as_u64().unwrap_or(u64::MAX));
        }
        for v in by.values_mut() {
            v.sort_unstable();
        }
        by
    };
    let from_evtx = scan(cases.iter().map(|c| c.evtx.as_path()).collect(), "position");
    let from_json = scan(
        cases.iter().filter_map(|c| c.json.as_deref()).collect(),
        "record_id",
    );

    let (mut checked, mut agreeing, mut known, mut same_form) = (0, 0, 0, 0);
    let mut wrong = Vec::new();
    for c in &cases {
        if skipped.contains(&c.rule_id) {
            continue;
        }
        checked += 1;
        let key = |p: &Path| (c.rule_id.clone(), s(p).to_owned());
        let got = from_evtx.get(&key(&c.evtx)).cloned().unwrap_or_default();
        let n = got.len() as u64;
        let ok = c.expected.map_or(n >= 1, |want| n == want);
        if ok {
            agreeing += 1;
        } else if KNOWN.iter().any(|(id, _)| *id == c.rule_id) {
            known += 1;
        } else {
            wrong.push(format!(
                "{} {}: {n} matches, expected {}",
                c.rule_id,
                c.evtx.display(),
                c.expected.map_or("at least 1".into(), |w| w.to_string())
            ));
        }
        if let Some(json) = &c.json {
            let from_doc = from_json.get(&key(json)).cloned().unwrap_or_default();
            if from_doc == got {
                same_form += 1;
            } else {
                wrong.push(format!(
                    "{} {}: EventRecordIDs {from_doc:?} from the exported JSON, {got:?} from the EVTX",
                    c.rule_id,
                    json.display()
                ));
            }
        }
    }
    println!(
        "regression data through bulwark scan: {} recordings of {} rules ({not_in_corpus} rules not in the corpus); \
         compile: {summary}; {checked} recordings of compiled rules checked, {agreeing} agree, {known} known \
         data errors, {same_form} exported JSON files give the same detections as their EVTX",
        cases.len(),
        rules.len(),
    );
    assert!(checked >= 100, "only {checked} checked");
    assert!(same_form >= 100, "only {same_form} JSON files compared");
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Runs `bulwark` with `stdin` on its standard input.
fn bulwark_stdin(args: &[&str], stdin: &[u8]) -> (Option<i32>, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run bulwark: {e}"));
    let mut input = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
    let bytes = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let _ = writer.join();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (file, rule id, position) of every detection.
fn hits_by_file(out: &str) -> BTreeSet<(String, String, u64)> {
    detections(out)
        .iter()
        .map(|d| {
            (
                d["file"].as_str().unwrap_or("").to_owned(),
                d["rule_id"].as_str().unwrap_or("").to_owned(),
                d["position"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

const EMPTY_LINE: &str = "{\"EventID\": 1, \"CommandLine\": \"\"}\n";

#[test]
fn folders_stdin_boms_and_bad_bytes() {
    let pack = semantics_pack();
    let dir = tmp("inputs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap_or_else(|e| panic!("{e}"));
    // A UTF-8 BOM costs nothing (it cost the first event before), whatever the file is called.
    let bom = dir.join("a.log");
    std::fs::write(&bom, format!("\u{feff}{EMPTY_LINE}{EMPTY_LINE}"))
        .unwrap_or_else(|e| panic!("{e}"));
    // UTF-16LE with a BOM (PowerShell's Out-File), converted as it is read.
    let wide = dir.join("sub").join("b.JSON");
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(
        EMPTY_LINE
            .repeat(2)
            .encode_utf16()
            .flat_map(u16::to_le_bytes),
    );
    std::fs::write(&wide, bytes).unwrap_or_else(|e| panic!("{e}"));
    // One byte that is not UTF-8 costs its line, not the file.
    let bad = dir.join("sub").join("c.data");
    let mut bytes = EMPTY_LINE.as_bytes().to_vec();
    bytes.extend_from_slice(b"{\"EventID\": 1, \"CommandLine\": \"\xff\"}\n");
    bytes.extend_from_slice(EMPTY_LINE.as_bytes());
    std::fs::write(&bad, bytes).unwrap_or_else(|e| panic!("{e}"));
    // Not events: passed over in a folder.
    write(&dir.join("notes.txt"), "title: not events\n");

    let (code, out, err) = bulwark(&["scan", "--pack", s(&pack), s(&dir)]);
    assert_eq!(code, Some(0), "{err}");
    let want: BTreeSet<(String, String, u64)> = [
        (s(&bom), 1),
        (s(&bom), 2),
        (s(&wide), 1),
        (s(&wide), 2),
        (s(&bad), 1),
        (s(&bad), 3),
    ]
    .iter()
    .map(|(f, p)| ((*f).to_owned(), EMPTY.to_owned(), *p))
    .collect();
    assert_eq!(hits_by_file(&out), want, "{err}");
    assert!(
        err.contains(&format!("{}:2: skipped: not valid UTF-8", s(&bad))),
        "{err}"
    );
    assert!(
        err.contains("read 7 events from 3 files (1 files in folders are not events)"),
        "{err}"
    );

    // Named on the command line, a file that is not events is an error.
    let (code, _, err) = bulwark(&["scan", "--pack", s(&pack), s(&dir.join("notes.txt"))]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not an event file"), "{err}");

    // `-` is standard input.
    let (code, out, err) = bulwark_stdin(
        &["scan", "--pack", s(&pack), "-"],
        format!("\u{feff}{EMPTY_LINE}not json\n{EMPTY_LINE}").as_bytes(),
    );
    assert_eq!(code, Some(0), "{err}");
    let want: BTreeSet<(String, String, u64)> = [1, 3]
        .iter()
        .map(|p| ("-".to_owned(), EMPTY.to_owned(), *p))
        .collect();
    assert_eq!(hits_by_file(&out), want, "{err}");
    assert!(err.contains("-:2: skipped: not JSON"), "{err}");
}

/// The regression recording with the most events, and the pack of every rule (compiled once).
fn an_evtx() -> Option<PathBuf> {
    let corpus = corpus()?;
    let mut files = bulwark_sigma::find_files(&corpus.join("sigma-regression"), ".evtx");
    files.sort_by_key(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0));
    // any will do: each holds one chunk
    files.into_iter().next()
}

#[test]
fn evtx_by_content_from_stdin_and_damaged() {
    let Some(evtx) = an_evtx() else {
        println!("skipped: ../shared/corpus/sigma-regression is absent");
        return;
    };
    let pack = semantics_pack();
    let (code, _, err) = bulwark(&["scan", "--pack", s(&pack), s(&evtx)]);
    assert_eq!(code, Some(0), "{err}");
    let summary = err.lines().last().unwrap_or("").to_owned();
    let read: u64 = summary
        .split("; read ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(read > 0, "{summary}");
    assert!(
        !err.contains("damaged"),
        "an intact file is not damaged: {err}"
    );
    let bytes = std::fs::read(&evtx).unwrap_or_else(|e| panic!("{e}"));

    // The format is read from the content: an upper-case extension or a misleading one.
    for name in ["copy.EVTX", "copy.json", "copy"] {
        let p = tmp(name);
        std::fs::write(&p, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let (code, _, err) = bulwark(&["scan", "--pack", s(&pack), s(&p)]);
        assert_eq!(code, Some(0), "{name}: {err}");
        assert!(
            err.lines()
                .last()
                .unwrap_or("")
                .contains(&format!("; read {read} events")),
            "{name}: {err}"
        );
    }
    // From standard input.
    let (code, _, err) = bulwark_stdin(&["scan", "--pack", s(&pack), "-"], &bytes);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.lines()
            .last()
            .unwrap_or("")
            .contains(&format!("; read {read} events")),
        "{err}"
    );

    // Cut in the middle of its chunk: every record of the chunk is lost, and said so (before,
    // the parser passed over a partial chunk without a word).
    let cut = tmp("cut.evtx");
    std::fs::write(&cut, &bytes[..4096 + 30000]).unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = bulwark(&["scan", "--pack", s(&pack), s(&cut)]);
    assert_eq!(code, Some(0), "damage is reported, not fatal: {err}");
    assert!(
        err.contains(&format!(
            "skipped: damaged EVTX file: {read} records lost (truncated"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{read} lost in damaged EVTX")),
        "{err}"
    );
}

/// Peak resident memory of a child process in KiB, polled from /proc while it runs (Linux);
/// `None` where /proc is not there.
fn run_measuring_peak(args: &[&str]) -> (Option<i32>, String, String, Option<u64>) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run bulwark: {e}"));
    let (mut out, mut err) = (
        child.stdout.take().unwrap_or_else(|| panic!("stdout")),
        child.stderr.take().unwrap_or_else(|| panic!("stderr")),
    );
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = None;
    let code = loop {
        // VmHWM only grows, so the last reading before exit is the peak.
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = Some(kb);
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => panic!("{e}"),
        }
    };
    (
        code,
        out_reader.join().unwrap_or_default(),
        err_reader.join().unwrap_or_default(),
        peak,
    )
}

/// A million-line JSON-lines file scans in bounded memory. Before, the whole file and every
/// parsed document were held at once (94 MB for 13,344 lines) and the time was quadratic (a
/// 100,000-line file did not finish in 10 minutes).
#[test]
fn a_million_lines_in_bounded_memory() {
    use std::io::Write;
    let pack = semantics_pack();
    let path = tmp("million.jsonl");
    {
        let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut w = std::io::BufWriter::new(file);
        for i in 0..1_000_000u64 {
            // every 100,000th event fires EMPTY; the others fire nothing
            let cmd = if i % 100_000 == 0 {
                String::new()
            } else {
                format!("cmd /c echo {i}")
            };
            writeln!(
                w,
                r#"{{"EventID": 1, "Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "{cmd}", "ProcessId": {i}, "User": "WS\\user"}}"#
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        w.flush().unwrap_or_else(|e| panic!("{e}"));
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let started = std::time::Instant::now();
    let (code, out, err, peak) = run_measuring_peak(&["scan", "--pack", s(&pack), s(&path)]);
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, Some(0), "{err}");
    let positions: Vec<u64> = hits(&out).into_iter().map(|(_, p)| p).collect();
    let want: Vec<u64> = (0..10).map(|k| k * 100_000 + 1).collect();
    assert_eq!(positions, want);
    assert!(err.contains("read 1000000 events from 1 files"), "{err}");
    match peak {
        Some(kb) => {
            println!(
                "1,000,000 lines ({} MB) scanned in {secs:.1} s with a peak resident set of {:.1} MiB",
                size / 1_000_000,
                kb as f64 / 1024.0
            );
            // The binary, the pack and one line's buffers: measured at 8-9 MiB. The file is over
            // 100 MB, so holding it (as before) could not pass.
            assert!(kb < 48 * 1024, "peak resident set {kb} KiB");
        }
        None => println!("peak memory not measured: no /proc here"),
    }
}

/// Splits one CSV record (RFC 4180 quoting; no newlines inside fields here).
fn csv_split(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Outputs, filters and statistics on SigmaHQ's recordings of registry_set rules (EVTX and the
/// exported JSON beside each, found by walking the folder; the info.yml files are passed over).
#[test]
fn outputs_filters_and_stats_on_real_recordings() {
    let Some(corpus) = corpus() else {
        println!("skipped: ../shared/corpus/sigma-regression or ../shared/corpus/sigma is absent");
        return;
    };
    let rules = corpus.join("sigma/rules/windows/registry/registry_set");
    let recordings = corpus.join("sigma-regression/rules/windows/registry/registry_set");
    let pack = tmp("registry_set.pack");
    let (code, _, err) = bulwark(&["compile", "-q", s(&rules), "-o", s(&pack)]);
    assert_eq!(code, Some(0), "{err}");
    let loaded: usize = err
        .split("compiled ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    let scan = |extra: &[&str]| {
        let mut args = vec!["scan", "--pack", s(&pack), s(&recordings)];
        args.extend_from_slice(extra);
        bulwark(&args)
    };

    // JSON lines, with context
    let (code, out, err) = scan(&[]);
    assert_eq!(code, Some(0), "{err}");
    let all = detections(&out);
    assert!(all.len() >= 50, "{} detections: {err}", all.len());
    let summary = err.lines().last().unwrap_or("");
    assert!(
        summary.starts_with(&format!("loaded {loaded} rules; read ")),
        "{summary}"
    );
    assert!(
        summary.contains("files in folders are not events"),
        "{summary}"
    );
    let mut with_matched = 0;
    for d in &all {
        assert_eq!(d["event_type"], "registry_event", "{d}");
        assert!(
            d["time"].as_str().is_some_and(|t| t.starts_with("20")),
            "{d}"
        );
        assert!(d["computer"].as_str().is_some_and(|c| !c.is_empty()), "{d}");
        assert!(
            d["source"]
                .as_str()
                .is_some_and(|c| c.starts_with("Sysmon 1")),
            "{d}"
        );
        assert!(d["event"]["TargetObject"].is_string(), "{d}");
        let file = d["file"].as_str().unwrap_or("");
        if file.ends_with(".evtx") {
            assert_eq!(
                d["position"], d["record_id"],
                "EVTX positions are EventRecordIDs: {d}"
            );
        } else {
            assert!(d["record_id"].is_u64(), "{d}");
        }
        if d["matched"].as_object().is_some_and(|m| !m.is_empty()) {
            with_matched += 1;
        }
    }
    assert!(
        with_matched * 10 >= all.len() * 9,
        "{with_matched} of {} name matched fields",
        all.len()
    );

    // CSV: a header, then one row per detection, 20 columns each
    let (code, csv, err) = scan(&["--format", "csv"]);
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<Vec<String>> = csv.lines().map(csv_split).collect();
    assert_eq!(rows.first().map(|r| r[0].as_str()), Some("time"));
    assert_eq!(rows.len(), all.len() + 1);
    assert!(rows.iter().all(|r| r.len() == 20), "{csv}");
    for (row, d) in rows.iter().skip(1).zip(&all) {
        assert_eq!(row[3], d["rule_id"].as_str().unwrap_or(""));
        assert_eq!(row[6], d["position"].to_string());
        assert_eq!(row[15], d["event"]["TargetObject"].as_str().unwrap_or(""));
    }
    // the table: a header and one line per detection; no colour when not on a terminal
    let (code, table, err) = scan(&["--format", "table"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(table.lines().count(), all.len() + 1);
    assert!(table.starts_with("LEVEL"), "{table}");
    assert!(!table.contains('\x1b'), "no escape codes into a pipe");

    // --min-level
    let (_, out, _) = scan(&["--min-level", "high"]);
    let high = detections(&out);
    let want = all
        .iter()
        .filter(|d| d["level"] == "high" || d["level"] == "critical")
        .count();
    assert_eq!(high.len(), want);
    assert!(want > 0 && want < all.len());

    // --rule by id, and by tag (a tag takes its sub-tags)
    let one = all[0]["rule_id"].as_str().unwrap_or("").to_owned();
    let (_, out, err) = scan(&["--rule", &one]);
    let only: Vec<Value> = detections(&out);
    assert!(!only.is_empty() && only.iter().all(|d| d["rule_id"] == one.as_str()));
    assert!(err.contains("more filtered out"), "{err}");
    let (_, out, _) = scan(&["--rule", "attack.t1112"]);
    let tagged = detections(&out);
    assert!(!tagged.is_empty());
    assert!(tagged
        .iter()
        .all(|d| d["tags"].as_array().is_some_and(|t| t.iter().any(|t| t
            .as_str()
            .is_some_and(|t| t == "attack.t1112" || t.starts_with("attack.t1112."))))));

    // --from/--to: the day of one detection
    let day = all[0]["time"]
        .as_str()
        .unwrap_or("")
        .get(..10)
        .unwrap_or("")
        .to_owned();
    let (code, out, err) = scan(&["--from", &day, "--to", &day]);
    assert_eq!(code, Some(0), "{err}");
    let in_day = detections(&out);
    let want = all
        .iter()
        .filter(|d| d["time"].as_str().is_some_and(|t| t.starts_with(&day)))
        .count();
    assert_eq!(in_day.len(), want);
    if want < all.len() {
        assert!(err.contains("outside the time window"), "{err}");
    }
    let (code, _, err) = scan(&["--from", "yesterday"]);
    assert_eq!(code, Some(2), "{err}");

    // --quiet: counts only; --stats
    let (code, _, err) = scan(&["--quiet", "--stats"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains(": skipped: "), "{err}");
    assert!(err.contains("skipped "), "{err}");
    assert!(err.contains("detections per rule:"), "{err}");
    assert!(err.contains("detections per level:"), "{err}");
    let never: usize = err
        .split("rules that never fired: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    let fired: BTreeSet<&str> = all.iter().filter_map(|d| d["rule_id"].as_str()).collect();
    assert_eq!(never + fired.len(), loaded, "{err}");
    // A rule whose detections a filter drops still fired: the filters do not change the count.
    let (code, out, err) = scan(&["--quiet", "--stats", "--rule", "no-such-rule"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(detections(&out).is_empty(), "{out}");
    assert!(
        err.contains(&format!("rules that never fired: {never} of {loaded}")),
        "{err}"
    );

    // --fail-on-detection: 3 when anything was reported, 0 when the filters leave nothing
    let (code, _, _) = scan(&["--quiet", "--fail-on-detection"]);
    assert_eq!(code, Some(3));
    let (code, _, _) = scan(&["--quiet", "--fail-on-detection", "--rule", "no-such-rule"]);
    assert_eq!(code, Some(0));
}

/// EVTX skip lines give the EventRecordID, as detections do (they gave the record header's
/// number, which in SigmaHQ's recordings is 1 where the EventRecordID is in the hundreds of
/// thousands): every EVTX skip's position is the EventRecordID of an event in its exported twin.
#[test]
fn evtx_skip_lines_use_event_record_ids() {
    let Some(corpus) = corpus() else {
        println!("skipped: ../shared/corpus/sigma-regression is absent");
        return;
    };
    let pack = semantics_pack();
    let dir = corpus.join("sigma-regression/rules/windows");
    let (code, _, err) = bulwark(&["scan", "--pack", s(&pack), s(&dir)]);
    assert_eq!(code, Some(0), "{err}");
    let mut checked = 0;
    for line in err
        .lines()
        .filter(|l| l.contains(".evtx:") && l.contains(": skipped: "))
    {
        let (file, rest) = line.split_once(".evtx:").unwrap_or(("", ""));
        let position = rest.split(':').next().unwrap_or("");
        let twin = std::fs::read_to_string(format!("{file}.json")).unwrap_or_default();
        assert!(
            twin.contains(&format!("\"EventRecordID\": {position}")),
            "{line}: no event with that EventRecordID in {file}.json"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} EVTX skip lines: {err}");
}
