//! The controller: the pure step that moves a rollout forward, halts it, or holds it, and the
//! operator's commands. The server calls [`step`] whenever it has fresh observations (for example
//! every few minutes) and signs and publishes the state it returns.

use serde::{Deserialize, Serialize};

use crate::channel::{Channel, ChannelError};
use crate::health::{analyze, HealthConfig, Outcome};
use crate::observations::HealthObservations;
use crate::plan::{Plan, PlanError};
use crate::release::Release;
use crate::state::{ChannelRollout, HaltCause, HaltRecord, Status};
use crate::time::Timestamp;

/// What a step or command did, for the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControllerEvent {
    /// A rollout started.
    Started {
        /// The release.
        version: u64,
        /// The baseline it is compared with.
        baseline_version: Option<u64>,
        /// When.
        at: Timestamp,
    },
    /// A wave opened.
    WaveOpened {
        /// Its index.
        wave: usize,
        /// Its name.
        name: String,
        /// Its cumulative fraction.
        fraction_ppm: u32,
        /// When.
        at: Timestamp,
    },
    /// The step did not advance; why (each condition not met, each holding verdict).
    Held {
        /// The newest open wave.
        wave: usize,
        /// Every reason.
        reasons: Vec<String>,
    },
    /// The rollout was halted (automatically or by an operator).
    Halted {
        /// The record.
        record: HaltRecord,
    },
    /// The last wave baked healthy: the rollout is complete.
    Completed {
        /// When.
        at: Timestamp,
    },
    /// An operator paused the rollout.
    Paused {
        /// Why.
        reason: String,
        /// When.
        at: Timestamp,
    },
    /// An operator resumed it.
    Resumed {
        /// When.
        at: Timestamp,
    },
    /// An operator ordered endpoints on the halted release back to their last-known-good.
    RevertOrdered {
        /// The halted release.
        version: u64,
        /// When.
        at: Timestamp,
    },
}

/// Why an operator command was refused. Nothing changes when one is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The channel is invalid.
    #[error("invalid channel: {0}")]
    Channel(#[from] ChannelError),
    /// The plan is invalid.
    #[error("invalid plan: {0}")]
    Plan(#[from] PlanError),
    /// The release is for another channel.
    #[error("release is for channel {release:?}, not {channel:?}")]
    ReleaseChannel {
        /// The release's channel.
        release: String,
        /// The channel.
        channel: String,
    },
    /// The previous rollout is of another channel.
    #[error("the previous rollout is of channel {previous:?}, not {channel:?}")]
    PreviousChannel {
        /// Its channel.
        previous: String,
        /// The channel.
        channel: String,
    },
    /// The release is not newer than the previous one.
    #[error("release version {version} is not above the previous release's {previous}")]
    VersionNotNewer {
        /// The release.
        version: u64,
        /// The previous release.
        previous: u64,
    },
    /// The command does not apply in the rollout's status.
    #[error("{command}: refused while the rollout is {status}")]
    WrongStatus {
        /// The command.
        command: &'static str,
        /// The status.
        status: &'static str,
    },
    /// A pause or halt without a reason.
    #[error("{command}: a reason is required")]
    EmptyReason {
        /// The command.
        command: &'static str,
    },
}

impl Status {
    /// The status's name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Status::Progressing => "progressing",
            Status::Paused { .. } => "paused",
            Status::Halted { .. } => "halted",
            Status::Complete { .. } => "complete",
        }
    }
}

fn bump(s: &mut ChannelRollout) {
    s.revision = s.revision.saturating_add(1);
}

