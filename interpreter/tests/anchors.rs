//! Prefilter anchors: which literals a rule is prefiltered on, and that the choice never changes
//! a verdict (a regex's anchors, taken from its prefix, suffix or required inner literals, occur in
//! every text it matches).
#![cfg(feature = "build")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use bulwark_interpreter::build::{anchors_of, regex_anchors, Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::schema::ProcessCreation;
use bulwark_interpreter::{verify, Action, Case, Event, EventType, Level, StrOp};
use proptest::prelude::*;

const IMAGE: u8 = 0;
const COMMAND_LINE: u8 = 1;

fn spec(expr: Expr) -> RuleSpec {
    RuleSpec {
        event_type: EventType::ProcessCreation,
        id: "r".into(),
        title: "t".into(),
        author: "a".into(),
        level: Level::High,
        action: Action::Alert,
        tags: vec![],
        expr,
    }
}

fn contains(field: u8, value: &str) -> Expr {
    Expr::Pred(Pred::Str {
        field,
        op: StrOp::Contains,
        case: Case::Insensitive,
        value: value.into(),
    })
}

#[test]
fn a_regex_without_prefix_or_suffix_literals_is_anchored_on_a_required_inner_literal() {
    // SigmaHQ's PowerShell token obfuscation: a class on both ends, a backtick in between.
    assert_eq!(
        regex_anchors(r"\w+`(?:\w+|-|.)`[\w+|\s]", false),
        Some(vec!["`".to_string()])
    );
    // Of the prefix `invoke-` and the alternation's branches, the longer literals win.
    assert_eq!(
        regex_anchors(r"invoke-(?:expression|webrequest)\s", false),
        Some(vec!["expression".to_string(), "webrequest".to_string()])
    );
    // A literal tail.
    assert_eq!(
        regex_anchors(r"\s(?:ab|cd)-invoke-expression", false),
        Some(vec!["-invoke-expression".to_string()])
    );
    // Case-insensitive letters are joined into one literal (the prefilter folds ASCII case), but
    // not a Unicode class that also holds the Kelvin sign (`\p{L}` makes the pattern Unicode).
    assert_eq!(
        regex_anchors(r"\d(?i:mimikatz)\d", false),
        Some(vec!["mimikatz".to_string()])
    );
    assert_eq!(
        regex_anchors(r"\p{L}(?i:mimikatz)\d", false),
        Some(vec!["mimi".to_string()])
    );
    // A common single byte is not worth a prefilter; an optional literal is not required.
    assert_eq!(regex_anchors(r"\w+ \w+", false), None);
    assert_eq!(regex_anchors(r"\d+(?:abc)?", false), None);
}

#[test]
fn an_and_is_anchored_on_its_most_selective_part() {
    // `Image` containing `\Windows\` is true of most processes; a path traversal is rare.
    let e = Expr::And(vec![
        contains(IMAGE, "\\Windows\\"),
        Expr::Or(vec![
            contains(COMMAND_LINE, "\\..\\Windows\\"),
            contains(COMMAND_LINE, "\\..\\..\\"),
        ]),
    ]);
    assert_eq!(
        anchors_of(&e),
        Some(vec![
            (COMMAND_LINE, "\\..\\Windows\\".to_string()),
            (COMMAND_LINE, "\\..\\..\\".to_string())
        ])
    );
}

fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "ab",
        "`",
        "x",
        r"\$\{",
        r"\w+",
        r"\d",
        ".",
        "(?:ab|cd)",
        "(?:e|-)+",
        "[a-c]",
        r"\s*",
        "(?:xy)?",
        "(?:`|q)",
        "e{2}",
    ])
}

fn regex() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(piece(), 1..5),
        prop::option::of(prop::collection::vec(piece(), 1..4)),
    )
        .prop_map(|(a, b)| match b {
            Some(b) => format!("{}|{}", a.concat(), b.concat()),
            None => a.concat(),
        })
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "ab", "AB", "cd", "`", "${", "x", "xy", "1", " ", "-", "e", "ee", "q", "é",
        ]),
        0..10,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// A rule anchored on its regex's literals matches exactly when the same regex unanchored
    /// does (an `or` with a branch that has no anchors is never prefiltered).
    #[test]
    fn regex_anchors_never_change_a_verdict(pattern in regex(), ci in any::<bool>(), text in text()) {
        let re = Expr::Pred(Pred::Regex { field: COMMAND_LINE, pattern: pattern.clone(), case_insensitive: ci });
        let unanchored = Expr::Or(vec![re.clone(), Expr::Not(Box::new(Expr::Const(true)))]);
        prop_assert_eq!(anchors_of(&unanchored), None);
        let mut b = PackBuilder::new();
        if b.rule(spec(re)).is_err() {
            return Ok(()); // a pattern the DFA builder refuses
        }
        b.rule(spec(unanchored)).unwrap();
        let pack = verify(&b.finish()).unwrap();
        let values = ProcessCreation { command_line: Some(&text), ..Default::default() }.values();
        let mut hits = Vec::new();
        pack.evaluate(&Event::from_typed((&values).into()), &mut |m| hits.push(m.index));
        prop_assert!(hits.is_empty() || hits == vec![0, 1], "{pattern:?} on {text:?}: {hits:?}");
    }
}
