//! The control protocol as the driver sees it, against the driver's real control plane: the
//! loader and boot-count guard over an in-memory store (records and content files), trusting one
//! test key, with the sensor's detection and guard-event rings full before the first request.
//!
//! The input is a store to start from and a sequence of commands: IOCTLs (any code, any input
//! bytes, framed or raw, any output size), stage requests carrying envelopes the target signs
//! (so staging, the version rules, quarantine and the verifier are reached without the fuzzer
//! forging a signature), process creations that raise detections, guard events, the stable-period
//! timer, and reboots (clean or crashed). The seed corpus (`seed-corpus.sh`) also has a validly
//! signed envelope of a small pack inside a stage request, for mutations to start from.
//!
//! Checked: never a panic; replies never exceed the output buffer nor write past it; every reply
//! the handler returns parses with the client's parsers; records come out of each ring in strictly
//! increasing sequence order and never more than were asked for or pending; a refused stage leaves
//! the running content as it was, an accepted one runs the envelope's version.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use bulwark_driver_core::content::Content;
use bulwark_driver_core::control::Control;
use bulwark_driver_core::events::ProcessCreateFacts;
use bulwark_driver_core::sensor::{Capacities, ControlPlane, Sensor};
use bulwark_interpreter::build::{Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::{verify, Action, Case, EventType, Level, StrOp, VerifiedPack};
use bulwark_loader_boot_guard::{seal, Config, ContentId, Slot, Store, StoreError, TrustedKeys};
use bulwark_protocol::{
    parse_detections, parse_guard_events, ContentSource, GuardEventRecord, Op, Outcome,
    StatusReply, PROTOCOL_VERSION, REQUEST_HEADER_LEN, REQUEST_MAGIC,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};

/// The test signing key the target trusts; `seed-corpus.sh` signs its seed envelope with it.
const SECRET: [u8; 32] = [7; 32];
const CHANNEL: u32 = 1;
const CAPACITY: usize = 8;

/// Records and content files in memory, as the driver keeps them in its registry key and files.
#[derive(Default, Clone)]
struct Mem {
    records: [Vec<u8>; 2],
    blobs: HashMap<ContentId, Vec<u8>>,
}

impl Store for Mem {
    fn read_record(&mut self, slot: Slot, buf: &mut Vec<u8>, max: usize) -> Result2 {
        let r = &self.records[slot as usize];
        if r.len() > max {
            return Err(StoreError::TooLarge { max });
        }
        buf.clear();
        buf.extend_from_slice(r);
        Ok(())
    }
    fn write_record(&mut self, slot: Slot, bytes: &[u8]) -> Result2 {
        self.records[slot as usize] = bytes.to_vec();
        Ok(())
    }
    fn put_blob(&mut self, id: &ContentId, bytes: &[u8]) -> Result2 {
        self.blobs.insert(*id, bytes.to_vec());
        Ok(())
    }
    fn get_blob(&mut self, id: &ContentId, buf: &mut Vec<u8>, _max: usize) -> Result2 {
        let b = self.blobs.get(id).ok_or(StoreError::NotFound)?;
        buf.clear();
        buf.extend_from_slice(b);
        Ok(())
    }
    fn remove_blob(&mut self, id: &ContentId) -> Result2 {
        self.blobs.remove(id);
        Ok(())
    }
}

type Result2 = std::result::Result<(), StoreError>;

/// A small valid pack: one rule that matches every process (so detections flow), one anchored on
/// `needle` in the command line, one that blocks.
fn pack(needle: &str) -> Vec<u8> {
    let mut b = PackBuilder::new();
    let mut rule = |id: &str, action, expr| {
        b.rule(RuleSpec {
            event_type: EventType::ProcessCreation,
            id: id.into(),
            title: format!("{id} seen"),
            author: "control_request".into(),
            level: Level::High,
            action,
            tags: vec!["attack.t1059".into()],
            expr,
        })
        .expect("a valid rule");
    };
    rule("every-process", Action::Alert, Expr::Const(true));
    let has = |value: &str| {
        Expr::Pred(Pred::Str {
            field: 1,
            op: StrOp::Contains,
            case: Case::Insensitive,
            value: value.into(),
        })
    };
    rule(needle, Action::Alert, has(needle));
    rule("blocked", Action::Block, has("block-me"));
    b.finish()
}

struct Setup {
    keys: TrustedKeys,
    /// Content the harness installs directly when the guard gives none, so detections flow.
    match_all: VerifiedPack,
    /// Signed envelopes of valid packs, versions 1 to 4, and one signed by an unknown key.
    envelopes: Vec<Vec<u8>>,
    /// Stores to start from: empty; last-known-good 1; last-known-good 1 and candidate 2 that
    /// crashed once; both records damaged.
    stores: Vec<Mem>,
}

fn config() -> Config {
    Config {
        channel: CHANNEL,
        threshold: 2,
        stable_secs: 60,
    }
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let keys = TrustedKeys::new(&[bulwark_loader_boot_guard::envelope::public_key(&SECRET)])
            .expect("one key");
        let schema = bulwark_interpreter::schema_hash();
        let mut envelopes: Vec<Vec<u8>> = (1..=4u64)
            .map(|v| seal(&SECRET, CHANNEL, v, schema, &pack(&format!("needle{v}"))).expect("seal"))
            .collect();
        envelopes.push(seal(&[9; 32], CHANNEL, 5, schema, &pack("stranger")).expect("seal"));
        let match_all = verify(&pack("harness")).expect("the harness pack verifies");

        let mut stores = vec![Mem::default()];
        let (mut c, _) = Control::start(Mem::default(), config(), keys.clone(), 1);
        assert!(c.stage(&envelopes[0], true, 2, &mut |_| {}).accepted);
        assert!(c.confirm_healthy(3).accepted);
        let lkg = c.guard().expect("guard").store().clone();
        stores.push(lkg.clone());
        let (mut c, _) = Control::start(lkg, config(), keys.clone(), 4);
        assert!(c.stage(&envelopes[1], true, 5, &mut |_| {}).accepted);
        stores.push(c.guard().expect("guard").store().clone()); // crashed: no clean shutdown
        stores.push(Mem {
            records: [vec![0xFF; 64], vec![0xAB; 64]],
            ..Mem::default()
        });
        Setup {
            keys,
            match_all,
            envelopes,
            stores,
        }
    })
}

