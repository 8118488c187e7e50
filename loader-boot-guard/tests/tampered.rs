//! Guard records tampered with or lost: a CRC is no protection against someone who can write the
//! records, so every decode checks that the fields agree with each other (the anti-downgrade floor
//! above every version the record names, and the rest); losing both slots, or one damaged and the
//! other missing, stops the guard until an administrator re-creates the records with a floor.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::result_large_err
)]

mod common;

use bulwark_loader_boot_guard::record::{decode, encode};
use bulwark_loader_boot_guard::{
    crc32, Config, ContentId, Decision, EventKind, Guard, GuardError, LoadError, OpenError, Reason,
    RecordError, ResetError, ResetRequest, Slot, SlotProblem, State,
};
use common::*;

fn cfg() -> Config {
    Config::new(CHANNEL)
}

fn fix_crc(bytes: &mut [u8]) {
    let n = bytes.len();
    let crc = crc32(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

/// `bytes` with `new` written at `at` and the CRC made valid again: what anyone who can write
/// the records can produce.
fn patched(bytes: &[u8], at: usize, new: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + new.len()].copy_from_slice(new);
    fix_crc(&mut b);
    b
}

fn slot_index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

/// A store whose last-known-good is version 2 (pack 2), blessed and shut down cleanly: four
/// records, sequence 3 in slot A and 4 in slot B, both with floor 2.
fn lkg_v2() -> MemStore {
    let mut g = Guard::open(MemStore::default(), cfg()).unwrap();
    g.boot(&keys(), 1);
    g.stage(&keys(), &envelope(2, 2), true, 2).unwrap();
    g.confirm_healthy(3).unwrap();
    g.clean_shutdown(4).unwrap();
    assert_eq!(g.state().seq, 4);
    assert_eq!(g.state().lkg, Some(id_of(2, 2)));
    assert_eq!(g.state().newest, 2);
    g.into_store()
}

fn stage(g: &mut Guard<MemStore>, n: u32, version: u64) -> Result<ContentId, GuardError> {
    g.stage(&keys(), &envelope(n, version), true, 50)
        .map(|o| o.id)
}

/// The case: the newest record rewritten with `newest = 0` and a valid CRC, still naming
/// last-known-good version 2. It used to be accepted, and version 1 then staged.
#[test]
fn a_floor_below_a_version_the_record_names_is_refused() {
    let store = lkg_v2();
    let b = store.records[1].clone();
    let tampered = patched(&b, 20, &0u64.to_le_bytes());
    let e = decode(&tampered).unwrap_err();
    let RecordError::Inconsistent { field, other, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        (field.name, field.offset, field.value),
        ("newest accepted version", 20, Some(0))
    );
    assert_eq!(
        (other.name, other.offset, other.value),
        ("last-known-good version", 40, Some(2))
    );
    let msg = e.to_string();
    assert!(
        msg.contains("newest accepted version 0 (byte offset 20) is below last-known-good version 2 (byte offset 40)"),
        "{msg}"
    );
    assert!(msg.contains("anti-downgrade floor"), "{msg}");

    // In slot B next to the previous record in A: B is not trusted, A's floor holds, and the old
    // version is refused as a downgrade.
    let mut s = store.clone();
    s.records[1] = tampered.clone();
    let mut g = Guard::open(s, cfg()).unwrap();
    assert_eq!(g.recovery().used, Some(Slot::A));
    let (slot, problem) = g.recovery().rejected.clone().unwrap();
    assert_eq!(slot, Slot::B);
    assert_eq!(problem.code(), 9);
    let ev = g.state().events().last().copied().unwrap();
    assert_eq!(ev.kind, EventKind::RecordRecovered);
    assert_eq!(
        ev.detail,
        2 | (9 << 8) | (20 << 16),
        "slot B, inconsistent, offset 20"
    );
    assert_eq!(g.state().newest, 2);
    let e = stage(&mut g, 1, 1).unwrap_err();
    assert!(
        matches!(
            e,
            GuardError::Load(LoadError::Downgrade {
                offered: 1,
                current: 2
            })
        ),
        "{e}"
    );

    // Both slots rewritten the same way: nothing is trusted, nothing can be staged.
    let mut s = store;
    let a = s.records[0].clone();
    s.records[0] = patched(&a, 20, &0u64.to_le_bytes());
    s.records[1] = tampered;
    let e = Guard::open(s, cfg()).err().unwrap();
    assert!(
        matches!(
            &e,
            OpenError::NoValidRecord {
                a: SlotProblem::Record(RecordError::Inconsistent { .. }),
                b: SlotProblem::Record(RecordError::Inconsistent { .. }),
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "guard records lost: slot A: inconsistent record: newest accepted version 0"
        ),
        "{msg}"
    );
}

/// A state with every part the checks look at: last-known-good v1, one quarantined pack (v3),
/// a running candidate v4 (a hot update), a refusal naming a version above the floor.
fn rich() -> State {
    let cfg1 = Config {
        threshold: 1,
        ..cfg()
    };
    let fake = |v: u64| ContentId {
        version: v,
        hash: [v as u8; 32],
    };
    let mut s = State::new(CHANNEL);
    s.stage(fake(1), true, 10);
    assert!(s.bless(Reason::ServiceConfirmed, 11).is_some());
    s.stage(fake(3), false, 12);
    assert!(matches!(s.boot(&cfg1, 13), Decision::Candidate { .. }));
    assert!(matches!(s.boot(&cfg1, 14), Decision::Lkg { .. }));
    s.refused(122, 99, [9; 32], 15);
    s.stage(fake(4), true, 16);
    s.seq = 7;
    assert_eq!(s.quarantine(), &[fake(3)]);
    assert_eq!(s.newest, 4);
    s
}

/// Each invariant, broken on its own with a valid CRC and canonical bytes, is refused with the
/// field (and byte offset) that breaks it.
#[test]
fn every_inconsistency_is_refused_and_named() {
    let s = rich();
    let good = encode(&s);
    assert_eq!(
        *decode(&good).unwrap(),
        s,
        "the refusal's version 99 is not a floor violation"
    );
    let last_event = 1412 + 64 * ((s.next_event_seq() as usize - 1) % 32);
    let q0_hash = good[140..172].to_vec();
    let mut cases: Vec<(&str, Vec<u8>, &str, usize)> = vec![
        (
            "floor below last-known-good",
            patched(&good, 20, &0u64.to_le_bytes()),
            "newest accepted version",
            20,
        ),
        (
            "floor below the candidate",
            patched(&good, 20, &3u64.to_le_bytes()),
            "newest accepted version",
            20,
        ),
        (
            "floor below a quarantine entry",
            patched(&good, 132, &9u64.to_le_bytes()),
            "newest accepted version",
            20,
        ),
        (
            "floor below an event's content",
            patched(&good, last_event + 24, &9u64.to_le_bytes()),
            "newest accepted version",
            20,
        ),
        (
            "candidate not newer than last-known-good",
            patched(&good, 80, &1u64.to_le_bytes()),
            "candidate version",
            80,
        ),
        (
            "candidate quarantined",
            patched(&good, 88, &q0_hash),
            "candidate pack hash",
            88,
        ),
        (
            "a pack quarantined twice",
            {
                let b = patched(&good, 120, &[2]);
                patched(&b, 172, &good[132..172])
            },
            "quarantine entry pack hash",
            180,
        ),
        (
            "version 0 content",
            patched(&good, 40, &0u64.to_le_bytes()),
            "last-known-good version",
            40,
        ),
        (
            "running candidate with no attempt",
            patched(&good, 37, &[0]),
            "active",
            39,
        ),
        (
            "attempts beyond any threshold",
            patched(&good, 37, &[11]),
            "candidate attempts",
            37,
        ),
        (
            "running content that is absent",
            {
                // No candidate (flag and bytes cleared), still "active: candidate".
                let b = patched(&good, 36, &[1]);
                patched(&b, 80, &[0; 40])
            },
            "active",
            39,
        ),
        (
            "unfinished runs without last-known-good",
            {
                let b = patched(&good, 36, &[2]);
                let b = patched(&b, 40, &[0; 40]);
                patched(&b, 38, &[1])
            },
            "last-known-good unfinished runs",
            38,
        ),
        (
            "an event missing from the ring",
            patched(&good, last_event, &[0; 64]),
            "event sequence number",
            last_event,
        ),
    ];
    // Attempts counted with no candidate: clear the candidate, nothing running.
    let mut idle = s.clone();
    idle.clean_shutdown(17);
    let idle_bytes = encode(&idle);
    assert!(decode(&idle_bytes).is_ok());
    let b = patched(&idle_bytes, 36, &[1]);
    let b = patched(&b, 80, &[0; 40]);
    cases.push((
        "attempts without a candidate",
        patched(&b, 37, &[1]),
        "candidate attempts",
        37,
    ));
    for (what, bytes, field, offset) in &cases {
        let e = decode(bytes).unwrap_err();
        let named = match &e {
            RecordError::Inconsistent { field, .. } => (field.name, field.offset),
            RecordError::BadField { field, offset, .. } => (*field, *offset),
            other => panic!("{what}: {other:?}"),
        };
        assert_eq!(named, (*field, *offset), "{what}: {e}");
        assert!(
            e.to_string().contains(&format!("byte offset {offset}")),
            "{what}: {e}"
        );
    }
}

/// One slot damaged and the other missing: reported as both lost (never "using the other slot"),
/// nothing is written, and it stays that way at every start until an administrator acts.
#[test]
fn one_slot_damaged_and_the_other_missing_is_reported_as_both_lost() {
    let store = lkg_v2();
    for (damaged, erased) in [(Slot::B, Slot::A), (Slot::A, Slot::B)] {
        let mut s = store.clone();
        s.records[slot_index(damaged)][1000] ^= 4;
        s.records[slot_index(erased)].clear();
        let before = s.clone();
        let mut s = Some(s);
        for _ in 0..3 {
            let (e, back) = Guard::try_open(s.take().unwrap(), cfg()).err().unwrap();
            let (d, m) = match &e {
                OpenError::NoValidRecord { a, b } if damaged == Slot::A => (a, b),
                OpenError::NoValidRecord { a, b } => (b, a),
                other => panic!("{other:?}"),
            };
            assert!(
                matches!(d, SlotProblem::Record(RecordError::BadCrc { .. })),
                "{d:?}"
            );
            assert_eq!(m, &SlotProblem::Empty);
            let msg = e.to_string();
            assert!(msg.starts_with("guard records lost: slot A: "), "{msg}");
            assert!(
                msg.contains(&format!("slot {}: missing", erased.name())),
                "{msg}"
            );
            assert!(msg.contains("new content is refused"), "{msg}");
            assert!(!msg.contains("other slot"), "{msg}");
            assert_eq!(back.records, before.records, "nothing written");
            assert_eq!(back.blobs, before.blobs, "stored packs kept");
            s = Some(back);
        }
    }
}

/// A slot missing next to a record that shows it was written (slot A is written first, so B
/// valid with A missing, or A past its first record with B missing) is reported, not silent.
#[test]
fn a_missing_slot_next_to_a_later_record_is_reported() {
    let store = lkg_v2();
    for (erased, used) in [(Slot::A, Slot::B), (Slot::B, Slot::A)] {
        let mut s = store.clone();
        s.records[slot_index(erased)].clear();
        let g = Guard::open(s, cfg()).unwrap();
        assert_eq!(g.recovery().used, Some(used));
        assert_eq!(g.recovery().rejected, Some((erased, SlotProblem::Empty)));
        let ev = g.state().events().last().copied().unwrap();
        assert_eq!(ev.kind, EventKind::RecordRecovered);
        let slot = if erased == Slot::A { 1 } else { 2 };
        assert_eq!(ev.detail, slot | (1 << 8));
        assert_eq!(g.state().lkg, Some(id_of(2, 2)), "LKG kept");
    }
    // The first record alone (slot B never written) is normal.
    let mut g = Guard::open(MemStore::default(), cfg()).unwrap();
    g.boot(&keys(), 1);
    let g = Guard::open(g.into_store(), cfg()).unwrap();
    assert_eq!(g.recovery().rejected, None);
}

/// The lost state until an administrator acts, then the administrator's reset: fresh records
/// with the floor given, staging above it works, below it is a downgrade; a reset of usable
/// records is refused and writes nothing.
#[test]
fn an_administrators_reset_re_creates_the_records_with_a_floor() {
    let mut lost = lkg_v2();
    lost.records[1][1000] ^= 4;
    lost.records[0].clear();
    let before = lost.records.clone();

    let mut g = Guard::reset(lost, cfg(), 2, 77).unwrap();
    assert_ne!(g.store().records, before);
    let s = g.state();
    assert_eq!(s.newest, 2);
    assert_eq!((s.lkg, s.candidate, s.quarantine().len()), (None, None, 0));
    let events: Vec<_> = s.events().copied().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::RecordsReset);
    assert_eq!(events[0].detail, 1 | (6 << 8), "A missing, B bad checksum");
    assert_eq!(events[0].content.version, 2);
    assert_eq!(events[0].time, 77);
    // Both slots hold the new record now.
    let a = decode(&g.store().records[0]).unwrap();
    let b = decode(&g.store().records[1]).unwrap();
    assert_eq!((a.seq, b.seq, a.newest, b.newest), (1, 2, 2, 2));

    // Staging: at or below the floor refused, above it accepted.
    let e = stage(&mut g, 1, 2).unwrap_err();
    assert!(
        matches!(
            e,
            GuardError::Load(LoadError::Downgrade {
                offered: 2,
                current: 2
            })
        ),
        "{e}"
    );
    assert_eq!(stage(&mut g, 3, 3).unwrap(), id_of(3, 3));
    let store = g.into_store();
    let g = Guard::open(store.clone(), cfg()).unwrap();
    assert_eq!(g.recovery().rejected, None);
    assert_eq!(g.state().candidate, Some(id_of(3, 3)));

    // Usable records: the reset is refused (it would lower the floor) and nothing is written.
    let (e, back) = Guard::reset(store.clone(), cfg(), 0, 78).err().unwrap();
    assert!(
        matches!(e, ResetError::RecordsUsable { newest: 3, .. }),
        "{e:?}"
    );
    assert_eq!(e.code(), 230);
    assert!(e.to_string().contains("never lowers the floor"), "{e}");
    assert_eq!(back.records, store.records);

    // One slot lost next to a valid one is usable too.
    let mut one = store.clone();
    one.records[0] = vec![1, 2, 3];
    let (e, _) = Guard::reset(one, cfg(), 0, 78).err().unwrap();
    assert!(matches!(e, ResetError::RecordsUsable { .. }), "{e:?}");

    // A new installation may set its first floor.
    let g = Guard::reset(MemStore::default(), cfg(), 5, 1).unwrap();
    assert_eq!(g.state().newest, 5);
    assert_eq!(g.state().events().next().unwrap().detail, 0);
}

/// The request the driver takes through its control device: round trip, every field checked,
/// the channel must be the guard's.
#[test]
fn a_reset_request_is_parsed_strictly() {
    let r = ResetRequest {
        channel: CHANNEL,
        floor: 41,
    };
    let bytes = r.encode();
    assert_eq!(&bytes[..4], b"BWRS");
    assert!(ResetRequest::is_reset_request(&bytes));
    assert!(!ResetRequest::is_reset_request(&envelope(1, 1)));
    assert_eq!(ResetRequest::parse(&bytes).unwrap(), r);
    assert!(ResetRequest::parse(&bytes[..19]).is_err());
    for (at, field) in [(4, "version"), (6, "flags")] {
        let mut b = bytes;
        b[at] ^= 1;
        let e = ResetRequest::parse(&b).unwrap_err().to_string();
        assert!(
            e.contains(field) && e.contains(&format!("byte offset {at}")),
            "{e}"
        );
    }
    let mut lost = lkg_v2();
    lost.records = [vec![0xA5; 10], Vec::new()];
    let other = ResetRequest {
        channel: CHANNEL + 1,
        floor: 0,
    };
    let (e, back) = Guard::reset_from_request(lost.clone(), cfg(), &other.encode(), 1)
        .err()
        .unwrap();
    assert_eq!(e.code(), 232);
    assert!(e.to_string().contains("channel 2"), "{e}");
    assert_eq!(back.records, lost.records);
    let g = Guard::reset_from_request(lost, cfg(), &bytes, 1).unwrap();
    assert_eq!(g.state().newest, 41);
}
