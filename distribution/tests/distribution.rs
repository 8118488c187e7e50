//! The verifier's guarantees, each against the refusal it must produce.

use bulwark_distribution::{
    sign, Error, KeyId, MetadataMemo, PackHash, PersistedTrust, Releases, Role, Rollout, Root,
    RootError, Timestamp, TrustState, Update,
};
use std::collections::BTreeMap;

use bulwark_rollout::policy::PolicyError;
use bulwark_rollout::thresholds::ThresholdsError;
use bulwark_rollout::{
    halt, revert, start, Census, Channel, Plan, Policy, PolicyTable, Release, RolloutState,
    WaveThresholds,
};
use ed25519_dalek::SigningKey;

const DAY: u64 = 86_400;
const T0: Timestamp = Timestamp(1_700_000_000);

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public(keys: &[SigningKey]) -> Vec<[u8; 32]> {
    keys.iter().map(|k| k.verifying_key().to_bytes()).collect()
}

fn id(key: &SigningKey) -> KeyId {
    KeyId::of(key.verifying_key().as_bytes())
}

struct Keys {
    root: Vec<SigningKey>,
    releases: Vec<SigningKey>,
    rollout: SigningKey,
}

fn keys() -> Keys {
    Keys {
        root: vec![key(1), key(2), key(3)],
        releases: vec![key(11), key(12), key(13)],
        rollout: key(21),
    }
}

/// Root v1: root 2-of-3, releases 2-of-3, rollout 1-of-1; expires in a year.
fn root_v1(k: &Keys) -> Root {
    Root::new(1, T0.plus_secs(365 * DAY))
        .with_role(Role::Root, &public(&k.root), 2)
        .with_role(Role::Releases, &public(&k.releases), 2)
        .with_role(Role::Rollout, &public(std::slice::from_ref(&k.rollout)), 1)
}

fn root_file(root: &Root, signers: &[&SigningKey]) -> String {
    sign(root, signers).unwrap()
}

fn release(version: u64, seed: u8) -> Release {
    Release {
        channel: "detections".to_owned(),
        version,
        pack_hash: [seed; 32],
        envelope_sha256: [seed.wrapping_add(100); 32],
        notes: String::new(),
    }
}

fn releases(version: u64, expires: Timestamp, listed: &[Release]) -> Releases {
    listed
        .iter()
        .fold(Releases::new(version, expires), |r, release| {
            r.with(release)
        })
}

fn releases_file(k: &Keys, version: u64, expires: Timestamp, listed: &[Release]) -> String {
    sign(
        &releases(version, expires, listed),
        &[&k.releases[0], &k.releases[1]],
    )
    .unwrap()
}

fn state(release: Release) -> RolloutState {
    let channel = Channel::new("detections", false);
    let (rollout, _) = start(channel, release, Plan::default_plan(), None, T0).unwrap();
    let mut state = RolloutState::default();
    state.channels.insert("detections".to_owned(), rollout);
    state
}

fn rollout_file(
    k: &Keys,
    version: u64,
    expires: Timestamp,
    releases_version: u64,
    state: RolloutState,
) -> String {
    sign(
        &rollout_body(version, expires, releases_version, state),
        &[&k.rollout],
    )
    .unwrap()
}

/// Rollout metadata for `state` with each channel's thresholds (from an empty census) and the
/// default policies.
fn rollout_body(
    version: u64,
    expires: Timestamp,
    releases_version: u64,
    state: RolloutState,
) -> Rollout {
    let thresholds = state
        .channels
        .iter()
        .map(|(name, c)| {
            let t = WaveThresholds::compute(&c.plan, &Census::new(name), name).unwrap();
            (name.clone(), t)
        })
        .collect();
    Rollout::new(
        version,
        expires,
        releases_version,
        state,
        thresholds,
        PolicyTable::default(),
    )
}

/// A trust state with root v1 and releases v1 listing release 1 (seed 5).
fn trusted(k: &Keys) -> TrustState {
    let mut trust =
        TrustState::bootstrap(&root_file(&root_v1(k), &[&k.root[0], &k.root[1]])).unwrap();
    let file = releases_file(k, 1, T0.plus_secs(30 * DAY), &[release(1, 5)]);
    assert_eq!(trust.update_releases(&file, T0), Ok(Update::Updated));
    trust
}

