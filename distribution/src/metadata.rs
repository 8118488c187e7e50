//! The three roles' metadata: what is inside `signed`.
//!
//! Every struct serializes its fields in declaration order and every map is a `BTreeMap`, so one
//! value has one JSON encoding (the signer's). The verifier never re-serializes: signatures cover
//! the bytes of `signed` exactly as received.

use std::collections::{BTreeMap, BTreeSet};

use bulwark_rollout::{hex, PolicyTable, Release, RolloutState, Timestamp, WaveThresholds};
use ed25519_dalek::VerifyingKey;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::RootError;

/// A role: who may sign which metadata file. Also the file's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The offline root keys: every role's keys and thresholds, including its own.
    Root,
    /// The release keys: which packs exist (channel, version, pack and envelope hashes).
    Releases,
    /// The online key: the rollout state, referencing only released packs.
    Rollout,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Root, Role::Releases, Role::Rollout];

    /// The role's name, as in `type`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Releases => "releases",
            Role::Rollout => "rollout",
        }
    }
}

impl core::fmt::Display for Role {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A key id: the SHA-256 of the 32-byte ed25519 public key, in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(#[serde(with = "hex")] pub [u8; 32]);

impl KeyId {
    /// The id of `public`.
    #[must_use]
    pub fn of(public: &[u8; 32]) -> KeyId {
        KeyId(Sha256::digest(public).into())
    }
}

impl core::fmt::Display for KeyId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

/// The only key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// Ed25519, verified with `verify_strict`.
    Ed25519,
}

/// A public key (the bytes of a `KEY.pub` line: `bulwark-ed25519-public-key <hex>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKey {
    /// Its type.
    pub keytype: KeyType,
    /// The 32 bytes.
    #[serde(with = "hex")]
    pub public: [u8; 32],
}

/// A role's keys and threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleKeys {
    /// The ids of the keys that may sign for the role.
    pub keyids: BTreeSet<KeyId>,
    /// How many distinct keys of `keyids` must sign.
    pub threshold: u32,
}

/// A role's metadata.
pub trait Metadata: Serialize + DeserializeOwned {
    /// Its role (and `type`).
    const ROLE: Role;
    /// Its version.
    fn version(&self) -> u64;
    /// Its expiry.
    fn expires(&self) -> Timestamp;
}

/// The root metadata: the keys and threshold of every role. Signed by a threshold of its own root
/// keys and, from version 2, of the previous root's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    /// Always [`Role::Root`].
    #[serde(rename = "type")]
    pub kind: Role,
    /// The version: each root is the previous one plus 1.
    pub version: u64,
    /// When it expires.
    pub expires: Timestamp,
    /// Every key, by id.
    pub keys: BTreeMap<KeyId, PublicKey>,
    /// Every role's keys and threshold.
    pub roles: BTreeMap<Role, RoleKeys>,
}

impl Root {
    /// An empty root (add roles with [`Root::with_role`]).
    #[must_use]
    pub fn new(version: u64, expires: Timestamp) -> Root {
        Root {
            kind: Role::Root,
            version,
            expires,
            keys: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }

    /// This root with `role` given to `keys` (public keys) with `threshold`.
    #[must_use]
    pub fn with_role(mut self, role: Role, keys: &[[u8; 32]], threshold: u32) -> Root {
        let mut keyids = BTreeSet::new();
        for public in keys {
            let id = KeyId::of(public);
            self.keys.insert(
                id,
                PublicKey {
                    keytype: KeyType::Ed25519,
                    public: *public,
                },
            );
            keyids.insert(id);
        }
        self.roles.insert(role, RoleKeys { keyids, threshold });
        self
    }

    /// Checks the keys and roles: every role present with a threshold between 1 and its number of
    /// keys, every key id listed and the hash of a valid ed25519 key, no key in two roles.
    pub fn validate(&self) -> Result<(), RootError> {
        let version = self.version;
        for (keyid, key) in &self.keys {
            if KeyId::of(&key.public) != *keyid {
                return Err(RootError::KeyIdMismatch {
                    version,
                    keyid: *keyid,
                });
            }
            match VerifyingKey::from_bytes(&key.public) {
                Ok(k) if !k.is_weak() => {}
                _ => {
                    return Err(RootError::InvalidKey {
                        version,
                        keyid: *keyid,
                    })
                }
            }
        }
        let mut owner: BTreeMap<KeyId, Role> = BTreeMap::new();
        for role in Role::ALL {
            let keys = self
                .roles
                .get(&role)
                .ok_or(RootError::MissingRole { version, role })?;
            let count = keys.keyids.len();
            if keys.threshold == 0 || usize::try_from(keys.threshold).map_or(true, |t| t > count) {
                return Err(RootError::BadThreshold {
                    version,
                    role,
                    threshold: keys.threshold,
                    keys: count,
                });
            }
            for keyid in &keys.keyids {
                if !self.keys.contains_key(keyid) {
                    return Err(RootError::UnlistedKey {
                        version,
                        role,
                        keyid: *keyid,
                    });
                }
                if let Some(first) = owner.insert(*keyid, role) {
                    return Err(RootError::SharedKey {
                        version,
                        keyid: *keyid,
                        first,
                        second: role,
                    });
                }
            }
        }
        Ok(())
    }

    /// The keys and threshold of `role`.
    #[must_use]
    pub fn role(&self, role: Role) -> Option<&RoleKeys> {
        self.roles.get(&role)
    }
}

impl Metadata for Root {
    const ROLE: Role = Role::Root;
    fn version(&self) -> u64 {
        self.version
    }
    fn expires(&self) -> Timestamp {
        self.expires
    }
}

/// A released pack's hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleasedPack {
    /// SHA-256 of the pack.
    #[serde(with = "hex")]
    pub pack_sha256: [u8; 32],
    /// SHA-256 of the signed envelope around it.
    #[serde(with = "hex")]
    pub envelope_sha256: [u8; 32],
}

