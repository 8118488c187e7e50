//! Endpoint policies: how a host group takes a channel's releases.

use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::time::Timestamp;

/// Longest delay a policy may ask for, in hours.
pub const MAX_DELAY_HOURS: u32 = 72;

/// How the endpoints of a host group take a channel's releases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    /// General availability: take a release when the endpoint's own wave opens.
    Ga,
    /// Take a release as soon as the first wave opens, whatever the endpoint's position (for
    /// machines that volunteer to see content first, such as the vendor's own).
    Early,
    /// Take nothing new; keep what runs. Refused on critical channels.
    Pause,
    /// Take a release `hours` (0 to 72) after the endpoint's own wave opened.
    Delay {
        /// Hours to wait after the wave opened.
        hours: u32,
    },
    /// Run exactly `version` until `expires_at`, then lapse on its own to [`Policy::Ga`]. Reported
    /// while active ([`PolicyTable::active_pins`], [`Decision::Pinned`](crate::decision::Decision)).
    /// The endpoint must hold that version (its guard accepts an older version only as its
    /// last-known-good).
    Pin {
        /// The version to run.
        version: u64,
        /// When the pin lapses (the pin is active while `now < expires_at`).
        expires_at: Timestamp,
    },
}

/// What is wrong with a policy, naming where it applies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A pause on a critical channel.
    #[error(
        "{scope}: Pause is refused on critical channel {channel:?} (critical content cannot be \
         paused; use Delay of at most {MAX_DELAY_HOURS} hours)"
    )]
    PauseOnCriticalChannel {
        /// The host group, or `default policy`.
        scope: String,
        /// The channel.
        channel: String,
    },
    /// A delay above [`MAX_DELAY_HOURS`].
    #[error(
        "{scope}: Delay of {hours} hours on channel {channel:?} is more than {MAX_DELAY_HOURS}"
    )]
    DelayTooLong {
        /// The host group, or `default policy`.
        scope: String,
        /// The channel.
        channel: String,
        /// The hours asked for.
        hours: u32,
    },
    /// A pin to version 0 (no release has it).
    #[error("{scope}: Pin to version 0 on channel {channel:?}; versions start at 1")]
    PinToVersionZero {
        /// The host group, or `default policy`.
        scope: String,
        /// The channel.
        channel: String,
    },
    /// An entry for a channel that is not known.
    #[error("host group {host_group:?}: policy for unknown channel {channel:?}")]
    UnknownChannel {
        /// The host group.
        host_group: String,
        /// The channel.
        channel: String,
    },
    /// An entry with an empty host group.
    #[error("policy entry for channel {channel:?} has an empty host group")]
    EmptyHostGroup {
        /// The channel.
        channel: String,
    },
    /// Two entries for one host group and channel.
    #[error("host group {host_group:?}, channel {channel:?}: more than one policy")]
    Duplicate {
        /// The host group.
        host_group: String,
        /// The channel.
        channel: String,
    },
}

impl Policy {
    /// Whether this is a pin that is still active at `now`.
    #[must_use]
    pub fn is_active_pin(&self, now: Timestamp) -> bool {
        matches!(self, Policy::Pin { expires_at, .. } if now < *expires_at)
    }

    /// The policy in force at `now` on `channel`:
    /// * an expired pin has lapsed to [`Policy::Ga`];
    /// * a `Pause` on a critical channel (which validation refuses; this is for a table that was
    ///   never validated) is [`Policy::Ga`]: critical content is never paused;
    /// * a `Delay` above 72 hours is 72 hours.
    #[must_use]
    pub fn effective(&self, channel: &Channel, now: Timestamp) -> Policy {
        match self {
            Policy::Pin { expires_at, .. } if now >= *expires_at => Policy::Ga,
            Policy::Pause if channel.critical => Policy::Ga,
            Policy::Delay { hours } if *hours > MAX_DELAY_HOURS => Policy::Delay {
                hours: MAX_DELAY_HOURS,
            },
            other => other.clone(),
        }
    }

