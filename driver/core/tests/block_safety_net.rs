//! A `block` rule that matches every process creation cannot make a machine unusable: the
//! processes the system needs are never blocked, new content only alerts until it is blessed, and
//! a rule that blocks too many processes too fast is demoted to `alert` until the next content
//! update, with a guard event user mode reads.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod common;

use bulwark_driver_core::blocking::{BlockPolicy, SYSTEM32_PROTECTED};
use bulwark_driver_core::content::Content;
use bulwark_driver_core::control::event_kind_name;
use bulwark_driver_core::events::ProcessCreateFacts;
use bulwark_driver_core::sensor::{Capacities, ControlPlane, OutcomeBuf, Sensor};
use bulwark_interpreter::build::{Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::{verify, Action, Case, EventType, Level, StrOp};
use bulwark_protocol::{ContentSource, GuardEventRecord, GuardStatus};

const SEC: u64 = 10_000_000;

/// A control plane whose only state is what the guard says the running content is.
struct Guard {
    running: ContentSource,
}

impl ControlPlane for Guard {
    fn stage(&mut self, _: &[u8], _: bool, _: u64, _: &mut dyn FnMut(Content)) -> OutcomeBuf {
        OutcomeBuf::new(false, 0, "no")
    }
    fn revert(&mut self, _: u64, _: &mut dyn FnMut(Content)) -> OutcomeBuf {
        OutcomeBuf::new(false, 0, "no")
    }
    fn confirm_healthy(&mut self, _: u64) -> OutcomeBuf {
        self.running = ContentSource::LastKnownGood;
        OutcomeBuf::new(true, 0, "blessed")
    }
    fn guard_status(&self) -> GuardStatus {
        GuardStatus::default()
    }
    fn running_source(&self) -> ContentSource {
        self.running
    }
    fn take_events(&mut self, _: &mut dyn FnMut(GuardEventRecord)) {}
}

/// Rule 0 alerts on `whoami`; rule 1 blocks every process with an image (`\` in it).
fn block_everything(version: u64, source: ContentSource) -> Content {
    let image = EventType::ProcessCreation
        .field_by_name("Image")
        .unwrap()
        .index;
    let command_line = EventType::ProcessCreation
        .field_by_name("CommandLine")
        .unwrap()
        .index;
    let mut b = PackBuilder::new();
    for (id, action, field, needle) in [
        ("whoami", Action::Alert, command_line, "whoami"),
        ("everything", Action::Block, image, "\\"),
    ] {
        b.rule(RuleSpec {
            event_type: EventType::ProcessCreation,
            id: id.into(),
            title: id.into(),
            author: "Bulwark tests".into(),
            level: Level::High,
            action,
            tags: vec![],
            expr: Expr::Pred(Pred::Str {
                field,
                op: StrOp::Contains,
                case: Case::Insensitive,
                value: needle.into(),
            }),
        })
        .unwrap();
    }
    Content {
        pack: verify(&b.finish()).unwrap(),
        channel: 1,
        version,
        hash: [version as u8; 32],
        source,
    }
}

fn sensor(policy: BlockPolicy) -> Sensor {
    Sensor::new(
        Capacities {
            block_policy: policy,
            ..Capacities::default()
        },
        1,
        1,
    )
    .unwrap()
}

/// Whether the sensor denies `C:\...` image `image` (a `\??\` NT path is made of it).
fn spawn(sensor: &Sensor, pid: u32, image: &str, now: u64) -> bool {
    let nt: Vec<u16> = format!("\\??\\{image}").encode_utf16().collect();
    let cmd: Vec<u16> = image.encode_utf16().collect();
    sensor
        .on_process_create(
            &ProcessCreateFacts {
                process_id: pid,
                create_time: now,
                parent_process_id: 4,
                parent_create_time: None,
                image_file_name: Some(&nt),
                command_line: Some(&cmd),
                user: None,
                integrity: None,
                logon_id: None,
                session_id: None,
            },
            now,
        )
        .block
}

fn detections(sensor: &Sensor, control: &mut dyn ControlPlane) -> Vec<(u32, u8, bool)> {
    let reply = common::request(
        sensor,
        control,
        bulwark_protocol::Request::ReadDetections { max: 256 },
        0,
    );
    bulwark_protocol::parse_detections(&reply)
        .unwrap()
        .records
        .map(|d| (d.rule_index, d.action, d.blocked))
        .collect()
}

#[test]
fn new_content_only_alerts_until_it_is_blessed() {
    let s = sensor(BlockPolicy::default());
    let mut guard = Guard {
        running: ContentSource::Candidate,
    };
    s.install(block_everything(5, ContentSource::Candidate), &mut || {});
    s.forward_guard_events(&mut guard);
    for pid in 0..30 {
        assert!(
            !spawn(&s, 100 + pid, "C:\\Users\\bob\\app.exe", SEC),
            "an unblessed candidate blocked"
        );
    }
    let c = s.counters();
    assert_eq!((c.blocked, c.blocks_spared, c.detections), (0, 30, 30));
    let d = detections(&s, &mut guard);
    assert_eq!(d.len(), 30);
    assert!(
        d.iter()
            .all(|&(rule, action, blocked)| rule == 1 && action == Action::Block as u8 && !blocked),
        "{d:?}"
    );

    // The service confirms a healthy boot; the guard makes the candidate last-known-good.
    common::request(
        &s,
        &mut guard,
        bulwark_protocol::Request::ConfirmHealthy,
        2 * SEC,
    );
    assert!(spawn(&s, 200, "C:\\Users\\bob\\app.exe", 3 * SEC));
    // A masquerade outside System32 is not protected.
    assert!(spawn(&s, 204, "C:\\Users\\Public\\lsass.exe", 3 * SEC));
    assert_eq!(s.counters().blocked, 2);

    // The next candidate is not blessed by its predecessor's blessing.
    guard.running = ContentSource::Candidate;
    s.install(block_everything(6, ContentSource::Candidate), &mut || {});
    s.forward_guard_events(&mut guard);
    assert!(!spawn(&s, 208, "C:\\Users\\bob\\app.exe", 4 * SEC));
}

#[test]
fn a_boot_time_storm_is_stopped_and_the_system_boots() {
    let s = sensor(BlockPolicy::default());
    let mut guard = Guard {
        running: ContentSource::LastKnownGood,
    };
    // Last-known-good content at start-up: blessed, so its blocks are carried out.
    s.install(
        block_everything(9, ContentSource::LastKnownGood),
        &mut || {},
    );
    s.forward_guard_events(&mut guard);

    // A boot: the system's processes in order, each followed by the programs a logon starts,
    // one every 200 ms.
    let system: Vec<String> = SYSTEM32_PROTECTED
        .iter()
        .map(|n| format!("C:\\Windows\\System32\\{n}"))
        .chain([
            "C:\\Windows\\explorer.exe".to_string(),
            "C:\\Program Files\\Bulwark\\bulwark-service.exe".to_string(),
        ])
        .collect();
    let mut now = 10 * SEC;
    let mut pid = 1000;
    let (mut system_blocked, mut apps_blocked, mut apps_run) = (0, 0, 0);
    for round in 0..5 {
        for image in &system {
            now += SEC / 5;
            pid += 4;
            system_blocked += u32::from(spawn(&s, pid, image, now));
        }
        for app in 0..10 {
            now += SEC / 5;
            pid += 4;
            let image = format!("C:\\Program Files\\App{round}\\app{app}.exe");
            if spawn(&s, pid, &image, now) {
                apps_blocked += 1;
            } else {
                apps_run += 1;
            }
        }
    }
    assert!(now < 70 * SEC, "the boot fits in one storm window");
    assert_eq!(system_blocked, 0, "a process the system needs was blocked");
    let limit = BlockPolicy::default().storm_limit;
    assert_eq!(
        apps_blocked, limit,
        "blocked until the storm limit, then demoted"
    );
    assert_eq!(apps_run, 50 - limit);

    let c = s.counters();
    assert_eq!(c.blocked, u64::from(limit));
    assert_eq!(c.rules_demoted, 1);
    assert_eq!(
        c.blocks_spared,
        5 * system.len() as u64 + u64::from(50 - limit)
    );
    // Every match is still a detection.
    assert_eq!(c.detections, 5 * system.len() as u64 + 50);

    let events = common::guard_events(&s, &mut guard);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(event_kind_name(e.kind), "block-demoted");
    assert_eq!((e.detail, e.version, e.hash), (1, 9, [9; 32]));

    // Demoted until the next content update, however long it waits.
    assert!(!spawn(
        &s,
        9000,
        "C:\\Users\\bob\\app.exe",
        now + 3600 * SEC
    ));
    assert_eq!(s.counters().rules_demoted, 1);
    s.install(
        block_everything(10, ContentSource::LastKnownGood),
        &mut || {},
    );
    s.forward_guard_events(&mut guard);
    assert!(spawn(&s, 9004, "C:\\Users\\bob\\app.exe", now + 3601 * SEC));
}

#[test]
fn the_system_root_comes_from_the_volume_map() {
    let s = sensor(BlockPolicy::default());
    let mut v = bulwark_driver_core::paths::VolumeMap::default();
    v.set_system_root("D:\\WINNT").unwrap();
    s.set_volumes(v);
    s.install(
        block_everything(3, ContentSource::LastKnownGood),
        &mut || {},
    );
    assert!(!spawn(&s, 8, "D:\\WINNT\\System32\\winlogon.exe", SEC));
    assert!(spawn(&s, 12, "C:\\Windows\\System32\\winlogon.exe", SEC));
}
