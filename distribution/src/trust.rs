//! The endpoint's trust state: the trusted root and the newest verified releases and rollout
//! metadata, updated only forward, persisted as the signed files themselves.

use bulwark_rollout::{Policy, RolloutState, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{Error, PackHash};
use crate::memo::{FileText, MetadataMemo, Parsed};
use crate::metadata::{Metadata, Releases, Role, Rollout, Root};
use crate::signed::check_signatures;
use std::sync::Arc;

/// Verified metadata and the file it came from.
#[derive(Debug, Clone)]
struct Trusted<M> {
    body: Arc<M>,
    signed_sha256: [u8; 32],
    file: Arc<FileText>,
}

/// What an accepted update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// A newer version is now trusted.
    Updated,
    /// The same version with the same content as the trusted one: nothing changed.
    Unchanged,
}

/// The newest version trusted for each role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    /// The root's.
    pub root: u64,
    /// The releases metadata's, if any.
    pub releases: Option<u64>,
    /// The rollout metadata's, if any.
    pub rollout: Option<u64>,
}

/// The persisted form of a [`TrustState`]: the signed files as they were verified. Loading it
/// verifies every signature again (not expiry: the files may have expired while the endpoint was
/// off, and the next update is checked against their versions all the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedTrust {
    /// The trusted root's file.
    pub root: String,
    /// The newest verified releases file.
    pub releases: Option<String>,
    /// The newest verified rollout file.
    pub rollout: Option<String>,
}

/// What the endpoint trusts: a root and the newest releases and rollout metadata it verified.
///
/// Serializes as [`PersistedTrust`]; deserializing verifies the files again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "PersistedTrust", try_from = "PersistedTrust")]
pub struct TrustState {
    root: Trusted<Root>,
    releases: Option<Trusted<Releases>>,
    rollout: Option<Trusted<Rollout>>,
    /// Whether the held rollout's references were checked against the held releases metadata
    /// since either changed: they are pure functions of the two bodies, so they are not checked
    /// again on every poll.
    references_checked: core::cell::Cell<bool>,
    /// Where signature checks and parses go: off (each done) but in a process that verifies the
    /// same files for many endpoints.
    memo: MetadataMemo,
}

/// Parses `file` and checks its signatures against `root`'s keys for `M`'s role.
fn verify<M: Metadata + Send + Sync + 'static>(
    file: &str,
    root: &Root,
    memo: &MetadataMemo,
) -> Result<Trusted<M>, Error> {
    let parsed = memo.parse::<M>(file)?;
    check_signatures(M::ROLE, &parsed.signed, root, memo)?;
    Ok(Trusted {
        body: Arc::clone(&parsed.body),
        signed_sha256: parsed.signed_sha256,
        file: Arc::clone(&parsed.text),
    })
}

/// Refuses `new` if older than `trusted`, or of the same version with other content; `Unchanged`
/// if the same.
fn check_version<M: Metadata>(
    trusted: Option<&Trusted<M>>,
    new: &Trusted<M>,
) -> Result<Update, Error> {
    let Some(trusted) = trusted else {
        return Ok(Update::Updated);
    };
    let (old, found) = (trusted.body.version(), new.body.version());
    if found < old {
        return Err(Error::Rollback {
            role: M::ROLE,
            trusted: old,
            found,
        });
    }
    if found == old {
        if trusted.signed_sha256 != new.signed_sha256 {
            return Err(Error::VersionReused {
                role: M::ROLE,
                version: found,
            });
        }
        return Ok(Update::Unchanged);
    }
    Ok(Update::Updated)
}

/// Refuses metadata whose expiry is not after `now`.
fn check_expiry<M: Metadata>(body: &M, now: Timestamp) -> Result<(), Error> {
    if body.expires() <= now {
        return Err(Error::Expired {
            role: M::ROLE,
            version: body.version(),
            expires: body.expires(),
            now,
        });
    }
    Ok(())
}

/// Checks that `rollout` references only releases the releases metadata lists, with their
/// hashes, and at most the releases version verified; that every channel's state is consistent
/// and has wave thresholds that fit its plan; and that the policies are valid for the channels
/// and pin only to listed versions.
pub fn check_references(rollout: &Rollout, releases: &Releases) -> Result<(), Error> {
    if rollout.releases_version > releases.version {
        return Err(Error::ReleasesNotSeen {
            referenced: rollout.releases_version,
            trusted: releases.version,
        });
    }
    check_state(&rollout.state, releases)?;
    check_thresholds(rollout)?;
    check_policies(rollout, releases)
}

