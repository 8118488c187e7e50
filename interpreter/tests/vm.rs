//! The VM against a reference tree-walking evaluator, the no-fault property, and corruption.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use bulwark_interpreter::build::{Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::matching::{compare, glob_match, parse_glob};
use bulwark_interpreter::schema::ProcessCreation;
use bulwark_interpreter::{
    verify, Action, Case, Event, EventType, FieldValue, IntCmp, Level, StrOp,
};
use proptest::prelude::*;

const PC: EventType = EventType::ProcessCreation;

fn spec(expr: Expr) -> RuleSpec {
    RuleSpec {
        event_type: PC,
        id: "r".into(),
        title: "t".into(),
        author: "a".into(),
        level: Level::High,
        action: Action::Alert,
        tags: vec!["attack.t1059".into()],
        expr,
    }
}

/// The reference semantics, straight from the expression tree.
fn reference(e: &Expr, ev: &[FieldValue<'_>]) -> bool {
    let get = |f: &u8| {
        ev.get(usize::from(*f))
            .copied()
            .unwrap_or(FieldValue::Absent)
    };
    match e {
        Expr::Const(b) => *b,
        Expr::Not(x) => !reference(x, ev),
        Expr::And(xs) => xs.iter().all(|x| reference(x, ev)),
        Expr::Or(xs) => xs.iter().any(|x| reference(x, ev)),
        Expr::Pred(p) => match p {
            Pred::Exists { field } => get(field) != FieldValue::Absent,
            Pred::Empty { field } => get(field) == FieldValue::Str(""),
            Pred::Str {
                field,
                op,
                case,
                value,
            } => matches!(get(field), FieldValue::Str(v) if compare(v, *op, value, *case)),
            Pred::Glob {
                field,
                case,
                pattern,
            } => {
                matches!(get(field), FieldValue::Str(v) if glob_match(v, &parse_glob(pattern.as_bytes()).unwrap(), *case))
            }
            Pred::Set {
                field,
                op,
                case,
                values,
            } => {
                matches!(get(field), FieldValue::Str(v) if values.iter().any(|s| compare(v, *op, s, *case)))
            }
            Pred::FieldEq { field, other, case } => match (get(field), get(other)) {
                (FieldValue::Str(a), FieldValue::Str(b)) => compare(a, StrOp::Eq, b, *case),
                (FieldValue::Int(a), FieldValue::Int(b)) => a == b,
                _ => false,
            },
            Pred::Int { field, cmp, value } => {
                matches!(get(field), FieldValue::Int(v) if cmp.holds(v, *value))
            }
            Pred::Regex { .. } => unreachable!("not generated"),
        },
    }
}

const WORDS: &[&str] = &[
    "",
    "a",
    "cmd",
    "CMD.EXE",
    "c:\\windows\\cmd.exe",
    "powershell",
    "-enc",
    "abcabc",
    "ä€x",
];
const STR_FIELDS: &[u8] = &[0, 1, 2, 3, 10];
const INT_FIELDS: &[u8] = &[14, 15];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(WORDS).prop_map(String::from),
        "[a-cA-C\\\\*?.]{0,6}"
    ]
}

fn case() -> impl Strategy<Value = Case> {
    prop_oneof![Just(Case::Insensitive), Just(Case::Sensitive)]
}

fn str_op() -> impl Strategy<Value = StrOp> {
    prop::sample::select(vec![
        StrOp::Eq,
        StrOp::StartsWith,
        StrOp::EndsWith,
        StrOp::Contains,
    ])
}

fn pred() -> impl Strategy<Value = Pred> {
    let sf = || prop::sample::select(STR_FIELDS);
    prop_oneof![
        sf().prop_map(|field| Pred::Exists { field }),
        sf().prop_map(|field| Pred::Empty { field }),
        (sf(), str_op(), case(), word()).prop_map(|(field, op, case, value)| Pred::Str {
            field,
            op,
            case,
            value
        }),
        (sf(), case(), word()).prop_map(|(field, case, pattern)| Pred::Glob {
            field,
            case,
            pattern
        }),
        (sf(), str_op(), case(), prop::collection::vec(word(), 1..9)).prop_map(
            |(field, op, case, values)| Pred::Set {
                field,
                op,
                case,
                values
            }
        ),
        (sf(), sf(), case()).prop_map(|(field, other, case)| Pred::FieldEq { field, other, case }),
        (
            prop::sample::select(INT_FIELDS),
            prop::sample::select(vec![
                IntCmp::Eq,
                IntCmp::Lt,
                IntCmp::Le,
                IntCmp::Gt,
                IntCmp::Ge
            ]),
            0u64..8
        )
            .prop_map(|(field, cmp, value)| Pred::Int { field, cmp, value }),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        pred().prop_map(Expr::Pred),
        any::<bool>().prop_map(Expr::Const)
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Expr::And),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Expr::Or),
            inner.prop_map(|e| Expr::Not(Box::new(e))),
        ]
    })
}

