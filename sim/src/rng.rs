//! Deterministic randomness: one seed gives the same simulation, byte for byte, on every machine.
//!
//! [`Rng`] is xoshiro256** (Blackman and Vigna), seeded through SplitMix64 as its authors
//! recommend. Every endpoint draws from its own stream ([`Rng::stream`]: the run's seed mixed with
//! the endpoint's index and a purpose), so what one endpoint draws never shifts another's draws:
//! adding a fault to endpoint 7 leaves endpoint 8's life unchanged, and a scenario's outcome does
//! not depend on the order in which endpoints happen to be stepped.

/// SplitMix64: the seeding function (and a fine hash of a `u64`).
#[must_use]
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256**.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

/// What a stream of draws is for (one stream per endpoint and purpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The endpoint's facts: OS build, hardware class, host group, id.
    Facts = 1,
    /// When the endpoint is on line, and its baseline crashes.
    Life = 2,
    /// The service agent's jitter and backoff.
    Agent = 3,
    /// Storage faults: power cuts and torn writes.
    Faults = 4,
    /// What the release does to this endpoint (crash on load or not).
    Release = 5,
    /// The running content's ordinary detections (the baseline's noise).
    Detections = 6,
}

impl Rng {
    /// A generator from a 64-bit seed.
    #[must_use]
    pub fn new(seed: u64) -> Rng {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s }
    }

    /// The stream of `endpoint` for `purpose` in the run seeded with `seed`.
    #[must_use]
    pub fn stream(seed: u64, endpoint: u64, purpose: Purpose) -> Rng {
        let mut h = seed;
        let a = splitmix64(&mut h);
        let mut h = a ^ endpoint.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let b = splitmix64(&mut h);
        Rng::new(b ^ (purpose as u64).wrapping_mul(0x8CB9_2BA7_2F3D_8DD7))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`, with 53 bits.
    pub fn unit(&mut self) -> f64 {
        // The top 53 bits, scaled by 2^-53: exact in an f64.
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (clamped to `[0, 1]`).
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `0..=max` (Lemire's method without the rejection step's bias: the widening
    /// multiply is exact for the ranges the simulation uses, below 2^32).
    pub fn below_or_eq(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        let range = u128::from(max) + 1;
        // Rejection sampling keeps it exactly uniform.
        let zone = u128::from(u64::MAX) + 1 - ((u128::from(u64::MAX) + 1) % range);
        loop {
            let x = u128::from(self.next_u64());
            if x < zone {
                // x % range < range <= 2^64, so it fits.
                return u64::try_from(x % range).unwrap_or(max);
            }
        }
    }

    /// An exponentially distributed wait with the given mean (seconds), for Poisson processes
    /// (baseline crashes): `-mean * ln(1 - u)`.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// An index drawn with the given weights (all finite and non-negative, not all zero: the
    /// scenario's validation guarantees it); the last index if rounding leaves a remainder.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // The first outputs for seed 0 (the published reference sequence).
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut s), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(splitmix64(&mut s), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn xoshiro256starstar_reference_values() {
        // State 1, 2, 3, 4: the reference implementation's first outputs.
        let mut r = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn streams_are_independent_and_reproducible() {
        let a: Vec<u64> = {
            let mut r = Rng::stream(7, 3, Purpose::Life);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let again: Vec<u64> = {
            let mut r = Rng::stream(7, 3, Purpose::Life);
            (0..8).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, again);
        for (seed, endpoint, purpose) in [
            (8, 3, Purpose::Life),
            (7, 4, Purpose::Life),
            (7, 3, Purpose::Agent),
        ] {
            let mut r = Rng::stream(seed, endpoint, purpose);
            let b: Vec<u64> = (0..8).map(|_| r.next_u64()).collect();
            assert_ne!(a, b, "{seed} {endpoint} {purpose:?}");
        }
    }

    #[test]
    fn draws_have_the_right_distributions() {
        let mut r = Rng::new(42);
        let n = 200_000;
        // unit: mean 0.5
        let mean: f64 = (0..n).map(|_| r.unit()).sum::<f64>() / f64::from(n);
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
        // chance: frequency p
        let hits = (0..n).filter(|_| r.chance(0.1)).count();
        assert!((hits as f64 / f64::from(n) - 0.1).abs() < 0.005, "{hits}");
        // below_or_eq: every value of a small range, none past it
        let mut seen = [0u32; 6];
        for _ in 0..60_000 {
            let v = r.below_or_eq(5);
            seen[usize::try_from(v).unwrap()] += 1;
        }
        assert!(
            seen.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{seen:?}"
        );
        assert_eq!(r.below_or_eq(0), 0);
        // exponential: the mean
        let m: f64 = (0..n).map(|_| r.exponential(30.0)).sum::<f64>() / f64::from(n);
        assert!((m - 30.0).abs() < 0.5, "{m}");
        // weighted: the shares
        let mut counts = [0u32; 3];
        for _ in 0..n {
            counts[r.weighted(&[0.2, 0.0, 0.8])] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!(
            (f64::from(counts[0]) / f64::from(n) - 0.2).abs() < 0.005,
            "{counts:?}"
        );
    }
}
