//! Bulwark's kernel driver: the root package.
//!
//! Everything that can be plain Rust lives in [`bulwark_driver_core`] (tested on any OS). This crate
//! adds only the Windows layer (`windows/`): FFI calls, IRQL and memory rules. It is compiled for
//! Windows targets: on Windows with the WDK, on Linux by `scripts/windows-build` (a real .sys, loaded
//! in Wine) and by the approximate type-check (`--features wdk-typecheck`). For other targets the
//! crate is an empty shell linked against `std`, so `cargo build --workspace` works.
//!
//! The Windows layer denies the same panicking constructs as the core (a panic in the kernel is a
//! bugcheck); each exception is allowed in place with its reason.
#![no_std]
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

extern crate alloc;

#[cfg(not(any(windows, feature = "wdk-typecheck")))]
extern crate std;

#[cfg(any(windows, feature = "wdk-typecheck"))]
mod windows;
