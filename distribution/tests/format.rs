//! The file format, root validation, and refusals before any signature is checked.

use bulwark_distribution::{
    sign, Error, KeyId, MetadataMemo, Releases, Role, Root, RootError, SignedFile, Timestamp,
    TrustState, Update, MAX_FILE_BYTES,
};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public(seed: u8) -> [u8; 32] {
    key(seed).verifying_key().to_bytes()
}

fn root(version: u64) -> Root {
    Root::new(version, Timestamp(1_000))
        .with_role(Role::Root, &[public(1), public(2)], 2)
        .with_role(Role::Releases, &[public(11)], 1)
        .with_role(Role::Rollout, &[public(21)], 1)
}

#[test]
fn wire_format() {
    let file = sign(&root(1), &[&key(1), &key(2)]).unwrap();
    let value: serde_json::Value = serde_json::from_str(&file).unwrap();
    let signed = &value["signed"];
    assert_eq!(signed["type"], "root");
    assert_eq!(signed["version"], 1);
    assert_eq!(signed["expires"], 1_000);
    // The key id is the SHA-256 of the public key, in hex.
    let id = bulwark_rollout::hex::encode(&Sha256::digest(public(1)));
    assert_eq!(KeyId::of(&public(1)).to_string(), id);
    assert_eq!(signed["keys"][&id]["keytype"], "ed25519");
    assert_eq!(
        signed["keys"][&id]["public"],
        bulwark_rollout::hex::encode(&public(1))
    );
    assert_eq!(signed["roles"]["root"]["threshold"], 2);
    assert_eq!(value["signatures"][0]["keyid"], id);
    assert_eq!(value["signatures"][0]["sig"].as_str().unwrap().len(), 128);
    // Deterministic: the same body signs to the same file.
    assert_eq!(sign(&root(1), &[&key(1), &key(2)]).unwrap(), file);
    assert!(file.starts_with(r#"{"signed":{"type":"root","version":1,"expires":1000,"keys":{"#));
}

#[test]
fn signatures_cover_the_bytes_as_received() {
    let file = sign(&root(1), &[&key(1), &key(2)]).unwrap();
    // The same JSON value with other whitespace is other bytes: not what was signed.
    let spaced = file.replacen(r#""version":1"#, r#""version": 1"#, 1);
    assert!(matches!(
        TrustState::bootstrap(&spaced),
        Err(Error::InsufficientSignatures {
            role: Role::Root,
            valid: 0,
            ..
        })
    ));
    // Whitespace outside `signed` does not matter.
    let outside = file.replacen(r#""signatures":"#, r#""signatures" : "#, 1);
    assert!(TrustState::bootstrap(&outside).is_ok());
}

#[test]
fn root_signed_by_one_holder_after_another() {
    let mut file = SignedFile::sign(&root(1), &[&key(1)]).unwrap();
    assert!(matches!(
        TrustState::bootstrap(&file.to_text()),
        Err(Error::InsufficientSignatures { valid: 1, .. })
    ));
    file.add_signature(&key(2));
    assert!(TrustState::bootstrap(&file.to_text()).is_ok());
}

#[test]
fn invalid_roots_are_refused() {
    // Without a memo, and through one shared memo (which shares a parsed root's body and whether
    // it passed validation): refused alike, and again the second time the memo is given it.
    let memo = MetadataMemo::shared();
    let bootstrap = |root: &Root| {
        let file = sign(root, &[&key(1), &key(2)]).unwrap();
        let alone = TrustState::bootstrap(&file).err();
        for _ in 0..2 {
            assert_eq!(TrustState::bootstrap_with(&file, memo.clone()).err(), alone);
        }
        TrustState::bootstrap(&file)
    };
    assert!(bootstrap(&root(1)).is_ok());
    let missing = Root::new(1, Timestamp(1_000))
        .with_role(Role::Root, &[public(1), public(2)], 2)
        .with_role(Role::Releases, &[public(11)], 1);
    assert_eq!(
        bootstrap(&missing).err(),
        Some(Error::Root(RootError::MissingRole {
            version: 1,
            role: Role::Rollout,
        }))
    );
    let zero = root(1).with_role(Role::Releases, &[public(11)], 0);
    assert_eq!(
        bootstrap(&zero).err(),
        Some(Error::Root(RootError::BadThreshold {
            version: 1,
            role: Role::Releases,
            threshold: 0,
            keys: 1,
        }))
    );
    let above = root(1).with_role(Role::Releases, &[public(11), public(12)], 3);
    assert_eq!(
        bootstrap(&above).err(),
        Some(Error::Root(RootError::BadThreshold {
            version: 1,
            role: Role::Releases,
            threshold: 3,
            keys: 2,
        }))
    );
    let mut unlisted = root(1);
    unlisted.keys.remove(&KeyId::of(&public(21)));
    assert_eq!(
        bootstrap(&unlisted).err(),
        Some(Error::Root(RootError::UnlistedKey {
            version: 1,
            role: Role::Rollout,
            keyid: KeyId::of(&public(21)),
        }))
    );
    let mut mismatch = root(1);
    let entry = mismatch.keys.get_mut(&KeyId::of(&public(21))).unwrap();
    entry.public = public(22);
    assert_eq!(
        bootstrap(&mismatch).err(),
        Some(Error::Root(RootError::KeyIdMismatch {
            version: 1,
            keyid: KeyId::of(&public(21)),
        }))
    );
    // The identity point is a weak key.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = root(1).with_role(Role::Rollout, &[identity], 1);
    assert_eq!(
        bootstrap(&weak).err(),
        Some(Error::Root(RootError::InvalidKey {
            version: 1,
            keyid: KeyId::of(&identity),
        }))
    );
}

#[test]
fn malformed_files_are_refused_before_signatures() {
    let mut trust = TrustState::bootstrap(&sign(&root(1), &[&key(1), &key(2)]).unwrap()).unwrap();
    let now = Timestamp(10);
    assert!(matches!(
        trust.update_releases("not json", now),
        Err(Error::Malformed {
            role: Role::Releases,
            ..
        })
    ));
    // Unknown fields in `signed` or around it are refused.
    let file = sign(&Releases::new(1, Timestamp(100)), &[&key(11)]).unwrap();
    let extra = file.replacen(r#""version":1"#, r#""version":1,"extra":true"#, 1);
    assert!(matches!(
        trust.update_releases(&extra, now),
        Err(Error::Malformed { .. })
    ));
    let extra = file.replacen(r#""signatures""#, r#""extra":1,"signatures""#, 1);
    assert!(matches!(
        trust.update_releases(&extra, now),
        Err(Error::Malformed { .. })
    ));
    let zero = sign(&Releases::new(0, Timestamp(100)), &[&key(11)]).unwrap();
    assert_eq!(
        trust.update_releases(&zero, now),
        Err(Error::ZeroVersion {
            role: Role::Releases
        })
    );
    let large = " ".repeat(MAX_FILE_BYTES + 1);
    assert_eq!(
        trust.update_releases(&large, now),
        Err(Error::TooLarge {
            role: Role::Releases,
            len: MAX_FILE_BYTES + 1,
            max: MAX_FILE_BYTES,
        })
    );
    let root_as_releases = sign(&root(2), &[&key(1), &key(2)]).unwrap();
    assert_eq!(
        trust.update_releases(&root_as_releases, now),
        Err(Error::WrongType {
            expected: Role::Releases,
            found: "root".to_owned(),
        })
    );
    assert_eq!(trust.update_releases(&file, now), Ok(Update::Updated));
}
