//! The signed envelope and the loader: every refusal reason, with a clear message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod common;

use bulwark_loader_boot_guard::envelope::{public_key, HEADER_BYTES, MAX_ENVELOPE_BYTES};
use bulwark_loader_boot_guard::{
    open, seal, Admission, ContentId, KeyError, LoadError, TrustedKeys,
};
use common::*;

fn update(newest: u64) -> Admission<'static> {
    Admission::Update {
        channel: CHANNEL,
        newest,
        quarantine: &[],
    }
}

fn refuse(bytes: &[u8], admission: Admission<'_>) -> LoadError {
    let e = open(bytes, &keys(), admission).unwrap_err();
    assert!(!e.to_string().is_empty());
    e
}

#[test]
fn a_signed_pack_opens_with_its_version_and_hash() {
    let env = envelope(1, 5);
    let o = open(&env, &keys(), update(4)).unwrap();
    assert_eq!(o.id, id_of(1, 5));
    assert_eq!(o.pack.content_hash(), o.id.hash);
    assert_eq!(o.header.channel, CHANNEL);
    assert_eq!(o.header.version, 5);
    assert_eq!(o.header.signer, public_key(&SECRET));
    assert_eq!(o.pack.rule_count(), 1);
}

#[test]
fn every_tampered_byte_is_refused() {
    let env = envelope(1, 5);
    // Every header byte and a spread of pack bytes: a flip anywhere is caught before the verifier.
    let positions: Vec<usize> = (0..HEADER_BYTES)
        .chain((HEADER_BYTES..env.len()).step_by(7))
        .chain([env.len() - 1])
        .collect();
    for at in positions {
        let mut bad = env.clone();
        bad[at] ^= 0x01;
        let e = open(&bad, &keys(), update(0)).unwrap_err();
        match at {
            0..=3 => assert!(matches!(e, LoadError::BadMagic { .. }), "byte {at}: {e}"),
            4..=5 => assert!(
                matches!(e, LoadError::UnsupportedVersion { .. }),
                "byte {at}: {e}"
            ),
            6..=7 => assert!(matches!(e, LoadError::BadFlags { .. }), "byte {at}: {e}"),
            52..=55 => assert!(
                matches!(e, LoadError::LengthMismatch { .. }),
                "byte {at}: {e}"
            ),
            56..=87 => assert!(matches!(e, LoadError::UnknownKey { .. }), "byte {at}: {e}"),
            _ => assert!(
                matches!(e, LoadError::BadSignature { .. }),
                "byte {at}: {e}"
            ),
        }
    }
}

#[test]
fn tampered_pack_names_the_signer_and_the_reason() {
    let mut env = envelope(1, 5);
    let last = env.len() - 40;
    env[last] ^= 0x80;
    let e = refuse(&env, update(0));
    assert_eq!(e.code(), 111);
    let msg = e.to_string();
    assert!(msg.starts_with("bad signature"), "{msg}");
    assert!(msg.contains(&hex(&public_key(&SECRET))), "{msg}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_wrong_key_is_refused() {
    let env = seal(
        &OTHER_SECRET,
        CHANNEL,
        5,
        bulwark_interpreter::schema_hash(),
        &pack(1),
    )
    .unwrap();
    let e = refuse(&env, update(0));
    assert_eq!(
        e,
        LoadError::UnknownKey {
            key: bulwark_interpreter::error::HexHash(public_key(&OTHER_SECRET))
        }
    );
    assert!(e.to_string().contains("is not a trusted key"));
    // Trusted, but the signature is another key's: the header names a trusted key, the signature
    // does not match it.
    let mut forged = env.clone();
    forged[56..88].copy_from_slice(&public_key(&SECRET));
    assert!(matches!(
        refuse(&forged, update(0)),
        LoadError::BadSignature { .. }
    ));
    // With both keys trusted, both open.
    let both = TrustedKeys::new(&[public_key(&SECRET), public_key(&OTHER_SECRET)]).unwrap();
    assert_eq!(both.len(), 2);
    assert!(open(&env, &both, update(0)).is_ok());
    assert!(open(&envelope(1, 5), &both, update(0)).is_ok());
}

#[test]
fn no_trusted_keys_refuses_everything() {
    let none = TrustedKeys::new(&[]).unwrap();
    assert!(none.is_empty());
    assert!(matches!(
        open(&envelope(1, 5), &none, update(0)),
        Err(LoadError::UnknownKey { .. })
    ));
}

#[test]
fn invalid_and_too_many_trusted_keys_are_errors() {
    // The identity point is a weak (small-order) key.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(matches!(
        TrustedKeys::new(&[identity]),
        Err(KeyError::Weak { index: 0, .. })
    ));
    let many = [public_key(&SECRET); 9];
    assert_eq!(
        TrustedKeys::new(&many).unwrap_err(),
        KeyError::TooMany { count: 9, max: 8 }
    );
}

