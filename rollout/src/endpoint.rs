//! What the model knows about one endpoint: its id and the facts that place it in a stratum and a
//! policy.

use serde::{Deserialize, Serialize};

/// An endpoint's stable identity (for example the sensor's install GUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EndpointId(#[serde(with = "crate::hex")] pub [u8; 16]);

/// A stratum of the fleet: endpoints that share an OS build and a hardware class, and so tend to
/// share a failure (a release that crashes one Windows build crashes all of that build).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stratum {
    /// The Windows build, e.g. `10.0.19045`.
    pub os_build: String,
    /// The hardware class, e.g. `x64-laptop`, `x64-vm`, `arm64`.
    pub hw_class: String,
}

impl Stratum {
    /// A stratum.
    #[must_use]
    pub fn new(os_build: &str, hw_class: &str) -> Self {
        Self {
            os_build: os_build.to_owned(),
            hw_class: hw_class.to_owned(),
        }
    }
}

impl core::fmt::Display for Stratum {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.os_build, self.hw_class)
    }
}

/// The facts an endpoint reports about itself, from which it (and the server) derive its wave and
/// its policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointFacts {
    /// Its identity.
    pub id: EndpointId,
    /// Its Windows build.
    pub os_build: String,
    /// Its hardware class.
    pub hw_class: String,
    /// The host group its administrators put it in (policies are per host group).
    pub host_group: String,
}

impl EndpointFacts {
    /// The endpoint's stratum.
    #[must_use]
    pub fn stratum(&self) -> Stratum {
        Stratum::new(&self.os_build, &self.hw_class)
    }
}