/// Checks that each channel of the state has thresholds fitting its plan, and no others.
fn check_thresholds(rollout: &Rollout) -> Result<(), Error> {
    for (key, channel) in &rollout.state.channels {
        let Some(t) = rollout.thresholds.get(key) else {
            return Err(Error::MissingThresholds {
                channel: key.clone(),
            });
        };
        t.validate(&channel.plan, key)
            .map_err(|source| Error::InvalidThresholds {
                channel: key.clone(),
                source,
            })?;
    }
    if let Some(stray) = rollout
        .thresholds
        .keys()
        .find(|k| !rollout.state.channels.contains_key(*k))
    {
        return Err(Error::StrayThresholds {
            channel: stray.clone(),
        });
    }
    Ok(())
}

/// Checks the policies against the state's channels, and their pins against the releases.
fn check_policies(rollout: &Rollout, releases: &Releases) -> Result<(), Error> {
    let channels: Vec<_> = rollout
        .state
        .channels
        .values()
        .map(|c| c.channel.clone())
        .collect();
    rollout
        .policies
        .validate(&channels)
        .map_err(Error::InvalidPolicies)?;
    let pinned = |scope: &str, channel: &str, policy: &Policy| match policy {
        Policy::Pin { version, .. } if releases.get(channel, *version).is_none() => {
            Err(Error::UnreleasedPin {
                scope: scope.to_owned(),
                channel: channel.to_owned(),
                version: *version,
                releases_version: releases.version,
            })
        }
        _ => Ok(()),
    };
    for c in &channels {
        pinned("default policy", &c.name, &rollout.policies.default)?;
    }
    for e in &rollout.policies.entries {
        pinned(
            &format!("host group {:?}", e.host_group),
            &e.channel,
            &e.policy,
        )?;
    }
    Ok(())
}

/// Checks that every release `state` references is in `releases` with the same hashes.
fn check_state(state: &RolloutState, releases: &Releases) -> Result<(), Error> {
    for (key, channel) in &state.channels {
        if *key != channel.channel.name {
            return Err(Error::ChannelName {
                key: key.clone(),
                name: channel.channel.name.clone(),
            });
        }
        channel.validate().map_err(|source| Error::InvalidState {
            channel: key.clone(),
            source,
        })?;
        let release = &channel.release;
        let Some(signed) = releases.get(&release.channel, release.version) else {
            return Err(Error::UnreleasedPack {
                channel: release.channel.clone(),
                version: release.version,
                releases_version: releases.version,
            });
        };
        let mismatch = |which| Error::PackHashMismatch {
            channel: release.channel.clone(),
            version: release.version,
            which,
            releases_version: releases.version,
        };
        if signed.pack_sha256 != release.pack_hash {
            return Err(mismatch(PackHash::Pack));
        }
        if signed.envelope_sha256 != release.envelope_sha256 {
            return Err(mismatch(PackHash::Envelope));
        }
    }
    Ok(())
}

impl TrustState {
    /// Trusts `root_file`, the root shipped with the software (out of band): it must be valid and
    /// signed by a threshold of its own root keys. Its expiry is not checked here (an old
    /// installer's root is updated by [`TrustState::update_root`]); every releases and rollout
    /// update requires the trusted root unexpired.
    pub fn bootstrap(root_file: &str) -> Result<TrustState, Error> {
        TrustState::bootstrap_with(root_file, MetadataMemo::off())
    }

    /// [`TrustState::bootstrap`], its signature checks (this one's and every later update's)
    /// going through `memo`.
    pub fn bootstrap_with(root_file: &str, memo: MetadataMemo) -> Result<TrustState, Error> {
        let parsed = memo.parse::<Root>(root_file)?;
        validate_root(&parsed)?;
        check_signatures(Role::Root, &parsed.signed, &parsed.body, &memo)?;
        Ok(TrustState {
            root: Trusted {
                body: Arc::clone(&parsed.body),
                signed_sha256: parsed.signed_sha256,
                file: Arc::clone(&parsed.text),
            },
            releases: None,
            rollout: None,
            references_checked: core::cell::Cell::new(false),
            memo,
        })
    }