fn value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        word().prop_map(Some),
        "[ -~äé€]{0,12}".prop_map(Some)
    ]
}

fn event() -> impl Strategy<Value = (Vec<Option<String>>, Option<u64>, Option<u64>)> {
    (
        prop::collection::vec(value(), 5),
        prop::option::of(0u64..8),
        prop::option::of(0u64..8),
    )
}

fn run(
    exprs: &[Expr],
    strs: &[Option<String>],
    pid: Option<u64>,
    ppid: Option<u64>,
) -> (Vec<u32>, Vec<bool>) {
    let mut b = PackBuilder::new();
    for e in exprs {
        b.rule(spec(e.clone())).unwrap();
    }
    let pack = verify(&b.finish()).unwrap();
    let s = |i: usize| strs.get(i).and_then(|v| v.as_deref());
    let typed = ProcessCreation {
        image: s(0),
        command_line: s(1),
        parent_image: s(2),
        parent_command_line: s(3),
        user: s(4),
        process_id: pid,
        parent_process_id: ppid,
        ..Default::default()
    };
    let values = typed.values();
    let ev = Event::from_typed((&values).into());
    let mut hits = Vec::new();
    let stats = pack.evaluate(&ev, &mut |m| hits.push(m.index));
    assert_eq!(stats.errors, 0);
    assert_eq!(stats.over_budget, None);
    assert!(stats.work <= pack.cost_bound(EventType::ProcessCreation));
    let expected = exprs.iter().map(|e| reference(e, &values)).collect();
    (hits, expected)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The compiled pack (lowering, prefilter anchors, VM) decides exactly what the tree says.
    #[test]
    fn vm_agrees_with_reference(exprs in prop::collection::vec(expr(), 1..6), (strs, pid, ppid) in event()) {
        let (hits, expected) = run(&exprs, &strs, pid, ppid);
        let want: Vec<u32> = expected.iter().enumerate().filter(|(_, m)| **m).map(|(i, _)| i as u32).collect();
        prop_assert_eq!(hits, want);
    }

    /// Random corruption of a valid pack (bit flips, truncation, splicing) never panics: verify
    /// answers Ok or Err, and whatever verifies runs without faults.
    #[test]
    fn corruption_never_panics(exprs in prop::collection::vec(expr(), 1..4), flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..4),
                               cut in any::<prop::sample::Index>(), splice in any::<prop::sample::Index>(), mode in 0u8..3) {
        let mut b = PackBuilder::new();
        for e in &exprs { b.rule(spec(e.clone())).unwrap(); }
        let pack = b.finish();
        let mut bad = pack.clone();
        match mode {
            0 => for (i, bit) in &flips { let i = i.index(bad.len()); bad[i] ^= 1 << bit; },
            1 => bad.truncate(cut.index(pack.len())),
            _ => { let at = splice.index(pack.len()); let from = cut.index(pack.len()); bad.splice(at..at, pack[from..].iter().copied()); }
        }
        if let Ok(v) = verify(&bad) {
            let values = ProcessCreation { image: Some("cmd"), ..Default::default() }.values();
            let stats = v.evaluate(&Event::from_typed((&values).into()), &mut |_| {});
            prop_assert_eq!(stats.errors, 0);
        }
    }
}

#[test]
fn absent_is_not_empty() {
    let exprs = [
        Expr::Pred(Pred::Empty { field: 1 }),
        Expr::Pred(Pred::Exists { field: 1 }),
        Expr::Pred(Pred::Str {
            field: 1,
            op: StrOp::Eq,
            case: Case::Insensitive,
            value: String::new(),
        }),
        Expr::Not(Box::new(Expr::Pred(Pred::Exists { field: 1 }))),
    ];
    let (hits, _) = run(&exprs, &[None, Some(String::new())], None, None);
    assert_eq!(hits, vec![0, 1, 2]);
    let (hits, _) = run(&exprs, &[None, None], None, None);
    assert_eq!(hits, vec![3]);
}

