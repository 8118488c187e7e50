//! Bulwark's content interpreter: the event schema, the pack format, the verifier and the VM.
//!
//! Content flows one way: a pack's bytes go through [`verify`], the one and only verifier, which
//! either rejects them with a precise [`VerifyError`] or produces a [`VerifiedPack`] that nothing
//! else can construct; the VM ([`VerifiedPack::evaluate`]) runs only verified packs. The driver
//! and the `bulwark` tool call the same function.
#![no_std]
// Verification errors carry both schema hashes and are returned once per pack load, never per event.
#![allow(clippy::result_large_err)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

extern crate alloc;

mod anchors;
pub mod build;
pub mod cost;
mod dfa;
pub mod error;
pub mod event;
pub mod format;
mod gramindex;
mod heapsort;
mod hits;
pub mod insn;
pub mod limits;
pub mod matching;
pub mod schema;
mod setindex;
pub mod text;
mod verify;
mod vm;

pub use error::{ErrorKind, VerifyError};
pub use event::{Event, EventError};
pub use insn::{Case, IntCmp, StrOp};
pub use schema::{schema_hash, EventType, FieldDef, FieldType, FieldValue};
pub use verify::{verify, Action, Level, RuleInfo, VerifiedPack};
pub use vm::EvalStats;

/// A matching rule, as reported by [`VerifiedPack::evaluate`].
pub type RuleMatch<'p> = RuleInfo<'p>;
