//! Stratified wave membership: per wave and per stratum, the position below which an endpoint is
//! in that wave's cumulative set.
//!
//! A plain threshold (`position < fraction_ppm`) gives each wave its fraction of the fleet *on
//! average*, but a small stratum (a Windows build with 30 machines in a fleet of 100,000) has no
//! machine below 1,000 ppm two times out of three, so a release that crashes exactly that build
//! would not be seen until a later, larger wave. [`WaveThresholds::compute`] instead takes each
//! stratum's sorted positions from the [`Census`] and chooses its thresholds so that, for every
//! stratum:
//!
//! * wave `k` holds `round(n * fraction_k)` of its `n` endpoints (so exactly its fraction of every
//!   stratum, up to rounding, and so ≈ its fraction of the fleet);
//! * from the first wave that has any room (the first whose share of the whole fleet rounds to at
//!   least one endpoint), it holds at least one endpoint of every stratum the census has. This can
//!   make that wave larger than its fraction by at most one endpoint per stratum: the price of
//!   seeing every stratum first;
//! * the last wave (1,000,000 ppm) holds everything: its threshold is 1,000,000;
//! * thresholds never decrease from one wave to the next, so an endpoint in wave `k` is in every
//!   later wave's cumulative set.
//!
//! A threshold is placed midway between the last position in and the first position out, so an
//! endpoint that joins the stratum after the census falls in with about the same probability as
//! the stratum's share. Strata absent from the census use the plain fraction.
//!
//! An endpoint's wave is the first wave whose threshold for its stratum is above its position; it
//! decides this itself from the signed thresholds and its own id, with no per-endpoint list.

use serde::{Deserialize, Serialize};

use crate::census::Census;
use crate::endpoint::{EndpointFacts, Stratum};
use crate::plan::{Plan, PlanError, WHOLE_FLEET_PPM};
use crate::position::{position, Placement};

/// One stratum's thresholds, one per wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StratumThresholds {
    /// The stratum.
    pub stratum: Stratum,
    /// Per wave: positions below this are in the wave's cumulative set.
    pub thresholds: Vec<u32>,
}

/// Per wave and per stratum position thresholds for one channel (signed and sent to endpoints
/// beside the rollout state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveThresholds {
    /// The channel these thresholds are for.
    pub channel: String,
    /// Thresholds for strata absent from the census: each wave's plain fraction.
    pub plain: Vec<u32>,
    /// Thresholds for the census's strata, sorted by stratum, no duplicates.
    pub strata: Vec<StratumThresholds>,
}

/// Why thresholds cannot be computed or are not usable with a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdsError {
    /// The plan is invalid.
    #[error("invalid plan: {0}")]
    Plan(#[from] PlanError),
    /// The census (or the thresholds) are of another channel.
    #[error("thresholds or census are for channel {found:?}, not {expected:?}")]
    WrongChannel {
        /// The channel wanted.
        expected: String,
        /// The channel found.
        found: String,
    },
    /// A threshold list's length is not the plan's wave count.
    #[error("{which}: {found} thresholds for a plan of {expected} waves")]
    WaveCount {
        /// `plain` or the stratum.
        which: String,
        /// The plan's wave count.
        expected: usize,
        /// The list's length.
        found: usize,
    },
    /// A threshold is below the previous wave's.
    #[error(
        "{which}: wave {wave}'s threshold {threshold} is below the previous wave's {previous}"
    )]
    Decreasing {
        /// `plain` or the stratum.
        which: String,
        /// The wave.
        wave: usize,
        /// Its threshold.
        threshold: u32,
        /// The previous wave's.
        previous: u32,
    },
    /// The last wave's threshold is not the whole position space.
    #[error("{which}: the last wave's threshold is {threshold}, not {WHOLE_FLEET_PPM}")]
    LastNotWhole {
        /// `plain` or the stratum.
        which: String,
        /// The threshold.
        threshold: u32,
    },
    /// The plain thresholds are not the plan's fractions.
    #[error("plain thresholds {found:?} are not the plan's fractions {expected:?}")]
    PlainNotFractions {
        /// The plan's fractions.
        expected: Vec<u32>,
        /// The thresholds.
        found: Vec<u32>,
    },
    /// The strata are not sorted or repeat.
    #[error("strata are not sorted and unique (at {stratum})")]
    StrataNotSorted {
        /// The first stratum out of order.
        stratum: Stratum,
    },
}

/// `round(n * ppm / 10^6)`, halves up.
fn share(n: u64, ppm: u32) -> u64 {
    let whole = u64::from(WHOLE_FLEET_PPM);
    (n.saturating_mul(u64::from(ppm)).saturating_add(whole / 2)) / whole
}

