//! Local controls an endpoint's administrator sets with `bulwark-service pin VERSION | unpin |
//! revert | pause | resume --config FILE`: kept in `STATE/admin.json` (written to a temporary file,
//! fsynced, renamed), which the running agent reads at every step and obeys before the rollout's
//! decision. The command only writes that file; the agent alone talks to the driver and writes
//! `state.json`, so the two never write the same file.
//!
//! * `pin VERSION`: stay on (or go to) this content version whatever the rollout says: back to
//!   the guard's last-known-good if it is that version, fetched and staged if it is newer;
//!   an older version that is not last-known-good cannot be reached (the guard refuses
//!   downgrades), which the agent logs.
//! * `unpin`: follow the rollout again.
//! * `pause`: take no new content (reporting goes on); `resume` ends it.
//! * `revert`: go back to the guard's last-known-good now, once, and do not take the reverted
//!   version again.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The file's name in the state directory.
pub const FILE: &str = "admin.json";

/// What the administrator set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminControls {
    /// The content version to stay on, if pinned.
    #[serde(default)]
    pub pinned: Option<u64>,
    /// No new content while set.
    #[serde(default)]
    pub paused: bool,
    /// Reverts asked for so far (the agent carries out each new one once).
    #[serde(default)]
    pub reverts_requested: u64,
}

/// An administrator's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stay on this version.
    Pin(u64),
    /// Follow the rollout again.
    Unpin,
    /// Take no new content.
    Pause,
    /// Take new content again.
    Resume,
    /// Back to last-known-good now.
    Revert,
}

/// Why the controls could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path}: not valid admin controls: {message}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong, with its line and column.
        message: String,
    },
}

/// Reads the controls in `state_dir` (the defaults if there is no file).
pub fn load(state_dir: &Path) -> Result<AdminControls, AdminError> {
    let path = state_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => parse(&bytes, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AdminControls::default()),
        Err(source) => Err(AdminError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Parses the controls file's bytes (`path` names it in the error).
pub fn parse(bytes: &[u8], path: &str) -> Result<AdminControls, AdminError> {
    serde_json::from_slice(bytes).map_err(|e| AdminError::Malformed {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Applies `command` to the controls in `state_dir` (created if needed) and returns them.
pub fn apply(state_dir: &Path, command: Command) -> Result<AdminControls, AdminError> {
    let io = |source| AdminError::Io {
        path: state_dir.join(FILE).display().to_string(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let mut c = load(state_dir)?;
    match command {
        Command::Pin(v) => c.pinned = Some(v),
        Command::Unpin => c.pinned = None,
        Command::Pause => c.paused = true,
        Command::Resume => c.paused = false,
        Command::Revert => c.reverts_requested = c.reverts_requested.saturating_add(1),
    }
    let bytes = serde_json::to_vec_pretty(&c).map_err(|e| io(std::io::Error::other(e)))?;
    crate::agent::write_atomic(&state_dir.join(FILE), &bytes).map_err(io)?;
    Ok(c)
}

/// Notices a change of the controls file (its modification time or length), so that the service
/// acts on an administrator's command at once rather than at its next scheduled step.
#[derive(Debug, Default)]
pub struct Watcher {
    seen: Option<(Option<std::time::SystemTime>, u64)>,
}

impl Watcher {
    /// Whether the file in `state_dir` changed since the last call (the first call only records
    /// what it sees).
    pub fn changed(&mut self, state_dir: &Path) -> bool {
        let now = std::fs::metadata(state_dir.join(FILE))
            .ok()
            .map(|m| (m.modified().ok(), m.len()));
        let now = now.unwrap_or((None, 0));
        let changed = self.seen.is_some_and(|seen| seen != now);
        self.seen = Some(now);
        changed
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn commands_change_only_their_control_and_survive_a_reload() {
        let dir = std::env::temp_dir().join(format!("bulwark-admin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir).unwrap(), AdminControls::default());
        apply(&dir, Command::Pin(7)).unwrap();
        apply(&dir, Command::Pause).unwrap();
        apply(&dir, Command::Revert).unwrap();
        let c = apply(&dir, Command::Revert).unwrap();
        assert_eq!(
            c,
            AdminControls {
                pinned: Some(7),
                paused: true,
                reverts_requested: 2
            }
        );
        assert_eq!(load(&dir).unwrap(), c);
        apply(&dir, Command::Unpin).unwrap();
        let c = apply(&dir, Command::Resume).unwrap();
        assert_eq!((c.pinned, c.paused, c.reverts_requested), (None, false, 2));
        // A damaged file is an error naming it, not silently the defaults.
        std::fs::write(dir.join(FILE), b"{\"pinned\": \"seven\"}").unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains("admin.json: not valid admin controls"), "{e}");
        assert!(e.contains("line 1"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_watcher_sees_a_command() {
        let dir = std::env::temp_dir().join(format!("bulwark-admin-w-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = Watcher::default();
        assert!(!w.changed(&dir));
        assert!(!w.changed(&dir));
        apply(&dir, Command::Pause).unwrap();
        assert!(w.changed(&dir));
        assert!(!w.changed(&dir));
        apply(&dir, Command::Pin(12)).unwrap();
        assert!(w.changed(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
