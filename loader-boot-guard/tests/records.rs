//! The crash-safe record: round trip, and no damaged record is ever trusted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod common;

use bulwark_loader_boot_guard::record::{decode, encode};
use bulwark_loader_boot_guard::{
    crc32, Config, Decision, EventKind, Guard, OpenError, RecordError, Slot, SlotProblem, State,
    RECORD_BYTES,
};
use common::*;

/// A state with every part used: LKG, candidate, a full quarantine list, a wrapped event ring.
fn busy_state() -> State {
    let cfg = Config {
        channel: CHANNEL,
        threshold: 1,
        stable_secs: 600,
    };
    let mut s = State::new(CHANNEL);
    s.stage(id_of(0, 1), true, 10);
    s.bless(bulwark_loader_boot_guard::Reason::ServiceConfirmed, 11);
    for v in 2..40u64 {
        s.stage(ContentIdExt::fake(v), false, v * 100);
        assert!(matches!(
            s.boot(&cfg, v * 100 + 1),
            Decision::Candidate { .. }
        ));
        s.boot(&cfg, v * 100 + 2); // crashed: quarantined
    }
    s.stage(ContentIdExt::fake(50), true, 5000);
    s.seq = 77;
    s
}

struct ContentIdExt;
impl ContentIdExt {
    fn fake(v: u64) -> bulwark_loader_boot_guard::ContentId {
        bulwark_loader_boot_guard::ContentId {
            version: v,
            hash: [v as u8; 32],
        }
    }
}

#[test]
fn a_record_round_trips_with_everything_in_it() {
    let s = busy_state();
    assert_eq!(s.quarantine().len(), 32);
    assert_eq!(s.events().count(), 32);
    let bytes = encode(&s);
    assert_eq!(bytes.len(), RECORD_BYTES);
    assert_eq!(*decode(&bytes).unwrap(), s);
    // The quarantine list dropped the oldest entries first.
    assert_eq!(s.quarantine()[0].version, 39 - 31);
    assert!(s.is_quarantined(&[39; 32]));
    assert!(!s.is_quarantined(&[2; 32]));
}

#[test]
fn every_flipped_bit_and_every_truncation_is_rejected() {
    let bytes = encode(&busy_state());
    for at in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = bytes.clone();
            bad[at] ^= bit;
            let e = decode(&bad).unwrap_err();
            match at {
                0..=3 => assert!(matches!(e, RecordError::BadMagic { .. }), "{at}: {e}"),
                4..=5 => assert!(
                    matches!(e, RecordError::UnsupportedVersion { .. }),
                    "{at}: {e}"
                ),
                _ => assert!(matches!(e, RecordError::BadCrc { .. }), "{at}: {e}"),
            }
        }
    }
    for len in 0..bytes.len() {
        assert_eq!(
            decode(&bytes[..len]).unwrap_err(),
            RecordError::WrongLength {
                len,
                expected: RECORD_BYTES
            }
        );
    }
}

