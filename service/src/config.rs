//! The service's TOML configuration.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use bulwark_distribution::MetadataMemo;

use crate::agent::AgentConfig;

/// `bulwark-service.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The server, `https://host:port`.
    pub server_url: String,
    /// A PEM certificate to trust instead of the built-in roots (a development server).
    pub ca_cert: Option<PathBuf>,
    /// Fetch metadata and envelopes from this directory (`bulwark-server export DIR`, a CDN
    /// mirror) instead of the server; telemetry still goes to the server.
    pub content_dir: Option<PathBuf>,
    /// The enrollment secret, or
    pub enrollment_secret: Option<String>,
    /// a file holding it.
    pub enrollment_secret_file: Option<PathBuf>,
    /// The rollout channel's name.
    pub channel: String,
    /// Its number in envelopes.
    pub channel_number: u32,
    /// The host group policies resolve by.
    #[serde(default = "default_group")]
    pub host_group: String,
    /// Windows build reported at enrollment.
    pub os_build: String,
    /// Hardware class reported at enrollment.
    pub hw_class: String,
    /// The trusted root metadata (`bulwark metadata root`), shipped with the endpoint.
    pub root: PathBuf,
    /// The release keys' ed25519 public keys, 64 hex digits each.
    pub release_keys: Vec<String>,
    /// The agent's state: enrollment, trusted metadata, spool.
    pub state_dir: PathBuf,
    /// The in-process driver's guard records (off Windows).
    pub guard_dir: Option<PathBuf>,
    /// Mean heartbeat interval.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// Health window before confirming a staged pack.
    #[serde(default = "default_window")]
    pub health_window_secs: u64,
    /// First retry delay.
    #[serde(default = "default_base")]
    pub backoff_base_secs: u64,
    /// Longest retry delay.
    #[serde(default = "default_max")]
    pub backoff_max_secs: u64,
    /// The spool's bound.
    #[serde(default = "default_spool")]
    pub spool_max_bytes: u64,
    /// Stage hot (default) or for the next boot.
    #[serde(default = "default_hot")]
    pub hot: bool,
    /// Network timeout.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Confirm a release only once events have gone through it (see
    /// [`AgentConfig::health_requires_events`]).
    #[serde(default = "default_hot")]
    pub health_requires_events: bool,
    /// The log file (rotated by size); none: standard error only (and, as a Windows service,
    /// the event log).
    pub log_file: Option<PathBuf>,
    /// The log file's size bound before it is rotated.
    #[serde(default = "default_log_max")]
    pub log_max_bytes: u64,
    /// Rotated log files kept.
    #[serde(default = "default_log_keep")]
    pub log_keep: u32,
}

fn default_log_max() -> u64 {
    10 << 20
}
fn default_log_keep() -> u32 {
    5
}

fn default_group() -> String {
    "default".into()
}
fn default_heartbeat() -> u64 {
    300
}
fn default_window() -> u64 {
    600
}
fn default_base() -> u64 {
    5
}
fn default_max() -> u64 {
    900
}
fn default_spool() -> u64 {
    16 << 20
}
fn default_hot() -> bool {
    true
}
fn default_timeout() -> u64 {
    30
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The file concerned.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn err(path: &Path, message: impl ToString) -> ConfigError {
    ConfigError {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

impl ServiceConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<ServiceConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| err(path, e))?;
        toml::from_str(&text).map_err(|e| err(path, e))
    }

    /// The agent's part, with the files it names read.
    pub fn agent(&self, path: &Path) -> Result<AgentConfig, ConfigError> {
        let secret = match (&self.enrollment_secret, &self.enrollment_secret_file) {
            (Some(s), None) => s.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| err(f, e))?
                .trim()
                .to_owned(),
            _ => {
                return Err(err(
                    path,
                    "exactly one of enrollment_secret and enrollment_secret_file",
                ))
            }
        };
        let root = std::fs::read_to_string(&self.root).map_err(|e| err(&self.root, e))?;
        let release_keys = self
            .release_keys
            .iter()
            .map(|k| {
                parse_key(k)
                    .ok_or_else(|| err(path, format!("release key {k:?} is not 64 hex digits")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AgentConfig {
            channel: self.channel.clone(),
            channel_number: self.channel_number,
            enrollment_secret: secret,
            os_build: self.os_build.clone(),
            hw_class: self.hw_class.clone(),
            host_group: self.host_group.clone(),
            release_keys,
            root,
            heartbeat_secs: self.heartbeat_secs,
            health_window_secs: self.health_window_secs,
            backoff_base_secs: self.backoff_base_secs,
            backoff_max_secs: self.backoff_max_secs,
            spool_max_bytes: self.spool_max_bytes,
            hot: self.hot,
            health_requires_events: self.health_requires_events,
            metadata_memo: MetadataMemo::off(),
        })
    }
}

fn parse_key(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}
