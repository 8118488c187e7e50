//! The signed distribution metadata the server serves to endpoints (`bulwark-distribution`):
//! the root (given at start, made offline by the root key holders), the releases metadata
//! (signed by the release keys, uploaded by publishers) and the rollout metadata, which this
//! server signs with its online key whenever what it says changes and before it expires.
//!
//! The server holds only the online key: it can pause, slow, halt or revert a rollout, never
//! ship a pack the release keys did not list, and it checks before signing what every endpoint
//! checks after verifying ([`bulwark_distribution::check_references`]), so it never serves a
//! rollout file endpoints would refuse.
//!
//! Stored as documents ([`Store::document`]): `root.json`, `releases.json`, `rollout.json` (the
//! files' text, versioned by their metadata version) and `policies` (the operators'
//! [`PolicyTable`], versioned by a counter). Writes are compare-and-swap on the version, so
//! several instances sign in turn: an instance that lost the race re-reads and, if the other
//! signed the same content, has nothing left to do.

use std::collections::BTreeMap;

use bulwark_distribution::{
    check_references, sign, PersistedTrust, Releases, Role, Rollout, Root, SignedFile, TrustState,
};
use bulwark_rollout::{ChannelRollout, PolicyTable, RolloutState, Timestamp, WaveThresholds};
use ed25519_dalek::SigningKey;

use crate::store::{DocumentRow, ReleaseRow, Store, StoreError};
use crate::util::hex;

/// Document names.
pub const ROOT: &str = "root.json";
/// The releases metadata's document.
pub const RELEASES: &str = "releases.json";
/// The rollout metadata's document.
pub const ROLLOUT: &str = "rollout.json";
/// The policy table's document.
pub const POLICIES: &str = "policies";

/// Default lifetime of a signed rollout file: endpoints stop acting on a rollout the server has
/// not re-signed for this long (a frozen server is noticed within it).
pub const DEFAULT_ROLLOUT_LIFETIME_SECS: u64 = 24 * 3600;

/// What the server needs to sign rollout metadata.
#[derive(Clone)]
pub struct Signing {
    root_file: String,
    root: Root,
    online_key: SigningKey,
    /// How long each signed rollout file is valid; it is re-signed when less than half is left.
    pub rollout_lifetime_secs: u64,
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing")
            .field("root_version", &self.root.version)
            .field("rollout_lifetime_secs", &self.rollout_lifetime_secs)
            .finish_non_exhaustive()
    }
}

