//! Bulwark's signed distribution metadata, with the guarantees of TUF (The Update Framework):
//! who may say which pack exists, who may say who gets it, and how an endpoint refuses old,
//! frozen or forged statements. Pure: no I/O, no clock (time is a [`Timestamp`] argument). The
//! server signs with [`sign`]; the endpoint service verifies with a [`TrustState`].
//!
//! # Threat model
//!
//! An offline root key set, release keys that sign packs, an online key that signs only the
//! rollout state, which can reference only packs signed by release keys. Every metadata file is
//! versioned (no rollback) and expires (no freeze); the endpoint keeps the newest it has seen. A
//! compromised server (holding the online key) can pause, slow, halt or revert a rollout, and
//! stop signing (endpoints then see the rollout expire), but never ship content nobody signed.
//!
//! # Roles and files
//!
//! Each file is `{"signed": {"type": ..., "version": ..., "expires": ..., ...}, "signatures":
//! [{"keyid": ..., "sig": ...}]}`. A key id is the SHA-256 of the 32-byte ed25519 public key (the
//! bytes of a `KEY.pub` line, `bulwark-ed25519-public-key <hex>`), in hex; `sig` is the ed25519
//! signature (verified with `verify_strict`) of the bytes of `signed` **exactly as received**.
//! `expires` is seconds since the Unix epoch.
//!
//! * `root` ([`Root`]): every key and every role's key ids and threshold, its own included.
//!   Signed by a threshold of its root keys. Version `n + 1` must be signed by a threshold of
//!   version `n`'s root keys **and** of its own ([`TrustState::update_root`]), so a rotation is
//!   approved by the old keys and proven by the new ones. A valid root has all three roles,
//!   thresholds between 1 and the number of keys, key ids that are the hashes of valid,
//!   non-weak ed25519 keys, and no key in two roles (role separation: the online key is never a
//!   release key).
//! * `releases` ([`Releases`]): every pack the release keys vouch for, by channel and content
//!   version, with its pack SHA-256 and envelope SHA-256. Signed by a threshold of the release
//!   keys; "signed by a release key" means listed here.
//! * `rollout` ([`Rollout`]): the controller's [`bulwark_rollout::RolloutState`], each channel's
//!   [`bulwark_rollout::WaveThresholds`] (who is in which wave), the endpoint policies
//!   ([`bulwark_rollout::PolicyTable`]) and the version of the releases metadata it was made
//!   against, signed by the online key(s): everything [`bulwark_rollout::decide`] needs.
//!
//! # What each check prevents
//!
//! * Threshold of distinct valid signatures by the role's keys in the trusted root (signatures
//!   by other keys are ignored, and reported if the threshold is not met): forged metadata, one
//!   stolen key of a 2-of-3 role, and one role signing another's file (the rollout key signing
//!   releases metadata is not a release key).
//! * `type` must be the role's: a file of one role replayed as another's.
//! * Version not below the newest seen ([`Error::Rollback`]), and the same version only with the
//!   same signed bytes ([`Error::VersionReused`]): replay of old, validly signed metadata (an old
//!   rollout state that ran a since-halted release; old releases metadata listing a withdrawn
//!   pack); two different statements under one version.
//! * `expires <= now` refused ([`Error::Expired`]), for the file itself and for the trusted root
//!   and releases metadata it depends on: a frozen server (or a network attacker replaying the
//!   newest file forever) cannot keep endpoints on stale state. [`TrustState::current_rollout`]
//!   applies the same checks to what the endpoint already holds.
//! * Rollout references ([`check_references`]): every channel's release (channel, version, pack
//!   hash, envelope hash) must be listed in the verified releases metadata with the same hashes,
//!   and the releases version it names must be at most the verified one (so a server cannot hold
//!   back a newer releases file, e.g. one withdrawing a pack); each channel's state must be
//!   consistent ([`bulwark_rollout::ChannelRollout::validate`]); every channel has thresholds
//!   that fit its plan (each wave's plain fraction is the plan's: a server cannot widen a canary
//!   to the whole fleet) and no others; the policies are valid for the channels (no pause on a
//!   critical channel, delays up to 72 hours) and pin only to listed versions. This is the key
//!   constraint: the online key cannot ship content nobody signed. Pause, halt and revert are its
//!   to decide.
//! * Root chain one version at a time, old and new thresholds; a root that changes the releases
//!   or rollout keys drops that role's trusted metadata (the new keys start afresh, which also
//!   recovers from a stolen key that signed a huge version) and the old keys' files are refused.
//!   Intermediate roots may have expired (an endpoint off for a year walks the chain); the newest
//!   may not, or no releases or rollout update is accepted. The first root is shipped out of band
//!   ([`TrustState::bootstrap`]).
//! * Size: a file over [`MAX_FILE_BYTES`] is refused before parsing.
//!
//! There is no separate `timestamp` role: the rollout metadata is small and signed online, so it
//! is its own freshness statement (short expiry, re-signed by the server on a schedule). Nor a
//! `snapshot`: there are two non-root files, and the rollout names the releases version it needs.
//!
//! # Serialization
//!
//! The signer serializes `signed` with `serde_json` from structs whose fields serialize in
//! declaration order and whose maps are `BTreeMap`s (one encoding per value; not OLPC canonical
//! JSON). The verifier never re-serializes: signatures cover the received bytes, which are then
//! parsed (unknown fields refused), so no canonicalization ambiguity (e.g. float formatting in the
//! health verdicts of a halted rollout) can break or bypass a signature. [`SignedFile::sign`]
//! refuses a body that would not parse back (a non-finite number).
//!
//! # Persistence
//!
//! [`TrustState`] serializes as [`PersistedTrust`], the verified files themselves; loading them
//! verifies every signature and reference again (not expiry). The newest versions seen survive a
//! restart, so a rollback is refused after one too.
//!
//! # Why not `tough`
//!
//! awslabs' `tough` (0.19) is a TUF *repository client*: `RepositoryLoader::load` is async
//! (tokio), fetches over a `Transport` (HTTP with reqwest, or files), keeps its own datastore on
//! disk and reads the system clock (`Utc::now()`) for expiry. Its roles are fixed to TUF's
//! `root`, `targets`, `snapshot`, `timestamp` (and delegated targets), whose content is a list of
//! target files. We need a pure verifier (the endpoint service and the fleet simulator call the
//! same functions, with time passed in, like `bulwark-rollout`), and a `rollout` role whose
//! content is a `RolloutState` constrained to the packs a *different* role signed — a cross-role
//! check TUF's targets model has no place for. Bending targets metadata to carry the state as
//! custom fields would still leave the constraint to our code, on top of a large dependency tree
//! (aws-lc-rs, rustls, tokio, chrono). The guarantees we need are small enough to implement and
//! test here.
//!
//! # Tests
//!
//! Every check below was seen to fail its test when broken (threshold, invalid signatures
//! counted, keys of other roles counted, type, expiry boundary, rollback, same-version content,
//! each reference check, both root thresholds, root version skip, dropping rotated roles' files,
//! root and releases expiry under a rollout, re-verification on reload, shared keys, size, weak
//! and mismatched keys, version 0, unknown fields).
//!
//! * `tests/distribution.rs`: root v1, releases v1, rollout v1 verified, a newer (halted,
//!   reverting) rollout accepted; a signature by an unlisted key, a tampered body, 1 of a 2-of-3
//!   threshold (and one key signing twice) refused with the role, threshold and counts; each
//!   role's expiry (refused at `expires`, accepted one second before; nothing accepted under an
//!   expired root or releases; the held state not acted on once expired); rollback and
//!   same-version-other-content, also after persisting and reloading, and a tampered persisted
//!   file; the online key referencing an unlisted version, another pack hash, another envelope
//!   hash, an unverified releases version; the rollout key signing releases metadata, a rollout
//!   file offered as releases, a root sharing the rollout key with the releases role; root
//!   rotation (old and new thresholds accepted, only new or only old refused, a skipped version
//!   refused, the old release keys refused afterwards, the unchanged rollout key's file kept).
//! * `tests/format.rs`: the wire format (key id = SHA-256 of the key, deterministic signing),
//!   signatures over the received bytes, a root signed by one holder after another, each
//!   invalid root, malformed, oversized, version 0 and wrong-type files.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod error;
pub mod memo;
pub mod metadata;
pub mod signed;
pub mod trust;

pub use bulwark_rollout::Timestamp;
pub use error::{Error, PackHash, RootError};
pub use memo::{MetadataMemo, WeakMetadataMemo};
pub use metadata::{
    KeyId, Metadata, PublicKey, ReleasedPack, Releases, Role, RoleKeys, Rollout, Root,
};
pub use signed::{sign, Signature, SignedFile};
pub use trust::{check_references, PersistedTrust, TrustState, Update, Versions};

/// The largest metadata file accepted, in bytes (a rollout state with hundreds of channels and
/// their health verdicts is well under this).
pub const MAX_FILE_BYTES: usize = 4 << 20;
