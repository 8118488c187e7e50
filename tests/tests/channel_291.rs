//! Channel File 291, replayed against Bulwark.
//!
//! CrowdStrike's IPC Template Type declared 21 input fields; the sensor supplied 20. Earlier
//! template instances used a wildcard on field 21, so nothing read it, and the Content Validator
//! checked instances against the template's declaration, not against what the sensor passes. The
//! first instance with a non-wildcard criterion on field 21 made the Content Interpreter read past
//! the end of its 20-entry input array in the kernel.
//!
//! Each link of that chain is tested here against the real crates.

use bulwark_interpreter::build::{Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::schema::ProcessCreation;
use bulwark_interpreter::{
    verify, Action, Case, ErrorKind, Event, EventType, FieldValue, Level, StrOp,
};

const PC: EventType = EventType::ProcessCreation;

fn rule(id: &str, expr: Expr) -> RuleSpec {
    RuleSpec {
        event_type: PC,
        id: id.into(),
        title: "IPC named pipe".into(),
        author: "regression".into(),
        level: Level::High,
        action: Action::Alert,
        tags: vec![],
        expr,
    }
}

fn pipe(field: u8) -> Expr {
    Expr::Pred(Pred::Str {
        field,
        op: StrOp::Contains,
        case: Case::Insensitive,
        value: "\\\\.\\pipe\\".into(),
    })
}

/// The sensor really supplies 20 process-creation fields, and its event builder cannot make more
/// or fewer: the typed builder has exactly the schema's members.
#[test]
fn the_sensor_supplies_exactly_the_schema() {
    assert_eq!(PC.field_count(), 20);
    assert_eq!(ProcessCreation::default().values().len(), 20);
    assert!(Event::new(PC, &[FieldValue::Absent; 21]).is_err());
}

/// Content that declares 21 fields for a 20-field event type is refused outright, whether or not
/// any rule reads field 21: the pack is bound to the sensor's real schema, not to its own
/// declaration.
#[test]
fn a_pack_declaring_21_fields_is_refused_even_if_nothing_reads_field_21() {
    let mut b = PackBuilder::new();
    b.rule(rule("earlier-instance", pipe(1))).unwrap();
    for (id, n) in &mut b.raw_mut().event_types {
        if *id == PC.id() {
            *n = 21;
        }
    }
    let err = verify(&b.finish()).unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::FieldCountMismatch {
            name: "process_creation",
            pack: 21,
            sensor: 20
        }
    );
}

/// The "earlier instances" (criteria only on fields the sensor supplies) verify and run; the
/// first instance with a criterion on the 21st field (index 20) is rejected by the verifier
/// with the rule, instruction and field named, so it never reaches the VM.
#[test]
fn the_first_criterion_on_field_21_is_rejected_before_it_can_run() {
    let mut good = PackBuilder::new();
    for i in 0..20u8 {
        let f = PC.field(i).unwrap();
        if f.ty == bulwark_interpreter::FieldType::Str {
            good.rule(rule(&format!("instance-{i}"), pipe(i))).unwrap();
        }
    }
    let running = verify(&good.finish()).expect("instances on real fields verify");

    let mut bad = PackBuilder::new();
    bad.rule(rule("instance-ok", pipe(1))).unwrap();
    // The builder refuses to emit it...
    assert!(bad.rule(rule("channel-291", pipe(20))).is_err());
    // ...and a hand-made pack that does anyway is refused by the verifier.
    let mut raw = bad.raw_mut().rules[0].clone();
    raw.code[0].a = 20;
    bad.raw_mut().rules.push(raw);
    let err = verify(&bad.finish()).unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::FieldOutOfRange {
            event_type: "process_creation",
            field: 20,
            count: 20
        }
    );
    assert_eq!(err.insn, Some(0));
    assert_eq!(err.rule.as_ref().map(|r| r.0), Some(1));
    assert!(
        err.to_string().contains(
            "field index 20 is out of range: process_creation events have 20 fields (0..=19)"
        ),
        "{err}"
    );

    // The running content is untouched by the rejection and keeps working.
    let values = ProcessCreation {
        command_line: Some("\\\\.\\pipe\\evil"),
        ..Default::default()
    }
    .values();
    let mut hits = 0;
    let stats = running.evaluate(&Event::from_typed((&values).into()), &mut |_| hits += 1);
    assert_eq!((hits, stats.errors), (1, 0));
}

/// A wildcard-style criterion is no loophole: every field reference is checked, including the
/// prefilter anchors, which are a hint only and could otherwise hide an index.
#[test]
fn no_reference_escapes_the_check() {
    let mut b = PackBuilder::new();
    b.rule(rule("anchor-only", Expr::Const(true))).unwrap();
    let s = b.string("pipe");
    b.raw_mut().rules[0].anchors.push((20, s));
    let err = verify(&b.finish()).unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::FieldOutOfRange {
            event_type: "process_creation",
            field: 20,
            count: 20
        }
    );
}
