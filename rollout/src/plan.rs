//! Rollout plans: the waves a release goes through, how long each bakes and how much evidence it
//! needs before the next one opens.

use serde::{Deserialize, Serialize};

use crate::time::HOUR;

/// The whole fleet, in parts per million.
pub const WHOLE_FLEET_PPM: u32 = 1_000_000;
/// Most waves a plan may have.
pub const MAX_WAVES: usize = 16;
/// Longest bake time a wave may have (30 days): longer is a typo, not a plan.
pub const MAX_BAKE_SECS: u64 = 30 * 24 * HOUR;

/// One wave of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    /// Its name, for people (`internal`, `canary`, ...).
    pub name: String,
    /// The fleet share that runs the release once this wave is open, in parts per million,
    /// *cumulative*: the waves' fractions strictly increase and the last is 1,000,000.
    pub fraction_ppm: u32,
    /// How long the wave must have been open before the next one may open (or, for the last, before
    /// the rollout is complete).
    pub bake_secs: u64,
    /// Confirmed healthy boots or hot updates on the new release among this wave's own endpoints
    /// before the next wave may open (at least 1: no evidence never counts as good evidence).
    pub min_healthy: u32,
}

/// A rollout plan: the waves in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The waves, in order.
    pub waves: Vec<Wave>,
}

/// What is wrong with a plan. Each names the wave (0-based index and name) where it applies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The plan has no waves.
    #[error("the plan has no waves")]
    NoWaves,
    /// The plan has more than [`MAX_WAVES`] waves.
    #[error("the plan has {count} waves, more than {MAX_WAVES}")]
    TooManyWaves {
        /// How many.
        count: usize,
    },
    /// A wave's name is empty.
    #[error("wave {wave}: the name is empty")]
    EmptyName {
        /// The wave's index.
        wave: usize,
    },
    /// Two waves have the same name.
    #[error("wave {wave} ({name:?}): the name is already used by wave {first}")]
    DuplicateName {
        /// The wave's index.
        wave: usize,
        /// The name.
        name: String,
        /// The first wave with that name.
        first: usize,
    },
    /// A wave holds no endpoints at all.
    #[error("wave {wave} ({name:?}): fraction_ppm is 0; a wave must hold part of the fleet")]
    ZeroFraction {
        /// The wave's index.
        wave: usize,
        /// The wave's name.
        name: String,
    },
    /// A wave's fraction is above the whole fleet.
    #[error("wave {wave} ({name:?}): fraction_ppm {fraction_ppm} is above {WHOLE_FLEET_PPM}")]
    FractionAboveFleet {
        /// The wave's index.
        wave: usize,
        /// The wave's name.
        name: String,
        /// Its fraction.
        fraction_ppm: u32,
    },
    /// A wave's cumulative fraction is not above the previous wave's.
    #[error(
        "wave {wave} ({name:?}): fraction_ppm {fraction_ppm} is not above the previous wave's \
         {previous_ppm} (fractions are cumulative and strictly increasing)"
    )]
    NotIncreasing {
        /// The wave's index.
        wave: usize,
        /// The wave's name.
        name: String,
        /// Its fraction.
        fraction_ppm: u32,
        /// The previous wave's fraction.
        previous_ppm: u32,
    },
    /// The last wave does not reach the whole fleet.
    #[error(
        "wave {wave} ({name:?}): the last wave's fraction_ppm is {fraction_ppm}, not \
         {WHOLE_FLEET_PPM} (the whole fleet)"
    )]
    LastNotWholeFleet {
        /// The wave's index.
        wave: usize,
        /// The wave's name.
        name: String,
        /// Its fraction.
        fraction_ppm: u32,
    },
    /// A wave bakes longer than [`MAX_BAKE_SECS`].
    #[error(
        "wave {wave} ({name:?}): bake_secs {bake_secs} is more than {MAX_BAKE_SECS} (30 days)"
    )]
    BakeTooLong {
        /// The wave's index.
        wave: usize,
        /// The wave's name.
        name: String,
        /// Its bake time.
        bake_secs: u64,
    },
    /// A wave asks for no healthy confirmation.
    #[error("wave {wave} ({name:?}): min_healthy is 0; at least one confirmation is required")]
    ZeroMinHealthy {
        /// The wave's index.
        wave: usize,
        /// The wave's name.
        name: String,
    },
    /// A wave asks for more confirmations than it will have endpoints in a fleet of that size.
    #[error(
        "wave {wave} ({name:?}): min_healthy {min_healthy} is more than the {expected} endpoints \
         the wave holds in a fleet of {fleet}; the rollout could never leave it"
    )]
    MinHealthyAboveWaveSize {
        /// The wave's index.
        wave: usize,
        /// The wave's name.
        name: String,
        /// Its confirmation count.
        min_healthy: u32,
        /// Endpoints the wave's own share of the fleet holds (rounded down).
        expected: u64,
        /// The fleet size checked against.
        fleet: u64,
    },
}

