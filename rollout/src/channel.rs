//! Content channels: independent streams of releases (for example `detections` and `critical`).

use serde::{Deserialize, Serialize};

/// Longest channel name accepted.
pub const MAX_CHANNEL_NAME: usize = 64;

/// A content channel.
///
/// A *critical* channel carries content that must reach every endpoint (for example a detection
/// for a worm spreading now): endpoints cannot [`Pause`](crate::policy::Policy::Pause) it. It is
/// still delivered in waves: critical is about who may refuse, never about skipping the canary.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Channel {
    /// The channel's name: 1 to 64 characters of `a-z`, `0-9`, `-`, `_`, `.`.
    pub name: String,
    /// Whether endpoints are refused a `Pause` policy on this channel.
    pub critical: bool,
}

/// Why a channel is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The name is empty.
    #[error("channel name is empty")]
    EmptyName,
    /// The name is longer than [`MAX_CHANNEL_NAME`].
    #[error("channel name {name:?} is {len} characters, more than {MAX_CHANNEL_NAME}")]
    NameTooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a character outside `a-z 0-9 - _ .`.
    #[error("channel name {name:?} holds {character:?}; allowed: a-z 0-9 - _ .")]
    BadCharacter {
        /// The name.
        name: String,
        /// The first character refused.
        character: char,
    },
}

impl Channel {
    /// A channel (not validated; see [`Channel::validate`]).
    #[must_use]
    pub fn new(name: &str, critical: bool) -> Self {
        Self {
            name: name.to_owned(),
            critical,
        }
    }

    /// Checks the name.
    pub fn validate(&self) -> Result<(), ChannelError> {
        validate_name(&self.name)
    }
}

/// Checks a channel name.
pub fn validate_name(name: &str) -> Result<(), ChannelError> {
    if name.is_empty() {
        return Err(ChannelError::EmptyName);
    }
    if name.len() > MAX_CHANNEL_NAME {
        return Err(ChannelError::NameTooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    if let Some(character) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')))
    {
        return Err(ChannelError::BadCharacter {
            name: name.to_owned(),
            character,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Channel::new("detections", false).validate(), Ok(()));
        assert_eq!(
            Channel::new("", true).validate(),
            Err(ChannelError::EmptyName)
        );
        assert!(matches!(
            Channel::new("Detections", false).validate(),
            Err(ChannelError::BadCharacter { character: 'D', .. })
        ));
        assert!(matches!(
            Channel::new(&"a".repeat(65), false).validate(),
            Err(ChannelError::NameTooLong { len: 65, .. })
        ));
    }
}