/// Every rule of the largest pack can be a candidate and match, wherever its bit lies in the
/// candidate bitset (first and last of a word, the last word of all), and the rules that always
/// run do too; no other rule matches.
#[test]
fn rules_match_at_every_place_of_the_candidate_bitset() {
    let limit = bulwark_interpreter::limits::MAX_RULES;
    for rules in [130, limit] {
        let token = |i: usize| format!("tok{i:05}x");
        let always = rules - 2;
        let exprs: Vec<Expr> = (0..rules)
            .map(|i| {
                if i == always {
                    // No literal to anchor it: it runs on every event.
                    Expr::Pred(Pred::Exists { field: 0 })
                } else {
                    Expr::Pred(Pred::Str {
                        field: 1,
                        op: StrOp::Contains,
                        case: Case::Insensitive,
                        value: token(i),
                    })
                }
            })
            .collect();
        let want: Vec<u32> = [0, 63, 64, 127, always, rules - 1]
            .into_iter()
            .filter(|&i| i < rules)
            .map(|i| i as u32)
            .collect();
        let line: Vec<String> = want
            .iter()
            .filter(|&&i| i as usize != always)
            .map(|&i| token(i as usize).to_uppercase())
            .collect();
        let (hits, expected) = run(
            &exprs,
            &[Some("x.exe".into()), Some(line.join(" "))],
            None,
            None,
        );
        let reference: Vec<u32> = (0..rules as u32)
            .filter(|&i| expected[i as usize])
            .collect();
        assert_eq!(reference, want, "{rules} rules: the reference");
        assert_eq!(hits, want, "{rules} rules");
    }
}

#[test]
fn huge_and_non_ascii_values_complete() {
    // As long as a command line gets (16 KiB), ending in a 2-byte char.
    let big = "x".repeat(16 * 1024 - 8 - 2000) + "MiMiKaTz" + &"é".repeat(1000);
    assert_eq!(big.len(), 16 * 1024);
    let exprs = [
        Expr::Pred(Pred::Str {
            field: 1,
            op: StrOp::Contains,
            case: Case::Insensitive,
            value: "mimikatz".into(),
        }),
        Expr::Pred(Pred::Glob {
            field: 1,
            case: Case::Insensitive,
            pattern: "*x*x*x*mimikatz*é".into(),
        }),
        Expr::Pred(Pred::Str {
            field: 1,
            op: StrOp::EndsWith,
            case: Case::Sensitive,
            value: "éé".into(),
        }),
        Expr::Pred(Pred::Set {
            field: 1,
            op: StrOp::Contains,
            case: Case::Sensitive,
            values: vec!["mimikatz".into(), "zzz".into()],
        }),
    ];
    let (hits, expected) = run(&exprs, &[None, Some(big.clone())], None, None);
    assert_eq!(expected, vec![true, true, true, false]);
    assert_eq!(hits, vec![0, 1, 2]);

    // Longer, and the value is seen cut at its field's longest (16 KiB) on a char boundary, as
    // the sensor cuts it: a `é` across the limit is gone whole, and what follows it too.
    let mut pack = PackBuilder::new();
    for e in &exprs {
        pack.rule(spec(e.clone())).unwrap();
    }
    let pack = verify(&pack.finish()).unwrap();
    let longer = "x".repeat(16 * 1024 - 1) + "é" + "MiMiKaTz";
    let typed = ProcessCreation {
        command_line: Some(&longer),
        ..Default::default()
    };
    let values = typed.values();
    let mut hits = Vec::new();
    let stats = pack.evaluate(&Event::from_typed((&values).into()), &mut |m| {
        hits.push(m.index)
    });
    assert_eq!((hits, stats.errors), (vec![], 0));
    drop(big);
}

#[cfg(feature = "build")]
#[test]
fn regex_is_searched_unanchored_and_case_insensitive() {
    let mut b = PackBuilder::new();
    b.rule(spec(Expr::Pred(Pred::Regex {
        field: 1,
        pattern: r"\s-e(nc)?\s+[a-z0-9+/=]{8,}".into(),
        case_insensitive: true,
    })))
    .unwrap();
    let pack = verify(&b.finish()).unwrap();
    let eval = |cmd: &str| {
        let v = ProcessCreation {
            command_line: Some(cmd),
            ..Default::default()
        }
        .values();
        let mut n = 0;
        pack.evaluate(&Event::from_typed((&v).into()), &mut |_| n += 1);
        n
    };
    assert_eq!(eval("powershell.exe -ENC SQBFAFgAKABOAGUAdwA="), 1);
    assert_eq!(eval("powershell.exe -e abc"), 0);
    assert_eq!(eval(""), 0);
}

