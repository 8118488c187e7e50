//! An endpoint's place in a channel's rollout order: a deterministic position in
//! `[0, 1_000_000)` from a keyed SHA-256.
//!
//! The key is the channel's name, so the order differs between channels (an endpoint that is
//! early for `detections` is not thereby early for `critical`) but is stable from one release of a
//! channel to the next: the same machines are the canaries every time, which is what an
//! organisation that volunteers its machines as canaries expects, and what makes their history
//! comparable between releases.

use sha2::{Digest, Sha256};

use crate::endpoint::{EndpointFacts, EndpointId, Stratum};
use crate::plan::WHOLE_FLEET_PPM;

/// Domain separation for the position hash (changing it reshuffles every fleet).
const DOMAIN: &[u8] = b"bulwark-rollout/position/v1\0";

/// The endpoint's position in the channel's order, uniform in `[0, 1_000_000)`.
///
/// SHA-256 over a domain tag, the channel name's length (8 bytes, little-endian) and bytes, and the
/// id; the first 8 bytes of the digest as a little-endian `u64` `h`, mapped to `h * 10^6 / 2^64`
/// (a multiply-shift, whose bias is below 10^-13).
#[must_use]
pub fn position(id: &EndpointId, channel: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update((channel.len() as u64).to_le_bytes());
    h.update(channel.as_bytes());
    h.update(id.0);
    let digest = h.finalize();
    let mut first = [0u8; 8];
    for (dst, src) in first.iter_mut().zip(digest.iter()) {
        *dst = *src;
    }
    let x = u64::from_le_bytes(first);
    let scaled = (u128::from(x) * u128::from(WHOLE_FLEET_PPM)) >> 64;
    // `scaled` < 10^6 by construction.
    u32::try_from(scaled).unwrap_or(WHOLE_FLEET_PPM - 1)
}

/// Where an endpoint stands in a channel's rollouts: its stratum and its [`position`]. Both are
/// fixed for an endpoint and a channel, and the position costs a SHA-256, so an endpoint that
/// decides at every poll keeps its placement ([`crate::decide_placed`]). Made only by
/// [`Placement::of`] and read through its accessors: what it keeps stays consistent.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The endpoint.
    id: EndpointId,
    /// The channel the position is keyed by.
    channel: String,
    /// Its stratum.
    stratum: Stratum,
    /// Its position in the channel's order.
    position: u32,
    /// Where its stratum was last found in a [`crate::WaveThresholds`]'s strata (checked
    /// before use: a hint, not a fact).
    pub(crate) stratum_hint: core::cell::Cell<usize>,
    /// The channel's name and the stratum's strings again, in place (when they fit), so that an
    /// endpoint deciding at every poll compares them without reading its own strings elsewhere
    /// on the heap (a cache miss each, for each of a fleet's endpoints in the simulator).
    inline: InlineNames,
}

/// The bytes of a placement's channel, OS build and hardware class, one after the other.
#[derive(Debug, Clone)]
struct InlineNames {
    bytes: [u8; INLINE_BYTES],
    /// The lengths of the three; `None` when they do not fit together in `bytes`.
    lens: Option<[u8; 3]>,
}

/// What [`InlineNames`] holds: channel names, Windows builds and hardware classes are short.
const INLINE_BYTES: usize = 64;

impl InlineNames {
    fn of(parts: [&str; 3]) -> InlineNames {
        let mut bytes = [0u8; INLINE_BYTES];
        let mut lens = [0u8; 3];
        let mut at = 0usize;
        for (len, part) in lens.iter_mut().zip(parts) {
            let end = at.saturating_add(part.len());
            match (bytes.get_mut(at..end), u8::try_from(part.len())) {
                (Some(dst), Ok(n)) => {
                    dst.copy_from_slice(part.as_bytes());
                    *len = n;
                    at = end;
                }
                _ => return InlineNames { bytes, lens: None },
            }
        }
        InlineNames {
            bytes,
            lens: Some(lens),
        }
    }

    /// Part `which` (0 channel, 1 OS build, 2 hardware class), if they fit.
    fn part(&self, which: usize) -> Option<&[u8]> {
        let lens = self.lens?;
        let start: usize = lens.iter().take(which).map(|&n| usize::from(n)).sum();
        let len = usize::from(*lens.get(which)?);
        self.bytes.get(start..start.saturating_add(len))
    }
}

/// Placements are equal when they place the same endpoint the same way (the hint aside).
impl PartialEq for Placement {
    fn eq(&self, other: &Placement) -> bool {
        self.id == other.id
            && self.channel == other.channel
            && self.stratum == other.stratum
            && self.position == other.position
    }
}

impl Eq for Placement {}

impl Placement {
    /// The placement of the endpoint `facts` in `channel`.
    #[must_use]
    pub fn of(facts: &EndpointFacts, channel: &str) -> Placement {
        Placement {
            id: facts.id,
            channel: channel.to_owned(),
            stratum: facts.stratum(),
            position: position(&facts.id, channel),
            stratum_hint: core::cell::Cell::new(0),
            inline: InlineNames::of([channel, &facts.os_build, &facts.hw_class]),
        }
    }

