//! The driver's start-up guard decisions, staging and blessing, through the core's control plane
//! and protocol handler, over an in-memory store that behaves like the registry and content files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use bulwark_driver_core::content::Content;
use bulwark_driver_core::control::{event_kind_name, Control};
use bulwark_driver_core::sensor::{Capacities, ControlPlane, OutcomeBuf, Sensor};
use bulwark_interpreter::build::{Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::{Action, Case, EventType, Level, StrOp};
use bulwark_loader_boot_guard::{seal, Config, Decision, ResetRequest, TrustedKeys};
use bulwark_protocol::{ContentSource, GuardEventRecord, GuardStatus};
use common::Mem;

const SECRET: [u8; 32] = [7; 32];
const CHANNEL: u32 = 1;

fn envelope(version: u64, needle: &str) -> Vec<u8> {
    let mut b = PackBuilder::new();
    b.rule(RuleSpec {
        event_type: EventType::ProcessCreation,
        id: format!("rule-{needle}"),
        title: format!("{needle} seen"),
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
    })
    .unwrap();
    seal(
        &SECRET,
        CHANNEL,
        version,
        bulwark_interpreter::schema_hash(),
        &b.finish(),
    )
    .unwrap()
}

fn keys() -> TrustedKeys {
    TrustedKeys::new(&[bulwark_loader_boot_guard::envelope::public_key(&SECRET)]).unwrap()
}

fn config() -> Config {
    Config {
        channel: CHANNEL,
        threshold: 3,
        stable_secs: 60,
    }
}

/// One boot of the simulated machine: start the control plane, install what it decides.
struct Machine {
    sensor: Sensor,
    control: Control<Mem>,
    decision: Option<Decision>,
}

fn boot(store: Mem, now: u64) -> Machine {
    let sensor = Sensor::new(Capacities::default(), now, 1).unwrap();
    let (mut control, start) = Control::start(store, config(), keys(), now);
    assert!(start.error.is_none(), "{:?}", start.error);
    if let Some(c) = start.content {
        sensor.install(c, &mut || {});
    }
    sensor.forward_guard_events(&mut control);
    Machine {
        sensor,
        control,
        decision: start.decision,
    }
}

impl Machine {
    fn stage(&mut self, env: &[u8]) -> (bool, String) {
        let sensor = &self.sensor;
        let outcome = self
            .control
            .stage(env, true, 5, &mut |c| sensor.install(c, &mut || {}));
        self.sensor.forward_guard_events(&mut self.control);
        (outcome.accepted, outcome.message().to_owned())
    }

    /// Whether a process with this command line raises a detection.
    fn detects(&self, cmd: &str) -> bool {
        common::create_process(&self.sensor, cmd) > 0
    }

    /// Guard events read through the protocol handler, as user mode reads them.
    fn guard_event_names(&self) -> Vec<&'static str> {
        common::guard_events(&self.sensor, &mut ReadOnly(&self.control))
            .into_iter()
            .map(|e| event_kind_name(e.kind))
            .collect()
    }

    fn into_store(self) -> Mem {
        self.control.guard().map(|g| g.store().clone()).unwrap()
    }
}

/// The control plane seen read-only (events were already forwarded after each operation).
struct ReadOnly<'a>(&'a Control<Mem>);

impl ControlPlane for ReadOnly<'_> {
    fn stage(&mut self, _: &[u8], _: bool, _: u64, _: &mut dyn FnMut(Content)) -> OutcomeBuf {
        OutcomeBuf::new(false, 0, "read-only")
    }
    fn revert(&mut self, _: u64, _: &mut dyn FnMut(Content)) -> OutcomeBuf {
        OutcomeBuf::new(false, 0, "read-only")
    }
    fn confirm_healthy(&mut self, _: u64) -> OutcomeBuf {
        OutcomeBuf::new(false, 0, "read-only")
    }
    fn guard_status(&self) -> GuardStatus {
        self.0.guard_status()
    }
    fn running_source(&self) -> ContentSource {
        self.0.running_source()
    }
    fn take_events(&mut self, _: &mut dyn FnMut(GuardEventRecord)) {}
}

