//! Issue 11's classes of packs that cost a machine time, each built with the project's own
//! builder: `bulwark verify` rejects it with exit 1 and a message naming the rule, instruction or
//! set and the cost or reason, or it verifies and a hostile event at the fields' maximum sizes
//! evaluates within the pack's proven bound with no runtime error.

use std::path::PathBuf;
use std::process::{Command, Output};

use bulwark_interpreter::build::{Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::insn::{op, RawInsn};
use bulwark_interpreter::schema::{max_len, ProcessCreation};
use bulwark_interpreter::{verify, Action, Case, Event, EventType, Level, StrOp};

fn bulwark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(args)
        .output()
        .expect("run bulwark")
}

/// Writes the pack and runs `bulwark verify` on it: (exit code, stdout + stderr).
fn verify_cli(name: &str, pack: &[u8]) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("bulwark-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(format!("{name}.pack"));
    std::fs::write(&path, pack).unwrap();
    let o = bulwark(&["verify", path.to_str().unwrap()]);
    // Packs near the limits are megabytes; each is removed once verified.
    let _ = std::fs::remove_file(&path);
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.code(), text)
}

fn rejected(name: &str, pack: &[u8], wants: &[&str]) {
    let (code, text) = verify_cli(name, pack);
    assert_eq!(code, Some(1), "{name}: {text}");
    for w in wants {
        assert!(text.contains(w), "{name}: {text:?} should say {w:?}");
    }
}

fn spec(i: usize, expr: Expr) -> RuleSpec {
    RuleSpec {
        event_type: EventType::ProcessCreation,
        id: format!("rule-{i}"),
        title: format!("rule {i}"),
        author: "Bulwark tests".into(),
        level: Level::High,
        action: Action::Alert,
        tags: vec![],
        expr,
    }
}

fn contains(field: u8, value: &str, case: Case) -> Expr {
    Expr::Pred(Pred::Str {
        field,
        op: StrOp::Contains,
        case,
        value: value.into(),
    })
}

const COMMAND_LINE: u8 = 1;
const MAX_CMD: usize = max_len::COMMAND_LINE as usize;

/// A process creation whose command line and parent command line are `text` cut to their
/// maximum, and image `image`: evaluated, checked within the bound with no runtime error.
fn evaluate_hostile(name: &str, bytes: &[u8], text: &str, image: &str) -> u64 {
    let pack = verify(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let cut = &text[..text.len().min(MAX_CMD)];
    let typed = ProcessCreation {
        image: Some(image),
        command_line: Some(cut),
        parent_command_line: Some(cut),
        ..Default::default()
    };
    let values = typed.values();
    let started = std::time::Instant::now();
    let stats = pack.evaluate(&Event::from_typed((&values).into()), &mut |_| {});
    let took = started.elapsed();
    let bound = pack.cost_bound(EventType::ProcessCreation);
    eprintln!(
        "{name}: {} work units of a bound of {bound} in {:.2} ms ({} rules run)",
        stats.work,
        took.as_secs_f64() * 1e3,
        stats.rules_run
    );
    assert_eq!(stats.errors, 0, "{name}");
    assert_eq!(stats.over_budget, None, "{name}");
    assert!(
        stats.work <= bound,
        "{name}: work {} over bound {bound}",
        stats.work
    );
    stats.work
}

/// Fuel never bound: ~10^6 instructions each reading a 16 KiB command line were accepted. Now
/// their cost is summed, and the rule that passes the budget is named with its instruction.
#[test]
fn many_costly_instructions_are_refused_by_cost() {
    let mut b = PackBuilder::new();
    for i in 0..64 {
        let items = (0..1000)
            .map(|k| contains(COMMAND_LINE, &format!("needle-{i}-{k}"), Case::Insensitive))
            .collect();
        b.rule(spec(i, Expr::And(items))).unwrap();
    }
    rejected(
        "costly-instructions",
        &b.finish(),
        &[
            "rule ",
            "instruction ",
            "over the budget of",
            "work units",
            "process_creation",
        ],
    );
}

/// The same number of cheap instructions is a bounded cost: accepted, and evaluated within it.
#[test]
fn many_cheap_instructions_verify_and_run_within_their_bound() {
    let mut b = PackBuilder::new();
    for i in 0..250 {
        let items: Vec<Expr> = (0..1300)
            .map(|k| Expr::Not(Box::new(Expr::Const(k % 2 == 0))))
            .collect();
        b.rule(spec(i, Expr::Or(items))).unwrap();
    }
    let pack = b.finish();
    let (code, text) = verify_cli("cheap-instructions", &pack);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("cost bound per event"), "{text}");
    evaluate_hostile(
        "cheap-instructions",
        &pack,
        &"x".repeat(MAX_CMD),
        "C:\\x.exe",
    );
}

