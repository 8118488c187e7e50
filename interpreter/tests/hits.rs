//! One pass per field (`src/hits.rs`): a pack's case-folded string and set tests are answered by
//! the field's prefilter scan. Whatever the tests share (literals, fields, operations, sets),
//! and however the literals overlap in the text, every rule's verdict is the one a plain
//! evaluation of its test gives (ASCII case folded).
#![cfg(feature = "build")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use bulwark_interpreter::build::{Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::schema::ProcessCreation;
use bulwark_interpreter::{verify, Action, Case, Event, EventType, Level, StrOp};
use proptest::prelude::*;

const IMAGE: u8 = 0;
const COMMAND_LINE: u8 = 1;

/// A test of the kind slots answer, and the plain answer it must give.
#[derive(Clone, Debug)]
enum Test {
    Str(u8, StrOp, String),
    Set(u8, StrOp, Vec<String>),
    Not(Box<Test>),
    And(Box<Test>, Box<Test>),
}

fn holds(op: StrOp, value: &str, lit: &str) -> bool {
    let (v, l) = (value.to_ascii_lowercase(), lit.to_ascii_lowercase());
    match op {
        StrOp::Eq => v == l,
        StrOp::StartsWith => v.starts_with(&l),
        StrOp::EndsWith => v.ends_with(&l),
        StrOp::Contains => v.contains(&l),
    }
}

impl Test {
    fn expr(&self) -> Expr {
        match self {
            Test::Str(field, op, value) => Expr::Pred(Pred::Str {
                field: *field,
                op: *op,
                case: Case::Insensitive,
                value: value.clone(),
            }),
            Test::Set(field, op, values) => Expr::Pred(Pred::Set {
                field: *field,
                op: *op,
                case: Case::Insensitive,
                values: values.clone(),
            }),
            Test::Not(t) => Expr::Not(Box::new(t.expr())),
            Test::And(a, b) => Expr::And(vec![a.expr(), b.expr()]),
        }
    }

    fn answer(&self, image: &str, command_line: &str) -> bool {
        let value = |f: u8| if f == IMAGE { image } else { command_line };
        match self {
            Test::Str(f, op, lit) => holds(*op, value(*f), lit),
            Test::Set(f, op, lits) => lits.iter().any(|l| holds(*op, value(*f), l)),
            Test::Not(t) => !t.answer(image, command_line),
            Test::And(a, b) => a.answer(image, command_line) && b.answer(image, command_line),
        }
    }
}

/// Literals that overlap, repeat and differ in case, so that tests share slots and keys.
fn literal() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "cmd",
        "CMD",
        "cmd.exe",
        "md.e",
        "exe",
        ".exe",
        "powershell",
        "Power",
        "shell",
        "-enc",
        "-EncodedCommand",
        "enc",
        "aaa",
        "aa",
        "a",
        "whoami",
        "who",
        "ami",
        "x",
        "xx",
        "é",
        "éé",
        // Runs: a scan skips repeats deep in a run of one byte.
        ";;;;",
        ";",
        ";;;;;;;;;",
        "    ",
        "aaaaaaaa",
    ])
    .prop_map(str::to_owned)
}

fn op() -> impl Strategy<Value = StrOp> {
    prop::sample::select(vec![
        StrOp::Eq,
        StrOp::StartsWith,
        StrOp::EndsWith,
        StrOp::Contains,
    ])
}

fn field() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![IMAGE, COMMAND_LINE, COMMAND_LINE])
}

fn test() -> impl Strategy<Value = Test> {
    let leaf = prop_oneof![
        (field(), op(), literal()).prop_map(|(f, o, l)| Test::Str(f, o, l)),
        (field(), op(), prop::collection::vec(literal(), 1..6))
            .prop_map(|(f, o, l)| Test::Set(f, o, l)),
    ];
    leaf.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| Test::Not(Box::new(t))),
            (inner.clone(), inner).prop_map(|(a, b)| Test::And(Box::new(a), Box::new(b))),
        ]
    })
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "cmd", "CmD", ".exe", "EXE", "power", "SHELL", "-enc", "ENC", "a", "aa", "A", " ",
            "whoami", "x", "é", "\\", "/c ", ";;;;;;;;", ";;;", "        ", "aaaaa",
        ]),
        0..12,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn every_rule_gives_the_plain_answer_of_its_tests(
        tests in prop::collection::vec(test(), 1..24),
        image in text(),
        command_line in text(),
    ) {
        let mut b = PackBuilder::new();
        for (i, t) in tests.iter().enumerate() {
            b.rule(RuleSpec {
                event_type: EventType::ProcessCreation,
                id: format!("r{i}"),
                title: "t".into(),
                author: "a".into(),
                level: Level::High,
                action: Action::Alert,
                tags: vec![],
                expr: t.expr(),
            })
            .unwrap();
        }
        let pack = verify(&b.finish()).unwrap();
        let values = ProcessCreation {
            image: Some(&image),
            command_line: Some(&command_line),
            ..Default::default()
        }
        .values();
        let mut hits = Vec::new();
        pack.evaluate(&Event::from_typed((&values).into()), &mut |m| hits.push(m.index as usize));
        let expected: Vec<usize> = tests
            .iter()
            .enumerate()
            .filter(|(_, t)| t.answer(&image, &command_line))
            .map(|(i, _)| i)
            .collect();
        prop_assert_eq!(hits, expected, "image {:?} command line {:?}", image, command_line);
    }
}
