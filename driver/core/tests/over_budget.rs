//! An evaluation stopped at the running pack's cost bound is reported to user mode as a guard
//! event naming the rule, and counted, and the rules after it do not match.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod common;

use bulwark_driver_core::content::Content;
use bulwark_driver_core::control::event_kind_name;
use bulwark_driver_core::sensor::{Capacities, ControlPlane, OutcomeBuf, Sensor};
use bulwark_interpreter::build::{Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::{verify, Action, Case, EventType, Level, StrOp};
use bulwark_protocol::{ContentSource, GuardEventRecord, GuardStatus};

struct NoControl;

impl ControlPlane for NoControl {
    fn stage(&mut self, _: &[u8], _: bool, _: u64, _: &mut dyn FnMut(Content)) -> OutcomeBuf {
        OutcomeBuf::new(false, 0, "no")
    }
    fn confirm_healthy(&mut self, _: u64) -> OutcomeBuf {
        OutcomeBuf::new(false, 0, "no")
    }
    fn revert(&mut self, _: u64, _: &mut dyn FnMut(Content)) -> OutcomeBuf {
        OutcomeBuf::new(false, 0, "no")
    }
    fn guard_status(&self) -> GuardStatus {
        GuardStatus::default()
    }
    fn running_source(&self) -> ContentSource {
        ContentSource::Candidate
    }
    fn take_events(&mut self, _: &mut dyn FnMut(GuardEventRecord)) {}
}

fn rule(id: &str, needle: &str) -> RuleSpec {
    RuleSpec {
        event_type: EventType::ProcessCreation,
        id: id.into(),
        title: id.into(),
        author: "Bulwark tests".into(),
        level: Level::High,
        action: Action::Alert,
        tags: vec![],
        expr: Expr::Pred(Pred::Str {
            field: 1,
            op: StrOp::Contains,
            case: Case::Insensitive,
            value: needle.into(),
        }),
    }
}

#[test]
fn an_evaluation_over_the_bound_raises_a_guard_event_naming_the_rule() {
    let mut b = PackBuilder::new();
    b.rule(rule("first", "alpha")).unwrap();
    b.rule(rule("second", "beta")).unwrap();
    let bytes = b.finish();
    let install = |bound: Option<u64>| {
        let mut pack = verify(&bytes).unwrap();
        if let Some(bound) = bound {
            pack.lower_cost_bound(EventType::ProcessCreation, bound);
        }
        let sensor = Sensor::new(Capacities::default(), 1, 1).unwrap();
        sensor.install(
            Content {
                pack,
                channel: 1,
                version: 7,
                hash: [3; 32],
                source: ContentSource::Candidate,
            },
            &mut || {},
        );
        sensor
    };
    let cmd = "alpha ".to_string() + &"x".repeat(2000) + " beta";
    let full = install(None);
    assert_eq!(common::create_process(&full, &cmd), 2);
    assert!(common::guard_events(&full, &mut NoControl).is_empty());
    assert_eq!(full.counters().over_budget, 0);

    // A bound a little above the prefilter's work: the first rule's code passes it.
    let stopped = install(Some(200));
    assert_eq!(common::create_process(&stopped, &cmd), 0);
    assert_eq!(stopped.counters().over_budget, 1);
    assert!(stopped.counters().eval_errors >= 1);
    let events = common::guard_events(&stopped, &mut NoControl);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(event_kind_name(e.kind), "over-budget");
    assert_eq!((e.detail, e.version, e.hash), (0, 7, [3; 32]));
}
