//! The platform-neutral core of Bulwark's driver: everything the driver does that can be plain
//! Rust, tested on any OS. The Windows layer (`driver/src/windows`) only gathers kernel facts,
//! calls into this crate, and carries out its answers.
//!
//! - [`paths`] and [`identity`]: kernel facts (NT paths, token RIDs, SIDs) to the text Sysmon
//!   reports and Sigma rules expect.
//! - [`process`]: the bounded table of live processes that supplies parent fields.
//! - [`events`]: the event builders, one per event type, taking every field.
//! - [`ring`]: fixed-capacity detection and guard-event rings with drop counts.
//! - [`content`]: the running content and its hot swap.
//! - [`nt`]: NT conventions as plain computations (counted-string sizes, content-directory
//!   creation, open failures).
//! - [`control`]: the loader and boot-count guard wired to the sensor; [`plane_lock`]: its lock,
//!   which requests never wait for and a clean shutdown never spins on.
//! - [`blocking`]: the block safety net (protected processes, unblessed content, storms).
//! - [`text`]: fallible text building, so an event that finds no memory is dropped, not a bugcheck.
//! - [`sensor`]: all of it together: callbacks in, verdicts and detections out, and the control
//!   protocol's handler.
#![no_std]
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

pub mod blocking;
pub mod content;
pub mod control;
pub mod events;
pub mod identity;
pub mod nt;
pub mod paths;
pub mod plane_lock;
pub mod process;
pub mod ring;
pub mod sensor;
pub mod text;