impl Plan {
    /// The default plan: 0.1% internal, 1% canary, 10%, 50%, 100%.
    ///
    /// Bake times:
    /// * `internal` (0.1%) 2 h: a crash on load, as with Channel File 291, shows within minutes of
    ///   a hot update; two hours also give an endpoint that staged and fell silent time to pass
    ///   the default one-hour silence timeout and be counted as a failure.
    /// * `canary` (1%) 6 h: several silence timeouts, and enough ordinary activity for content
    ///   that only breaks on a rarer event type or field to meet that event.
    /// * `early` (10%) 12 h: half a day, so a working day (or a night of reboots and patching) in at
    ///   least one region.
    /// * `broad` (50%) 24 h: a full day, every time zone's working hours and boot pattern.
    /// * `all` (100%) 24 h before the rollout is complete and the release becomes the baseline of
    ///   the next one.
    ///
    /// That is 44 hours before the whole fleet is offered the release and 68 hours to complete.
    ///
    /// Healthy confirmations (`min_healthy`) follow the rule of three: with `n` confirmations and
    /// no failure, the 95% upper confidence bound on the failure probability is about `3/n`. So the
    /// internal wave's 30 bound it below 10%, the canary's 300 below 1%, the 10% wave's 3,000 below
    /// 0.1%, and 10,000 below 0.03%. The counts assume a fleet of at least about 34,000 endpoints
    /// ([`Plan::check_fleet`] says which wave is too small for a given fleet); smaller fleets need
    /// their own plan.
    #[must_use]
    pub fn default_plan() -> Self {
        Self {
            waves: vec![
                wave("internal", 1_000, 2 * HOUR, 30),
                wave("canary", 10_000, 6 * HOUR, 300),
                wave("early", 100_000, 12 * HOUR, 3_000),
                wave("broad", 500_000, 24 * HOUR, 10_000),
                wave("all", WHOLE_FLEET_PPM, 24 * HOUR, 10_000),
            ],
        }
    }

    /// A faster plan for urgent content (a critical channel's fix for a threat spreading now):
    /// the same waves, each baking just long enough for a crash on load and for silence after
    /// staging (the one-hour timeout) to show: 90 min, 2 h, 3 h, 4 h, 4 h; 9.5 hours before the
    /// whole fleet is offered the release. Confirmations are a third of the default plan's.
    #[must_use]
    pub fn expedited() -> Self {
        Self {
            waves: vec![
                wave("internal", 1_000, 90 * 60, 10),
                wave("canary", 10_000, 2 * HOUR, 100),
                wave("early", 100_000, 3 * HOUR, 1_000),
                wave("broad", 500_000, 4 * HOUR, 3_000),
                wave("all", WHOLE_FLEET_PPM, 4 * HOUR, 3_000),
            ],
        }
    }

    /// Checks the plan; the first problem found, naming its wave.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.waves.is_empty() {
            return Err(PlanError::NoWaves);
        }
        if self.waves.len() > MAX_WAVES {
            return Err(PlanError::TooManyWaves {
                count: self.waves.len(),
            });
        }
        let mut previous_ppm = 0u32;
        for (i, w) in self.waves.iter().enumerate() {
            let name = || w.name.clone();
            if w.name.is_empty() {
                return Err(PlanError::EmptyName { wave: i });
            }
            if let Some(first) = self.waves.iter().position(|o| o.name == w.name) {
                if first < i {
                    return Err(PlanError::DuplicateName {
                        wave: i,
                        name: name(),
                        first,
                    });
                }
            }
            if w.fraction_ppm == 0 {
                return Err(PlanError::ZeroFraction {
                    wave: i,
                    name: name(),
                });
            }
            if w.fraction_ppm > WHOLE_FLEET_PPM {
                return Err(PlanError::FractionAboveFleet {
                    wave: i,
                    name: name(),
                    fraction_ppm: w.fraction_ppm,
                });
            }
            if i > 0 && w.fraction_ppm <= previous_ppm {
                return Err(PlanError::NotIncreasing {
                    wave: i,
                    name: name(),
                    fraction_ppm: w.fraction_ppm,
                    previous_ppm,
                });
            }
            if w.bake_secs > MAX_BAKE_SECS {
                return Err(PlanError::BakeTooLong {
                    wave: i,
                    name: name(),
                    bake_secs: w.bake_secs,
                });
            }
            if w.min_healthy == 0 {
                return Err(PlanError::ZeroMinHealthy {
                    wave: i,
                    name: name(),
                });
            }
            previous_ppm = w.fraction_ppm;
        }
        if let Some(last) = self.waves.last() {
            if last.fraction_ppm != WHOLE_FLEET_PPM {
                return Err(PlanError::LastNotWholeFleet {
                    wave: self.waves.len().saturating_sub(1),
                    name: last.name.clone(),
                    fraction_ppm: last.fraction_ppm,
                });
            }
        }
        Ok(())
    }

    /// Checks the plan, then that every wave's own share of a fleet of `fleet` endpoints holds at
    /// least `min_healthy` endpoints (otherwise the rollout would wait in that wave forever).
    pub fn check_fleet(&self, fleet: u64) -> Result<(), PlanError> {
        self.validate()?;
        let mut previous_ppm = 0u32;
        for (i, w) in self.waves.iter().enumerate() {
            let share = u64::from(w.fraction_ppm.saturating_sub(previous_ppm));
            let expected = fleet.saturating_mul(share) / u64::from(WHOLE_FLEET_PPM);
            if u64::from(w.min_healthy) > expected {
                return Err(PlanError::MinHealthyAboveWaveSize {
                    wave: i,
                    name: w.name.clone(),
                    min_healthy: w.min_healthy,
                    expected,
                    fleet,
                });
            }
            previous_ppm = w.fraction_ppm;
        }
        Ok(())
    }
}