#[test]
fn an_older_or_equal_version_is_refused_as_downgrade() {
    let env = envelope(1, 5);
    assert_eq!(
        refuse(&env, update(5)),
        LoadError::Downgrade {
            offered: 5,
            current: 5
        }
    );
    let e = refuse(&env, update(9));
    assert_eq!(
        e,
        LoadError::Downgrade {
            offered: 5,
            current: 9
        }
    );
    assert!(e.to_string().contains("not newer than version 9"), "{e}");
    // A local revert to the stored last-known-good is allowed: exactly that version and hash.
    let stored = Admission::Stored {
        channel: CHANNEL,
        id: id_of(1, 5),
    };
    assert!(open(&env, &keys(), stored).is_ok());
    let other = Admission::Stored {
        channel: CHANNEL,
        id: id_of(2, 5),
    };
    assert!(matches!(
        refuse(&env, other),
        LoadError::NotTheStoredContent { .. }
    ));
}

#[test]
fn a_swapped_schema_hash_is_refused() {
    // Swapped after signing: the signature no longer matches.
    let mut env = envelope(1, 5);
    env[20] ^= 0xff;
    assert!(matches!(
        refuse(&env, update(0)),
        LoadError::BadSignature { .. }
    ));
    // Signed for another schema: refused as a schema mismatch naming both hashes.
    let mut other = bulwark_interpreter::schema_hash();
    other[0] ^= 0xff;
    let env = seal(&SECRET, CHANNEL, 5, other, &pack(1)).unwrap();
    let e = refuse(&env, update(0));
    assert!(matches!(e, LoadError::SchemaMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&hex(&other)), "{e}");
    assert_eq!(e.code(), 124);
}

#[test]
fn the_wrong_channel_is_refused() {
    let env = seal(&SECRET, 2, 5, bulwark_interpreter::schema_hash(), &pack(1)).unwrap();
    assert_eq!(
        refuse(&env, update(0)),
        LoadError::WrongChannel {
            offered: 2,
            expected: CHANNEL
        }
    );
}

