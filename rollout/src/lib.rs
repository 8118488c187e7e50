//! (crate doc written below)
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod census;
pub mod channel;
pub mod controller;
pub mod decision;
pub mod endpoint;
pub mod health;
pub mod hex;
pub mod observations;
pub mod plan;
pub mod policy;
pub mod position;
pub mod release;
pub mod state;
pub mod stats;
pub mod thresholds;
pub mod time;
