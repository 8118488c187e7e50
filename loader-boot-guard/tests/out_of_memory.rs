//! Staging under memory pressure: the loader reserves the heap the verifier may take before it
//! verifies, so a shortage is a refusal with a reason (and the guard's records and the running
//! content stay as they were), never a failed allocation inside the verifier (which in the kernel
//! is a bugcheck). The allocator here refuses to go over a ceiling the test sets, standing in for a
//! pool that has run short.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::alloc::System;

use bulwark_loader_boot_guard::envelope::{open, Admission, LoadError, VERIFY_HEAP_FACTOR};
use bulwark_loader_boot_guard::{seal, Config, Guard, GuardError};
use cap::Cap;
use common::{envelope, keys, MemStore, CHANNEL, SECRET};

/// The system allocator with a ceiling on the bytes allocated at once: a pool that has run short.
#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// One test function: the limit is process-wide.
#[test]
fn a_stage_under_memory_pressure_is_refused_and_changes_nothing() {
    // A pack with a 48 KiB string: the verifier's reserve (16 times the pack) dwarfs every other
    // allocation on the way, so only the reservation meets the ceiling.
    let text = format!(
        "rule\n  id \"big\"\n  title \"big\"\n  author \"tests\"\n  level high\n  action alert\n  event process_creation\n  str.contains CommandLine \"{}\"\n  ret\nend\n",
        "x".repeat(48 * 1024)
    );
    let big = bulwark_interpreter::text::asm(&text).unwrap();
    let pack_len = big.len();
    let needed = pack_len * VERIFY_HEAP_FACTOR;

    // Plenty of memory: the envelope opens.
    let admission = || Admission::Update {
        channel: CHANNEL,
        newest: 0,
        quarantine: &[],
    };
    open(&envelope(1, 1), &keys(), admission()).unwrap();

    // The guard runs version 1; then the pool runs short.
    let mut guard = Guard::open(MemStore::default(), Config::new(CHANNEL)).unwrap();
    guard.boot(&keys(), 1);
    guard.stage(&keys(), &envelope(1, 1), true, 2).unwrap();
    let before = guard.state().clone();
    let version_2 = seal(
        &SECRET,
        CHANNEL,
        2,
        bulwark_interpreter::schema_hash(),
        &big,
    )
    .unwrap();

    // Room for everything but the verifier's heap.
    ALLOCATOR
        .set_limit(ALLOCATOR.allocated() + needed - 1)
        .unwrap();
    let e = open(&version_2, &keys(), admission());
    let refused = guard.stage(&keys(), &version_2, true, 3);
    ALLOCATOR.set_limit(usize::MAX).unwrap();
    let e = e.unwrap_err();

    assert_eq!(
        e,
        LoadError::OutOfMemory {
            pack: pack_len,
            needed
        },
        "{e}"
    );
    assert_eq!(e.code(), 140);
    assert!(e.to_string().starts_with(&format!(
        "not enough memory to verify a pack of {pack_len} bytes"
    )));
    let Err(GuardError::Load(LoadError::OutOfMemory { .. })) = refused else {
        panic!("expected an out-of-memory refusal, got {refused:?}");
    };
    // What runs and what may run are as they were; the refusal is recorded as an event with its
    // reason code.
    let after = guard.state();
    assert_eq!(
        (
            after.candidate,
            after.lkg,
            after.newest,
            after.active,
            after.attempts
        ),
        (
            before.candidate,
            before.lkg,
            before.newest,
            before.active,
            before.attempts
        )
    );
    assert_eq!(after.quarantine(), before.quarantine());
    let last = after.events_after(0).last().copied().unwrap();
    assert_eq!((last.kind.name(), last.detail), ("refused", 140));

    // Memory is back: the same envelope stages.
    guard.stage(&keys(), &version_2, true, 4).unwrap();
    assert_eq!(guard.state().candidate.map(|c| c.version), Some(2));
}