/// The threshold that puts exactly the first `count` of `sorted` in (more only if positions tie),
/// midway between the last position in and the first out.
fn threshold_for_count(sorted: &[u32], count: usize) -> u32 {
    if count == 0 {
        return 0;
    }
    let last_in = sorted
        .get(count.saturating_sub(1))
        .copied()
        .unwrap_or(WHOLE_FLEET_PPM - 1);
    let lower = last_in.saturating_add(1);
    let upper = sorted.get(count).copied().unwrap_or(WHOLE_FLEET_PPM);
    if lower <= upper {
        lower + (upper - lower) / 2
    } else {
        // `sorted[count - 1] == sorted[count]`: a tie cannot be split; both are in.
        lower
    }
}

impl WaveThresholds {
    /// Computes the thresholds of `plan` for `channel` from `census` (see the module's doc).
    pub fn compute(plan: &Plan, census: &Census, channel: &str) -> Result<Self, ThresholdsError> {
        plan.validate()?;
        if census.channel() != channel {
            return Err(ThresholdsError::WrongChannel {
                expected: channel.to_owned(),
                found: census.channel().to_owned(),
            });
        }
        let fleet = census.len() as u64;
        let first_with_room = plan
            .waves
            .iter()
            .position(|w| share(fleet, w.fraction_ppm) >= 1);
        let plain: Vec<u32> = plan.waves.iter().map(|w| w.fraction_ppm).collect();
        let strata = census
            .strata()
            .filter(|(_, positions)| !positions.is_empty())
            .map(|(stratum, positions)| {
                let n = positions.len();
                let thresholds = plan
                    .waves
                    .iter()
                    .enumerate()
                    .map(|(k, w)| {
                        if w.fraction_ppm >= WHOLE_FLEET_PPM {
                            return WHOLE_FLEET_PPM;
                        }
                        let mut count = usize::try_from(share(n as u64, w.fraction_ppm))
                            .unwrap_or(n)
                            .min(n);
                        if first_with_room.is_some_and(|first| k >= first) {
                            count = count.max(1);
                        }
                        threshold_for_count(positions, count)
                    })
                    .collect();
                StratumThresholds {
                    stratum: stratum.clone(),
                    thresholds,
                }
            })
            .collect();
        Ok(Self {
            channel: channel.to_owned(),
            plain,
            strata,
        })
    }

    /// The thresholds that apply to `stratum`: its own, or the plain fractions.
    #[must_use]
    pub fn for_stratum(&self, stratum: &Stratum) -> &[u32] {
        self.thresholds_at(self.stratum_index(stratum))
    }

    /// Where `stratum` has its own thresholds in `strata`, if it has.
    fn stratum_index(&self, stratum: &Stratum) -> Option<usize> {
        self.strata
            .binary_search_by(|s| s.stratum.cmp(stratum))
            .ok()
    }

    /// The thresholds of the stratum at `index` in `strata`, or the plain fractions.
    fn thresholds_at(&self, index: Option<usize>) -> &[u32] {
        index
            .and_then(|i| self.strata.get(i))
            .map_or(&self.plain, |s| &s.thresholds)
    }

    /// The wave (0-based) of an endpoint of `stratum` at `position`: the first wave whose
    /// threshold is above the position. `None` only for malformed thresholds (none reaches
    /// 1,000,000).
    #[must_use]
    pub fn wave_of_position(&self, stratum: &Stratum, position: u32) -> Option<usize> {
        wave_at(self.for_stratum(stratum), position)
    }

    /// The wave of the endpoint described by `facts` on this channel.
    #[must_use]
    pub fn wave_of(&self, facts: &EndpointFacts) -> Option<usize> {
        self.wave_of_position(&facts.stratum(), position(&facts.id, &self.channel))
    }

    /// [`WaveThresholds::wave_of`] for an endpoint's kept [`Placement`].
    #[must_use]
    pub fn wave_of_placement(&self, placement: &Placement) -> Option<usize> {
        // The stratum's entry where the placement last found it, if it is still there (the
        // strata change only with new thresholds); else the search, remembered.
        let hint = placement.stratum_hint.get();
        let index = if self
            .strata
            .get(hint)
            .is_some_and(|s| placement.in_stratum(&s.stratum))
        {
            Some(hint)
        } else {
            let found = self.stratum_index(placement.stratum());
            if let Some(i) = found {
                placement.stratum_hint.set(i);
            }
            found
        };
        wave_at(
            self.thresholds_at(index),
            placement.position_in(&self.channel),
        )
    }