    /// Updates the root to the next version, `trusted + 1`, signed by a threshold of the trusted
    /// root's root keys **and** of its own. Call it with each next version until none is found.
    /// Intermediate roots may have expired (an endpoint that was off for a year walks the chain);
    /// the newest must not, or no releases or rollout update is accepted. If the new root changes
    /// the releases or rollout role's keys or threshold, that role's trusted metadata is dropped:
    /// the new keys start afresh, and metadata signed by the old keys is refused.
    pub fn update_root(&mut self, file: &str) -> Result<Update, Error> {
        if self.root.file.as_str() == file {
            // The very file trusted already (its expiry is checked where it matters).
            return Ok(Update::Unchanged);
        }
        let parsed = self.memo.parse::<Root>(file)?;
        let (signed, body, signed_sha256) = (&parsed.signed, &parsed.body, parsed.signed_sha256);
        let trusted = self.root.body.version;
        if body.version < trusted {
            return Err(Error::Rollback {
                role: Role::Root,
                trusted,
                found: body.version,
            });
        }
        if body.version == trusted {
            if signed_sha256 == self.root.signed_sha256 {
                return Ok(Update::Unchanged);
            }
            return Err(Error::VersionReused {
                role: Role::Root,
                version: trusted,
            });
        }
        if body.version != trusted.saturating_add(1) {
            return Err(Error::RootVersionSkip {
                trusted,
                found: body.version,
            });
        }
        check_signatures(Role::Root, signed, &self.root.body, &self.memo)?;
        validate_root(&parsed)?;
        check_signatures(Role::Root, signed, body, &self.memo)?;
        if body.role(Role::Releases) != self.root.body.role(Role::Releases) {
            self.releases = None;
            self.references_checked.set(false);
        }
        if body.role(Role::Rollout) != self.root.body.role(Role::Rollout) {
            self.rollout = None;
            self.references_checked.set(false);
        }
        self.root = Trusted {
            body: Arc::clone(body),
            signed_sha256,
            file: Arc::clone(&parsed.text),
        };
        Ok(Update::Updated)
    }

    /// Refuses if the trusted root has expired at `now`.
    fn check_root(&self, now: Timestamp) -> Result<(), Error> {
        check_expiry(&*self.root.body, now)
    }

    /// Updates the releases metadata: signed by a threshold of the release keys, not older than
    /// the trusted one (the same version only with the same content), not expired, under an
    /// unexpired root.
    pub fn update_releases(&mut self, file: &str, now: Timestamp) -> Result<Update, Error> {
        self.check_root(now)?;
        // The very file already verified: its signatures need not be checked again (they are
        // what an endpoint polling every few minutes would spend its time on), its expiry does.
        if let Some(held) = self.releases.as_ref().filter(|t| t.file.as_str() == file) {
            check_expiry(&*held.body, now)?;
            return Ok(Update::Unchanged);
        }
        let new = verify::<Releases>(file, &self.root.body, &self.memo)?;
        let update = check_version(self.releases.as_ref(), &new)?;
        check_expiry(&*new.body, now)?;
        self.releases = Some(new);
        self.references_checked.set(false);
        Ok(update)
    }

    /// Updates the rollout metadata: signed by a threshold of the rollout keys, not older than
    /// the trusted one, not expired, under an unexpired root and unexpired releases metadata of at
    /// least the version it references, and referencing only releases that metadata lists with
    /// the same pack and envelope hashes. Pausing, halting, reverting are the online key's to
    /// decide and are accepted.
    pub fn update_rollout(&mut self, file: &str, now: Timestamp) -> Result<Update, Error> {
        self.check_root(now)?;
        if self
            .rollout
            .as_ref()
            .is_some_and(|t| t.file.as_str() == file)
        {
            // As for releases: the same file, verified already; everything but its signatures is
            // checked again.
            return self.current(now).map(|_| Update::Unchanged);
        }
        let new = verify::<Rollout>(file, &self.root.body, &self.memo)?;
        let update = check_version(self.rollout.as_ref(), &new)?;
        check_expiry(&*new.body, now)?;
        let Some(releases) = &self.releases else {
            return Err(Error::NoReleases {
                referenced: new.body.releases_version,
            });
        };
        check_expiry(&*releases.body, now)?;
        check_references(&new.body, &releases.body)?;
        self.rollout = Some(new);
        self.references_checked.set(true);
        Ok(update)
    }

    /// The rollout state to act on at `now`: the trusted rollout, if it, the releases metadata and
    /// the root are all unexpired and it references only listed releases. An endpoint whose
    /// server froze stops acting on stale state here.
    pub fn current_rollout(&self, now: Timestamp) -> Result<Option<&RolloutState>, Error> {
        Ok(self.current(now)?.map(|r| &r.state))
    }

    /// Like [`TrustState::current_rollout`], the whole rollout metadata: the state with the
    /// thresholds and policies the decision needs.
    pub fn current(&self, now: Timestamp) -> Result<Option<&Rollout>, Error> {
        self.check_root(now)?;
        let (Some(rollout), Some(releases)) = (&self.rollout, &self.releases) else {
            return Ok(None);
        };
        check_expiry(&*releases.body, now)?;
        check_expiry(&*rollout.body, now)?;
        if !self.references_checked.get() {
            check_references(&rollout.body, &releases.body)?;
            self.references_checked.set(true);
        }
        Ok(Some(&rollout.body))
    }