#[test]
fn rule_metadata_is_reported() {
    let mut b = PackBuilder::new();
    b.rule(spec(Expr::Const(true))).unwrap();
    let pack = verify(&b.finish()).unwrap();
    let v = ProcessCreation::default().values();
    let mut seen = Vec::new();
    pack.evaluate(&Event::from_typed((&v).into()), &mut |m| {
        seen.push((
            m.id.to_string(),
            m.title.to_string(),
            m.author.to_string(),
            m.level,
            m.tags().collect::<Vec<_>>().join(","),
        ))
    });
    assert_eq!(
        seen,
        vec![(
            "r".into(),
            "t".into(),
            "a".into(),
            Level::High,
            "attack.t1059".into()
        )]
    );
    // Rules run only on their own event type.
    let il = bulwark_interpreter::schema::ImageLoad::default().values();
    let stats = pack.evaluate(&Event::from_typed((&il).into()), &mut |_| {
        panic!("wrong event type")
    });
    assert_eq!(stats.rules_run, 0);
}

#[test]
fn events_are_checked_against_the_schema() {
    let short = [FieldValue::Absent; 19];
    assert!(Event::new(PC, &short).is_err());
    let mut wrong = [FieldValue::Absent; 20];
    wrong[0] = FieldValue::Int(1);
    let e = Event::new(PC, &wrong).unwrap_err();
    assert!(
        e.to_string()
            .contains("field Image of process_creation is str"),
        "{e}"
    );
}

#[test]
fn limits_are_enforced() {
    // A rule longer than the per-rule instruction limit, written raw.
    let mut b = PackBuilder::new();
    b.rule(spec(Expr::Const(true))).unwrap();
    let rule = b.raw_mut().rules[0].clone();
    let mut long = rule.clone();
    long.code = std::iter::repeat_n(
        rule.code[0],
        bulwark_interpreter::limits::MAX_INSNS_PER_RULE,
    )
    .chain([rule.code[1]])
    .collect();
    b.raw_mut().rules[0] = long;
    let err = verify(&b.finish()).unwrap_err();
    assert!(
        err.to_string()
            .contains("instruction count: 4097 exceeds the limit of 4096"),
        "{err}"
    );
    // More rules than the limit.
    let mut b = PackBuilder::new();
    b.rule(spec(Expr::Const(true))).unwrap();
    let r = b.raw_mut().rules[0].clone();
    b.raw_mut().rules = vec![r; bulwark_interpreter::limits::MAX_RULES + 1];
    let err = verify(&b.finish()).unwrap_err();
    assert!(
        err.to_string()
            .contains("rule count: 4097 exceeds the limit of 4096"),
        "{err}"
    );
    // A forged huge count is refused before any allocation.
    let mut b = PackBuilder::new();
    b.raw_mut().strings = [vec![b'x'; 10]].into_iter().collect();
    let mut bytes = b.finish();
    let at = bytes.iter().position(|&x| x == 10).unwrap(); // the string's length field
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let n = bytes.len();
    let sum: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(&bytes[..n - 32]).into()
    };
    bytes[n - 32..].copy_from_slice(&sum);
    let err = verify(&bytes).unwrap_err();
    assert!(err.to_string().contains("string length"), "{err}");
}

/// The runtime budget behind the cost model: an evaluation that would pass the bound stops with
/// no match from the rule running or any after it, an error, and the rule named.
#[test]
fn an_evaluation_over_its_bound_stops_and_names_the_rule() {
    let contains = |v: &str| {
        Expr::Pred(Pred::Str {
            field: 1,
            op: StrOp::Contains,
            case: Case::Insensitive,
            value: v.into(),
        })
    };
    let mut b = PackBuilder::new();
    b.rule(spec(contains("cheap"))).unwrap();
    b.rule(spec(contains("needle"))).unwrap();
    let mut pack = verify(&b.finish()).unwrap();
    let text = "cheap ".to_string() + &"x".repeat(4000) + " needle";
    let typed = ProcessCreation {
        command_line: Some(&text),
        ..Default::default()
    };
    let values = typed.values();
    let ev = Event::from_typed((&values).into());
    let mut hits = Vec::new();
    let full = pack.evaluate(&ev, &mut |m| hits.push(m.index));
    assert_eq!(
        (hits.clone(), full.over_budget, full.errors),
        (vec![0, 1], None, 0)
    );
    // Just enough for the first rule: the second is stopped.
    let t = EventType::ProcessCreation;
    let mut first = pack.clone();
    let mut one = PackBuilder::new();
    one.rule(spec(contains("cheap"))).unwrap();
    let alone = verify(&one.finish())
        .unwrap()
        .evaluate(&ev, &mut |_| {})
        .work;
    first.lower_cost_bound(t, alone + 10);
    hits.clear();
    let stopped = first.evaluate(&ev, &mut |m| hits.push(m.index));
    assert_eq!(hits, vec![0]);
    assert_eq!(stopped.over_budget, Some(1));
    assert_eq!(stopped.errors, 1);
    assert!(stopped.work > alone + 10);
    // Lowering never raises.
    pack.lower_cost_bound(t, u64::MAX);
    assert!(pack.cost_bound(t) < u64::MAX);
}