    /// Checks that these thresholds can be used with `plan` on `channel`: the channel, one
    /// threshold per wave everywhere, never decreasing, the last one the whole space, the plain
    /// ones the plan's fractions, strata sorted and unique.
    pub fn validate(&self, plan: &Plan, channel: &str) -> Result<(), ThresholdsError> {
        if self.channel != channel {
            return Err(ThresholdsError::WrongChannel {
                expected: channel.to_owned(),
                found: self.channel.clone(),
            });
        }
        let fractions: Vec<u32> = plan.waves.iter().map(|w| w.fraction_ppm).collect();
        if self.plain != fractions {
            return Err(ThresholdsError::PlainNotFractions {
                expected: fractions,
                found: self.plain.clone(),
            });
        }
        check_list("plain", &self.plain, plan.waves.len())?;
        for pair in self.strata.windows(2) {
            if let [a, b] = pair {
                if a.stratum >= b.stratum {
                    return Err(ThresholdsError::StrataNotSorted {
                        stratum: b.stratum.clone(),
                    });
                }
            }
        }
        for s in &self.strata {
            check_list(&s.stratum.to_string(), &s.thresholds, plan.waves.len())?;
        }
        Ok(())
    }
}

/// The first wave whose threshold is above `position`.
fn wave_at(thresholds: &[u32], position: u32) -> Option<usize> {
    thresholds.iter().position(|&t| position < t)
}

fn check_list(which: &str, list: &[u32], waves: usize) -> Result<(), ThresholdsError> {
    if list.len() != waves {
        return Err(ThresholdsError::WaveCount {
            which: which.to_owned(),
            expected: waves,
            found: list.len(),
        });
    }
    for (wave, pair) in list.windows(2).enumerate() {
        if let [previous, threshold] = pair {
            if threshold < previous {
                return Err(ThresholdsError::Decreasing {
                    which: which.to_owned(),
                    wave: wave.saturating_add(1),
                    threshold: *threshold,
                    previous: *previous,
                });
            }
        }
    }
    match list.last() {
        Some(&last) if last == WHOLE_FLEET_PPM => Ok(()),
        last => Err(ThresholdsError::LastNotWhole {
            which: which.to_owned(),
            threshold: last.copied().unwrap_or(0),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A placement kept across thresholds whose strata differ (new thresholds at each rollout)
    /// finds its wave as a fresh computation does: its hint is checked, never trusted.
    #[test]
    fn a_kept_placement_finds_its_wave_in_any_thresholds() {
        let st = |b: &str| Stratum::new(b, "x64-vm");
        let facts = EndpointFacts {
            id: crate::EndpointId([9; 16]),
            os_build: "22631".into(),
            hw_class: "x64-vm".into(),
            host_group: "default".into(),
        };
        let p = Placement::of(&facts, "detections");
        let pos = p.position();
        let make = |strata: &[(&str, [u32; 2])]| WaveThresholds {
            channel: "detections".into(),
            plain: vec![0, WHOLE_FLEET_PPM],
            strata: strata
                .iter()
                .map(|(b, t)| StratumThresholds {
                    stratum: st(b),
                    thresholds: t.to_vec(),
                })
                .collect(),
        };
        let all_first = [pos + 1, WHOLE_FLEET_PPM];
        let all_second = [0, WHOLE_FLEET_PPM];
        let sets = [
            make(&[("19045", all_second), ("22631", all_first)]),
            make(&[("22631", all_second)]),
            make(&[
                ("19045", all_first),
                ("20000", all_first),
                ("22631", all_first),
            ]),
            make(&[("19045", all_first)]),
            make(&[("19045", all_second), ("22631", all_first)]),
        ];
        for t in sets.iter().chain(sets.iter().rev()) {
            assert_eq!(t.wave_of_placement(&p), t.wave_of(&facts), "{t:?}");
        }
    }

    #[test]
    fn threshold_for_count_splits_between_in_and_out() {
        let p = [10, 20, 30, 30, 50];
        assert_eq!(threshold_for_count(&p, 0), 0);
        assert_eq!(threshold_for_count(&p, 1), 15); // (11 + 20) / 2
        assert_eq!(threshold_for_count(&p, 2), 25);
        assert_eq!(threshold_for_count(&p, 3), 31); // tie at 30: both in
        assert_eq!(threshold_for_count(&p, 5), 51 + (1_000_000 - 51) / 2);
        assert_eq!(share(100_000, 1_000), 100);
        assert_eq!(share(30, 1_000), 0);
        assert_eq!(share(500, 1_000), 1); // 0.5 rounds up
        assert_eq!(share(499, 1_000), 0);
    }
}