/// Why metadata could not be accepted or signed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The configuration does not fit (root invalid, online key not the rollout role's).
    #[error("{0}")]
    Config(String),
    /// The distribution checks refused a file or a body.
    #[error(transparent)]
    Refused(#[from] bulwark_distribution::Error),
    /// Releases metadata listing a pack this server does not hold (publish the envelope first),
    /// or with other hashes than the one it holds.
    #[error("{0}")]
    Unpublished(String),
    /// No releases metadata yet: nothing can be rolled out to endpoints.
    #[error("no releases metadata uploaded yet (bulwark release publish signs and uploads it)")]
    NoReleases,
    /// The store failed or another instance wrote concurrently.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored document does not parse.
    #[error("stored {0} is corrupt: {1}")]
    Corrupt(&'static str, String),
}

impl Signing {
    /// Checks `root_file` (valid, signed by a threshold of its root keys) and that `online_key`
    /// is one of its rollout keys.
    pub fn new(
        root_file: &str,
        online_key: SigningKey,
        rollout_lifetime_secs: u64,
    ) -> Result<Self, MetadataError> {
        let trust = TrustState::bootstrap(root_file)?;
        let root = trust.root().clone();
        let id = bulwark_distribution::KeyId::of(online_key.verifying_key().as_bytes());
        let rollout_keys = root
            .role(Role::Rollout)
            .ok_or_else(|| MetadataError::Config("the root has no rollout role".to_owned()))?;
        if !rollout_keys.keyids.contains(&id) {
            return Err(MetadataError::Config(format!(
                "the online key (key id {}) is not one of root v{}'s rollout keys",
                hex(&id.0),
                root.version
            )));
        }
        if rollout_keys.threshold > 1 {
            return Err(MetadataError::Config(format!(
                "root v{} asks for {} rollout signatures; this server signs with one online key",
                root.version, rollout_keys.threshold
            )));
        }
        if !(60..=30 * 24 * 3600).contains(&rollout_lifetime_secs) {
            return Err(MetadataError::Config(format!(
                "a rollout lifetime of {rollout_lifetime_secs} s is outside 60 s to 30 days"
            )));
        }
        Ok(Self {
            root_file: root_file.to_owned(),
            root,
            online_key,
            rollout_lifetime_secs,
        })
    }

    /// The trusted root.
    #[must_use]
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The release keys of the root (envelopes must be signed by one of them).
    #[must_use]
    pub fn release_keys(&self) -> Vec<[u8; 32]> {
        self.root
            .role(Role::Releases)
            .map(|r| {
                r.keyids
                    .iter()
                    .filter_map(|id| self.root.keys.get(id).map(|k| k.public))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stores the root file if the store has none or an older one (every instance given the same
    /// root file agrees).
    pub fn install_root(&self, store: &dyn Store, now: u64) -> Result<(), MetadataError> {
        let current = store.document(ROOT)?;
        let version = self.root.version;
        match &current {
            Some(d) if d.version > version => {
                return Err(MetadataError::Config(format!(
                    "the database holds root v{}, newer than the given root v{version}",
                    d.version
                )))
            }
            Some(d) if d.version == version && d.body != self.root_file => {
                return Err(MetadataError::Config(format!(
                    "the database holds another root v{version} than the given one"
                )))
            }
            Some(d) if d.version == version => return Ok(()),
            _ => {}
        }
        let row = DocumentRow {
            version,
            body: self.root_file.clone(),
            updated_at: now,
        };
        match store.put_document(ROOT, &row, current.map(|d| d.version), None) {
            Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The stored releases metadata, verified against the root (signatures, not expiry).
    fn stored_releases(&self, store: &dyn Store) -> Result<Option<(u64, Releases)>, MetadataError> {
        let Some(doc) = store.document(RELEASES)? else {
            return Ok(None);
        };
        let trust = TrustState::restore(&PersistedTrust {
            root: self.root_file.clone(),
            releases: Some(doc.body),
            rollout: None,
        })
        .map_err(|e| MetadataError::Corrupt(RELEASES, e.to_string()))?;
        let releases = trust
            .releases()
            .cloned()
            .ok_or(MetadataError::Corrupt(RELEASES, "missing".to_owned()))?;
        Ok(Some((doc.version, releases)))
    }

    /// Accepts a releases metadata file uploaded by a publisher: signed by a threshold of the
    /// root's release keys, newer than the stored one, unexpired, and listing only packs this
    /// server holds with the same hashes. Returns its version.
    pub fn upload_releases(
        &self,
        store: &dyn Store,
        file: &str,
        now: u64,
        actor: &str,
    ) -> Result<u64, MetadataError> {
        let stored = store.document(RELEASES)?;
        let mut trust = TrustState::restore(&PersistedTrust {
            root: self.root_file.clone(),
            releases: stored.as_ref().map(|d| d.body.clone()),
            rollout: None,
        })
        .map_err(|e| MetadataError::Corrupt(RELEASES, e.to_string()))?;
        trust.update_releases(file, Timestamp(now))?;
        let releases = trust
            .releases()
            .cloned()
            .ok_or(MetadataError::Corrupt(RELEASES, "missing".to_owned()))?;
        for (channel, versions) in &releases.channels {
            for (version, pack) in versions {
                let row: Option<ReleaseRow> = store.release(channel, *version)?;
                let Some(row) = row else {
                    return Err(MetadataError::Unpublished(format!(
                        "releases v{} lists {channel:?} version {version}, which was never \
                         published here (publish the envelope first)",
                        releases.version
                    )));
                };
                if row.pack_sha256 != hex(&pack.pack_sha256)
                    || row.envelope_sha256 != hex(&pack.envelope_sha256)
                {
                    return Err(MetadataError::Unpublished(format!(
                        "releases v{} lists {channel:?} version {version} with other hashes than \
                         the envelope published here (pack {}, envelope {})",
                        releases.version, row.pack_sha256, row.envelope_sha256
                    )));
                }
            }
        }
        let event = serde_json::json!({
            "releases_metadata": { "version": releases.version, "expires": releases.expires.0 }
        })
        .to_string();
        let row = DocumentRow {
            version: releases.version,
            body: file.to_owned(),
            updated_at: now,
        };
        store.put_document(
            RELEASES,
            &row,
            stored.map(|d| d.version),
            Some(("*", actor, &event)),
        )?;
        Ok(releases.version)
    }

    /// Whether `channel` `version` is listed in the stored releases metadata (a rollout can start
    /// only for a listed release: endpoints would refuse the signed state otherwise).
    pub fn is_listed(
        &self,
        store: &dyn Store,
        channel: &str,
        version: u64,
    ) -> Result<bool, MetadataError> {
        Ok(self
            .stored_releases(store)?
            .is_some_and(|(_, r)| r.get(channel, version).is_some()))
    }

    /// Checks a policy table against the stored releases (pins to listed versions only) and the
    /// channels with a rollout, as endpoints will.
    pub fn check_policies(
        &self,
        store: &dyn Store,
        policies: &PolicyTable,
    ) -> Result<(), MetadataError> {
        let Some((releases_version, releases)) = self.stored_releases(store)? else {
            return Ok(());
        };
        let (state, thresholds) = current_state(store)?;
        let body = Rollout::new(
            1,
            Timestamp(u64::MAX),
            releases_version,
            state.clone(),
            thresholds,
            policies_for(policies, &state),
        );
        check_references(&body, &releases)?;
        Ok(())
    }

    /// Signs a new rollout file if what it says changed, or if the current one has less than half
    /// its lifetime left. Returns the version written, or `None` when nothing had to change.
    /// Without releases metadata there is nothing to sign (`None`).
    pub fn refresh_rollout(
        &self,
        store: &dyn Store,
        now: u64,
    ) -> Result<Option<u64>, MetadataError> {
        // One retry: another instance may have signed at the same moment.
        match self.try_refresh(store, now) {
            Err(MetadataError::Store(StoreError::Conflict(_))) => self.try_refresh(store, now),
            other => other,
        }
    }

    fn try_refresh(&self, store: &dyn Store, now: u64) -> Result<Option<u64>, MetadataError> {
        let Some((releases_version, releases)) = self.stored_releases(store)? else {
            return Ok(None);
        };
        let (state, thresholds) = current_state(store)?;
        let policies = stored_policies(store)?.0;
        let policies = policies_for(&policies, &state);
        let current = store.document(ROLLOUT)?;
        let previous: Option<Rollout> = current
            .as_ref()
            .map(|d| parse_rollout(&d.body))
            .transpose()?;
        if let Some(p) = &previous {
            let same = p.releases_version == releases_version
                && p.state == state
                && p.thresholds == thresholds
                && p.policies == policies;
            let left = p.expires.0.saturating_sub(now);
            if same && left > self.rollout_lifetime_secs / 2 {
                return Ok(None);
            }
        }
        let version = previous.as_ref().map_or(1, |p| p.version.saturating_add(1));
        let body = Rollout::new(
            version,
            Timestamp(now.saturating_add(self.rollout_lifetime_secs)),
            releases_version,
            state,
            thresholds,
            policies,
        );
        check_references(&body, &releases)?;
        let file = sign(&body, &[&self.online_key])?;
        let row = DocumentRow {
            version,
            body: file,
            updated_at: now,
        };
        store.put_document(ROLLOUT, &row, current.map(|d| d.version), None)?;
        Ok(Some(version))
    }
}

/// The policy table stored by operators (the default table, `ga` everywhere, when none), and
/// its document version.
pub fn stored_policies(store: &dyn Store) -> Result<(PolicyTable, Option<u64>), MetadataError> {
    match store.document(POLICIES)? {
        None => Ok((PolicyTable::default(), None)),
        Some(d) => Ok((
            serde_json::from_str(&d.body)
                .map_err(|e| MetadataError::Corrupt(POLICIES, e.to_string()))?,
            Some(d.version),
        )),
    }
}

/// `policies` restricted to the channels of `state` (endpoints accept entries only for channels
/// they are told about; the others wait in the store until their channel's first rollout).
fn policies_for(policies: &PolicyTable, state: &RolloutState) -> PolicyTable {
    PolicyTable {
        default: policies.default.clone(),
        entries: policies
            .entries
            .iter()
            .filter(|e| state.channels.contains_key(&e.channel))
            .cloned()
            .collect(),
    }
}

/// Every channel's rollout and thresholds from the store.
fn current_state(
    store: &dyn Store,
) -> Result<(RolloutState, BTreeMap<String, WaveThresholds>), MetadataError> {
    let mut state = RolloutState::default();
    let mut thresholds = BTreeMap::new();
    for row in store.rollouts()? {
        let s: ChannelRollout = serde_json::from_str(&row.state)
            .map_err(|e| MetadataError::Corrupt("rollout state", e.to_string()))?;
        let t: WaveThresholds = serde_json::from_str(&row.thresholds)
            .map_err(|e| MetadataError::Corrupt("rollout thresholds", e.to_string()))?;
        state.channels.insert(row.channel.clone(), s);
        thresholds.insert(row.channel, t);
    }
    Ok((state, thresholds))
}

/// The body of a signed rollout file this server wrote.
fn parse_rollout(file: &str) -> Result<Rollout, MetadataError> {
    let signed = SignedFile::parse(file, Role::Rollout)?;
    serde_json::from_str(signed.signed.get())
        .map_err(|e| MetadataError::Corrupt(ROLLOUT, e.to_string()))
}