/// Starts rolling `release` out on `channel` under `plan`, after `previous` (the channel's last
/// rollout, which must be complete or halted): the first wave opens at `now`. The baseline is the
/// previous release if it completed, or the previous baseline if it was halted (a halted release
/// is never a baseline).
pub fn start(
    channel: Channel,
    release: Release,
    plan: Plan,
    previous: Option<&ChannelRollout>,
    now: Timestamp,
) -> Result<(ChannelRollout, Vec<ControllerEvent>), CommandError> {
    channel.validate()?;
    plan.validate()?;
    if release.channel != channel.name {
        return Err(CommandError::ReleaseChannel {
            release: release.channel,
            channel: channel.name,
        });
    }
    let mut baseline_version = None;
    let mut revision = 1;
    if let Some(p) = previous {
        if p.channel.name != channel.name {
            return Err(CommandError::PreviousChannel {
                previous: p.channel.name.clone(),
                channel: channel.name,
            });
        }
        let floor = p.release.version.max(p.baseline_version.unwrap_or(0));
        if release.version <= floor {
            return Err(CommandError::VersionNotNewer {
                version: release.version,
                previous: floor,
            });
        }
        baseline_version = match p.status {
            Status::Complete { .. } => Some(p.release.version),
            Status::Halted { .. } => p.baseline_version,
            Status::Progressing | Status::Paused { .. } => {
                return Err(CommandError::WrongStatus {
                    command: "start",
                    status: p.status.name(),
                })
            }
        };
        revision = p.revision.saturating_add(1);
    }
    let Some(first) = plan.waves.first() else {
        return Err(CommandError::Plan(PlanError::NoWaves));
    };
    let events = vec![
        ControllerEvent::Started {
            version: release.version,
            baseline_version,
            at: now,
        },
        ControllerEvent::WaveOpened {
            wave: 0,
            name: first.name.clone(),
            fraction_ppm: first.fraction_ppm,
            at: now,
        },
    ];
    let mut wave_opened_at = vec![None; plan.waves.len()];
    if let Some(slot) = wave_opened_at.first_mut() {
        *slot = Some(now);
    }
    let state = ChannelRollout {
        revision,
        channel,
        release,
        plan,
        baseline_version,
        wave_opened_at,
        open_waves: 1,
        status: Status::Progressing,
        revert: false,
    };
    Ok((state, events))
}

/// One controller step with the default [`HealthConfig`]; see [`step_with`].
#[must_use]
pub fn step(
    state: &ChannelRollout,
    observations: &HealthObservations,
    now: Timestamp,
) -> (ChannelRollout, Vec<ControllerEvent>) {
    step_with(state, observations, now, &HealthConfig::default())
}

/// One controller step.
///
/// * Halted or complete: nothing to do.
/// * An inconsistent state, or observations of another release: hold.
/// * Otherwise the open waves' health is analysed ([`analyze`]). A failed test halts the
///   rollout with `revert = true` and a [`HaltRecord`] of the failed verdicts (also when paused).
/// * Progressing: the next wave opens (or, after the last, the rollout completes) only when all
///   three hold: the newest wave's bake time has elapsed, its cohort has at least `min_healthy`
///   confirmations, and the analysis passed (no hold: no weak signal, no missing data). Otherwise
///   a [`ControllerEvent::Held`] lists every unmet condition. At most one wave opens per step.
#[must_use]
pub fn step_with(
    state: &ChannelRollout,
    observations: &HealthObservations,
    now: Timestamp,
    config: &HealthConfig,
) -> (ChannelRollout, Vec<ControllerEvent>) {
    let mut s = state.clone();
    let current = s.current_wave();
    let held = |reasons: Vec<String>| {
        vec![ControllerEvent::Held {
            wave: current,
            reasons,
        }]
    };
    match s.status {
        Status::Halted { .. } | Status::Complete { .. } => return (s, Vec::new()),
        Status::Progressing | Status::Paused { .. } => {}
    }
    if let Err(e) = s.validate() {
        return (
            s,
            held(vec![format!("the rollout state is inconsistent: {e}")]),
        );
    }
    if observations.release_version != s.release.version {
        let reason = format!(
            "observations are of release {}, the rollout is of {}: ignored",
            observations.release_version, s.release.version
        );
        return (s, held(vec![reason]));
    }
    let report = analyze(observations, &s.plan, s.open_waves as usize, config);
    if report.outcome == Outcome::Fail {
        let record = HaltRecord {
            at: now,
            open_waves: s.open_waves,
            cause: HaltCause::Automatic {
                failed: report.with_outcome(Outcome::Fail).cloned().collect(),
            },
        };
        s.status = Status::Halted {
            halt: record.clone(),
        };
        s.revert = true;
        bump(&mut s);
        return (s, vec![ControllerEvent::Halted { record }]);
    }
    if matches!(s.status, Status::Paused { .. }) {
        return (s, held(vec!["paused by an operator".to_owned()]));
    }
    let Some(wave) = s.plan.waves.get(current).cloned() else {
        return (s, held(vec!["no current wave".to_owned()]));
    };
    let mut reasons = Vec::new();
    let opened = s.opened_at(current).unwrap_or(now);
    let baked_at = opened.plus_secs(wave.bake_secs);
    if now < baked_at {
        reasons.push(format!(
            "wave {current} ({}) bakes until {baked_at} ({} s from now; {} s bake)",
            wave.name,
            baked_at.secs_since(now),
            wave.bake_secs
        ));
    }
    let confirmed = observations
        .waves
        .get(current)
        .map_or(0, |c| c.confirmed_healthy);
    if confirmed < u64::from(wave.min_healthy) {
        reasons.push(format!(
            "wave {current} ({}) has {confirmed} of the {} healthy confirmations it needs",
            wave.name, wave.min_healthy
        ));
    }
    reasons.extend(report.with_outcome(Outcome::Hold).map(|v| v.reason.clone()));
    if !reasons.is_empty() {
        return (s, held(reasons));
    }
    let next = current.saturating_add(1);
    bump(&mut s);
    if let Some(next_wave) = s.plan.waves.get(next).cloned() {
        if let Some(slot) = s.wave_opened_at.get_mut(next) {
            *slot = Some(now);
        }
        s.open_waves = s.open_waves.saturating_add(1);
        let event = ControllerEvent::WaveOpened {
            wave: next,
            name: next_wave.name,
            fraction_ppm: next_wave.fraction_ppm,
            at: now,
        };
        (s, vec![event])
    } else {
        s.status = Status::Complete { at: now };
        (s, vec![ControllerEvent::Completed { at: now }])
    }
}