/// One boot: the control plane opens the store and decides; the sensor runs what it decides (or
/// the harness's content), with both rings filled past capacity.
struct Machine {
    sensor: Sensor,
    control: Control<Mem>,
    now: u64,
    /// Highest sequence number read from each ring (detections, guard events).
    last_seq: [u64; 2],
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

impl Machine {
    fn boot(store: Mem, now: u64) -> Machine {
        let s = setup();
        let sensor = Sensor::new(
            Capacities {
                processes: 4,
                detections: CAPACITY,
                guard_events: CAPACITY,
                ..Capacities::default()
            },
            now,
            1,
        )
        .expect("a small sensor's tables");
        let (mut control, start) = Control::start(store, config(), s.keys.clone(), now);
        match start.content {
            Some(c) => sensor.install(c, &mut || {}),
            None => sensor.install(
                Content {
                    pack: s.match_all.clone(),
                    channel: CHANNEL,
                    version: 0,
                    hash: [0; 32],
                    source: ContentSource::Candidate,
                },
                &mut || {},
            ),
        }
        sensor.forward_guard_events(&mut control);
        let m = Machine {
            sensor,
            control,
            now,
            last_seq: [0; 2],
        };
        // Full rings, and then some (drops are counted).
        for i in 0..CAPACITY + 3 {
            m.process(&format!("cmd.exe /c needle{} {i}", i % 5));
            m.sensor.report_guard_event(GuardEventRecord {
                seq: 0,
                time: now,
                kind: (i % 12) as u16,
                attempts: i as u8,
                detail: i as u32,
                version: i as u64,
                hash: [i as u8; 32],
            });
        }
        m
    }