/// A literal anchored by thousands of rules was confirmed and reported once per anchor per byte.
/// Anchors are deduplicated per rule and the report per rule is charged: thousands of rules on
/// one literal cost what they cost, within the bound.
#[test]
fn one_literal_anchored_by_thousands_of_rules_runs_within_its_bound() {
    let mut b = PackBuilder::new();
    for i in 0..2000 {
        // Each rule repeats its anchor: one prefilter literal per rule.
        let e = Expr::Or(vec![
            contains(COMMAND_LINE, "ab", Case::Insensitive),
            contains(COMMAND_LINE, "AB", Case::Insensitive),
        ]);
        b.rule(spec(i, e)).unwrap();
    }
    let pack = b.finish();
    let (code, text) = verify_cli("one-literal", &pack);
    assert_eq!(code, Some(0), "{text}");
    evaluate_hostile("one-literal", &pack, &"ab".repeat(MAX_CMD), "C:\\x.exe");
}

/// A set of 65,536 copies of one string: refused, naming the set and the string.
#[test]
fn a_set_holding_one_string_many_times_is_refused() {
    let mut b = PackBuilder::new();
    let s = b.string(&"x".repeat(16_000));
    b.raw_mut().sets.push(vec![s; 65_536]);
    b.rule(spec(0, Expr::Const(false))).unwrap();
    let raw = b.raw_mut();
    raw.rules[0].code = vec![
        RawInsn {
            op: op::SET,
            a: COMMAND_LINE,
            b: StrOp::Contains as u8,
            c: Case::Insensitive as u8,
            x: 0,
        },
        RawInsn {
            op: op::RET,
            ..RawInsn::default()
        },
    ];
    rejected(
        "set-copies",
        &b.finish(),
        &["set 0 holds string", "more than once"],
    );
}

/// 2^12 case variants of one word in a cased `set.contains`: each variant is confirmed wherever
/// the word occurs; the bound charges every variant at every byte, which passes the budget.
#[test]
fn case_variants_in_a_cased_contains_are_charged_per_variant() {
    let variants: Vec<String> = (0..4096u32)
        .map(|m| {
            (0..12)
                .map(|b| if m & (1 << b) != 0 { 'A' } else { 'a' })
                .collect::<String>()
                + "-padding-to-make-it-long"
        })
        .collect();
    let set = |case| {
        Expr::Pred(Pred::Set {
            field: COMMAND_LINE,
            op: StrOp::Contains,
            case,
            values: variants.clone(),
        })
    };
    let mut b = PackBuilder::new();
    for i in 0..16 {
        b.rule(spec(i, set(Case::Sensitive))).unwrap();
    }
    rejected(
        "cased-variants",
        &b.finish(),
        &["rule ", "instruction 0", "over the budget of"],
    );
    // Folded alike, the first confirmed variant decides: cheap, and within the bound.
    let mut b = PackBuilder::new();
    b.rule(spec(0, set(Case::Insensitive))).unwrap();
    // `set.eq.cased` over the variants: one hash group, each variant confirmed once.
    b.rule(spec(
        1,
        Expr::Pred(Pred::Set {
            field: 0,
            op: StrOp::Eq,
            case: Case::Sensitive,
            values: variants.clone(),
        }),
    ))
    .unwrap();
    let pack = b.finish();
    let text = "aaaaaaaaaaaa-padding-to-make-it-lon".repeat(MAX_CMD / 35 + 1);
    evaluate_hostile("folded-variants", &pack, &text, &variants[4095]);
}

/// A long needle (8 KiB) in a long value (16 KiB), and a wildcard of `*`, 8 KiB of one letter
/// and one more byte: a naive search took 3.5 ms, the backtracking match 149 ms, per
/// instruction. Both are linear now, and charged so.
#[test]
fn long_needles_and_backtracking_patterns_run_within_their_bound() {
    let needle = "a".repeat(8191) + "b";
    let mut b = PackBuilder::new();
    b.rule(spec(0, contains(COMMAND_LINE, &needle, Case::Insensitive)))
        .unwrap();
    b.rule(spec(
        1,
        Expr::Pred(Pred::Glob {
            field: COMMAND_LINE,
            case: Case::Insensitive,
            pattern: format!("*{}b", "a".repeat(8192)),
        }),
    ))
    .unwrap();
    b.rule(spec(
        2,
        Expr::Pred(Pred::Glob {
            field: COMMAND_LINE,
            case: Case::Insensitive,
            pattern: format!("*{}b*", "a".repeat(8192)),
        }),
    ))
    .unwrap();
    let pack = b.finish();
    let (code, text) = verify_cli("long-needles", &pack);
    assert_eq!(code, Some(0), "{text}");
    evaluate_hostile("long-needles", &pack, &"a".repeat(MAX_CMD), "C:\\x.exe");
}

/// A wildcard segment holding `?` stays a product of lengths; the bound says so, and enough of
/// them pass the budget.
#[test]
fn question_mark_segments_are_charged_as_products() {
    let mut b = PackBuilder::new();
    let pattern = format!("*{}?b*", "a".repeat(4000));
    for i in 0..64 {
        b.rule(spec(
            i,
            Expr::Pred(Pred::Glob {
                field: COMMAND_LINE,
                case: Case::Insensitive,
                pattern: pattern.clone(),
            }),
        ))
        .unwrap();
    }
    rejected(
        "question-marks",
        &b.finish(),
        &["rule ", "over the budget of"],
    );
}