fn wave(name: &str, fraction_ppm: u32, bake_secs: u64, min_healthy: u32) -> Wave {
    Wave {
        name: name.to_owned(),
        fraction_ppm,
        bake_secs,
        min_healthy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_plans_are_valid() {
        assert_eq!(Plan::default_plan().validate(), Ok(()));
        assert_eq!(Plan::expedited().validate(), Ok(()));
        assert_eq!(Plan::default_plan().check_fleet(100_000), Ok(()));
        assert!(matches!(
            Plan::default_plan().check_fleet(10_000),
            Err(PlanError::MinHealthyAboveWaveSize {
                wave: 0,
                expected: 10,
                ..
            })
        ));
    }

    #[test]
    fn each_error_names_its_wave() {
        let base = Plan::default_plan();
        let with = |f: &dyn Fn(&mut Plan)| {
            let mut p = base.clone();
            f(&mut p);
            p.validate()
        };
        assert_eq!(with(&|p| p.waves.clear()), Err(PlanError::NoWaves));
        assert_eq!(
            with(&|p| p.waves[2].name.clear()),
            Err(PlanError::EmptyName { wave: 2 })
        );
        assert_eq!(
            with(&|p| p.waves[3].name = "canary".into()),
            Err(PlanError::DuplicateName {
                wave: 3,
                name: "canary".into(),
                first: 1
            })
        );
        assert_eq!(
            with(&|p| p.waves[0].fraction_ppm = 0),
            Err(PlanError::ZeroFraction {
                wave: 0,
                name: "internal".into()
            })
        );
        assert_eq!(
            with(&|p| p.waves[2].fraction_ppm = 10_000),
            Err(PlanError::NotIncreasing {
                wave: 2,
                name: "early".into(),
                fraction_ppm: 10_000,
                previous_ppm: 10_000
            })
        );
        assert_eq!(
            with(&|p| p.waves[4].fraction_ppm = 999_999),
            Err(PlanError::LastNotWholeFleet {
                wave: 4,
                name: "all".into(),
                fraction_ppm: 999_999
            })
        );
        assert_eq!(
            with(&|p| p.waves[4].fraction_ppm = 1_000_001),
            Err(PlanError::FractionAboveFleet {
                wave: 4,
                name: "all".into(),
                fraction_ppm: 1_000_001
            })
        );
        assert_eq!(
            with(&|p| p.waves[1].bake_secs = MAX_BAKE_SECS + 1),
            Err(PlanError::BakeTooLong {
                wave: 1,
                name: "canary".into(),
                bake_secs: MAX_BAKE_SECS + 1
            })
        );
        assert_eq!(
            with(&|p| p.waves[3].min_healthy = 0),
            Err(PlanError::ZeroMinHealthy {
                wave: 3,
                name: "broad".into()
            })
        );
        let too_many = Plan {
            waves: (0..17)
                .map(|i| wave(&format!("w{i}"), (i + 1) * 1000, 0, 1))
                .collect(),
        };
        assert_eq!(
            too_many.validate(),
            Err(PlanError::TooManyWaves { count: 17 })
        );
        let msg = with(&|p| p.waves[2].fraction_ppm = 10_000)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("wave 2 (\"early\")"), "{msg}");
    }
}