/// Pauses a progressing rollout: no wave opens and no endpoint starts the release until
/// [`resume`]; health is still analysed and a failure still halts.
pub fn pause(
    state: &ChannelRollout,
    reason: &str,
    now: Timestamp,
) -> Result<(ChannelRollout, Vec<ControllerEvent>), CommandError> {
    if reason.trim().is_empty() {
        return Err(CommandError::EmptyReason { command: "pause" });
    }
    if state.status != Status::Progressing {
        return Err(CommandError::WrongStatus {
            command: "pause",
            status: state.status.name(),
        });
    }
    let mut s = state.clone();
    s.status = Status::Paused {
        at: now,
        reason: reason.to_owned(),
    };
    bump(&mut s);
    let event = ControllerEvent::Paused {
        reason: reason.to_owned(),
        at: now,
    };
    Ok((s, vec![event]))
}

/// Resumes a paused rollout. Bake time kept running while paused (the exposure was real).
pub fn resume(
    state: &ChannelRollout,
    now: Timestamp,
) -> Result<(ChannelRollout, Vec<ControllerEvent>), CommandError> {
    if !matches!(state.status, Status::Paused { .. }) {
        return Err(CommandError::WrongStatus {
            command: "resume",
            status: state.status.name(),
        });
    }
    let mut s = state.clone();
    s.status = Status::Progressing;
    bump(&mut s);
    Ok((s, vec![ControllerEvent::Resumed { at: now }]))
}

/// Halts a progressing or paused rollout by hand. Endpoints stop taking the release; those that
/// run it keep it until [`revert`] is ordered.
pub fn halt(
    state: &ChannelRollout,
    reason: &str,
    now: Timestamp,
) -> Result<(ChannelRollout, Vec<ControllerEvent>), CommandError> {
    if reason.trim().is_empty() {
        return Err(CommandError::EmptyReason { command: "halt" });
    }
    if !matches!(state.status, Status::Progressing | Status::Paused { .. }) {
        return Err(CommandError::WrongStatus {
            command: "halt",
            status: state.status.name(),
        });
    }
    let mut s = state.clone();
    let record = HaltRecord {
        at: now,
        open_waves: s.open_waves,
        cause: HaltCause::Operator {
            reason: reason.to_owned(),
        },
    };
    s.status = Status::Halted {
        halt: record.clone(),
    };
    bump(&mut s);
    Ok((s, vec![ControllerEvent::Halted { record }]))
}

/// Orders the endpoints running a halted release back to their last-known-good. Already
/// ordered: no change, no event.
pub fn revert(
    state: &ChannelRollout,
    now: Timestamp,
) -> Result<(ChannelRollout, Vec<ControllerEvent>), CommandError> {
    if !state.is_halted() {
        return Err(CommandError::WrongStatus {
            command: "revert",
            status: state.status.name(),
        });
    }
    let mut s = state.clone();
    if s.revert {
        return Ok((s, Vec::new()));
    }
    s.revert = true;
    bump(&mut s);
    let event = ControllerEvent::RevertOrdered {
        version: s.release.version,
        at: now,
    };
    Ok((s, vec![event]))
}
