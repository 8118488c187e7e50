//! Helpers shared by the integration tests: a deterministic pseudo-random generator, fleets,
//! releases and cohorts.
#![allow(dead_code)]

use bulwark_rollout::channel::Channel;
use bulwark_rollout::endpoint::{EndpointFacts, EndpointId};
use bulwark_rollout::observations::CohortObservations;
use bulwark_rollout::release::Release;
use bulwark_rollout::time::HOUR;

/// SplitMix64: a small deterministic generator (the tests must be reproducible).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Poisson(mean) by inversion (means here are at most a few hundred; for large means, sums of
    /// Poisson(50) draws).
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean > 50.0 {
            let parts = (mean / 50.0).ceil() as u64;
            return (0..parts).map(|_| self.poisson(mean / parts as f64)).sum();
        }
        let u = self.unit();
        let mut p = (-mean).exp();
        let mut cdf = p;
        let mut k = 0u64;
        while u > cdf && k < 10_000 {
            k += 1;
            p *= mean / k as f64;
            cdf += p;
        }
        k
    }

    /// Binomial(n, p) as a sum of Bernoulli draws for small n, Poisson for small p otherwise.
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if n <= 2000 {
            (0..n).filter(|_| self.unit() < p).count() as u64
        } else {
            self.poisson(n as f64 * p).min(n)
        }
    }
}

pub fn id(n: u64) -> EndpointId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b[8..].copy_from_slice(&(!n).to_le_bytes());
    EndpointId(b)
}

pub fn facts(n: u64, os_build: &str, hw_class: &str, host_group: &str) -> EndpointFacts {
    EndpointFacts {
        id: id(n),
        os_build: os_build.to_owned(),
        hw_class: hw_class.to_owned(),
        host_group: host_group.to_owned(),
    }
}

pub fn detections() -> Channel {
    Channel::new("detections", false)
}

pub fn critical() -> Channel {
    Channel::new("critical", true)
}

pub fn release(channel: &Channel, version: u64) -> Release {
    Release {
        channel: channel.name.clone(),
        version,
        pack_hash: [version as u8; 32],
        envelope_sha256: [0xee; 32],
        notes: format!("release {version}"),
    }
}

/// A cohort of `endpoints` observed for `hours` each, with the given counts.
pub fn cohort(endpoints: u64, hours: u64) -> CohortObservations {
    CohortObservations {
        endpoints,
        exposure_secs: endpoints * hours * HOUR,
        ..CohortObservations::default()
    }
}