/// The releases metadata: every pack the release keys vouch for, by channel and content version.
/// Signed by a threshold of the release keys; this is what "signed by a release key" means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Releases {
    /// Always [`Role::Releases`].
    #[serde(rename = "type")]
    pub kind: Role,
    /// The version.
    pub version: u64,
    /// When it expires.
    pub expires: Timestamp,
    /// Channel name -> content version -> hashes.
    pub channels: BTreeMap<String, BTreeMap<u64, ReleasedPack>>,
}

impl Releases {
    /// Releases metadata listing no pack.
    #[must_use]
    pub fn new(version: u64, expires: Timestamp) -> Releases {
        Releases {
            kind: Role::Releases,
            version,
            expires,
            channels: BTreeMap::new(),
        }
    }

    /// This metadata with `release` listed (its channel, version, pack and envelope hashes).
    #[must_use]
    pub fn with(mut self, release: &Release) -> Releases {
        self.channels
            .entry(release.channel.clone())
            .or_default()
            .insert(
                release.version,
                ReleasedPack {
                    pack_sha256: release.pack_hash,
                    envelope_sha256: release.envelope_sha256,
                },
            );
        self
    }

    /// The hashes of `channel`'s `version`, if released.
    #[must_use]
    pub fn get(&self, channel: &str, version: u64) -> Option<&ReleasedPack> {
        self.channels.get(channel)?.get(&version)
    }
}

impl Metadata for Releases {
    const ROLE: Role = Role::Releases;
    fn version(&self) -> u64 {
        self.version
    }
    fn expires(&self) -> Timestamp {
        self.expires
    }
}

/// The rollout metadata: the controller's [`RolloutState`], each channel's wave thresholds (which
/// endpoint is in which wave), the endpoint policies, and the releases metadata version it was
/// made against; signed by the online key. Everything an endpoint needs to run
/// [`bulwark_rollout::decide`] is here and signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Always [`Role::Rollout`].
    #[serde(rename = "type")]
    pub kind: Role,
    /// The version.
    pub version: u64,
    /// When it expires (short: the online key re-signs it often, so a frozen server is noticed).
    pub expires: Timestamp,
    /// The releases metadata version the server had: the endpoint must have verified at least
    /// this one.
    pub releases_version: u64,
    /// The state.
    pub state: RolloutState,
    /// Each channel's wave thresholds, keyed by channel: exactly the channels of `state`.
    pub thresholds: BTreeMap<String, WaveThresholds>,
    /// The endpoint policies by host group and channel; entries only for channels of `state`, and
    /// pins only to versions the releases metadata lists.
    pub policies: PolicyTable,
}

impl Rollout {
    /// Rollout metadata for `state`, with its channels' `thresholds` and the endpoint `policies`.
    #[must_use]
    pub fn new(
        version: u64,
        expires: Timestamp,
        releases_version: u64,
        state: RolloutState,
        thresholds: BTreeMap<String, WaveThresholds>,
        policies: PolicyTable,
    ) -> Rollout {
        Rollout {
            kind: Role::Rollout,
            version,
            expires,
            releases_version,
            state,
            thresholds,
            policies,
        }
    }
}

impl Metadata for Rollout {
    const ROLE: Role = Role::Rollout;
    fn version(&self) -> u64 {
        self.version
    }
    fn expires(&self) -> Timestamp {
        self.expires
    }
}
