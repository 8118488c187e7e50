//! The file format, `{"signed": {...}, "signatures": [{"keyid": ..., "sig": ...}]}`, signing, and
//! the threshold check.

use std::collections::BTreeSet;

use bulwark_rollout::hex;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::memo::{Check, MetadataMemo};
use crate::metadata::{KeyId, Metadata, Role, Root};
use crate::MAX_FILE_BYTES;

/// One signature: the signer's key id and the ed25519 signature of the bytes of `signed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// SHA-256 of the signer's public key.
    pub keyid: KeyId,
    /// The signature.
    #[serde(with = "hex")]
    pub sig: [u8; 64],
}

impl Signature {
    /// `key`'s signature of `signed`.
    #[must_use]
    pub fn sign(key: &SigningKey, signed: &[u8]) -> Signature {
        Signature {
            keyid: KeyId::of(key.verifying_key().as_bytes()),
            sig: key.sign(signed).to_bytes(),
        }
    }
}

/// A metadata file as transmitted.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedFile {
    /// The role's metadata, kept as the exact bytes received (the signed bytes).
    pub signed: Box<RawValue>,
    /// The signatures.
    pub signatures: Vec<Signature>,
}

impl SignedFile {
    /// Serializes `body` (fields in declaration order, `BTreeMap`s: one encoding per value) and
    /// signs it with every key of `keys`. Refuses a body whose JSON does not parse back.
    pub fn sign<M: Metadata>(body: &M, keys: &[&SigningKey]) -> Result<SignedFile, Error> {
        let unserializable = |e: serde_json::Error| Error::Unserializable {
            role: M::ROLE,
            reason: e.to_string(),
        };
        let json = serde_json::to_string(body).map_err(unserializable)?;
        serde_json::from_str::<M>(&json).map_err(unserializable)?;
        let signed = RawValue::from_string(json).map_err(unserializable)?;
        let signatures = keys
            .iter()
            .map(|key| Signature::sign(key, signed.get().as_bytes()))
            .collect();
        Ok(SignedFile { signed, signatures })
    }

    /// Adds `key`'s signature (e.g. one root key holder after another).
    pub fn add_signature(&mut self, key: &SigningKey) {
        let signature = Signature::sign(key, self.signed.get().as_bytes());
        self.signatures.push(signature);
    }

    /// Parses a file expected to hold `role`'s metadata (the file only: nothing is verified).
    pub fn parse(file: &str, role: Role) -> Result<SignedFile, Error> {
        if file.len() > MAX_FILE_BYTES {
            return Err(Error::TooLarge {
                role,
                len: file.len(),
                max: MAX_FILE_BYTES,
            });
        }
        serde_json::from_str(file).map_err(|e| Error::Malformed {
            role,
            reason: e.to_string(),
        })
    }

    /// The file's text.
    #[must_use]
    pub fn to_text(&self) -> String {
        // A struct of a raw value and plain data always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// SHA-256 of the signed bytes (what "the same content" means).
    #[must_use]
    pub fn signed_sha256(&self) -> [u8; 32] {
        Sha256::digest(self.signed.get().as_bytes()).into()
    }
}

/// Signs `body` with `keys` and returns the file's text.
pub fn sign<M: Metadata>(body: &M, keys: &[&SigningKey]) -> Result<String, Error> {
    Ok(SignedFile::sign(body, keys)?.to_text())
}

/// Only the `type` of a body, to name a wrong type before parsing the rest.
#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: serde_json::Value,
}

/// Parses `file` as `M`'s metadata: the file, its `type`, the body, a non-zero version. Returns
/// the file, the body and the SHA-256 of the signed bytes. Signatures are not checked.
pub(crate) fn parse<M: Metadata>(file: &str) -> Result<(SignedFile, M, [u8; 32]), Error> {
    let role = M::ROLE;
    let signed_file = SignedFile::parse(file, role)?;
    let malformed = |e: serde_json::Error| Error::Malformed {
        role,
        reason: e.to_string(),
    };
    let kind = serde_json::from_str::<TypeOnly>(signed_file.signed.get())
        .map_err(malformed)?
        .kind;
    if kind.as_str() != Some(role.name()) {
        return Err(Error::WrongType {
            expected: role,
            found: match kind {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            },
        });
    }
    let body: M = serde_json::from_str(signed_file.signed.get()).map_err(malformed)?;
    if body.version() == 0 {
        return Err(Error::ZeroVersion { role });
    }
    let hash = signed_file.signed_sha256();
    Ok((signed_file, body, hash))
}

/// Checks that a threshold of `role`'s keys in `root` signed `file`: distinct key ids, each
/// counted once; signatures by other keys are ignored (a rotated root carries the old keys'
/// signatures too), and reported if the threshold is not met. Each check goes through `memo`
/// (done, unless this very check was done before in the process).
pub(crate) fn check_signatures(
    role: Role,
    file: &SignedFile,
    root: &Root,
    memo: &MetadataMemo,
) -> Result<(), Error> {
    let (keyids, threshold) = match root.role(role) {
        Some(keys) => (&keys.keyids, keys.threshold),
        // A validated root has every role; without one nothing can be verified.
        None => (&BTreeSet::new(), 1),
    };
    let message = file.signed.get().as_bytes();
    let mut valid = BTreeSet::new();
    let mut unknown_keys = Vec::new();
    let mut invalid = Vec::new();
    for signature in &file.signatures {
        let public = keyids
            .contains(&signature.keyid)
            .then(|| root.keys.get(&signature.keyid))
            .flatten();
        let Some(public) = public else {
            unknown_keys.push(signature.keyid);
            continue;
        };
        let check = memo.check(&public.public, &signature.sig, message, || {
            let Ok(key) = VerifyingKey::from_bytes(&public.public) else {
                return Check::BadKey;
            };
            let sig = ed25519_dalek::Signature::from_bytes(&signature.sig);
            if key.verify_strict(message, &sig).is_ok() {
                Check::Valid
            } else {
                Check::Invalid
            }
        });
        match check {
            Check::Valid => {
                valid.insert(signature.keyid);
            }
            Check::Invalid => invalid.push(signature.keyid),
            Check::BadKey => unknown_keys.push(signature.keyid),
        }
    }
    let count = u32::try_from(valid.len()).unwrap_or(u32::MAX);
    if count >= threshold {
        Ok(())
    } else {
        Err(Error::InsufficientSignatures {
            role,
            root_version: root.version,
            threshold,
            valid: count,
            unknown_keys,
            invalid,
        })
    }
}