    /// The endpoint.
    #[must_use]
    pub fn id(&self) -> EndpointId {
        self.id
    }

    /// The channel its position is kept for.
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Its stratum.
    #[must_use]
    pub fn stratum(&self) -> &Stratum {
        &self.stratum
    }

    /// Its position in its channel's order.
    #[must_use]
    pub fn position(&self) -> u32 {
        self.position
    }

    /// Its position in `channel`'s order: the kept one for its own channel, computed otherwise.
    #[must_use]
    pub fn position_in(&self, channel: &str) -> u32 {
        let own = match self.inline.part(0) {
            Some(name) => name == channel.as_bytes(),
            None => self.channel == channel,
        };
        if own {
            self.position
        } else {
            position(&self.id, channel)
        }
    }

    /// Whether its stratum is `stratum`.
    #[must_use]
    pub fn in_stratum(&self, stratum: &Stratum) -> bool {
        match (self.inline.part(1), self.inline.part(2)) {
            (Some(os_build), Some(hw_class)) => {
                os_build == stratum.os_build.as_bytes() && hw_class == stratum.hw_class.as_bytes()
            }
            _ => self.stratum == *stratum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> EndpointId {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&n.to_le_bytes());
        EndpointId(b)
    }

    #[test]
    fn a_placement_compares_its_names_in_place_or_not_alike() {
        // Names that fit in place, and names too long together (the strings are compared).
        for (channel, os_build, hw_class) in [
            ("detections", "26100", "x64-vm"),
            ("", "", ""),
            ("c", &"9".repeat(40)[..], &"h".repeat(23)[..]),
            ("c", &"9".repeat(40)[..], &"h".repeat(24)[..]),
            (&"n".repeat(300)[..], "26100", "x64-vm"),
        ] {
            let facts = EndpointFacts {
                id: id(3),
                os_build: os_build.into(),
                hw_class: hw_class.into(),
                host_group: "default".into(),
            };
            let p = Placement::of(&facts, channel);
            let fits = channel.len() + os_build.len() + hw_class.len() <= INLINE_BYTES;
            assert_eq!(
                p.inline.lens.is_some(),
                fits,
                "{channel}/{os_build}/{hw_class}"
            );
            assert!(p.in_stratum(&facts.stratum()));
            assert_eq!(p.position_in(channel), position(&id(3), channel));
            assert_eq!(
                p.position_in(&format!("{channel}x")),
                position(&id(3), &format!("{channel}x"))
            );
            for other in [
                Stratum::new(&format!("{os_build}0"), hw_class),
                Stratum::new(os_build, &format!("{hw_class}0")),
                // The same bytes split elsewhere between the two names.
                Stratum::new(&format!("{os_build}{hw_class}"), ""),
                Stratum::new("", &format!("{os_build}{hw_class}")),
            ] {
                assert_eq!(
                    p.in_stratum(&other),
                    other == facts.stratum(),
                    "{other:?} for {os_build}/{hw_class}"
                );
            }
        }
    }

    #[test]
    fn a_placement_keeps_the_position_of_its_channel_and_computes_others() {
        let facts = EndpointFacts {
            id: id(7),
            os_build: "26100".into(),
            hw_class: "x64-vm".into(),
            host_group: "default".into(),
        };
        let p = Placement::of(&facts, "detections");
        assert_eq!(p.position, position(&id(7), "detections"));
        assert_eq!(p.position_in("detections"), p.position);
        assert_eq!(p.position_in("critical"), position(&id(7), "critical"));
        assert_eq!(p.stratum, facts.stratum());
    }

    #[test]
    fn deterministic_keyed_and_in_range() {
        let a = position(&id(1), "detections");
        assert_eq!(a, position(&id(1), "detections"));
        assert_ne!(a, position(&id(1), "critical"));
        assert_ne!(a, position(&id(2), "detections"));
        for n in 0..1000 {
            assert!(position(&id(n), "detections") < WHOLE_FLEET_PPM);
        }
    }

    #[test]
    fn roughly_uniform() {
        // 20,000 ids in 10 buckets of 100,000: each holds 2,000 +- 5 sigma (about 212).
        let mut buckets = [0u32; 10];
        for n in 0..20_000 {
            buckets[(position(&id(n), "detections") / 100_000) as usize] += 1;
        }
        for b in buckets {
            assert!((1_788..=2_212).contains(&b), "{buckets:?}");
        }
    }

    #[test]
    fn known_value() {
        // Pinned so that a change to the hash (which would move every endpoint to another wave
        // mid-rollout) is a deliberate one.
        assert_eq!(position(&EndpointId([0; 16]), "detections"), KNOWN);
    }
    // Computed independently with Python's hashlib from the formula above.
    const KNOWN: u32 = 360_295;
}
