//! Time as the model sees it: a parameter, never a clock.
//!
//! Every function of this crate that depends on time takes a [`Timestamp`] argument, so the same
//! inputs always give the same outputs, and the fleet simulator can run days of rollout in
//! microseconds.

use serde::{Deserialize, Serialize};

/// Seconds in an hour.
pub const HOUR: u64 = 3600;

/// A point in time: whole seconds since the Unix epoch (UTC).
///
/// Arithmetic saturates: a timestamp near `u64::MAX` plus a delay stays at `u64::MAX` ("never")
/// instead of wrapping to the past.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The timestamp `secs` seconds later (saturating).
    #[must_use]
    pub const fn plus_secs(self, secs: u64) -> Self {
        Self(self.0.saturating_add(secs))
    }

    /// The timestamp `hours` hours later (saturating).
    #[must_use]
    pub const fn plus_hours(self, hours: u64) -> Self {
        self.plus_secs(hours.saturating_mul(HOUR))
    }

    /// Seconds from `earlier` to `self`, or 0 if `earlier` is not earlier.
    #[must_use]
    pub const fn secs_since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl core::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "t={}s", self.0)
    }
}