#[test]
fn quarantined_content_is_refused_even_resigned_with_a_newer_version() {
    let q = [id_of(1, 5)];
    let admission = Admission::Update {
        channel: CHANNEL,
        newest: 5,
        quarantine: &q,
    };
    for env in [envelope(1, 5), envelope(1, 6)] {
        let e = open(&env, &keys(), admission).unwrap_err();
        assert!(
            matches!(e, LoadError::Quarantined { version: 5, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("quarantined"));
    }
    assert!(open(&envelope(2, 6), &keys(), admission).is_ok());
}

#[test]
fn a_signed_pack_the_verifier_rejects_is_refused_with_the_verifiers_reason() {
    let mut bad = pack(1);
    let n = bad.len();
    bad[n - 1] ^= 1; // the pack's own checksum
    let env = seal(
        &SECRET,
        CHANNEL,
        5,
        bulwark_interpreter::schema_hash(),
        &bad,
    )
    .unwrap();
    let e = refuse(&env, update(0));
    assert!(matches!(e, LoadError::Verify(_)), "{e}");
    assert!(
        e.to_string().starts_with("pack rejected by the verifier"),
        "{e}"
    );
}

#[test]
fn sizes_are_checked_first() {
    let env = envelope(1, 5);
    for len in [0, 1, HEADER_BYTES - 1] {
        assert_eq!(
            refuse(&env[..len], update(0)),
            LoadError::TooShort {
                len,
                min: HEADER_BYTES
            }
        );
    }
    // Truncated or extended pack: the length field disagrees.
    assert!(matches!(
        refuse(&env[..env.len() - 1], update(0)),
        LoadError::LengthMismatch { .. }
    ));
    let mut longer = env.clone();
    longer.push(0);
    assert!(matches!(
        refuse(&longer, update(0)),
        LoadError::LengthMismatch { .. }
    ));
    let huge = vec![0u8; MAX_ENVELOPE_BYTES + 1];
    assert_eq!(
        refuse(&huge, update(0)),
        LoadError::TooLarge {
            len: MAX_ENVELOPE_BYTES + 1,
            max: MAX_ENVELOPE_BYTES
        }
    );
}

#[test]
fn reason_codes_are_distinct() {
    let errors = [
        LoadError::TooLarge { len: 0, max: 0 },
        LoadError::TooShort { len: 0, min: 0 },
        LoadError::BadMagic { found: [0; 4] },
        LoadError::UnsupportedVersion {
            found: 0,
            supported: 1,
        },
        LoadError::BadFlags { found: 1 },
        LoadError::LengthMismatch {
            declared: 0,
            actual: 1,
        },
        LoadError::WrongChannel {
            offered: 0,
            expected: 1,
        },
        LoadError::Downgrade {
            offered: 0,
            current: 1,
        },
    ];
    let mut codes: Vec<u16> = errors.iter().map(LoadError::code).collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
    let _ = ContentId::NONE;
}

/// A check's input (key, signature, message) and its answer.
#[cfg(feature = "std")]
type Checked = ([u8; 32], [u8; 64], Vec<u8>, bool);

/// A memo as the simulator's: remembers each check by its exact input, counts the checks done.
#[cfg(feature = "std")]
#[derive(Debug, Default)]
struct CountingMemo {
    seen: std::sync::Mutex<Vec<Checked>>,
    done: std::sync::atomic::AtomicUsize,
}

#[cfg(feature = "std")]
impl bulwark_loader_boot_guard::envelope::SignatureMemo for CountingMemo {
    fn check(
        &self,
        public: &[u8; 32],
        signature: &[u8; 64],
        message: &[u8],
        check: &mut dyn FnMut() -> bool,
    ) -> bool {
        let mut seen = self.seen.lock().unwrap();
        if let Some(s) = seen
            .iter()
            .find(|s| s.0 == *public && s.1 == *signature && s.2 == message)
        {
            return s.3;
        }
        self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ok = check();
        seen.push((*public, *signature, message.to_vec(), ok));
        ok
    }
}

#[cfg(feature = "std")]
#[test]
fn a_memo_remembers_checks_and_every_tampered_byte_is_still_refused() {
    use std::sync::atomic::Ordering;
    let memo = std::sync::Arc::new(CountingMemo::default());
    let keys = keys().with_memo(memo.clone());
    let env = envelope(1, 5);
    let first = open(&env, &keys, update(4)).unwrap();
    let again = open(&env, &keys, update(4)).unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(
        memo.done.load(Ordering::Relaxed),
        1,
        "the second open is remembered"
    );
    // With the genuine envelope's check remembered, every signed byte and a spread of the pack's
    // is refused as without a memo: each is another message, checked afresh.
    for at in (8..52)
        .chain(88..HEADER_BYTES)
        .chain((HEADER_BYTES..env.len()).step_by(7))
    {
        let mut bad = env.clone();
        bad[at] ^= 0x01;
        let with = open(&bad, &keys, update(0)).unwrap_err();
        let without = open(&bad, &self::keys(), update(0)).unwrap_err();
        assert_eq!(with, without, "byte {at}");
        assert!(
            matches!(with, LoadError::BadSignature { .. }),
            "byte {at}: {with}"
        );
    }
}

/// A verify memo that records the packs it is asked about and answers with `answer` if set,
/// else with the verifier's own answer (through the loader's closure).
#[cfg(feature = "std")]
#[derive(Debug, Default)]
struct RecordingVerifyMemo {
    asked: std::sync::Mutex<Vec<Vec<u8>>>,
    answer: Option<bulwark_interpreter::VerifyError>,
}

#[cfg(feature = "std")]
impl bulwark_loader_boot_guard::envelope::VerifyMemo for RecordingVerifyMemo {
    fn verify(
        &self,
        pack: &[u8],
        verify: &mut dyn FnMut() -> Result<
            bulwark_interpreter::VerifiedPack,
            bulwark_interpreter::VerifyError,
        >,
    ) -> Result<bulwark_interpreter::VerifiedPack, bulwark_interpreter::VerifyError> {
        self.asked.lock().unwrap().push(pack.to_vec());
        match &self.answer {
            Some(e) => Err(e.clone()),
            None => verify(),
        }
    }
}

#[cfg(feature = "std")]
#[test]
fn a_verify_memo_is_asked_last_about_the_very_pack_and_its_answer_is_the_loaders() {
    let memo = std::sync::Arc::new(RecordingVerifyMemo::default());
    let keys = keys().with_verify_memo(memo.clone());
    let env = envelope(1, 5);
    let with = open(&env, &keys, update(4)).unwrap();
    let without = open(&env, &self::keys(), update(4)).unwrap();
    assert_eq!(format!("{:?}", with.pack), format!("{:?}", without.pack));
    assert_eq!(*memo.asked.lock().unwrap(), vec![pack(1)]);
    // Every envelope refused before the verifier (signature, channel, downgrade, schema) is
    // refused as without the memo, and the memo is not asked.
    let mut tampered = env.clone();
    tampered[HEADER_BYTES + 3] ^= 0x01;
    let mut other_schema = bulwark_interpreter::schema_hash();
    other_schema[0] ^= 0xff;
    let refused_early = [
        (tampered, update(0)),
        (env.clone(), update(5)),
        (
            seal(
                &SECRET,
                CHANNEL + 1,
                5,
                bulwark_interpreter::schema_hash(),
                &pack(1),
            )
            .unwrap(),
            update(0),
        ),
        (
            seal(&SECRET, CHANNEL, 5, other_schema, &pack(1)).unwrap(),
            update(0),
        ),
    ];
    for (bytes, admission) in refused_early {
        let e = open(&bytes, &keys, admission).unwrap_err();
        assert_eq!(e, open(&bytes, &self::keys(), admission).unwrap_err());
        assert!(!matches!(e, LoadError::Verify(_)), "{e}");
    }
    assert_eq!(
        memo.asked.lock().unwrap().len(),
        1,
        "asked about a refused envelope"
    );
    // What the memo answers is what the loader answers.
    let refusal = bulwark_interpreter::verify(b"not a pack").unwrap_err();
    let refusing = std::sync::Arc::new(RecordingVerifyMemo {
        answer: Some(refusal.clone()),
        ..RecordingVerifyMemo::default()
    });
    let e = open(
        &env,
        &self::keys().with_verify_memo(refusing.clone()),
        update(4),
    )
    .unwrap_err();
    assert_eq!(e, LoadError::Verify(refusal));
    assert_eq!(*refusing.asked.lock().unwrap(), vec![pack(1)]);
}
