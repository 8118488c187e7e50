//! The rollout state: what the server signs and every endpoint fetches.
//!
//! Serialized with serde; fields serialize in declaration order and maps are `BTreeMap`s, so one
//! state has one encoding (what is signed is what is verified).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::health::TestVerdict;
use crate::plan::{Plan, PlanError};
use crate::release::Release;
use crate::time::Timestamp;

/// Why a rollout was halted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HaltCause {
    /// The health analysis failed these tests.
    Automatic {
        /// The failed verdicts, with their numbers.
        failed: Vec<TestVerdict>,
    },
    /// An operator halted it.
    Operator {
        /// The operator's reason.
        reason: String,
    },
}

/// The record of a halt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaltRecord {
    /// When.
    pub at: Timestamp,
    /// How many waves were open.
    pub open_waves: u32,
    /// Why.
    pub cause: HaltCause,
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Status {
    /// Waves open as their bake time, confirmations and health allow.
    Progressing,
    /// An operator froze the rollout: no wave opens and no endpoint starts the release (those that
    /// run it keep it); health is still analysed, and a failure still halts.
    Paused {
        /// When.
        at: Timestamp,
        /// The operator's reason.
        reason: String,
    },
    /// The release is stopped for good: no endpoint starts it; with `revert`, those that run it go
    /// back to their last-known-good.
    Halted {
        /// Why and when.
        halt: HaltRecord,
    },
    /// Every wave opened and the last one baked healthy: the release is the channel's baseline.
    Complete {
        /// When.
        at: Timestamp,
    },
}

/// The rollout of one release on one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelRollout {
    /// Increases with every change, so an endpoint can refuse an older signed state.
    pub revision: u64,
    /// The channel.
    pub channel: Channel,
    /// The release being rolled out.
    pub release: Release,
    /// Its plan.
    pub plan: Plan,
    /// The previous (baseline) release's version, if any: what endpoints outside the open waves
    /// keep running.
    pub baseline_version: Option<u64>,
    /// When each wave opened (`None`: not yet); one entry per wave of the plan.
    pub wave_opened_at: Vec<Option<Timestamp>>,
    /// How many waves are open (the first `open_waves` entries of `wave_opened_at` are set).
    pub open_waves: u32,
    /// Where the rollout is.
    pub status: Status,
    /// Endpoints running the halted release must go back to their local last-known-good (the
    /// guard's LKG on the endpoint, not a new pack). Only while halted.
    pub revert: bool,
}

/// What is inconsistent in a [`ChannelRollout`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The plan is invalid.
    #[error("invalid plan: {0}")]
    Plan(#[from] PlanError),
    /// The release is for another channel.
    #[error("release is for channel {release:?}, the rollout for {channel:?}")]
    ReleaseChannel {
        /// The release's channel.
        release: String,
        /// The rollout's channel.
        channel: String,
    },
    /// The baseline is not older than the release.
    #[error("baseline version {baseline} is not below the release's {release}")]
    BaselineNotOlder {
        /// The baseline.
        baseline: u64,
        /// The release.
        release: u64,
    },
    /// `wave_opened_at` has not one entry per wave.
    #[error("{found} wave opening times for a plan of {waves} waves")]
    OpenedAtLength {
        /// Entries.
        found: usize,
        /// Waves.
        waves: usize,
    },
    /// `open_waves` is 0 or more than the plan has.
    #[error("open_waves is {open_waves}, not between 1 and the plan's {waves} waves")]
    OpenWaves {
        /// The count.
        open_waves: u32,
        /// The plan's waves.
        waves: usize,
    },
    /// The opening times do not match `open_waves` or go backwards.
    #[error(
        "wave {wave}: its opening time does not match open_waves or is before the previous wave's"
    )]
    OpenedAt {
        /// The wave.
        wave: usize,
    },
    /// `Complete` with waves not open.
    #[error("complete with {open_waves} of {waves} waves open")]
    CompleteNotAllOpen {
        /// The count.
        open_waves: u32,
        /// The plan's waves.
        waves: usize,
    },
    /// `revert` set while not halted.
    #[error("revert is set but the rollout is not halted")]
    RevertNotHalted,
}

impl ChannelRollout {
    /// Checks that the state is consistent.
    pub fn validate(&self) -> Result<(), StateError> {
        self.plan.validate()?;
        if self.release.channel != self.channel.name {
            return Err(StateError::ReleaseChannel {
                release: self.release.channel.clone(),
                channel: self.channel.name.clone(),
            });
        }
        if let Some(baseline) = self.baseline_version {
            if baseline >= self.release.version {
                return Err(StateError::BaselineNotOlder {
                    baseline,
                    release: self.release.version,
                });
            }
        }
        let waves = self.plan.waves.len();
        if self.wave_opened_at.len() != waves {
            return Err(StateError::OpenedAtLength {
                found: self.wave_opened_at.len(),
                waves,
            });
        }
        let open = self.open_waves as usize;
        if open == 0 || open > waves {
            return Err(StateError::OpenWaves {
                open_waves: self.open_waves,
                waves,
            });
        }
        let mut previous = Timestamp(0);
        for (wave, at) in self.wave_opened_at.iter().enumerate() {
            match at {
                Some(t) if wave < open && *t >= previous => previous = *t,
                None if wave >= open => {}
                _ => return Err(StateError::OpenedAt { wave }),
            }
        }
        if matches!(self.status, Status::Complete { .. }) && open != waves {
            return Err(StateError::CompleteNotAllOpen {
                open_waves: self.open_waves,
                waves,
            });
        }
        if self.revert && !matches!(self.status, Status::Halted { .. }) {
            return Err(StateError::RevertNotHalted);
        }
        Ok(())
    }

    /// The index of the newest open wave.
    #[must_use]
    pub fn current_wave(&self) -> usize {
        (self.open_waves as usize).saturating_sub(1)
    }

    /// When wave `wave` opened, if it has.
    #[must_use]
    pub fn opened_at(&self, wave: usize) -> Option<Timestamp> {
        self.wave_opened_at.get(wave).copied().flatten()
    }

    /// Whether the rollout is halted.
    #[must_use]
    pub fn is_halted(&self) -> bool {
        matches!(self.status, Status::Halted { .. })
    }
}

/// The state of every channel, by channel name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RolloutState {
    /// Each channel's current rollout.
    pub channels: BTreeMap<String, ChannelRollout>,
}

impl RolloutState {
    /// The rollout of `channel`, if any.
    #[must_use]
    pub fn channel(&self, channel: &str) -> Option<&ChannelRollout> {
        self.channels.get(channel)
    }
}