    /// Checks this policy for `channel`; `scope` names where it is set, for the error.
    pub fn validate_for(&self, channel: &Channel, scope: &str) -> Result<(), PolicyError> {
        match self {
            Policy::Pause if channel.critical => Err(PolicyError::PauseOnCriticalChannel {
                scope: scope.to_owned(),
                channel: channel.name.clone(),
            }),
            Policy::Delay { hours } if *hours > MAX_DELAY_HOURS => Err(PolicyError::DelayTooLong {
                scope: scope.to_owned(),
                channel: channel.name.clone(),
                hours: *hours,
            }),
            Policy::Pin { version: 0, .. } => Err(PolicyError::PinToVersionZero {
                scope: scope.to_owned(),
                channel: channel.name.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// One row of a [`PolicyTable`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyEntry {
    /// The host group.
    pub host_group: String,
    /// The channel's name.
    pub channel: String,
    /// The policy.
    pub policy: Policy,
}

/// Policies by (host group, channel), with a default for everything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyTable {
    /// The policy of any (host group, channel) without an entry; it applies to every channel, so
    /// it cannot be `Pause` while a critical channel exists.
    pub default: Policy,
    /// The entries, sorted by (host group, channel), unique.
    pub entries: Vec<PolicyEntry>,
}

/// A pin in force, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivePin {
    /// The host group (`None` for the default policy).
    pub host_group: Option<String>,
    /// The channel (`None` for the default policy: every channel).
    pub channel: Option<String>,
    /// The pinned version.
    pub version: u64,
    /// When it lapses.
    pub expires_at: Timestamp,
}

impl Default for PolicyTable {
    fn default() -> Self {
        Self::new(Policy::Ga)
    }
}

impl PolicyTable {
    /// A table with only a default.
    #[must_use]
    pub fn new(default: Policy) -> Self {
        Self {
            default,
            entries: Vec::new(),
        }
    }

    /// Sets (or replaces) the policy of `host_group` on `channel`, keeping entries sorted. Not
    /// validated: call [`PolicyTable::validate`] before publishing.
    pub fn set(&mut self, host_group: &str, channel: &str, policy: Policy) {
        let key = (host_group, channel);
        match self
            .entries
            .binary_search_by(|e| (e.host_group.as_str(), e.channel.as_str()).cmp(&key))
        {
            Ok(i) => {
                if let Some(e) = self.entries.get_mut(i) {
                    e.policy = policy;
                }
            }
            Err(i) => self.entries.insert(
                i,
                PolicyEntry {
                    host_group: host_group.to_owned(),
                    channel: channel.to_owned(),
                    policy,
                },
            ),
        }
    }

    /// The policy set for `host_group` on `channel` (as set: see [`Policy::effective`] for the one
    /// in force at a time).
    #[must_use]
    pub fn resolve(&self, host_group: &str, channel: &str) -> &Policy {
        self.entries
            .iter()
            .find(|e| e.host_group == host_group && e.channel == channel)
            .map_or(&self.default, |e| &e.policy)
    }

    /// Checks the table against the known channels: the default and every entry valid for its
    /// channels ([`Policy::validate_for`]), entries only for known channels, no empty host group,
    /// no duplicate.
    pub fn validate(&self, channels: &[Channel]) -> Result<(), PolicyError> {
        for c in channels {
            self.default.validate_for(c, "default policy")?;
        }
        for (i, e) in self.entries.iter().enumerate() {
            if e.host_group.is_empty() {
                return Err(PolicyError::EmptyHostGroup {
                    channel: e.channel.clone(),
                });
            }
            if self
                .entries
                .iter()
                .take(i)
                .any(|o| o.host_group == e.host_group && o.channel == e.channel)
            {
                return Err(PolicyError::Duplicate {
                    host_group: e.host_group.clone(),
                    channel: e.channel.clone(),
                });
            }
            let channel = channels
                .iter()
                .find(|c| c.name == e.channel)
                .ok_or_else(|| PolicyError::UnknownChannel {
                    host_group: e.host_group.clone(),
                    channel: e.channel.clone(),
                })?;
            e.policy
                .validate_for(channel, &format!("host group {:?}", e.host_group))?;
        }
        Ok(())
    }

    /// The pins in force at `now` (lapsed pins are not reported).
    #[must_use]
    pub fn active_pins(&self, now: Timestamp) -> Vec<ActivePin> {
        let mut pins = Vec::new();
        if let Policy::Pin {
            version,
            expires_at,
        } = &self.default
        {
            if now < *expires_at {
                pins.push(ActivePin {
                    host_group: None,
                    channel: None,
                    version: *version,
                    expires_at: *expires_at,
                });
            }
        }
        for e in &self.entries {
            if let Policy::Pin {
                version,
                expires_at,
            } = &e.policy
            {
                if now < *expires_at {
                    pins.push(ActivePin {
                        host_group: Some(e.host_group.clone()),
                        channel: Some(e.channel.clone()),
                        version: *version,
                        expires_at: *expires_at,
                    });
                }
            }
        }
        pins
    }
}