#[test]
fn first_boot_runs_nothing_then_a_staged_pack_runs_at_once() {
    let mut m = boot(Mem::default(), 1);
    assert!(matches!(m.decision, Some(Decision::NoContent { .. })));
    assert!(!m.detects("mimikatz"));
    let (ok, msg) = m.stage(&envelope(1, "mimikatz"));
    assert!(ok, "{msg}");
    assert!(msg.contains("version 1"), "{msg}");
    assert!(m.detects("MIMIKATZ.exe sekurlsa"));
    assert_eq!(m.control.running_source(), ContentSource::Candidate);
    let names = m.guard_event_names();
    assert!(names.contains(&"staged"), "{names:?}");
}

#[test]
fn refused_packs_leave_the_running_content_alone_and_say_why() {
    let mut m = boot(Mem::default(), 1);
    assert!(m.stage(&envelope(5, "mimikatz")).0);
    let mut tampered = envelope(6, "procdump");
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let (ok, msg) = m.stage(&tampered);
    assert!(!ok);
    assert!(msg.contains("signature"), "{msg}");
    let (ok, msg) = m.stage(&envelope(4, "procdump"));
    assert!(!ok);
    assert!(
        msg.contains('4') && msg.contains('5'),
        "a downgrade must name both versions: {msg}"
    );
    assert!(m.detects("mimikatz"), "still the old content");
    assert!(!m.detects("procdump"));
    assert!(m.guard_event_names().contains(&"refused"));
}

#[test]
fn a_blessed_candidate_is_last_known_good_at_the_next_boot() {
    let mut m = boot(Mem::default(), 1);
    assert!(m.stage(&envelope(1, "mimikatz")).0);
    let o = m.control.confirm_healthy(10);
    assert!(o.accepted, "{}", o.message());
    assert_eq!(m.control.running_source(), ContentSource::LastKnownGood);
    let m = boot(m.into_store(), 20);
    assert!(
        matches!(m.decision, Some(Decision::Lkg { .. })),
        "{:?}",
        m.decision
    );
    assert!(m.detects("mimikatz"));
}

/// An outcome request through the protocol handler: accepted, code, message.
fn outcome(m: &mut Machine, req: bulwark_protocol::Request<'_>) -> (bool, u16, String) {
    let op = req.op();
    let reply = common::request(&m.sensor, &mut m.control, req, 30);
    m.sensor.forward_guard_events(&mut m.control);
    let o = bulwark_protocol::Outcome::parse(op, &reply).unwrap();
    (o.accepted, o.code, o.message.to_owned())
}

#[test]
fn a_pack_staged_for_the_next_boot_runs_only_from_the_next_boot() {
    use bulwark_protocol::Request;
    let mut m = boot(Mem::default(), 1);
    assert!(m.stage(&envelope(1, "mimikatz")).0);
    assert!(m.control.confirm_healthy(10).accepted);
    let env = envelope(2, "rubeus");
    let (ok, code, msg) = outcome(&mut m, Request::StageNextBoot { envelope: &env });
    assert!(ok, "{code} {msg}");
    assert!(
        msg.contains("staged as the candidate for the next boot"),
        "{msg}"
    );
    // Still version 1 running, the candidate staged.
    assert_eq!(m.sensor.content_status().version, 1);
    assert!(m.detects("mimikatz") && !m.detects("rubeus"));
    let g = m.control.guard_status();
    assert!(g.candidate_staged);
    assert_eq!(g.candidate_version, 2);
    let m = boot(m.into_store(), 40);
    assert!(
        matches!(m.decision, Some(Decision::Candidate { .. })),
        "{:?}",
        m.decision
    );
    assert!(m.detects("rubeus"));
}