    /// The trusted root.
    #[must_use]
    pub fn root(&self) -> &Root {
        &self.root.body
    }

    /// The newest verified releases metadata.
    #[must_use]
    pub fn releases(&self) -> Option<&Releases> {
        self.releases.as_ref().map(|t| &*t.body)
    }

    /// The newest verified rollout metadata (check expiry with [`TrustState::current_rollout`]).
    #[must_use]
    pub fn rollout(&self) -> Option<&Rollout> {
        self.rollout.as_ref().map(|t| &*t.body)
    }

    /// The newest trusted version of each role.
    #[must_use]
    pub fn versions(&self) -> Versions {
        Versions {
            root: self.root.body.version,
            releases: self.releases.as_ref().map(|t| t.body.version),
            rollout: self.rollout.as_ref().map(|t| t.body.version),
        }
    }

    /// The files to persist.
    #[must_use]
    pub fn persisted(&self) -> PersistedTrust {
        PersistedTrust {
            root: self.root.file.as_str().to_owned(),
            releases: self.releases.as_ref().map(|t| t.file.as_str().to_owned()),
            rollout: self.rollout.as_ref().map(|t| t.file.as_str().to_owned()),
        }
    }

    /// [`TrustState::persisted`] as JSON: the very bytes `serde_json::to_vec` writes for it,
    /// without escaping each file again. Each file's JSON string is written once and kept with
    /// the file (shared, through a memo, by every endpoint holding the same file): a service
    /// saves this at every metadata update, and in the fleet simulator 100,000 of them do.
    #[must_use]
    pub fn persisted_json(&self) -> Vec<u8> {
        let files = [
            Some(&self.root.file),
            self.releases.as_ref().map(|t| &t.file),
            self.rollout.as_ref().map(|t| &t.file),
        ];
        let len: usize = files.iter().flatten().map(|f| f.json().len()).sum();
        let mut out = Vec::with_capacity(len.saturating_add(40));
        for (i, (name, file)) in ["root", "releases", "rollout"]
            .iter()
            .zip(files)
            .enumerate()
        {
            out.push(if i == 0 { b'{' } else { b',' });
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(file.map_or(&b"null"[..], |f| f.json()));
        }
        out.push(b'}');
        out
    }

    /// Loads persisted files: the root as by [`TrustState::bootstrap`], the releases and rollout
    /// metadata verified against it (signatures, references), without expiry checks.
    pub fn restore(persisted: &PersistedTrust) -> Result<TrustState, Error> {
        TrustState::restore_with(persisted, MetadataMemo::off())
    }

    /// [`TrustState::restore`], its signature checks (these and every later update's) going
    /// through `memo`.
    pub fn restore_with(
        persisted: &PersistedTrust,
        memo: MetadataMemo,
    ) -> Result<TrustState, Error> {
        let mut state = TrustState::bootstrap_with(&persisted.root, memo)?;
        if let Some(file) = &persisted.releases {
            state.releases = Some(verify::<Releases>(file, &state.root.body, &state.memo)?);
        }
        if let Some(file) = &persisted.rollout {
            let rollout = verify::<Rollout>(file, &state.root.body, &state.memo)?;
            let Some(releases) = &state.releases else {
                return Err(Error::NoReleases {
                    referenced: rollout.body.releases_version,
                });
            };
            check_references(&rollout.body, &releases.body)?;
            state.rollout = Some(rollout);
            state.references_checked.set(true);
        }
        Ok(state)
    }
}

impl From<TrustState> for PersistedTrust {
    fn from(state: TrustState) -> PersistedTrust {
        state.persisted()
    }
}

impl TryFrom<PersistedTrust> for TrustState {
    type Error = Error;
    fn try_from(persisted: PersistedTrust) -> Result<TrustState, Error> {
        TrustState::restore(&persisted)
    }
}

/// `parsed`'s root validated ([`Root::validate`]): once per parsed body, which a memo shares
/// among the endpoints given the same file (without a memo every parse is a body of its own, so
/// every bootstrap and update validates).
fn validate_root(parsed: &Parsed<Root>) -> Result<(), Error> {
    if parsed.validated.get().is_none() {
        parsed.body.validate()?;
        // Another thread may have set it meanwhile: the same answer for the same body.
        let _ = parsed.validated.set(());
    }
    Ok(())
}
