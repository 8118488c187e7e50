//! Sigma semantics, one modifier and condition form at a time: compile a rule, evaluate events
//! through the verified pack, check match and no match.

use bulwark_interpreter::{verify, Event, EventType, FieldValue};
use bulwark_sigma::{compile_sources, Options, SkipReason};

fn rule(category: &str, detection: &str) -> String {
    format!(
        "title: t\nid: 00000000-0000-4000-8000-000000000001\nauthor: a\nlevel: high\nlogsource:\n    category: {category}\n    product: windows\ndetection:\n{detection}\n"
    )
}

/// Whether the rule matches the event given as (field, value) pairs (absent fields omitted).
fn hit(
    category: &str,
    detection: &str,
    event_type: EventType,
    fields: &[(&str, FieldValue<'_>)],
) -> bool {
    let compiled = compile_sources(
        &[("t.yml".into(), rule(category, detection))],
        &Options::default(),
    )
    .unwrap();
    assert!(compiled.skipped.is_empty(), "{:?}", compiled.skipped);
    let pack = verify(&compiled.pack).unwrap();
    let mut values = vec![FieldValue::Absent; event_type.fields().len()];
    for (name, v) in fields {
        values[usize::from(event_type.field_by_name(name).unwrap().index)] = *v;
    }
    let ev = Event::new(event_type, &values).unwrap();
    let mut n = 0;
    pack.evaluate(&ev, &mut |_| n += 1);
    n > 0
}

fn pc(detection: &str, fields: &[(&str, &str)]) -> bool {
    let f: Vec<(&str, FieldValue<'_>)> = fields
        .iter()
        .map(|(k, v)| (*k, FieldValue::Str(v)))
        .collect();
    hit(
        "process_creation",
        detection,
        EventType::ProcessCreation,
        &f,
    )
}

fn skip_reason(category: &str, detection: &str) -> SkipReason {
    let c = compile_sources(
        &[("t.yml".into(), rule(category, detection))],
        &Options::default(),
    )
    .unwrap();
    c.skipped
        .first()
        .map(|s| s.reason.clone())
        .expect("expected a skip")
}

#[test]
fn plain_values_are_case_insensitive_equality() {
    let d = "    sel:\n        Image: 'C:\\Windows\\System32\\cmd.exe'\n    condition: sel";
    assert!(pc(d, &[("Image", "c:\\windows\\system32\\CMD.EXE")]));
    assert!(!pc(d, &[("Image", "C:\\Windows\\System32\\cmd.exe2")]));
    assert!(!pc(d, &[]));
}

#[test]
fn contains_startswith_endswith_and_all() {
    let d = "    sel:\n        CommandLine|contains: 'sekurlsa'\n    condition: sel";
    assert!(pc(
        d,
        &[("CommandLine", "mimikatz SEKURLSA::logonpasswords")]
    ));
    assert!(!pc(d, &[("CommandLine", "mimikatz")]));
    let d = "    sel:\n        Image|startswith: 'C:\\Users\\'\n    condition: sel";
    assert!(pc(d, &[("Image", "c:\\users\\bob\\x.exe")]));
    assert!(!pc(d, &[("Image", "D:\\c:\\users\\x.exe")]));
    let d = "    sel:\n        Image|endswith:\n            - '\\a.exe'\n            - '\\b.exe'\n    condition: sel";
    assert!(pc(d, &[("Image", "C:\\x\\B.exe")]));
    assert!(!pc(d, &[("Image", "C:\\x\\b.exe.txt")]));
    let d = "    sel:\n        CommandLine|contains|all:\n            - 'a1'\n            - 'b2'\n    condition: sel";
    assert!(pc(d, &[("CommandLine", "b2 a1")]));
    assert!(!pc(d, &[("CommandLine", "a1 only")]));
}

#[test]
fn wildcards_and_escapes() {
    // `\\?` would be an escaped `?`: `\\\\?` is a backslash then a one-character wildcard
    let d = "    sel:\n        CommandLine: '*\\Temp\\\\?.exe*'\n    condition: sel";
    assert!(pc(d, &[("CommandLine", "run C:\\temp\\x.exe now")]));
    assert!(!pc(d, &[("CommandLine", "run C:\\temp\\xy.exe now")]));
    // \* is a literal star, a backslash before anything else is literal, \\ is one backslash
    let d = "    sel:\n        CommandLine: 'a\\*b'\n    condition: sel";
    assert!(pc(d, &[("CommandLine", "a*b")]));
    assert!(!pc(d, &[("CommandLine", "axxb")]));
    let d = "    sel:\n        CommandLine|endswith: 'dir\\'\n    condition: sel";
    assert!(pc(d, &[("CommandLine", "C:\\some\\dir\\")]));
    let d = "    sel:\n        CommandLine: 'x\\\\\\\\y'\n    condition: sel";
    assert!(
        pc(d, &[("CommandLine", "x\\\\y")]),
        "two escaped backslashes are two backslashes"
    );
}

#[test]
fn null_is_absent_and_empty_is_empty() {
    let d = "    sel:\n        CommandLine: null\n    condition: sel";
    assert!(pc(d, &[]));
    assert!(!pc(d, &[("CommandLine", "")]));
    let d = "    sel:\n        CommandLine: ''\n    condition: sel";
    assert!(pc(d, &[("CommandLine", "")]));
    assert!(!pc(d, &[]));
    assert!(!pc(d, &[("CommandLine", "x")]));
    let d = "    sel:\n        CommandLine|exists: true\n    condition: sel";
    assert!(pc(d, &[("CommandLine", "")]));
    assert!(!pc(d, &[]));
    let d = "    sel:\n        CommandLine|exists: false\n    condition: sel";
    assert!(pc(d, &[]));
}

#[test]
fn windash_permutes_all_five_dashes() {
    let d = "    sel:\n        CommandLine|windash|contains: ' -enc '\n    condition: sel";
    for dash in ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'] {
        let cmd = format!("powershell {dash}enc ZQBjAGgAbwA=");
        assert!(pc(d, &[("CommandLine", &cmd)]), "{dash:?}");
    }
    assert!(!pc(d, &[("CommandLine", "powershell +enc x")]));
}

#[test]
fn base64_and_base64offset() {
    let d = "    sel:\n        CommandLine|base64offset|contains: 'http://'\n    condition: sel";
    for prefix in ["", "a", "ab"] {
        let enc = bulwark_sigma::field::base64(format!("{prefix}http://x").as_bytes());
        assert!(
            pc(d, &[("CommandLine", &format!("echo {enc}"))]),
            "offset {}",
            prefix.len()
        );
    }
    assert!(!pc(d, &[("CommandLine", "http://")]));
    let d = "    sel:\n        CommandLine|base64|contains: 'whoami'\n    condition: sel";
    assert!(pc(d, &[("CommandLine", "x d2hvYW1p y")]));
}

#[test]
fn cased_regex_fieldref_and_numbers() {
    let d = "    sel:\n        CommandLine|cased: 'ABC'\n    condition: sel";
    assert!(pc(d, &[("CommandLine", "ABC")]));
    assert!(!pc(d, &[("CommandLine", "abc")]));
    let d = "    sel:\n        CommandLine|re: '^a[0-9]+z$'\n    condition: sel";
    assert!(pc(d, &[("CommandLine", "a123z")]));
    assert!(
        !pc(d, &[("CommandLine", "A123Z")]),
        "regex is case-sensitive by default"
    );
    let d = "    sel:\n        CommandLine|re|i: '^a[0-9]+z$'\n    condition: sel";
    assert!(pc(d, &[("CommandLine", "A123Z")]));
    let d = "    sel:\n        ParentImage|fieldref: Image\n    condition: sel";
    assert!(pc(
        d,
        &[("Image", "C:\\x.exe"), ("ParentImage", "c:\\X.exe")]
    ));
    assert!(!pc(
        d,
        &[("Image", "C:\\x.exe"), ("ParentImage", "C:\\y.exe")]
    ));
    let ints = |pid| {
        hit(
            "process_creation",
            "    sel:\n        ProcessId|gte: 1000\n    condition: sel",
            EventType::ProcessCreation,
            &[("ProcessId", FieldValue::Int(pid))],
        )
    };
    assert!(ints(1000));
    assert!(!ints(999));
}

#[test]
fn conditions() {
    let d = "    selection_a:\n        Image|endswith: '\\a.exe'\n    selection_b:\n        Image|endswith: '\\b.exe'\n    filter_x:\n        CommandLine|contains: 'safe'\n    condition: 1 of selection_* and not 1 of filter_*";
    assert!(pc(d, &[("Image", "C:\\a.exe"), ("CommandLine", "x")]));
    assert!(pc(d, &[("Image", "C:\\b.exe")]));
    assert!(!pc(d, &[("Image", "C:\\b.exe"), ("CommandLine", "safe")]));
    let d = "    sel1:\n        Image|endswith: '\\a.exe'\n    sel2:\n        CommandLine|contains: 'go'\n    condition: all of them";
    assert!(pc(d, &[("Image", "C:\\a.exe"), ("CommandLine", "go")]));
    assert!(!pc(d, &[("Image", "C:\\a.exe")]));
    let d = "    sel1:\n        Image|endswith: '\\a.exe'\n    sel2:\n        CommandLine|contains: 'go'\n    condition: not (sel1 or sel2)";
    assert!(pc(d, &[("Image", "C:\\c.exe")]));
    assert!(!pc(d, &[("CommandLine", "go")]));
    // a list of maps is OR
    let d = "    sel:\n        - Image|endswith: '\\a.exe'\n        - CommandLine|contains: 'go'\n    condition: sel";
    assert!(pc(d, &[("CommandLine", "go")]));
}

#[test]
fn registry_categories_add_their_event_type() {
    let d = "    sel:\n        TargetObject|contains: '\\Run\\'\n    condition: sel";
    let ev = |t: &str| {
        hit(
            "registry_set",
            d,
            EventType::RegistryEvent,
            &[
                ("EventType", FieldValue::Str(t)),
                ("TargetObject", FieldValue::Str("HKLM\\x\\Run\\y")),
            ],
        )
    };
    assert!(ev("SetValue"));
    assert!(!ev("DeleteValue"), "registry_set is only SetValue");
}

#[test]
fn unsupported_rules_are_skipped_with_a_reason() {
    assert!(matches!(
        skip_reason(
            "process_creation",
            "    sel:\n        Nope: x\n    condition: sel"
        ),
        SkipReason::NeverFires { .. }
    ));
    assert!(matches!(
        skip_reason(
            "network_connection",
            "    sel:\n        Image: x\n    condition: sel"
        ),
        SkipReason::LogSource(_)
    ));
    assert!(matches!(
        skip_reason(
            "process_creation",
            "    sel:\n        Image|expand: x\n    condition: sel"
        ),
        SkipReason::Unsupported(_)
    ));
    assert_eq!(
        skip_reason(
            "process_creation",
            "    sel:\n        Image: x\n    condition: sel | count() > 5"
        ),
        SkipReason::Aggregation
    );
    assert!(matches!(
        skip_reason(
            "process_creation",
            "    sel:\n        Image: x\n    condition: sel and missing"
        ),
        SkipReason::BadCondition(_)
    ));
    assert!(matches!(
        skip_reason(
            "process_creation",
            "    sel:\n        Image|re: '(a)\\1'\n    condition: sel"
        ),
        SkipReason::Regex(_)
    ));
    assert!(matches!(
        skip_reason(
            "process_creation",
            "    keywords:\n        - 'evil'\n    condition: keywords"
        ),
        SkipReason::Unsupported(_)
    ));
}

#[test]
fn strict_mode_and_duplicate_ids() {
    let good = rule(
        "process_creation",
        "    sel:\n        Image: x\n    condition: sel",
    );
    let bad = rule(
        "process_creation",
        "    sel:\n        Nope: x\n    condition: sel",
    )
    .replace("0001", "0002");
    let c = compile_sources(
        &[
            ("a.yml".into(), good.clone()),
            ("b.yml".into(), good.clone()),
        ],
        &Options::default(),
    )
    .unwrap();
    assert_eq!(c.rules.len(), 1);
    assert_eq!(c.skipped[0].reason, SkipReason::DuplicateId);
    let e = compile_sources(
        &[("a.yml".into(), good), ("b.yml".into(), bad)],
        &Options { strict: true },
    );
    assert!(matches!(
        e,
        Err(bulwark_sigma::CompileError::Strict { count: 1 })
    ));
}

#[test]
fn skipped_rules_name_file_line_and_reason() {
    let text = rule(
        "process_creation",
        "    sel:\n        Image: x\n        Nope|contains: y\n    condition: sel",
    );
    let c = compile_sources(&[("rules/x.yml".into(), text)], &Options::default()).unwrap();
    let s = c.skipped[0].to_string();
    assert!(
        s.starts_with(
            "rules/x.yml:11: rule 00000000-0000-4000-8000-000000000001 \"t\": skipped: can never fire: it needs Nope"
        ),
        "{s}"
    );
}

#[test]
fn windash_follows_pysigma_word_start_dashes_and_slashes() {
    // pySigma expands `-` or `/` at the start of a word (`\B[-/]\b`): a `/` flag matches `-`.
    let d = "    sel:\n        CommandLine|windash|contains: ' /c '\n    condition: sel";
    for dash in ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'] {
        let cmd = format!("cmd.exe {dash}c whoami");
        assert!(pc(d, &[("CommandLine", &cmd)]), "{dash:?}");
    }
    // A dash inside a word is not a flag and stays as written.
    let d = "    sel:\n        CommandLine|windash|contains: 'x-y'\n    condition: sel";
    assert!(pc(d, &[("CommandLine", "a x-y b")]));
    assert!(!pc(d, &[("CommandLine", "a x/y b")]));
    // With `all`, every value (each with its variants) must occur.
    let d = "    sel:\n        CommandLine|windash|contains|all:\n            - ' -nop '\n            - ' -w hidden'\n    condition: sel";
    assert!(pc(
        d,
        &[("CommandLine", "powershell /nop \u{2013}w hidden")]
    ));
    assert!(!pc(d, &[("CommandLine", "powershell /nop")]));
}

#[test]
fn fieldref_only_takes_plain_equality() {
    assert!(matches!(
        skip_reason(
            "process_creation",
            "    sel:\n        ParentImage|fieldref|contains: Image\n    condition: sel"
        ),
        SkipReason::Unsupported(_)
    ));
    assert!(matches!(
        skip_reason(
            "process_creation",
            "    sel:\n        ProcessId|fieldref: Image\n    condition: sel"
        ),
        SkipReason::Unsupported(_)
    ));
}

#[test]
fn rules_keep_id_title_author_level_and_tags() {
    let text = "title: Attributed\nid: 11111111-0000-4000-8000-000000000001\nauthor: Jane Doe\nlevel: critical\ntags:\n    - attack.execution\n    - attack.t1059\nlogsource:\n    category: image_load\n    product: windows\ndetection:\n    sel:\n        ImageLoaded|endswith: '\\evil.dll'\n    condition: sel\n";
    let c = compile_sources(&[("a.yml".into(), text.into())], &Options::default()).unwrap();
    assert_eq!(c.rules.len(), 1);
    let pack = verify(&c.pack).unwrap();
    let info = pack.rule(0).unwrap();
    assert_eq!(info.id, "11111111-0000-4000-8000-000000000001");
    assert_eq!(info.title, "Attributed");
    assert_eq!(info.author, "Jane Doe");
    assert_eq!(info.level.name(), "critical");
    assert_eq!(info.event_type, EventType::ImageLoad);
    let tags: Vec<&str> = info.tags().collect();
    assert_eq!(tags, ["attack.execution", "attack.t1059"]);
}

#[test]
fn skip_lines_point_at_the_failing_selection_key_or_yaml_error() {
    // The same key in two selections: the second one's regex is refused, so its line is named.
    let text = rule(
        "process_creation",
        "    sel1:\n        CommandLine|re: 'a+'\n    sel2:\n        CommandLine|re: '(a)\\1'\n    condition: sel1 or sel2",
    );
    let c = compile_sources(&[("r.yml".into(), text.clone())], &Options::default()).unwrap();
    let want = text
        .lines()
        .position(|l| l.contains("(a)"))
        .map(|i| i as u32 + 1);
    assert_eq!(c.skipped[0].line, want, "{}", c.skipped[0]);
    assert!(matches!(c.skipped[0].reason, SkipReason::Regex(_)));
    // A YAML syntax error is reported at the parser's line.
    let bad = "title: t\nid: x\ndetection:\n    sel: [unclosed\n";
    let c = compile_sources(&[("y.yml".into(), bad.into())], &Options::default()).unwrap();
    assert!(matches!(c.skipped[0].reason, SkipReason::Malformed(_)));
    assert!(c.skipped[0].line.is_some(), "{}", c.skipped[0]);
}