#[test]
fn happy_path_and_newer_rollout() {
    let k = keys();
    let mut trust = trusted(&k);
    let v1 = rollout_file(&k, 1, T0.plus_secs(DAY), 1, state(release(1, 5)));
    assert_eq!(trust.update_rollout(&v1, T0), Ok(Update::Updated));
    assert_eq!(trust.update_rollout(&v1, T0), Ok(Update::Unchanged));
    let current = trust.current_rollout(T0).unwrap().unwrap();
    assert_eq!(current.channels["detections"].release, release(1, 5));

    // The online key may halt and revert on its own: a newer state doing so is accepted.
    let halted = halt(&current.channels["detections"], "crashes", T0.plus_secs(60))
        .unwrap()
        .0;
    let reverted = revert(&halted, T0.plus_secs(61)).unwrap().0;
    let mut newer = RolloutState::default();
    newer.channels.insert("detections".to_owned(), reverted);
    let v2 = rollout_file(&k, 2, T0.plus_secs(DAY), 1, newer.clone());
    assert_eq!(
        trust.update_rollout(&v2, T0.plus_secs(62)),
        Ok(Update::Updated)
    );
    assert_eq!(trust.current_rollout(T0.plus_secs(62)), Ok(Some(&newer)));
    assert_eq!(trust.versions().rollout, Some(2));
    assert_eq!(trust.versions().releases, Some(1));
    assert_eq!(trust.versions().root, 1);
}

#[test]
fn the_same_file_again_is_unchanged_but_still_expires() {
    let k = keys();
    let mut trust = trusted(&k);
    let releases = releases_file(&k, 1, T0.plus_secs(30 * DAY), &[release(1, 5)]);
    let v1 = rollout_file(&k, 1, T0.plus_secs(DAY), 1, state(release(1, 5)));
    assert_eq!(trust.update_rollout(&v1, T0), Ok(Update::Updated));
    // The same bytes again (what a polling endpoint fetches most of the time): unchanged.
    assert_eq!(trust.update_releases(&releases, T0), Ok(Update::Unchanged));
    assert_eq!(trust.update_rollout(&v1, T0), Ok(Update::Unchanged));
    // Not checking the signatures again does not skip the expiry: the same file, once expired,
    // is refused as such (no freeze).
    let later = T0.plus_secs(2 * DAY);
    assert!(
        matches!(
            trust.update_rollout(&v1, later),
            Err(bulwark_distribution::Error::Expired { .. })
        ),
        "{:?}",
        trust.update_rollout(&v1, later)
    );
    let much_later = T0.plus_secs(31 * DAY);
    assert!(matches!(
        trust.update_releases(&releases, much_later),
        Err(bulwark_distribution::Error::Expired { .. })
    ));
}

#[test]
fn signature_by_an_unlisted_key_is_refused() {
    let k = keys();
    let mut trust = trusted(&k);
    let forger = key(99);
    let file = sign(
        &rollout_body(1, T0.plus_secs(DAY), 1, state(release(1, 5))),
        &[&forger],
    )
    .unwrap();
    assert_eq!(
        trust.update_rollout(&file, T0),
        Err(Error::InsufficientSignatures {
            role: Role::Rollout,
            root_version: 1,
            threshold: 1,
            valid: 0,
            unknown_keys: vec![id(&forger)],
            invalid: vec![],
        })
    );
    assert_eq!(trust.versions().rollout, None);
}

#[test]
fn tampered_body_is_refused() {
    let k = keys();
    let mut trust = trusted(&k);
    let file = releases_file(&k, 2, T0.plus_secs(DAY), &[release(1, 5), release(2, 6)]);
    let genuine = bulwark_rollout::hex::encode(&[6; 32]);
    let forged = bulwark_rollout::hex::encode(&[7; 32]);
    assert!(file.contains(&genuine));
    let tampered = file.replace(&genuine, &forged);
    assert_eq!(
        trust.update_releases(&tampered, T0),
        Err(Error::InsufficientSignatures {
            role: Role::Releases,
            root_version: 1,
            threshold: 2,
            valid: 0,
            unknown_keys: vec![],
            invalid: vec![id(&k.releases[0]), id(&k.releases[1])],
        })
    );
    assert_eq!(trust.update_releases(&file, T0), Ok(Update::Updated));
}

