//! Bulwark's kernel driver: the root package.
//!
//! Everything that can be plain Rust lives in [`bulwark_driver_core`] (tested on any OS). This crate
//! adds only the Windows layer (`windows/`): FFI calls, IRQL and memory rules. It is compiled on
//! Windows with the WDK, and on Linux only by the approximate type-check
//! (`../shared/tools/wdk-typecheck/wdk-typecheck -p bulwark-driver -- --features wdk-typecheck`).
//! Elsewhere the crate is an empty shell linked against `std`, so `cargo build --workspace` works.
#![no_std]

extern crate alloc;

#[cfg(not(any(windows, feature = "wdk-typecheck")))]
extern crate std;

#[cfg(any(windows, feature = "wdk-typecheck"))]
mod windows;
