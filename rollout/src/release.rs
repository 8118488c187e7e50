//! Releases: one signed content pack on one channel.

use serde::{Deserialize, Serialize};

/// A release of content on a channel.
///
/// `version` is the content version the guard's anti-downgrade check sees (it only moves forward
/// on a channel); `pack_hash` and `envelope_sha256` let an endpoint check that the pack it fetched
/// is the one the rollout is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The channel's name.
    pub channel: String,
    /// The content version (strictly increasing per channel).
    pub version: u64,
    /// SHA-256 of the pack.
    #[serde(with = "crate::hex")]
    pub pack_hash: [u8; 32],
    /// SHA-256 of the signed envelope around the pack.
    #[serde(with = "crate::hex")]
    pub envelope_sha256: [u8; 32],
    /// Free text for operators.
    pub notes: String,
}
