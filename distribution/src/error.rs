//! Every refusal, with what was expected and what was found.

use bulwark_rollout::policy::PolicyError;
use bulwark_rollout::state::StateError;
use bulwark_rollout::thresholds::ThresholdsError;
use bulwark_rollout::Timestamp;

use crate::metadata::{KeyId, Role};

/// Which hash of a release differs between the rollout state and the releases metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackHash {
    /// The pack's SHA-256.
    Pack,
    /// The envelope's SHA-256.
    Envelope,
}

impl core::fmt::Display for PackHash {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PackHash::Pack => "pack SHA-256",
            PackHash::Envelope => "envelope SHA-256",
        })
    }
}

/// What is wrong with a root metadata's keys and roles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootError {
    /// A role has no entry.
    #[error("root v{version}: no keys for the {role} role")]
    MissingRole {
        /// The root's version.
        version: u64,
        /// The role.
        role: Role,
    },
    /// A threshold is 0 or above the number of the role's keys.
    #[error("root v{version}: the {role} role's threshold is {threshold} with {keys} keys (must be 1 to {keys})")]
    BadThreshold {
        /// The root's version.
        version: u64,
        /// The role.
        role: Role,
        /// The threshold.
        threshold: u32,
        /// The role's keys.
        keys: usize,
    },
    /// A role names a key id that is not in `keys`.
    #[error("root v{version}: the {role} role names key {keyid}, which is not in the root's keys")]
    UnlistedKey {
        /// The root's version.
        version: u64,
        /// The role.
        role: Role,
        /// The key id.
        keyid: KeyId,
    },
    /// A key's id is not the SHA-256 of its public key.
    #[error("root v{version}: key id {keyid} is not the SHA-256 of its public key")]
    KeyIdMismatch {
        /// The root's version.
        version: u64,
        /// The key id.
        keyid: KeyId,
    },
    /// A public key is not a valid ed25519 point, or a weak one.
    #[error("root v{version}: key {keyid} is not a valid (non-weak) ed25519 public key")]
    InvalidKey {
        /// The root's version.
        version: u64,
        /// The key id.
        keyid: KeyId,
    },
    /// One key in two roles (role separation: the online rollout key must never be a release or
    /// root key, and so on).
    #[error("root v{version}: key {keyid} is in both the {first} and {second} roles")]
    SharedKey {
        /// The root's version.
        version: u64,
        /// The key id.
        keyid: KeyId,
        /// One role.
        first: Role,
        /// The other.
        second: Role,
    },
}