#[test]
fn a_record_with_a_valid_crc_but_bad_fields_is_rejected() {
    let mut bytes = encode(&busy_state());
    bytes[39] = 9; // active
    let n = bytes.len();
    let crc = crc32(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    let e = decode(&bytes).unwrap_err();
    assert_eq!(
        e,
        RecordError::BadField {
            field: "active",
            offset: 39,
            value: 9
        }
    );
    assert!(e.to_string().contains("byte offset 39"));
}

fn store_with(a: Vec<u8>, b: Vec<u8>) -> MemStore {
    MemStore {
        records: [a, b],
        ..MemStore::default()
    }
}

fn cfg() -> Config {
    Config::new(CHANNEL)
}

#[test]
fn the_newer_valid_slot_wins_and_a_damaged_one_falls_back() {
    let mut s1 = busy_state();
    s1.seq = 5;
    let mut s2 = s1.clone();
    s2.seq = 6;
    s2.newest = 99;
    let g = Guard::open(store_with(encode(&s1), encode(&s2)), cfg()).unwrap();
    assert_eq!(g.state().seq, 6);
    assert_eq!(g.recovery().used, Some(Slot::B));
    // Slot B torn: A (the previous record) is used, and the fallback is reported.
    let mut torn = encode(&s2);
    torn[2000] ^= 0xff;
    let g = Guard::open(store_with(encode(&s1), torn), cfg()).unwrap();
    assert_eq!(g.state().seq, 5);
    assert_eq!(g.state().lkg, s1.lkg);
    assert!(matches!(
        g.recovery().rejected,
        Some((Slot::B, SlotProblem::Record(RecordError::BadCrc { .. })))
    ));
    assert_eq!(
        g.state().events().last().unwrap().kind,
        EventKind::RecordRecovered
    );
    // A record in the wrong slot for its sequence number is not trusted either.
    let g = Guard::open(store_with(encode(&s1), encode(&s1)), cfg()).unwrap();
    assert_eq!(g.recovery().used, Some(Slot::A));
    assert!(g.recovery().rejected.is_some());
}

#[test]
fn both_slots_damaged_is_an_error_not_a_fresh_start() {
    let mut s1 = busy_state();
    s1.seq = 5;
    let mut a = encode(&s1);
    a[100] ^= 1;
    let e = Guard::open(store_with(a.clone(), vec![1, 2, 3]), cfg())
        .err()
        .unwrap();
    assert!(matches!(e, OpenError::NoValidRecord { .. }));
    let msg = e.to_string();
    assert!(msg.contains("slot A: record checksum mismatch"), "{msg}");
    assert!(msg.contains("slot B: record is 3 bytes"), "{msg}");
    // Slot B empty and slot A damaged: a torn first write looks like this, but so does a written
    // record corrupted and the other slot erased. Starting fresh would drop the floor, LKG and
    // quarantine: both slots are reported lost (see `one_slot_damaged_and_the_other_missing_...`).
    let e = Guard::open(store_with(a, vec![]), cfg()).err().unwrap();
    assert!(
        matches!(
            e,
            OpenError::NoValidRecord {
                a: SlotProblem::Record(RecordError::BadCrc { .. }),
                b: SlotProblem::Empty
            }
        ),
        "{e:?}"
    );
    // Slot A empty and slot B damaged cannot come from our writes: an error.
    let mut b = encode(&s1);
    b[100] ^= 1;
    assert!(Guard::open(store_with(vec![], b), cfg()).is_err());
}

#[test]
fn a_channel_mismatch_and_a_bad_config_are_errors() {
    let mut s = busy_state();
    s.seq = 1;
    let e = Guard::open(store_with(encode(&s), vec![]), Config::new(CHANNEL + 1))
        .err()
        .unwrap();
    assert_eq!(
        e,
        OpenError::ChannelMismatch {
            records: CHANNEL,
            config: CHANNEL + 1
        }
    );
    for bad in [
        Config {
            threshold: 0,
            ..cfg()
        },
        Config {
            threshold: 11,
            ..cfg()
        },
        Config {
            stable_secs: 1,
            ..cfg()
        },
    ] {
        assert!(matches!(
            Guard::open(MemStore::default(), bad),
            Err(OpenError::Config(_))
        ));
    }
}

fn fix_crc(bytes: &mut [u8]) {
    let n = bytes.len();
    let crc = crc32(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn unused_and_reserved_bytes_must_be_zero_even_with_a_valid_crc() {
    let mut s = busy_state();
    s.candidate = None;
    let good = encode(&s);
    // The absent candidate's bytes and an unused quarantine entry are zero in what the guard
    // writes; anything else is refused even with a matching CRC.
    let mut stray_candidate = good.clone();
    stray_candidate[80] = 1;
    fix_crc(&mut stray_candidate);
    assert_eq!(
        decode(&stray_candidate).unwrap_err(),
        RecordError::NonCanonical { offset: 80 }
    );
    let mut q = State::new(CHANNEL);
    q.seq = 3;
    let bytes = encode(&q);
    let mut stray_quarantine = bytes.clone();
    stray_quarantine[132 + 40] = 7;
    fix_crc(&mut stray_quarantine);
    assert_eq!(
        decode(&stray_quarantine).unwrap_err(),
        RecordError::NonCanonical { offset: 172 }
    );
}

/// A write torn at any byte (the first `p` bytes new, the rest still the old record) is never
/// taken for a record unless it is exactly the old or the new one; the guard then uses the other
/// slot.
#[test]
fn a_record_torn_at_every_byte_is_never_trusted() {
    let mut old = busy_state();
    old.seq = 9; // slot A
    let mut newer = old.clone();
    newer.seq = 11; // slot A again, written over the old one
    newer.push_event(99, EventKind::CleanShutdown, 0, id_of(0, 1));
    newer.newest = 1234;
    let mut other = old.clone();
    other.seq = 10; // slot B: the record in between
    let (o, n) = (encode(&old), encode(&newer));
    for p in 0..=RECORD_BYTES {
        let mut torn = n[..p].to_vec();
        torn.extend_from_slice(&o[p..]);
        match decode(&torn) {
            Ok(s) => assert!(
                torn == o || torn == n,
                "torn at {p} accepted: seq {}",
                s.seq
            ),
            Err(_) => {
                let g = Guard::open(store_with(torn.clone(), encode(&other)), cfg()).unwrap();
                assert_eq!(g.state().seq, 10, "torn at {p}: falls back to slot B");
                assert_eq!(g.state().lkg, old.lkg);
            }
        }
    }
}

/// Random bytes (with a correct CRC, so the field checks are what is tested) never panic the
/// decoder, and whatever it accepts is a canonical record.
#[test]
fn random_records_never_panic_and_only_canonical_ones_are_accepted() {
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base = encode(&busy_state());
    let mut accepted = 0;
    for round in 0..3000 {
        let mut bytes = base.clone();
        // Mutate a few random bytes (or everything, every 100th round).
        if round % 100 == 0 {
            for b in bytes.iter_mut() {
                *b = next() as u8;
            }
            bytes[..6].copy_from_slice(&base[..6]);
        } else {
            for _ in 0..(1 + next() % 4) {
                let at = (next() as usize) % (RECORD_BYTES - 4);
                bytes[at] = next() as u8;
            }
        }
        fix_crc(&mut bytes);
        if let Ok(s) = decode(&bytes) {
            assert_eq!(encode(&s), bytes);
            accepted += 1;
        }
    }
    // Some mutations land in free-form fields (hashes, times, versions) and are valid records.
    assert!(accepted > 0);
}