#[test]
fn a_shared_memo_answers_only_for_the_same_bytes() {
    // Two endpoints in one process sharing a memo: the first verifies the genuine file; the
    // second gets the same signatures over a tampered body and must refuse it exactly as an
    // endpoint without a memo does, then accept the genuine file from the memo.
    let k = keys();
    let memo = MetadataMemo::shared();
    let root = root_file(&root_v1(&k), &[&k.root[0], &k.root[1]]);
    let mut first = TrustState::bootstrap_with(&root, memo.clone()).unwrap();
    let mut second = TrustState::bootstrap_with(&root, memo.clone()).unwrap();
    let mut alone = TrustState::bootstrap(&root).unwrap();
    let file = releases_file(&k, 1, T0.plus_secs(DAY), &[release(1, 5)]);
    assert_eq!(first.update_releases(&file, T0), Ok(Update::Updated));
    let checks = memo.len();
    let tampered = file.replace(
        &bulwark_rollout::hex::encode(&[5; 32]),
        &bulwark_rollout::hex::encode(&[7; 32]),
    );
    assert_ne!(tampered, file);
    let refused = alone.update_releases(&tampered, T0);
    assert!(matches!(
        refused,
        Err(Error::InsufficientSignatures { valid: 0, .. })
    ));
    assert_eq!(second.update_releases(&tampered, T0), refused);
    assert_eq!(
        memo.len(),
        checks + 2,
        "the tampered file's two checks, done"
    );
    assert_eq!(second.update_releases(&file, T0), Ok(Update::Updated));
    assert_eq!(memo.len(), checks + 2, "the genuine file's, remembered");
    assert_eq!(second.releases(), first.releases());
}

#[test]
fn below_threshold_is_refused() {
    let k = keys();
    let mut trust = trusted(&k);
    let body = releases(2, T0.plus_secs(DAY), &[release(2, 6)]);
    let one = sign(&body, &[&k.releases[2]]).unwrap();
    let expected = Err(Error::InsufficientSignatures {
        role: Role::Releases,
        root_version: 1,
        threshold: 2,
        valid: 1,
        unknown_keys: vec![],
        invalid: vec![],
    });
    assert_eq!(trust.update_releases(&one, T0), expected);
    // The same key twice is still one key.
    let twice = sign(&body, &[&k.releases[2], &k.releases[2]]).unwrap();
    assert_eq!(trust.update_releases(&twice, T0), expected);
    let two = sign(&body, &[&k.releases[2], &k.releases[0]]).unwrap();
    assert_eq!(trust.update_releases(&two, T0), Ok(Update::Updated));
}

