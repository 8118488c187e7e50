//! Bulwark's content interpreter: the event schema, the pack format, the verifier and the VM.
//!
//! Content flows one way: a pack's bytes go through [`verify`], the one and only verifier, which
//! either rejects them with a precise [`VerifyError`] or produces a [`VerifiedPack`] that nothing
//! else can construct; the VM evaluates only verified packs. The driver and the `bulwark` tool call
//! the same function.
#![no_std]

extern crate alloc;

pub mod event;
pub mod schema;

pub use event::{Event, EventError};
pub use schema::{schema_hash, EventType, FieldDef, FieldType, FieldValue};
