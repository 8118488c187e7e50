//! The endpoint's decision: what to run on a channel, from the signed state, its own facts, its
//! policy, the signed thresholds and the time. Every endpoint computes this locally; the server
//! computes the same to know what each endpoint should be running.

use serde::{Deserialize, Serialize};

use crate::endpoint::EndpointFacts;
use crate::policy::Policy;
use crate::position::Placement;
use crate::state::{ChannelRollout, Status};
use crate::thresholds::WaveThresholds;
use crate::time::{Timestamp, HOUR};

/// What an endpoint does about a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Run this release (fetch and stage it if it is not the one running).
    Run {
        /// Its version.
        version: u64,
        /// Its pack's SHA-256, to check what was fetched.
        #[serde(with = "crate::hex")]
        pack_hash: [u8; 32],
    },
    /// Take nothing new; keep whatever runs (the last-known-good or the baseline release, or the
    /// new release if it was already taken).
    Stay {
        /// Why.
        reason: StayReason,
    },
    /// The release was halted with revert: if it runs (or is staged) here, go back to the local
    /// last-known-good, and do not take it again.
    RevertToLastKnownGood {
        /// The halted release's version.
        halted_version: u64,
    },
    /// An active pin: run exactly this version until the pin expires (reported while active).
    Pinned {
        /// The pinned version.
        version: u64,
        /// When the pin lapses (to `Ga`).
        expires_at: Timestamp,
    },
}

/// Why an endpoint stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StayReason {
    /// The endpoint's wave has not opened yet.
    WaveNotOpen {
        /// Its wave (0-based).
        wave: usize,
        /// Waves open now.
        open_waves: u32,
    },
    /// Its policy delays the release until this time.
    Delayed {
        /// When it may take it.
        until: Timestamp,
    },
    /// Its policy is `Pause`.
    PolicyPause,
    /// The rollout is paused.
    RolloutPaused,
    /// The rollout is halted (without revert).
    RolloutHalted,
    /// The state is inconsistent (fail closed: take nothing new).
    InvalidState {
        /// What is wrong.
        error: String,
    },
    /// The thresholds do not fit the state (fail closed: take nothing new).
    InvalidThresholds {
        /// What is wrong.
        error: String,
    },
}

/// Decides what the endpoint described by `facts` does on `state`'s channel at `now`, under
/// `policy` (as set for its host group and the channel; an expired pin lapses to `Ga`, see
/// [`Policy::effective`]).
///
/// In order:
/// 1. An active pin is honoured ([`Decision::Pinned`]), unless it pins the release that is halted
///    with revert: safety first, that endpoint reverts too.
/// 2. An inconsistent state: stay.
/// 3. Halted with revert: every endpoint is told to revert (a no-op for those that never took the
///    release). Halted without revert: stay. Paused: stay.
/// 4. Progressing or complete, by policy: `Pause` stays; `Early` runs the release as soon as the
///    first wave is open; `Ga` runs it once the endpoint's own wave is open; `Delay { hours }`
///    runs it `hours` after that wave opened (at `opened_at + hours` exactly, not before). The
///    endpoint's wave comes from the thresholds, which must fit the state's plan and channel
///    (otherwise stay).
#[must_use]
pub fn decide(
    state: &ChannelRollout,
    facts: &EndpointFacts,
    policy: &Policy,
    thresholds: &WaveThresholds,
    now: Timestamp,
) -> Decision {
    let placement = Placement::of(facts, &thresholds.channel);
    decide_with(state, &placement, policy, thresholds, now, Checks::Run)
}

/// [`decide`] for a state and thresholds already validated together: `state.validate()` and
/// `thresholds.validate(&state.plan, &state.channel.name)` both passed (verified rollout metadata
/// has been: `bulwark-distribution` checks them when it accepts the file). An endpoint polling
/// every few minutes then does not validate the same metadata again. Given anything else it
/// decides as if they were valid.
#[must_use]
pub fn decide_validated(
    state: &ChannelRollout,
    facts: &EndpointFacts,
    policy: &Policy,
    thresholds: &WaveThresholds,
    now: Timestamp,
) -> Decision {
    debug_assert!(state.validate().is_ok());
    debug_assert!(thresholds
        .validate(&state.plan, &state.channel.name)
        .is_ok());
    let placement = Placement::of(facts, &thresholds.channel);
    decide_with(state, &placement, policy, thresholds, now, Checks::Done)
}

/// [`decide_validated`] for an endpoint that keeps its [`Placement`] (its stratum and position,
/// which cost a SHA-256 to compute) instead of its facts: the same decision.
#[must_use]
pub fn decide_placed(
    state: &ChannelRollout,
    placement: &Placement,
    policy: &Policy,
    thresholds: &WaveThresholds,
    now: Timestamp,
) -> Decision {
    debug_assert!(state.validate().is_ok());
    decide_with(state, placement, policy, thresholds, now, Checks::Done)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Checks {
    Run,
    Done,
}

fn decide_with(
    state: &ChannelRollout,
    placement: &Placement,
    policy: &Policy,
    thresholds: &WaveThresholds,
    now: Timestamp,
    checks: Checks,
) -> Decision {
    let policy = policy.effective(&state.channel, now);
    let valid = match checks {
        Checks::Run => state.validate(),
        Checks::Done => Ok(()),
    };
    let reverting = valid.is_ok() && state.revert && state.is_halted();
    let revert = Decision::RevertToLastKnownGood {
        halted_version: state.release.version,
    };
    if let Policy::Pin {
        version,
        expires_at,
    } = policy
    {
        if reverting && version == state.release.version {
            return revert;
        }
        return Decision::Pinned {
            version,
            expires_at,
        };
    }
    if let Err(e) = valid {
        return Decision::Stay {
            reason: StayReason::InvalidState {
                error: e.to_string(),
            },
        };
    }
    match state.status {
        Status::Halted { .. } if reverting => return revert,
        Status::Halted { .. } => {
            return Decision::Stay {
                reason: StayReason::RolloutHalted,
            }
        }
        Status::Paused { .. } => {
            return Decision::Stay {
                reason: StayReason::RolloutPaused,
            }
        }
        Status::Progressing | Status::Complete { .. } => {}
    }
    let run = Decision::Run {
        version: state.release.version,
        pack_hash: state.release.pack_hash,
    };
    let delay_hours = match policy {
        Policy::Pause => {
            return Decision::Stay {
                reason: StayReason::PolicyPause,
            }
        }
        // A valid state has at least its first wave open.
        Policy::Early => return run,
        Policy::Ga => 0,
        Policy::Delay { hours } => u64::from(hours),
        // Handled above.
        Policy::Pin { .. } => return run,
    };
    let invalid = |error: String| Decision::Stay {
        reason: StayReason::InvalidThresholds { error },
    };
    if checks == Checks::Run {
        if let Err(e) = thresholds.validate(&state.plan, &state.channel.name) {
            return invalid(e.to_string());
        }
    }
    let Some(wave) = thresholds.wave_of_placement(placement) else {
        return invalid("no wave's threshold is above the endpoint's position".to_owned());
    };
    let Some(opened) = state.opened_at(wave) else {
        return Decision::Stay {
            reason: StayReason::WaveNotOpen {
                wave,
                open_waves: state.open_waves,
            },
        };
    };
    let until = opened.plus_secs(delay_hours.saturating_mul(HOUR));
    if now < until {
        return Decision::Stay {
            reason: StayReason::Delayed { until },
        };
    }
    run
}
