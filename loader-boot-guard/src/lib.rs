//! Bulwark's second safety net: signed content, last-known-good, and automatic revert after
//! crashes.
//!
//! * [`envelope`]: the signed envelope around a pack (ed25519, `verify_strict`) and the loader
//!   [`open`], which checks size limits, signature, channel, quarantine, version (anti-downgrade)
//!   and then runs the interpreter's one verifier.
//! * [`state`]: the guard's state (last-known-good, candidate, attempt counters, quarantine list,
//!   recent events) and the pure state machine over it: every decision is a function of the
//!   records and the configuration.
//! * [`record`]: the crash-safe record: fixed size, sequence number and CRC-32, written to two
//!   alternating slots so a torn or lost write falls back to the previous record; every record
//!   read must also be internally consistent ([`record::check`]: the anti-downgrade floor at least
//!   every version it names, and the rest), since a CRC does not stop anyone who can write it.
//! * [`keyfile`]: the text format of key files (`KEY.pub`) and of the driver's trusted-key list.
//! * [`guard`]: [`Guard`], the state machine made durable through a [`Store`] (the driver
//!   implements it over its registry key and files; `host::DirStore` on the host, feature `std`).
//!
//! # Using it in the driver
//!
//! 1. At start, once the store is reachable: [`Guard::open`]`(store, config)`. On `Err` (records
//!    lost: both slots damaged, or one damaged and the other missing; channel mismatch; bad
//!    configuration) run without content, refuse every stage and report the error; nothing was
//!    written. Lost records stay lost until an administrator's [`Guard::reset`] (the driver takes
//!    a [`ResetRequest`] through its control device) re-creates them with a floor.
//! 2. Before any callback evaluates: [`Guard::boot`]`(&keys, now)`. The attempt is already durable
//!    when it returns; install `boot.content` (an [`Opened`] with the verified pack), if any.
//! 3. A timer, every few seconds: [`Guard::tick`]`(seconds_since_last_tick, now)`; it blesses the
//!    running candidate once the stable period is reached (one record write, then none).
//! 4. The stage request: [`Guard::stage`]`(&keys, envelope, true, now)`; on `Ok`, swap the returned
//!    pack in (its attempt is already durable); on `Err`, reply with [`GuardError::code`] and its
//!    message, and change nothing.
//! 5. The service's healthy-boot confirmation: [`Guard::confirm_healthy`]`(now)`.
//! 6. Shutdown notification or unload: [`Guard::clean_shutdown`]`(now)`.
//! 7. Telemetry: [`State::events_after`]`(last_forwarded_seq)` on [`Guard::state`].
//!
//! On x86_64 kernels build `curve25519-dalek` with its serial backend
//! (`--cfg curve25519_dalek_backend="serial"`): its default backend may use AVX2 registers, which
//! kernel code must not touch without saving the extended processor state.
#![no_std]
#![allow(clippy::result_large_err)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

extern crate alloc;

mod crc;
pub mod envelope;
pub mod guard;
#[cfg(feature = "std")]
pub mod host;
pub mod keyfile;
pub mod record;
pub mod state;

pub use crc::crc32;
pub use envelope::{open, seal, Admission, Header, KeyError, LoadError, Opened, TrustedKeys};
pub use guard::{
    Boot, Guard, GuardError, OpenError, Recovery, ResetError, ResetRequest, ResetRequestError,
    SlotProblem, Store, StoreError, CODE_RECORDS_UNUSABLE,
};
pub use record::{FieldRef, RecordError, Slot, RECORD_BYTES};
pub use state::{Active, Config, ConfigError, Decision, Event, EventKind, Reason, State};

/// Content as the guard names it: its version and the SHA-256 of its pack (the same hash
/// `VerifiedPack::content_hash` gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ContentId {
    /// The content version from the signed envelope.
    pub version: u64,
    /// SHA-256 of the pack bytes.
    pub hash: [u8; 32],
}

impl ContentId {
    /// No content (all zero).
    pub const NONE: ContentId = ContentId {
        version: 0,
        hash: [0; 32],
    };
}
