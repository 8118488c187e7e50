//! The host store: atomic replacement, limits, leftovers, and the guard on real files.
#![cfg(feature = "std")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod common;

use bulwark_loader_boot_guard::host::DirStore;
use bulwark_loader_boot_guard::{Config, Decision, Guard, Slot, Store, StoreError};
use common::*;

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("bulwark-dirstore-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn records_and_blobs_round_trip_with_limits() {
    let d = dir("roundtrip");
    let mut s = DirStore::new(&d).unwrap();
    let mut buf = vec![9];
    s.read_record(Slot::A, &mut buf, 100).unwrap();
    assert!(buf.is_empty(), "absent slot reads as empty");
    s.write_record(Slot::A, b"hello").unwrap();
    s.read_record(Slot::A, &mut buf, 100).unwrap();
    assert_eq!(buf, b"hello");
    assert_eq!(
        s.read_record(Slot::A, &mut buf, 4),
        Err(StoreError::TooLarge { max: 4 })
    );
    let id = id_of(1, 1);
    assert_eq!(s.get_blob(&id, &mut buf, 100), Err(StoreError::NotFound));
    s.put_blob(&id, b"envelope").unwrap();
    s.get_blob(&id, &mut buf, 100).unwrap();
    assert_eq!(buf, b"envelope");
    assert!(s.blob_path(&id).exists());
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(d.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with(".envelope"));
    s.remove_blob(&id).unwrap();
    s.remove_blob(&id).unwrap();
    assert_eq!(s.get_blob(&id, &mut buf, 100), Err(StoreError::NotFound));
}

#[test]
fn leftovers_of_a_crash_are_removed_but_named_packs_are_kept() {
    let d = dir("leftovers");
    let store = DirStore::new(&d).unwrap();
    let mut g = Guard::open(store, Config::new(CHANNEL)).unwrap();
    g.stage(&keys(), &envelope(1, 1), true, 1).unwrap();
    g.tick(600, 2).unwrap();
    g.stage(&keys(), &envelope(2, 2), false, 3).unwrap();
    drop(g);
    // A crash between writing a pack and the record naming it, and a torn temporary file.
    std::fs::write(
        d.join("packs").join("00000000000000000009-ab.envelope"),
        b"x",
    )
    .unwrap();
    std::fs::write(d.join("packs").join("whatever.tmp"), b"x").unwrap();
    let mut g = Guard::open(DirStore::new(&d).unwrap(), Config::new(CHANNEL)).unwrap();
    let names: Vec<String> = std::fs::read_dir(d.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let b = g.boot(&keys(), 4);
    assert_eq!(
        b.decision,
        Decision::Candidate {
            id: id_of(2, 2),
            attempt: 1
        }
    );
    assert_eq!(g.state().lkg, Some(id_of(1, 1)));
}