#[test]
fn expired_metadata_is_refused_for_each_role() {
    let k = keys();
    // Releases: accepted one second before expiry, refused at it.
    let expires = T0.plus_secs(100);
    let file = releases_file(&k, 2, expires, &[release(1, 5)]);
    let mut trust = trusted(&k);
    assert_eq!(
        trust.update_releases(&file, expires),
        Err(Error::Expired {
            role: Role::Releases,
            version: 2,
            expires,
            now: expires,
        })
    );
    assert_eq!(
        trust.update_releases(&file, Timestamp(expires.0 - 1)),
        Ok(Update::Updated)
    );
    // A rollout cannot be accepted on expired releases metadata, nor acted on.
    let rollout = rollout_file(&k, 1, T0.plus_secs(DAY), 1, state(release(1, 5)));
    assert!(matches!(
        trust.update_rollout(&rollout, expires),
        Err(Error::Expired {
            role: Role::Releases,
            ..
        })
    ));

    // Rollout.
    let mut trust = trusted(&k);
    let file = rollout_file(&k, 1, expires, 1, state(release(1, 5)));
    assert_eq!(
        trust.update_rollout(&file, expires),
        Err(Error::Expired {
            role: Role::Rollout,
            version: 1,
            expires,
            now: expires,
        })
    );
    assert_eq!(
        trust.update_rollout(&file, Timestamp(expires.0 - 1)),
        Ok(Update::Updated)
    );
    assert!(trust.current_rollout(Timestamp(expires.0 - 1)).is_ok());
    // A frozen server: the endpoint stops acting on the state it holds.
    assert!(matches!(
        trust.current_rollout(expires),
        Err(Error::Expired {
            role: Role::Rollout,
            ..
        })
    ));

    // Root: nothing is accepted under an expired root.
    let root = Root {
        expires,
        ..root_v1(&k)
    };
    let mut trust = TrustState::bootstrap(&root_file(&root, &[&k.root[0], &k.root[1]])).unwrap();
    let file = releases_file(&k, 1, T0.plus_secs(DAY), &[release(1, 5)]);
    assert_eq!(
        trust.update_releases(&file, expires),
        Err(Error::Expired {
            role: Role::Root,
            version: 1,
            expires,
            now: expires,
        })
    );
    assert_eq!(
        trust.update_releases(&file, Timestamp(expires.0 - 1)),
        Ok(Update::Updated)
    );
    let rollout = rollout_file(&k, 1, T0.plus_secs(DAY), 1, state(release(1, 5)));
    assert!(matches!(
        trust.update_rollout(&rollout, expires),
        Err(Error::Expired {
            role: Role::Root,
            ..
        })
    ));
}

#[test]
fn rollback_is_refused_also_after_reloading() {
    let k = keys();
    let mut trust = trusted(&k);
    let expires = T0.plus_secs(DAY);
    let v1 = rollout_file(&k, 1, expires, 1, state(release(1, 5)));
    let v2 = rollout_file(&k, 2, expires, 1, state(release(1, 5)));
    assert_eq!(trust.update_rollout(&v2, T0), Ok(Update::Updated));
    let rollback = Err(Error::Rollback {
        role: Role::Rollout,
        trusted: 2,
        found: 1,
    });
    assert_eq!(trust.update_rollout(&v1, T0), rollback);
    // The same version with other content.
    let other = rollout_file(&k, 2, expires.plus_secs(1), 1, state(release(1, 5)));
    assert_eq!(
        trust.update_rollout(&other, T0),
        Err(Error::VersionReused {
            role: Role::Rollout,
            version: 2,
        })
    );
    // Releases too.
    let releases_v2 = releases_file(&k, 2, expires, &[release(1, 5)]);
    assert_eq!(trust.update_releases(&releases_v2, T0), Ok(Update::Updated));
    let releases_v1 = releases_file(&k, 1, T0.plus_secs(30 * DAY), &[release(1, 5)]);
    assert_eq!(
        trust.update_releases(&releases_v1, T0),
        Err(Error::Rollback {
            role: Role::Releases,
            trusted: 2,
            found: 1,
        })
    );

    // Persist, reload: the newest versions are still the reference.
    let saved = serde_json::to_string(&trust).unwrap();
    let mut reloaded: TrustState = serde_json::from_str(&saved).unwrap();
    assert_eq!(reloaded.versions(), trust.versions());
    assert_eq!(reloaded.update_rollout(&v1, T0), rollback);
    assert!(matches!(
        reloaded.update_releases(&releases_v1, T0),
        Err(Error::Rollback { .. })
    ));
    assert_eq!(reloaded.update_rollout(&v2, T0), Ok(Update::Unchanged));

    // A persisted file that was tampered with is refused on loading.
    let mut persisted: PersistedTrust = serde_json::from_str(&saved).unwrap();
    let genuine = bulwark_rollout::hex::encode(&[5; 32]);
    persisted.releases = persisted
        .releases
        .map(|f| f.replace(&genuine, &bulwark_rollout::hex::encode(&[9; 32])));
    assert!(matches!(
        TrustState::restore(&persisted),
        Err(Error::InsufficientSignatures {
            role: Role::Releases,
            ..
        })
    ));
}