    fn process(&self, cmd: &str) {
        let image = utf16("\\??\\C:\\Windows\\System32\\cmd.exe");
        let cmd = utf16(cmd);
        let before = self.sensor.counters().detections;
        self.sensor.on_process_create(
            &ProcessCreateFacts {
                process_id: 100,
                create_time: self.now,
                parent_process_id: 4,
                parent_create_time: None,
                image_file_name: Some(&image),
                command_line: Some(&cmd),
                user: None,
                integrity: None,
                logon_id: None,
                session_id: None,
            },
            self.now,
        );
        // The target's own packs have a rule that matches every process.
        let matches_all = self.sensor.with_pack(|p| {
            p.is_some_and(|p| {
                (0..p.rule_count()).any(|i| p.rule(i).is_some_and(|r| r.id == "every-process"))
            })
        });
        if matches_all == Some(true) {
            assert!(self.sensor.counters().detections > before, "no detection");
        }
    }

    fn store(&self) -> Mem {
        match self.control.guard() {
            Some(g) => g.store().clone(),
            None => setup().stores[3].clone(),
        }
    }

    /// Sends one IOCTL and checks the reply.
    fn ioctl(&mut self, ioctl: u32, input: &[u8], out_len: usize) {
        let version_before = self.sensor.content_status().version;
        let pending = self.sensor.counters();
        let mut output = vec![0xA5u8; out_len + 16];
        let sensor = &self.sensor;
        let result = sensor.handle_ioctl(
            ioctl,
            input,
            &mut output[..out_len],
            &mut self.control,
            self.now,
            &mut || {},
        );
        assert!(
            output[out_len..].iter().all(|&b| b == 0xA5),
            "wrote past the output buffer"
        );
        let Ok(n) = result else {
            // Refused before anything changed.
            assert_eq!(self.sensor.content_status().version, version_before);
            return;
        };
        assert!(
            n <= out_len,
            "reply of {n} bytes in a {out_len}-byte buffer"
        );
        let reply = &output[..n];
        let op = Op::from_ioctl(ioctl).expect("only known codes are answered");
        match op {
            Op::Status => {
                StatusReply::parse(reply).expect("status reply parses");
            }
            Op::ReadDetections => {
                let list = parse_detections(reply).expect("detections parse");
                let mut count = 0;
                for r in list.records {
                    assert!(r.seq > self.last_seq[0], "detections out of order");
                    self.last_seq[0] = r.seq;
                    count += 1;
                }
                assert!(count as u32 <= pending.detections_pending);
                assert!(count <= CAPACITY);
            }
            Op::ReadGuardEvents => {
                let list = parse_guard_events(reply).expect("guard events parse");
                let mut count = 0;
                for r in list.records {
                    assert!(r.seq > self.last_seq[1], "guard events out of order");
                    self.last_seq[1] = r.seq;
                    count += 1;
                }
                assert!(count as u32 <= pending.guard_events_pending);
                assert!(count <= CAPACITY);
            }
            Op::StageNextBoot => {
                Outcome::parse(op, reply).expect("outcome parses");
                // Accepted or not, nothing else runs until the next boot.
                assert_eq!(
                    self.sensor.content_status().version,
                    version_before,
                    "staged for the next boot, but the content changed"
                );
            }
            Op::Revert => {
                let o = Outcome::parse(op, reply).expect("outcome parses");
                if o.accepted {
                    assert_eq!(self.control.running_source(), ContentSource::LastKnownGood);
                } else {
                    assert_eq!(self.sensor.content_status().version, version_before);
                }
            }
            Op::StagePack | Op::ConfirmHealthy => {
                let o = Outcome::parse(op, reply).expect("outcome parses");
                let version = self.sensor.content_status().version;
                if op == Op::StagePack && o.accepted {
                    // The envelope's version (header bytes 12..20 of the stage body) runs now.
                    let body = &input[REQUEST_HEADER_LEN..];
                    let staged = u64::from_le_bytes(body[12..20].try_into().expect("8 bytes"));
                    assert_eq!(version, staged, "accepted, but another version runs");
                    assert_eq!(self.control.running_source(), ContentSource::Candidate);
                } else {
                    assert_eq!(version, version_before, "refused, but the content changed");
                }
            }
        }
    }
}

/// A request with a correct header around `body`.
fn framed(op: Op, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + body.len());
    v.extend_from_slice(&REQUEST_MAGIC.to_le_bytes());
    v.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    v.extend_from_slice(&(op as u16).to_le_bytes());
    v.extend_from_slice(&(body.len() as u32).to_le_bytes());
    v.extend_from_slice(body);
    v
}