#[test]
fn a_revert_request_runs_last_known_good_and_the_candidate_never_again() {
    use bulwark_protocol::Request;
    let mut m = boot(Mem::default(), 1);
    // Nothing to revert yet.
    let (ok, code, msg) = outcome(&mut m, Request::Revert);
    assert!(!ok);
    assert_eq!(code, 211, "{msg}");
    assert!(m.stage(&envelope(1, "mimikatz")).0);
    // A candidate but no last-known-good.
    let (ok, code, msg) = outcome(&mut m, Request::Revert);
    assert!(!ok);
    assert_eq!(code, 212, "{msg}");
    assert_eq!(m.sensor.content_status().version, 1);
    assert!(m.control.confirm_healthy(10).accepted);
    assert!(m.stage(&envelope(2, "rubeus")).0);
    assert!(m.detects("rubeus"));
    let (ok, code, msg) = outcome(&mut m, Request::Revert);
    assert!(ok, "{code} {msg}");
    assert_eq!(
        msg,
        "content version 2 is quarantined; last-known-good version 1 is running"
    );
    assert_eq!(m.sensor.content_status().version, 1);
    assert_eq!(m.control.running_source(), ContentSource::LastKnownGood);
    assert!(m.detects("mimikatz") && !m.detects("rubeus"));
    let names = m.guard_event_names();
    assert!(names.ends_with(&["quarantined", "reverted"]), "{names:?}");
    // At the next boot, and after, last-known-good; version 2 is refused if offered again.
    let mut m = boot(m.into_store(), 50);
    assert!(
        matches!(m.decision, Some(Decision::Lkg { .. })),
        "{:?}",
        m.decision
    );
    let (ok, msg) = m.stage(&envelope(2, "rubeus"));
    assert!(!ok);
    assert!(msg.contains("quarantine"), "{msg}");
}

#[test]
fn the_stable_period_blesses_through_tick() {
    let mut m = boot(Mem::default(), 1);
    assert!(m.stage(&envelope(1, "mimikatz")).0);
    assert_eq!(m.control.tick(30, 2), None);
    let blessed = m.control.tick(30, 3);
    assert_eq!(blessed.map(|c| c.version), Some(1));
    assert_eq!(m.control.running_source(), ContentSource::LastKnownGood);
}

#[test]
fn a_candidate_that_crashes_the_machine_is_quarantined_after_n_boots() {
    // Good content 1 becomes last-known-good; bad content 2 is staged and crashes every boot.
    let mut m = boot(Mem::default(), 1);
    assert!(m.stage(&envelope(1, "mimikatz")).0);
    assert!(m.control.confirm_healthy(2).accepted);
    assert!(m.stage(&envelope(2, "procdump")).0);
    let mut store = m.into_store(); // crash: no clean shutdown

    let mut candidate_boots = 0;
    let mut reverted = false;
    for reboot in 0..10 {
        let m = boot(store, 100 + reboot);
        match m.decision {
            Some(Decision::Candidate { .. }) => {
                candidate_boots += 1;
                assert!(m.detects("procdump"));
                store = m.into_store(); // crashes again
            }
            Some(Decision::Lkg { .. }) => {
                assert!(m.detects("mimikatz"), "last-known-good runs");
                assert!(!m.detects("procdump"));
                let names = m.guard_event_names();
                assert!(names.contains(&"quarantined"), "{names:?}");
                store = m.into_store();
                reverted = true;
                break;
            }
            other => panic!("unexpected decision {other:?}"),
        }
    }
    assert!(reverted);
    // The hot update's own run was attempt 1: at most N - 1 further candidate boots.
    assert!(candidate_boots <= 2, "{candidate_boots} candidate boots");
    let mut m = boot(store, 200);
    assert!(matches!(m.decision, Some(Decision::Lkg { .. })));
    let (ok, msg) = m.stage(&envelope(2, "procdump"));
    assert!(!ok, "a quarantined pack delivered again is refused");
    assert!(msg.contains("quarantine"), "{msg}");
}

#[test]
fn clean_shutdowns_are_not_crashes() {
    let mut m = boot(Mem::default(), 1);
    assert!(m.stage(&envelope(1, "mimikatz")).0);
    m.control.clean_shutdown(2);
    let mut store = m.into_store();
    for reboot in 0..10 {
        let mut m = boot(store, 10 + reboot);
        assert!(
            matches!(m.decision, Some(Decision::Candidate { .. })),
            "reboot {reboot}: {:?}",
            m.decision
        );
        m.control.clean_shutdown(11 + reboot);
        store = m.into_store();
    }
}

#[test]
fn unusable_records_mean_no_content_and_a_clear_refusal() {
    let store = Mem {
        records: [vec![0xFF; 64], vec![0xAB; 64]],
        ..Mem::default()
    };
    let sensor = Sensor::new(Capacities::default(), 1, 1).unwrap();
    let (mut control, start) = Control::start(store, config(), keys(), 1);
    assert!(start.content.is_none());
    let e = start.error.expect("both slots are garbage");
    assert!(e.to_string().contains("slot A"), "{e}");
    let o = control.stage(&envelope(1, "x"), true, 2, &mut |c| {
        sensor.install(c, &mut || {})
    });
    assert!(!o.accepted);
    assert!(o.message().contains("unusable"), "{}", o.message());
}