/// Why metadata was refused (or could not be signed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not a signed metadata file, or its `signed` part is not the role's metadata.
    #[error("{role} metadata is malformed: {reason}")]
    Malformed {
        /// The role expected.
        role: Role,
        /// The parser's message.
        reason: String,
    },
    /// The file is larger than [`crate::MAX_FILE_BYTES`].
    #[error("{role} metadata is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// The role expected.
        role: Role,
        /// The file's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The file's `type` is another role's.
    #[error("expected {expected} metadata, found type {found:?}")]
    WrongType {
        /// The role expected.
        expected: Role,
        /// The `type` found.
        found: String,
    },
    /// Version 0 (versions start at 1).
    #[error("{role} metadata has version 0 (versions start at 1)")]
    ZeroVersion {
        /// The role.
        role: Role,
    },
    /// Fewer distinct valid signatures by the role's keys than its threshold.
    #[error(
        "{role} metadata: {valid} valid signatures by the {role} keys of root v{root_version}, \
         {threshold} required ({unknown} by keys not in the role, {invalid} invalid)",
        unknown = unknown_keys.len(),
        invalid = invalid.len()
    )]
    InsufficientSignatures {
        /// The role whose keys were required.
        role: Role,
        /// The version of the root whose keys and threshold were used.
        root_version: u64,
        /// The threshold.
        threshold: u32,
        /// Distinct keys of the role with a valid signature.
        valid: u32,
        /// Signatures by keys the role does not list (ignored).
        unknown_keys: Vec<KeyId>,
        /// Signatures by the role's keys that do not verify.
        invalid: Vec<KeyId>,
    },
    /// The trusted root does not accept this root: its keys or roles are inconsistent.
    #[error(transparent)]
    Root(#[from] RootError),
    /// A version older than the newest one seen.
    #[error("{role} metadata rolled back: version {found}, the newest seen is {trusted}")]
    Rollback {
        /// The role.
        role: Role,
        /// The newest version seen.
        trusted: u64,
        /// The version found.
        found: u64,
    },
    /// The newest version seen, with other content.
    #[error("{role} metadata version {version} has other content than the version {version} already seen")]
    VersionReused {
        /// The role.
        role: Role,
        /// The version.
        version: u64,
    },
    /// A root that skips versions: each root must be signed by the one before it.
    #[error("root version {found} does not follow the trusted root's {trusted} (fetch {trusted} + 1 first)")]
    RootVersionSkip {
        /// The trusted root's version.
        trusted: u64,
        /// The version found.
        found: u64,
    },
    /// Metadata whose expiry is not after `now`.
    #[error("{role} metadata version {version} expired at {expires} (now {now})")]
    Expired {
        /// The role.
        role: Role,
        /// Its version.
        version: u64,
        /// Its expiry.
        expires: Timestamp,
        /// The time of the check.
        now: Timestamp,
    },
    /// A rollout arrived before any releases metadata was verified.
    #[error("rollout metadata needs verified releases metadata first (it references releases v{referenced})")]
    NoReleases {
        /// The releases version the rollout references.
        referenced: u64,
    },
    /// The rollout references a releases version newer than the verified one: the endpoint must
    /// fetch that releases metadata first (a server cannot hold back a new releases file).
    #[error("rollout references releases v{referenced}, the newest verified is v{trusted}")]
    ReleasesNotSeen {
        /// The version referenced.
        referenced: u64,
        /// The newest verified.
        trusted: u64,
    },
    /// A channel's map key is not its channel's name.
    #[error("rollout state: entry {key:?} is the rollout of channel {name:?}")]
    ChannelName {
        /// The map key.
        key: String,
        /// The channel's name.
        name: String,
    },
    /// A channel's rollout is inconsistent.
    #[error("rollout state: channel {channel:?}: {source}")]
    InvalidState {
        /// The channel.
        channel: String,
        /// What is inconsistent.
        source: StateError,
    },
    /// A channel of the rollout state without wave thresholds.
    #[error("rollout metadata: channel {channel:?} has a rollout but no wave thresholds")]
    MissingThresholds {
        /// The channel.
        channel: String,
    },
    /// Wave thresholds for a channel the rollout state does not have.
    #[error("rollout metadata: wave thresholds for channel {channel:?}, which has no rollout")]
    StrayThresholds {
        /// The channel.
        channel: String,
    },
    /// A channel's thresholds do not fit its plan.
    #[error("rollout metadata: channel {channel:?}: wave thresholds: {source}")]
    InvalidThresholds {
        /// The channel.
        channel: String,
        /// What does not fit.
        source: ThresholdsError,
    },
    /// The policy table is invalid for the rollout's channels.
    #[error("rollout metadata: policies: {0}")]
    InvalidPolicies(PolicyError),
    /// A pin to a version the releases metadata does not list.
    #[error("rollout metadata: {scope} pins {channel:?} to version {version}, which the releases metadata v{releases_version} does not list")]
    UnreleasedPin {
        /// The host group, or `default policy`.
        scope: String,
        /// The channel.
        channel: String,
        /// The pinned version.
        version: u64,
        /// The releases metadata's version.
        releases_version: u64,
    },
    /// The rollout references a release no release key signed.
    #[error("rollout references {channel:?} version {version}, which the releases metadata v{releases_version} does not list")]
    UnreleasedPack {
        /// The channel.
        channel: String,
        /// The content version.
        version: u64,
        /// The releases metadata's version.
        releases_version: u64,
    },
    /// The rollout references a signed release with another hash.
    #[error("rollout references {channel:?} version {version} with a {which} other than the releases metadata v{releases_version}'s")]
    PackHashMismatch {
        /// The channel.
        channel: String,
        /// The content version.
        version: u64,
        /// Which hash differs.
        which: PackHash,
        /// The releases metadata's version.
        releases_version: u64,
    },
    /// Signing: the body does not serialize to JSON that parses back (e.g. a non-finite number).
    #[error("{role} metadata cannot be signed: {reason}")]
    Unserializable {
        /// The role.
        role: Role,
        /// Why.
        reason: String,
    },
}