fn bytes<'a>(u: &mut Unstructured<'a>) -> Result<&'a [u8]> {
    let len = usize::from(u.arbitrary::<u16>()?).min(u.len());
    u.bytes(len)
}

fn run(u: &mut Unstructured) -> Result<()> {
    let s = setup();
    let start = usize::from(u.arbitrary::<u8>()?) % s.stores.len();
    let mut m = Machine::boot(s.stores[start].clone(), 10);
    for _ in 0..32 {
        if u.is_empty() {
            break;
        }
        let command: u8 = u.arbitrary()?;
        let out_len =
            usize::from(u.arbitrary::<u16>()?) % (Op::ReadDetections.max_reply_len() + 64);
        match command % 16 {
            // Any operation, framed correctly around any body.
            c @ 0..=4 => {
                let op = Op::ALL[usize::from(c) + if u.ratio(2, 7)? { 2 } else { 0 }];
                let body = bytes(u)?;
                m.ioctl(op.ioctl(), &framed(op, body), out_len);
            }
            // Any operation, any input bytes (header included).
            5..=7 => {
                let op = *u.choose(&Op::ALL)?;
                let input = bytes(u)?;
                m.ioctl(op.ioctl(), input, out_len);
            }
            // Any IOCTL code.
            8 => {
                let code: u32 = u.arbitrary()?;
                let input = bytes(u)?;
                m.ioctl(code, input, out_len);
            }
            // A validly signed envelope (or one by an unknown key), maybe damaged.
            9 => {
                let mut env = u.choose(&s.envelopes)?.clone();
                if u.ratio(1, 4)? {
                    let at = u.choose_index(env.len())?;
                    env[at] ^= u.arbitrary::<u8>()? | 1;
                }
                let out_len = if u.ratio(7, 8)? {
                    Op::StagePack.max_reply_len()
                } else {
                    out_len
                };
                // Hot, or for the next boot; and now and then a revert after it.
                let op = if u.ratio(1, 4)? {
                    Op::StageNextBoot
                } else {
                    Op::StagePack
                };
                m.ioctl(op.ioctl(), &framed(op, &env), out_len);
                if u.ratio(1, 4)? {
                    m.ioctl(
                        Op::Revert.ioctl(),
                        &framed(Op::Revert, &[]),
                        Op::Revert.max_reply_len(),
                    );
                }
            }
            // Reads with a well-formed body and a buffer that fits what was asked.
            10 | 11 => {
                let op = if command % 16 == 10 {
                    Op::ReadDetections
                } else {
                    Op::ReadGuardEvents
                };
                let max = u32::from(u.arbitrary::<u8>()?) % 300;
                let mut body = max.to_le_bytes().to_vec();
                body.extend_from_slice(&[0; 4]);
                m.ioctl(op.ioctl(), &framed(op, &body), op.max_reply_len());
            }
            // A process starts (a detection per matching rule; the needle ones, or a block).
            12 => {
                let text = String::from_utf8_lossy(bytes(u)?).into_owned();
                m.process(&text);
            }
            // Time passes (the stable period may bless the candidate), or a guard event.
            13 => {
                m.now += 30;
                m.control.tick(30, m.now);
                m.sensor.forward_guard_events(&mut m.control);
            }
            // Reboot: clean or crashed.
            14 => {
                if u.arbitrary()? {
                    m.control.clean_shutdown(m.now);
                }
                let store = m.store();
                m = Machine::boot(store, m.now + 100);
            }
            _ => {
                let mut env = u.choose(&s.envelopes)?.clone();
                // The version field, then re-signed: any version, still validly signed.
                let version: u64 = u.int_in_range(0..=6)?;
                env[12..20].copy_from_slice(&version.to_le_bytes());
                let pack = env[152..].to_vec();
                let env = seal(
                    &SECRET,
                    CHANNEL,
                    version,
                    bulwark_interpreter::schema_hash(),
                    &pack,
                )
                .unwrap_or(env);
                m.ioctl(
                    Op::StagePack.ioctl(),
                    &framed(Op::StagePack, &env),
                    Op::StagePack.max_reply_len(),
                );
            }
        }
    }
    Ok(())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});
