//! One size limit for packs everywhere: the interpreter's largest pack, the loader's largest
//! envelope around it, and the control protocol's largest stage request agree, and a pack of
//! exactly the largest size goes through all three (and is staged by the driver's control plane).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod common;

use bulwark_driver_core::control::Control;
use bulwark_driver_core::sensor::{Capacities, Sensor};
use bulwark_interpreter::build::{Expr, PackBuilder, Pred, RuleSpec};
use bulwark_interpreter::limits::{MAX_PACK_BYTES, MAX_STRING_BYTES};
use bulwark_interpreter::{Action, Case, EventType, Level, StrOp};
use bulwark_loader_boot_guard::envelope::{HEADER_BYTES, MAX_ENVELOPE_BYTES};
use bulwark_loader_boot_guard::{seal, Config, TrustedKeys};
use bulwark_protocol::limits::MAX_STAGE_BYTES;
use bulwark_protocol::{Op, Request};
use common::Mem;

const SECRET: [u8; 32] = [7; 32];

#[test]
fn the_stage_limit_is_the_largest_envelope() {
    assert_eq!(MAX_STAGE_BYTES, MAX_ENVELOPE_BYTES);
    assert_eq!(MAX_ENVELOPE_BYTES, MAX_PACK_BYTES + HEADER_BYTES);
    assert_eq!(MAX_PACK_BYTES, 8 * 1024 * 1024);
}

/// A valid pack of exactly `size` bytes: one rule, and unused constant strings to fill it (each
/// string costs 6 bytes of length and key window besides its bytes).
fn pack_of_size(size: usize) -> Vec<u8> {
    let build = |fill: &[usize]| {
        let mut b = PackBuilder::new();
        b.rule(RuleSpec {
            event_type: EventType::ProcessCreation,
            id: "largest-pack".into(),
            title: "the largest stageable pack".into(),
            author: "Bulwark tests".into(),
            level: Level::Low,
            action: Action::Alert,
            tags: vec![],
            expr: Expr::Pred(Pred::Str {
                field: 1,
                op: StrOp::Contains,
                case: Case::Insensitive,
                value: "largest-pack-marker".into(),
            }),
        })
        .unwrap();
        for (i, &len) in fill.iter().enumerate() {
            // Distinct strings (the builder interns equal ones): a prefix names each.
            let mut s = format!("{i:08}");
            s.extend(std::iter::repeat_n('x', len - s.len()));
            b.string(&s);
        }
        b.finish()
    };
    let base = build(&[]).len();
    let mut left = size - base;
    let mut fill = Vec::new();
    while left > 0 {
        let take = (left - 6).min(MAX_STRING_BYTES);
        // The last string must leave either nothing or room for another whole one (>= 6 + 8).
        let take = if left - 6 - take > 0 && left - 6 - take < 6 + 8 {
            take - 64
        } else {
            take
        };
        fill.push(take);
        left -= 6 + take;
    }
    let pack = build(&fill);
    assert_eq!(pack.len(), size);
    pack
}

fn stage_request(envelope: &[u8]) -> Vec<u8> {
    let req = Request::StagePack { envelope };
    let mut input = vec![0u8; req.encoded_len()];
    req.encode(&mut input).unwrap();
    input
}

#[test]
fn the_largest_valid_pack_is_decoded_verified_and_staged() {
    let pack = pack_of_size(MAX_PACK_BYTES);
    bulwark_interpreter::verify(&pack).expect("the largest pack verifies");
    let envelope = seal(&SECRET, 1, 1, bulwark_interpreter::schema_hash(), &pack).unwrap();
    assert_eq!(envelope.len(), MAX_STAGE_BYTES);
    let input = stage_request(&envelope);
    match Request::parse(Op::StagePack.ioctl(), &input).unwrap() {
        Request::StagePack { envelope: e } => assert_eq!(e, &envelope[..]),
        other => panic!("parsed as {other:?}"),
    }

    // Through the driver's handler: the control plane opens, verifies and stages it.
    let keys =
        TrustedKeys::new(&[bulwark_loader_boot_guard::envelope::public_key(&SECRET)]).unwrap();
    let config = Config {
        channel: 1,
        threshold: 3,
        stable_secs: 60,
    };
    let (mut control, start) = Control::start(Mem::default(), config, keys, 1);
    assert!(start.error.is_none());
    let sensor = Sensor::new(Capacities::default(), 1, 1).unwrap();
    let mut output = vec![0u8; Op::StagePack.max_reply_len()];
    let n = sensor
        .handle_ioctl(
            Op::StagePack.ioctl(),
            &input,
            &mut output,
            &mut control,
            2,
            &mut || {},
        )
        .unwrap();
    let outcome = bulwark_protocol::Outcome::parse(Op::StagePack, &output[..n]).unwrap();
    assert!(outcome.accepted, "{}", outcome.message);
    assert_eq!(sensor.content_status().version, 1);
    assert_eq!(
        control.running_source(),
        bulwark_protocol::ContentSource::Candidate
    );

    // One byte more is refused by the protocol decoder, before anything else sees it.
    let mut over = envelope;
    over.push(0);
    assert!(Request::parse(Op::StagePack.ioctl(), &stage_request(&over)).is_err());
}
