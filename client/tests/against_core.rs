//! The client against the driver core's own protocol handler: the same bytes the driver would see.
#![allow(clippy::unwrap_used)]

use bulwark_client::{Client, ClientError, Transport};
use bulwark_driver_core::content::Content;
use bulwark_driver_core::events::ProcessCreateFacts;
use bulwark_driver_core::sensor::{Capacities, ControlPlane, OutcomeBuf, Sensor};
use bulwark_interpreter::build::{Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::{verify, Action, Case, EventType, Level, StrOp};
use bulwark_protocol::{ContentSource, GuardEventRecord, GuardStatus};

/// A control plane that admits any pack the verifier accepts (signatures and the guard are tested
/// with the real control plane in the driver core's tests).
struct VerifyOnly {
    staged: u64,
    /// The staged pack has been confirmed healthy (the guard's last-known-good).
    blessed: bool,
}

impl ControlPlane for VerifyOnly {
    fn stage(
        &mut self,
        envelope: &[u8],
        hot: bool,
        _now: u64,
        swap: &mut dyn FnMut(Content),
    ) -> OutcomeBuf {
        match verify(envelope) {
            Ok(_) if !hot => OutcomeBuf::new(true, 0, "staged for the next boot"),
            Ok(pack) => {
                self.staged += 1;
                self.blessed = false;
                swap(Content {
                    hash: pack.content_hash(),
                    pack,
                    channel: 1,
                    version: self.staged,
                    source: ContentSource::Candidate,
                });
                OutcomeBuf::new(true, 0, "staged")
            }
            Err(e) => OutcomeBuf::format(false, 7, format_args!("rejected: {e}")),
        }
    }
    fn confirm_healthy(&mut self, _now: u64) -> OutcomeBuf {
        if self.staged > 0 && !self.blessed {
            self.blessed = true;
            return OutcomeBuf::new(true, 0, "blessed");
        }
        OutcomeBuf::new(false, 3, "no candidate to bless")
    }
    fn revert(&mut self, _now: u64, _swap: &mut dyn FnMut(Content)) -> OutcomeBuf {
        OutcomeBuf::new(false, 212, "no last-known-good content to go back to")
    }
    fn running_source(&self) -> ContentSource {
        if self.blessed {
            ContentSource::LastKnownGood
        } else {
            ContentSource::Candidate
        }
    }
    fn take_events(&mut self, _sink: &mut dyn FnMut(GuardEventRecord)) {}
    fn guard_status(&self) -> GuardStatus {
        GuardStatus {
            threshold: 3,
            ..GuardStatus::default()
        }
    }
}

struct InProcess {
    sensor: Sensor,
    control: VerifyOnly,
}

impl Transport for &mut InProcess {
    fn ioctl(&mut self, ioctl: u32, input: &[u8], output: &mut [u8]) -> Result<usize, ClientError> {
        self.sensor
            .handle_ioctl(ioctl, input, output, &mut self.control, 42, &mut || {})
            .map_err(|e| ClientError::Driver(e.to_string()))
    }
}

fn pack(action: Action) -> Vec<u8> {
    let mut b = PackBuilder::new();
    b.rule(RuleSpec {
        event_type: EventType::ProcessCreation,
        id: "9f1c0a52-0000-4000-8000-000000000001".into(),
        title: "Whoami".into(),
        author: "Bulwark tests".into(),
        level: Level::Medium,
        action,
        tags: vec![],
        expr: Expr::Pred(Pred::Str {
            field: 1,
            op: StrOp::Contains,
            case: Case::Insensitive,
            value: "whoami".into(),
        }),
    })
    .unwrap();
    b.finish()
}

fn spawn(sensor: &Sensor, pid: u32, cmd: &str) -> bool {
    let image: Vec<u16> = "\\??\\C:\\Windows\\System32\\cmd.exe"
        .encode_utf16()
        .collect();
    let cmd: Vec<u16> = cmd.encode_utf16().collect();
    sensor
        .on_process_create(
            &ProcessCreateFacts {
                process_id: pid,
                create_time: u64::from(pid),
                parent_process_id: 4,
                parent_create_time: None,
                image_file_name: Some(&image),
                command_line: Some(&cmd),
                user: None,
                integrity: None,
                logon_id: None,
                session_id: None,
            },
            1000 + u64::from(pid),
        )
        .block
}

#[test]
fn status_stage_detect_block_and_read() {
    let mut dev = InProcess {
        sensor: Sensor::new(
            Capacities {
                detections: 4,
                ..Capacities::default()
            },
            1,
            0x0001_0000,
        )
        .unwrap(),
        control: VerifyOnly {
            staged: 0,
            blessed: false,
        },
    };
    let mut client = Client::new(&mut dev);
    let s = client.status().unwrap();
    assert_eq!(s.content.source, ContentSource::None);
    assert_eq!(s.schema_hash, bulwark_interpreter::schema_hash());
    assert_eq!(s.guard.threshold, 3);

    // A rejected pack leaves nothing running, and says why.
    let mut bad = pack(Action::Alert);
    bad[0] ^= 1;
    let a = client.stage(&bad).unwrap();
    assert!(!a.accepted);
    assert!(a.message.contains("rejected"), "{}", a.message);
    assert_eq!(client.status().unwrap().content.source, ContentSource::None);

    assert!(client.stage(&pack(Action::Block)).unwrap().accepted);
    let s = client.status().unwrap();
    assert_eq!(s.content.source, ContentSource::Candidate);
    assert_eq!(s.content.rules, 1);

    // New content alerts only, until it is confirmed healthy.
    assert!(!spawn(&dev.sensor, 96, "cmd.exe /c whoami"));
    let mut client = Client::new(&mut dev);
    assert!(client.confirm_healthy().unwrap().accepted);
    assert_eq!(
        client.status().unwrap().content.source,
        ContentSource::LastKnownGood
    );

    assert!(spawn(&dev.sensor, 100, "cmd.exe /c WHOAMI /all"));
    assert!(!spawn(&dev.sensor, 104, "cmd.exe /c dir"));
    for pid in 0..5 {
        spawn(&dev.sensor, 200 + pid * 4, "whoami");
    }

    let mut client = Client::new(&mut dev);
    let d = client.read_detections(256).unwrap();
    assert_eq!(d.records.len(), 4, "the ring holds 4");
    assert_eq!(d.dropped_total, 3);
    let unblessed = &d.records[0];
    assert_eq!((unblessed.seq, unblessed.process_id), (1, 96));
    assert!(!unblessed.blocked);
    assert_eq!(unblessed.action, Action::Block as u8);
    let first = &d.records[1];
    assert_eq!(first.seq, 2);
    assert!(first.blocked);
    assert_eq!(first.process_id, 100);
    assert_eq!(first.image, "C:\\Windows\\System32\\cmd.exe");
    assert_eq!(first.content_version, 1);
    assert_eq!(first.time, 1100);
    assert!(client.read_detections(10).unwrap().records.is_empty());

    let s = client.status().unwrap();
    assert_eq!(s.counters.events[0], 8);
    assert_eq!(s.counters.detections, 7);
    assert_eq!(s.counters.blocked, 6);
    assert_eq!(s.counters.blocks_spared, 1);
    assert_eq!(s.counters.detections_dropped, 3);
    assert_eq!(s.counters.eval_errors, 0);

    let a = client.confirm_healthy().unwrap();
    assert!(!a.accepted);
    assert_eq!(a.message, "no candidate to bless");
    // The next-boot stage and the revert reach the control plane as their own requests.
    let a = client.stage_next_boot(&pack(Action::Alert)).unwrap();
    assert!(a.accepted);
    assert_eq!(a.message, "staged for the next boot");
    assert_eq!(client.status().unwrap().content.version, 1);
    let a = client.revert().unwrap();
    assert!(!a.accepted);
    assert_eq!(
        (a.code, a.message.as_str()),
        (212, "no last-known-good content to go back to")
    );
}

#[test]
fn guard_events_reach_the_client_in_order() {
    let mut dev = InProcess {
        sensor: Sensor::new(Capacities::default(), 1, 1).unwrap(),
        control: VerifyOnly {
            staged: 0,
            blessed: false,
        },
    };
    for kind in 1..=70u16 {
        dev.sensor.report_guard_event(GuardEventRecord {
            seq: 0,
            time: u64::from(kind),
            kind,
            attempts: 1,
            detail: 0,
            version: 9,
            hash: [kind as u8; 32],
        });
    }
    let mut client = Client::new(&mut dev);
    let first = client.read_guard_events(1000).unwrap();
    assert_eq!(first.records.len(), 64, "capped at the per-read limit");
    let rest = client.read_guard_events(64).unwrap();
    assert_eq!(rest.records.len(), 6);
    let kinds: Vec<u16> = first
        .records
        .iter()
        .chain(&rest.records)
        .map(|r| r.kind)
        .collect();
    assert_eq!(kinds, (1..=70).collect::<Vec<_>>());
    assert_eq!(rest.records.last().unwrap().seq, 70);
}

#[test]
fn a_too_small_output_buffer_takes_nothing() {
    let mut dev = InProcess {
        sensor: Sensor::new(Capacities::default(), 1, 1).unwrap(),
        control: VerifyOnly {
            staged: 0,
            blessed: false,
        },
    };
    dev.sensor.report_guard_event(GuardEventRecord {
        seq: 0,
        time: 1,
        kind: 1,
        attempts: 0,
        detail: 0,
        version: 0,
        hash: [0; 32],
    });
    let req = bulwark_protocol::Request::ReadGuardEvents { max: 1 };
    let mut input = vec![0u8; req.encoded_len()];
    req.encode(&mut input).unwrap();
    let mut small = [0u8; 40];
    let e = dev
        .sensor
        .handle_ioctl(
            req.op().ioctl(),
            &input,
            &mut small,
            &mut dev.control,
            0,
            &mut || {},
        )
        .unwrap_err();
    assert!(matches!(
        e,
        bulwark_protocol::ProtocolError::OutputTooSmall { .. }
    ));
    // the event is still there
    let mut client = Client::new(&mut dev);
    assert_eq!(client.read_guard_events(1).unwrap().records.len(), 1);
}

#[test]
fn a_detection_carries_the_events_command_line_user_and_parent_cut_on_char_boundaries() {
    use bulwark_driver_core::identity::Sid;
    let mut dev = InProcess {
        sensor: Sensor::new(Capacities::default(), 1, 1).unwrap(),
        control: VerifyOnly {
            staged: 0,
            blessed: false,
        },
    };
    let mut client = Client::new(&mut dev);
    assert!(client.stage(&pack(Action::Alert)).unwrap().accepted);
    // The parent, then the child: its ParentImage comes from the process table.
    let explorer: Vec<u16> = "\\??\\C:\\Windows\\explorer.exe".encode_utf16().collect();
    let cmd_exe: Vec<u16> = "\\??\\C:\\Windows\\System32\\cmd.exe"
        .encode_utf16()
        .collect();
    let facts = |pid: u32, ppid: u32, image: &[u16], cmd: &[u16]| {
        let image: Vec<u16> = image.to_vec();
        let cmd: Vec<u16> = cmd.to_vec();
        (pid, ppid, image, cmd)
    };
    let system = [18u32];
    let sid = Sid {
        revision: 1,
        authority: [0, 0, 0, 0, 0, 5],
        sub_authorities: &system,
    };
    // A command line longer than the record keeps, with a two-byte character on the cut.
    let long = format!("whoami {}", "é".repeat(400));
    for (pid, ppid, image, cmd) in [
        facts(
            8,
            4,
            &explorer,
            &"explorer.exe".encode_utf16().collect::<Vec<_>>(),
        ),
        facts(12, 8, &cmd_exe, &long.encode_utf16().collect::<Vec<_>>()),
    ] {
        dev.sensor.on_process_create(
            &ProcessCreateFacts {
                process_id: pid,
                create_time: u64::from(pid),
                parent_process_id: ppid,
                parent_create_time: (ppid == 8).then_some(8),
                image_file_name: Some(&image),
                command_line: Some(&cmd),
                user: Some(sid),
                integrity: None,
                logon_id: None,
                session_id: None,
            },
            2000,
        );
    }
    let mut client = Client::new(&mut dev);
    let d = client.read_detections(16).unwrap();
    assert_eq!(d.records.len(), 1);
    let r = &d.records[0];
    assert_eq!(r.process_id, 12);
    assert_eq!(r.image, "C:\\Windows\\System32\\cmd.exe");
    assert_eq!(r.user, "NT AUTHORITY\\SYSTEM");
    assert_eq!(r.parent_image, "C:\\Windows\\explorer.exe");
    assert!(long.starts_with(&r.command_line));
    assert!(r.command_line.len() <= bulwark_protocol::limits::DETECTION_COMMAND_LINE_BYTES);
    assert!(r.command_line.len() >= bulwark_protocol::limits::DETECTION_COMMAND_LINE_BYTES - 1);
    assert_eq!(r.truncated, ["command_line"]);
    assert_eq!(r.hashes, "");
}