/// The guard's records lost to damage or tampering (slot B, the newest, damaged; slot A erased):
/// no content runs, every stage is refused at every start, until an administrator's reset request
/// re-creates the records with a floor; then content above the floor stages and runs, and content
/// at or below it is a downgrade.
#[test]
fn lost_records_refuse_content_until_an_administrator_resets_them() {
    let mut m = boot(Mem::default(), 1);
    assert!(m.stage(&envelope(2, "mimikatz")).0);
    assert!(m.control.confirm_healthy(2).accepted);
    let mut store = m.into_store();
    // Sequence 1 (boot) in A, 2 (stage) in B, 3 (blessing) in A.
    store.records[0][1000] ^= 4;
    store.records[1].clear();
    let lost = store.clone();

    let start_lost = |store: Mem, now: u64| {
        let sensor = Sensor::new(Capacities::default(), now, 1).unwrap();
        let (control, start) = Control::start(store, config(), keys(), now);
        assert!(start.content.is_none(), "no content runs");
        let e = start.error.expect("the records are lost");
        let msg = e.to_string();
        assert!(
            msg.starts_with("guard records lost: slot A: record checksum mismatch")
                && msg.contains("slot B: missing"),
            "{msg}"
        );
        assert!(!msg.contains("other slot"), "{msg}");
        Machine {
            sensor,
            control,
            decision: start.decision,
        }
    };
    let stage = |m: &mut Machine, bytes: &[u8], now: u64| {
        let sensor = &m.sensor;
        let o = m
            .control
            .stage(bytes, true, now, &mut |c| sensor.install(c, &mut || {}));
        m.sensor.forward_guard_events(&mut m.control);
        (o.accepted, o.code, o.message().to_owned())
    };

    // Refused now and after a restart: nothing is written while the records are lost.
    for now in [10, 20] {
        let mut m = start_lost(lost.clone(), now);
        let (ok, code, msg) = stage(&mut m, &envelope(3, "procdump"), now);
        assert!(!ok);
        assert_eq!(code, 220);
        assert!(
            msg.contains("both slots lost (slot A: bad checksum, slot B: missing)")
                && msg.contains("reset request"),
            "{msg}"
        );
        assert!(!m.detects("procdump"));
        assert!(!m.control.confirm_healthy(now).accepted);
    }

    let mut m = start_lost(lost, 30);
    // A malformed request or one for another channel: refused, still lost.
    let mut bad = ResetRequest {
        channel: CHANNEL + 1,
        floor: 2,
    }
    .encode();
    let (ok, code, msg) = stage(&mut m, &bad, 31);
    assert!(!ok && code == 232, "{code} {msg}");
    bad[8] = CHANNEL as u8;
    bad[6] = 1;
    let (ok, code, msg) = stage(&mut m, &bad, 31);
    assert!(!ok && code == 232 && msg.contains("flags"), "{code} {msg}");
    assert!(!stage(&mut m, &envelope(3, "procdump"), 32).0);

    // The administrator's reset: floor 2.
    let request = ResetRequest {
        channel: CHANNEL,
        floor: 2,
    }
    .encode();
    let (ok, code, msg) = stage(&mut m, &request, 33);
    assert!(ok, "{code} {msg}");
    assert!(msg.contains("floor 2"), "{msg}");
    assert!(m.guard_event_names().contains(&"records-reset"));
    assert!(!m.detects("mimikatz"), "nothing runs after a reset");
    // At the floor: a downgrade. Above it: staged and running.
    let (ok, code, msg) = stage(&mut m, &envelope(2, "mimikatz"), 34);
    assert!(!ok && code == 122, "{code} {msg}");
    let (ok, _, msg) = stage(&mut m, &envelope(3, "procdump"), 35);
    assert!(ok, "{msg}");
    assert!(m.detects("procdump"));
    // A second reset request: the records are usable now, so it is refused.
    let (ok, code, msg) = stage(&mut m, &request, 36);
    assert!(!ok && code == 230, "{code} {msg}");
    assert!(msg.contains("usable"), "{msg}");
    // And the next start is a normal one.
    let m = boot(m.into_store(), 40);
    assert!(
        matches!(m.decision, Some(Decision::Candidate { .. })),
        "{:?}",
        m.decision
    );
}