#[test]
fn the_persisted_json_is_what_serde_writes_for_the_persisted_files() {
    let k = keys();
    let same = |t: &TrustState| {
        let json = t.persisted_json();
        assert_eq!(json, serde_json::to_vec(&t.persisted()).unwrap());
        // And it loads back to the same state.
        let back: PersistedTrust = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, t.persisted());
        assert_eq!(TrustState::restore(&back).unwrap().versions(), t.versions());
    };
    // A root alone: the other two are null.
    let root = root_file(&root_v1(&k), &[&k.root[0], &k.root[1]]);
    let alone = TrustState::bootstrap(&root).unwrap();
    same(&alone);
    assert!(String::from_utf8(alone.persisted_json())
        .unwrap()
        .ends_with(r#","releases":null,"rollout":null}"#));
    // Releases, then a rollout, then a newer rollout; through a shared memo too, where the
    // files' JSON strings are shared by both states.
    let memo = MetadataMemo::shared();
    for mut trust in [
        trusted(&k),
        TrustState::bootstrap_with(&root, memo.clone()).unwrap(),
        TrustState::bootstrap_with(&root, memo.clone()).unwrap(),
    ] {
        let releases = releases_file(&k, 1, T0.plus_secs(30 * DAY), &[release(1, 5)]);
        trust.update_releases(&releases, T0).unwrap();
        same(&trust);
        for version in 1..=2 {
            let rollout = rollout_file(&k, version, T0.plus_secs(DAY), 1, state(release(1, 5)));
            assert_eq!(trust.update_rollout(&rollout, T0), Ok(Update::Updated));
            same(&trust);
        }
    }
}

#[test]
fn online_key_cannot_reference_unsigned_content() {
    let k = keys();
    let mut trust = trusted(&k);
    let expires = T0.plus_secs(DAY);
    // A release nobody listed.
    let file = rollout_file(&k, 1, expires, 1, state(release(2, 6)));
    assert_eq!(
        trust.update_rollout(&file, T0),
        Err(Error::UnreleasedPack {
            channel: "detections".to_owned(),
            version: 2,
            releases_version: 1,
        })
    );
    // The listed version with another pack.
    let mut other_pack = release(1, 5);
    other_pack.pack_hash = [6; 32];
    let file = rollout_file(&k, 1, expires, 1, state(other_pack));
    assert_eq!(
        trust.update_rollout(&file, T0),
        Err(Error::PackHashMismatch {
            channel: "detections".to_owned(),
            version: 1,
            which: PackHash::Pack,
            releases_version: 1,
        })
    );
    // Or another envelope.
    let mut other_envelope = release(1, 5);
    other_envelope.envelope_sha256 = [6; 32];
    let file = rollout_file(&k, 1, expires, 1, state(other_envelope));
    assert!(matches!(
        trust.update_rollout(&file, T0),
        Err(Error::PackHashMismatch {
            which: PackHash::Envelope,
            ..
        })
    ));
    // A releases version the endpoint has not verified yet.
    let file = rollout_file(&k, 1, expires, 2, state(release(1, 5)));
    assert_eq!(
        trust.update_rollout(&file, T0),
        Err(Error::ReleasesNotSeen {
            referenced: 2,
            trusted: 1,
        })
    );
    assert_eq!(trust.versions().rollout, None);
    // Once release 2 is signed and verified, the same reference is accepted.
    let releases_v2 = releases_file(&k, 2, expires, &[release(1, 5), release(2, 6)]);
    assert_eq!(trust.update_releases(&releases_v2, T0), Ok(Update::Updated));
    let file = rollout_file(&k, 1, expires, 2, state(release(2, 6)));
    assert_eq!(trust.update_rollout(&file, T0), Ok(Update::Updated));
}

#[test]
fn rollout_key_cannot_sign_releases() {
    let k = keys();
    let mut trust = trusted(&k);
    let file = sign(
        &releases(2, T0.plus_secs(DAY), &[release(2, 6)]),
        &[&k.rollout],
    )
    .unwrap();
    assert_eq!(
        trust.update_releases(&file, T0),
        Err(Error::InsufficientSignatures {
            role: Role::Releases,
            root_version: 1,
            threshold: 2,
            valid: 0,
            unknown_keys: vec![id(&k.rollout)],
            invalid: vec![],
        })
    );
    // A rollout file offered as releases metadata is refused by its type.
    let rollout = rollout_file(&k, 5, T0.plus_secs(DAY), 1, state(release(1, 5)));
    assert_eq!(
        trust.update_releases(&rollout, T0),
        Err(Error::WrongType {
            expected: Role::Releases,
            found: "rollout".to_owned(),
        })
    );
    // A root cannot give the rollout key a release role too.
    let shared = Root::new(1, T0.plus_secs(DAY))
        .with_role(Role::Root, &public(&k.root), 2)
        .with_role(Role::Releases, &public(&[key(21), key(12)]), 1)
        .with_role(Role::Rollout, &public(std::slice::from_ref(&k.rollout)), 1);
    assert_eq!(
        TrustState::bootstrap(&root_file(&shared, &[&k.root[0], &k.root[1]])).err(),
        Some(Error::Root(RootError::SharedKey {
            version: 1,
            keyid: id(&k.rollout),
            first: Role::Releases,
            second: Role::Rollout,
        }))
    );
}

#[test]
fn root_rotation() {
    let k = keys();
    let mut trust = trusted(&k);
    let rollout = rollout_file(&k, 1, T0.plus_secs(DAY), 1, state(release(1, 5)));
    assert_eq!(trust.update_rollout(&rollout, T0), Ok(Update::Updated));

    // Root v2: new root keys, new release keys, the same rollout key.
    let new = Keys {
        root: vec![key(4), key(5), key(6)],
        releases: vec![key(14), key(15), key(16)],
        rollout: key(21),
    };
    let v2 = Root {
        version: 2,
        ..root_v1(&new)
    };
    let only_new = root_file(&v2, &[&new.root[0], &new.root[1]]);
    assert_eq!(
        trust.update_root(&only_new),
        Err(Error::InsufficientSignatures {
            role: Role::Root,
            root_version: 1,
            threshold: 2,
            valid: 0,
            unknown_keys: vec![id(&new.root[0]), id(&new.root[1])],
            invalid: vec![],
        })
    );
    let only_old = root_file(&v2, &[&k.root[0], &k.root[1]]);
    assert!(matches!(
        trust.update_root(&only_old),
        Err(Error::InsufficientSignatures {
            role: Role::Root,
            root_version: 2,
            valid: 0,
            ..
        })
    ));
    // A skipped version is refused: v3 would not be checked against v2's keys.
    let v3 = root_file(
        &Root {
            version: 3,
            ..root_v1(&new)
        },
        &[&k.root[0], &k.root[1], &new.root[0], &new.root[1]],
    );
    assert_eq!(
        trust.update_root(&v3),
        Err(Error::RootVersionSkip {
            trusted: 1,
            found: 3,
        })
    );
    assert_eq!(trust.versions().root, 1);

    let both = root_file(&v2, &[&k.root[0], &k.root[2], &new.root[1], &new.root[2]]);
    assert_eq!(trust.update_root(&both), Ok(Update::Updated));
    assert_eq!(trust.versions().root, 2);
    // The release keys changed: their metadata is dropped; the rollout key did not.
    assert_eq!(trust.versions().releases, None);
    assert_eq!(trust.versions().rollout, Some(1));

    // The old release keys are no longer trusted.
    let old_releases = releases_file(&k, 2, T0.plus_secs(DAY), &[release(1, 5)]);
    assert!(matches!(
        trust.update_releases(&old_releases, T0),
        Err(Error::InsufficientSignatures {
            role: Role::Releases,
            root_version: 2,
            valid: 0,
            ..
        })
    ));
    let new_releases = releases_file(&new, 1, T0.plus_secs(DAY), &[release(1, 5)]);
    assert_eq!(
        trust.update_releases(&new_releases, T0),
        Ok(Update::Updated)
    );
    // Root v1 again is a rollback; v2 again is unchanged.
    let v1 = root_file(&root_v1(&k), &[&k.root[0], &k.root[1]]);
    assert_eq!(
        trust.update_root(&v1),
        Err(Error::Rollback {
            role: Role::Root,
            trusted: 2,
            found: 1,
        })
    );
    assert_eq!(trust.update_root(&both), Ok(Update::Unchanged));
    // And it all survives a restart.
    let reloaded: TrustState =
        serde_json::from_str(&serde_json::to_string(&trust).unwrap()).unwrap();
    assert_eq!(reloaded.versions(), trust.versions());
}

#[test]
fn thresholds_must_fit_every_channel_and_only_those() {
    let k = keys();
    let mut trust = trusted(&k);
    let expires = T0.plus_secs(DAY);
    let good = rollout_body(1, expires, 1, state(release(1, 5)));
    let refused = |body: &Rollout, trust: &mut TrustState| {
        trust.update_rollout(&sign(body, &[&k.rollout]).unwrap(), T0)
    };

    let mut missing = good.clone();
    missing.thresholds.clear();
    assert_eq!(
        refused(&missing, &mut trust),
        Err(Error::MissingThresholds {
            channel: "detections".to_owned()
        })
    );

    let mut stray = good.clone();
    let other =
        WaveThresholds::compute(&Plan::default_plan(), &Census::new("critical"), "critical")
            .unwrap();
    stray
        .thresholds
        .insert("critical".to_owned(), other.clone());
    assert_eq!(
        refused(&stray, &mut trust),
        Err(Error::StrayThresholds {
            channel: "critical".to_owned()
        })
    );

    // Another channel's thresholds under this channel's name.
    let mut wrong = good.clone();
    wrong.thresholds = BTreeMap::from([("detections".to_owned(), other)]);
    assert!(matches!(
        refused(&wrong, &mut trust),
        Err(Error::InvalidThresholds {
            source: ThresholdsError::WrongChannel { .. },
            ..
        })
    ));

    // Thresholds that put everybody in the first wave (a server widening its canary).
    let mut widened = good.clone();
    if let Some(t) = widened.thresholds.get_mut("detections") {
        t.plain.fill(1_000_000);
    }
    assert!(matches!(
        refused(&widened, &mut trust),
        Err(Error::InvalidThresholds { .. })
    ));

    assert_eq!(refused(&good, &mut trust), Ok(Update::Updated));
    let current = trust.current(T0).unwrap().unwrap();
    assert_eq!(current.thresholds, good.thresholds);
}

#[test]
fn policies_are_validated_and_pin_only_listed_versions() {
    let k = keys();
    let mut trust = trusted(&k);
    let expires = T0.plus_secs(DAY);
    let with_policy = |host_group: &str, policy: Policy| {
        let mut body = rollout_body(1, expires, 1, state(release(1, 5)));
        body.policies.set(host_group, "detections", policy);
        sign(&body, &[&k.rollout]).unwrap()
    };

    // A pin to a version no release key listed.
    assert_eq!(
        trust.update_rollout(
            &with_policy(
                "servers",
                Policy::Pin {
                    version: 7,
                    expires_at: T0.plus_secs(DAY)
                }
            ),
            T0
        ),
        Err(Error::UnreleasedPin {
            scope: "host group \"servers\"".to_owned(),
            channel: "detections".to_owned(),
            version: 7,
            releases_version: 1,
        })
    );
    // A delay over the limit.
    assert!(matches!(
        trust.update_rollout(&with_policy("servers", Policy::Delay { hours: 73 }), T0),
        Err(Error::InvalidPolicies(PolicyError::DelayTooLong {
            hours: 73,
            ..
        }))
    ));
    // A policy for a channel without a rollout.
    let mut body = rollout_body(1, expires, 1, state(release(1, 5)));
    body.policies.set("servers", "critical", Policy::Early);
    assert!(matches!(
        trust.update_rollout(&sign(&body, &[&k.rollout]).unwrap(), T0),
        Err(Error::InvalidPolicies(PolicyError::UnknownChannel { .. }))
    ));
    // A pin to the listed version is accepted and reaches the decision.
    let file = with_policy(
        "servers",
        Policy::Pin {
            version: 1,
            expires_at: T0.plus_secs(DAY),
        },
    );
    assert_eq!(trust.update_rollout(&file, T0), Ok(Update::Updated));
    let current = trust.current(T0).unwrap().unwrap();
    assert!(matches!(
        current.policies.resolve("servers", "detections"),
        Policy::Pin { version: 1, .. }
    ));
}
