//! The signed pack envelope and the loader.
//!
//! Layout (integers little-endian), [`HEADER_BYTES`] bytes of header and then the pack:
//!
//! ```text
//! 0    magic "BWSG"
//! 4    u16 envelope version (1)
//! 6    u16 flags (0)
//! 8    u32 channel
//! 12   u64 content version
//! 20   [32] schema hash the content was built for
//! 52   u32 pack length (must equal the bytes that follow the header)
//! 56   [32] signer's ed25519 public key (must be one of the trusted keys)
//! 88   [64] ed25519 signature
//! 152  pack bytes
//! ```
//!
//! The signature covers [`SIGNING_CONTEXT`], header bytes 0..88 (everything but the signature)
//! and SHA-256 of the pack, and is checked with `verify_strict` (no malleable or small-order
//! signatures). [`open`] checks, in this order, and stops at the first failure: size limits,
//! header syntax, signer and signature, channel, quarantine list, version (anti-downgrade), the
//! envelope's schema hash against the sensor's, and finally the interpreter's verifier.

use alloc::vec::Vec;
use bulwark_interpreter::error::HexHash;
use bulwark_interpreter::{VerifiedPack, VerifyError};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::ContentId;

/// `BWSG`: the first four bytes of every envelope.
pub const MAGIC: [u8; 4] = *b"BWSG";
/// The envelope version this crate writes and reads.
pub const ENVELOPE_VERSION: u16 = 1;
/// Bytes of the envelope header (everything before the pack).
pub const HEADER_BYTES: usize = 152;
/// Bytes of the header the signature covers (everything before the signature).
const SIGNED_HEADER_BYTES: usize = 88;
const MESSAGE_BYTES: usize = SIGNING_CONTEXT.len() + SIGNED_HEADER_BYTES + 32;
/// Domain separation: an envelope signature can never be mistaken for a signature over anything else.
pub const SIGNING_CONTEXT: &[u8] = b"bulwark content envelope v1\0";
/// The largest pack an envelope may carry.
pub const MAX_PACK_BYTES: usize = bulwark_interpreter::limits::MAX_PACK_BYTES;
/// The largest envelope.
pub const MAX_ENVELOPE_BYTES: usize = HEADER_BYTES + MAX_PACK_BYTES;
/// The most trusted keys.
pub const MAX_TRUSTED_KEYS: usize = 8;
/// The heap verifying a pack may take, per byte of pack: at most 12.1 times the pack's size on the
/// hostile 8 MiB packs of `interpreter/benches/verify_limits.rs` (which prints it), with a margin.
/// [`open`] reserves this much (fallibly) before it verifies, so that under memory pressure a pack
/// is refused with [`LoadError::OutOfMemory`] instead of failing an allocation inside the verifier,
/// which the kernel turns into a bugcheck.
pub const VERIFY_HEAP_FACTOR: usize = 16;

/// The decoded header of an envelope (not yet authenticated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The update channel.
    pub channel: u32,
    /// The content version.
    pub version: u64,
    /// The schema hash the content was built for.
    pub schema_hash: [u8; 32],
    /// The signer's public key.
    pub signer: [u8; 32],
}

/// Why an envelope was refused. Each variant has a stable [`code`](LoadError::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("envelope is {len} bytes, more than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("envelope is {len} bytes, shorter than its {min}-byte header")]
    TooShort { len: usize, min: usize },
    #[error("bad envelope magic {found:02x?} at byte offset 0, expected \"BWSG\"")]
    BadMagic { found: [u8; 4] },
    #[error("envelope version {found} at byte offset 4 is not supported (this loader reads version {supported})")]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("envelope flags {found:#06x} at byte offset 6 are not supported (must be 0)")]
    BadFlags { found: u16 },
    #[error("pack length field at byte offset 52 says {declared} bytes but {actual} bytes follow the header")]
    LengthMismatch { declared: u64, actual: usize },
    #[error("signer key {key} is not a trusted key")]
    UnknownKey { key: HexHash },
    #[error("bad signature: the envelope was not signed by {key} or its bytes were changed after signing")]
    BadSignature { key: HexHash },
    #[error("content is for channel {offered}, this sensor takes channel {expected}")]
    WrongChannel { offered: u32, expected: u32 },
    #[error("content {hash} (version {version}) is quarantined: it failed to boot before and is never loaded again")]
    Quarantined { version: u64, hash: HexHash },
    #[error("version {offered} is not newer than version {current}, the newest already accepted on this channel (downgrade or replay)")]
    Downgrade { offered: u64, current: u64 },
    #[error("stored content is version {offered} with pack hash {offered_hash}, the records name version {expected} with pack hash {expected_hash}")]
    NotTheStoredContent {
        offered: u64,
        offered_hash: HexHash,
        expected: u64,
        expected_hash: HexHash,
    },
    #[error("envelope was signed for schema {envelope}, this sensor's schema is {sensor}")]
    SchemaMismatch { envelope: HexHash, sensor: HexHash },
    #[error("pack rejected by the verifier: {0}")]
    Verify(VerifyError),
    #[error("not enough memory to verify a pack of {pack} bytes (it may take {needed} bytes); nothing was changed, try again later")]
    OutOfMemory { pack: usize, needed: usize },
}

impl LoadError {
    /// The code of [`LoadError::Quarantined`]: the guard quarantined this pack on this machine.
    pub const QUARANTINED_CODE: u16 = 121;

    /// A stable reason code (for telemetry and the control protocol): 100..=199.
    pub fn code(&self) -> u16 {
        match self {
            LoadError::TooLarge { .. } => 101,
            LoadError::TooShort { .. } => 102,
            LoadError::BadMagic { .. } => 103,
            LoadError::UnsupportedVersion { .. } => 104,
            LoadError::BadFlags { .. } => 105,
            LoadError::LengthMismatch { .. } => 106,
            LoadError::UnknownKey { .. } => 110,
            LoadError::BadSignature { .. } => 111,
            LoadError::WrongChannel { .. } => 120,
            LoadError::Quarantined { .. } => Self::QUARANTINED_CODE,
            LoadError::Downgrade { .. } => 122,
            LoadError::NotTheStoredContent { .. } => 123,
            LoadError::SchemaMismatch { .. } => 124,
            LoadError::Verify(_) => 130,
            LoadError::OutOfMemory { .. } => 140,
        }
    }
}

/// A trusted key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("trusted key {index} ({key}) is not a valid ed25519 public key")]
    Invalid { index: usize, key: HexHash },
    #[error("trusted key {index} ({key}) is a weak (small-order) key")]
    Weak { index: usize, key: HexHash },
    #[error("{count} trusted keys given, at most {max} are allowed")]
    TooMany { count: usize, max: usize },
}

/// The public keys whose signatures are accepted (at most [`MAX_TRUSTED_KEYS`]).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: [Option<VerifyingKey>; MAX_TRUSTED_KEYS],
    /// Host builds only (never the driver's): where signature checks go, see
    /// [`TrustedKeys::with_memo`].
    #[cfg(feature = "std")]
    memo: Option<alloc::sync::Arc<dyn SignatureMemo>>,
    /// Host builds only (never the driver's): where the verifier's runs go, see
    /// [`TrustedKeys::with_verify_memo`].
    #[cfg(feature = "std")]
    verify_memo: Option<alloc::sync::Arc<dyn VerifyMemo>>,
}

/// Host builds only: signature checks remembered across guards in one process (the fleet
/// simulator's machines all open the same envelopes). An implementation must answer only for the
/// very same public key, signature and message, as `check` would: `verify_strict` is a function
/// of those three.
#[cfg(feature = "std")]
pub trait SignatureMemo: core::fmt::Debug + Send + Sync {
    /// Whether `signature` of `message` under `public` is valid: remembered, or found by `check`.
    fn check(
        &self,
        public: &[u8; 32],
        signature: &[u8; 64],
        message: &[u8],
        check: &mut dyn FnMut() -> bool,
    ) -> bool;
}

/// Host builds only: the verifier's answers remembered across guards in one process (the fleet
/// simulator's machines verify the same packs at every boot). An implementation must answer only
/// for the very same pack bytes, with what `verify` would give (a clone of it): the verifier is
/// a function of the pack's bytes and the sensor's schema, which is compiled in. [`open`] still
/// does every other check, in its order, before it asks.
#[cfg(feature = "std")]
pub trait VerifyMemo: core::fmt::Debug + Send + Sync {
    /// What the verifier finds of `pack`: remembered, or found by `verify`.
    fn verify(
        &self,
        pack: &[u8],
        verify: &mut dyn FnMut() -> Result<VerifiedPack, VerifyError>,
    ) -> Result<VerifiedPack, VerifyError>;
}

impl TrustedKeys {
    /// The keys, each checked to be a valid, non-weak ed25519 public key.
    pub fn new(keys: &[[u8; 32]]) -> Result<TrustedKeys, KeyError> {
        if keys.len() > MAX_TRUSTED_KEYS {
            return Err(KeyError::TooMany {
                count: keys.len(),
                max: MAX_TRUSTED_KEYS,
            });
        }
        let mut out = TrustedKeys::default();
        for ((index, bytes), slot) in keys.iter().enumerate().zip(out.keys.iter_mut()) {
            let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::Invalid {
                index,
                key: HexHash(*bytes),
            })?;
            if key.is_weak() {
                return Err(KeyError::Weak {
                    index,
                    key: HexHash(*bytes),
                });
            }
            *slot = Some(key);
        }
        Ok(out)
    }

    /// Host builds only: these keys, their signature checks going through `memo`.
    #[cfg(feature = "std")]
    #[must_use]
    pub fn with_memo(mut self, memo: alloc::sync::Arc<dyn SignatureMemo>) -> TrustedKeys {
        self.memo = Some(memo);
        self
    }

    /// Host builds only: these keys, the packs of the envelopes they open verified through
    /// `memo`.
    #[cfg(feature = "std")]
    #[must_use]
    pub fn with_verify_memo(mut self, memo: alloc::sync::Arc<dyn VerifyMemo>) -> TrustedKeys {
        self.verify_memo = Some(memo);
        self
    }

    /// The interpreter's verifier's answer for `pack` (through the memo, on the host, if any).
    fn verify_pack(&self, pack: &[u8]) -> Result<VerifiedPack, VerifyError> {
        #[cfg(feature = "std")]
        if let Some(memo) = &self.verify_memo {
            return memo.verify(pack, &mut || bulwark_interpreter::verify(pack));
        }
        bulwark_interpreter::verify(pack)
    }

    fn find(&self, key: &[u8; 32]) -> Option<&VerifyingKey> {
        self.keys.iter().flatten().find(|k| k.as_bytes() == key)
    }

    /// Whether `signature` of `message` is valid under `key` (one of these keys).
    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
        #[cfg(feature = "std")]
        if let Some(memo) = &self.memo {
            let mut check = || key.verify_strict(message, signature).is_ok();
            return memo.check(key.as_bytes(), &signature.to_bytes(), message, &mut check);
        }
        key.verify_strict(message, signature).is_ok()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.keys.iter().flatten().count()
    }

    /// Whether there are no keys (then every envelope is refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the loader admits, besides a valid signature from a trusted key.
#[derive(Debug, Clone, Copy)]
pub enum Admission<'a> {
    /// A new update: on `channel`, newer than `newest` (the newest version ever accepted), and
    /// not in `quarantine`.
    Update {
        channel: u32,
        newest: u64,
        quarantine: &'a [ContentId],
    },
    /// Stored content loaded again at boot (the candidate or a local revert to last-known-good):
    /// exactly this version and pack hash, on `channel`.
    Stored { channel: u32, id: ContentId },
}

/// An envelope that passed every check.
#[derive(Debug)]
pub struct Opened {
    /// The authenticated header.
    pub header: Header,
    /// The verified pack.
    pub pack: VerifiedPack,
    /// Version and SHA-256 of the pack.
    pub id: ContentId,
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(at..at.saturating_add(2)) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at.saturating_add(4)) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at.saturating_add(8)) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = b.get(at..at.saturating_add(N)) {
        a.copy_from_slice(s);
    }
    a
}

/// Checks sizes and header syntax, and splits the envelope (nothing is authenticated yet).
pub fn parse(envelope: &[u8]) -> Result<(Header, &[u8]), LoadError> {
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(LoadError::TooLarge {
            len: envelope.len(),
            max: MAX_ENVELOPE_BYTES,
        });
    }
    let (Some(head), Some(pack)) = (envelope.get(..HEADER_BYTES), envelope.get(HEADER_BYTES..))
    else {
        return Err(LoadError::TooShort {
            len: envelope.len(),
            min: HEADER_BYTES,
        });
    };
    let magic: [u8; 4] = array(head, 0);
    if magic != MAGIC {
        return Err(LoadError::BadMagic { found: magic });
    }
    let version = le_u16(head, 4);
    if version != ENVELOPE_VERSION {
        return Err(LoadError::UnsupportedVersion {
            found: version,
            supported: ENVELOPE_VERSION,
        });
    }
    let flags = le_u16(head, 6);
    if flags != 0 {
        return Err(LoadError::BadFlags { found: flags });
    }
    let declared = le_u32(head, 52);
    if usize::try_from(declared).ok() != Some(pack.len()) {
        return Err(LoadError::LengthMismatch {
            declared: u64::from(declared),
            actual: pack.len(),
        });
    }
    Ok((
        Header {
            channel: le_u32(head, 8),
            version: le_u64(head, 12),
            schema_hash: array(head, 20),
            signer: array(head, 56),
        },
        pack,
    ))
}

fn signed_message(head: &[u8], pack_hash: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(MESSAGE_BYTES);
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(head.get(..SIGNED_HEADER_BYTES).unwrap_or(&[]));
    m.extend_from_slice(pack_hash);
    m
}

/// Reserves, and releases at once, the heap verifying a pack of `pack_len` bytes may take
/// ([`VERIFY_HEAP_FACTOR`]), or refuses with [`LoadError::OutOfMemory`]. Not a guarantee (memory
/// can run out between the reservation and the verifier's allocations), but it turns "memory is
/// short" into a refusal instead of a failed allocation in all but a narrow race.
pub fn reserve_verify_heap(pack_len: usize) -> Result<(), LoadError> {
    let needed = pack_len.saturating_mul(VERIFY_HEAP_FACTOR);
    let mut probe: Vec<u8> = Vec::new();
    probe
        .try_reserve_exact(needed)
        .map_err(|_| LoadError::OutOfMemory {
            pack: pack_len,
            needed,
        })?;
    drop(probe);
    Ok(())
}

/// Opens an envelope: size limits, header, signature, channel, quarantine, version, schema, and
/// the interpreter's verifier, in that order. Nothing is changed anywhere: the caller decides what
/// to do with the result, and a refusal leaves the running content as it is.
pub fn open(
    envelope: &[u8],
    keys: &TrustedKeys,
    admission: Admission<'_>,
) -> Result<Opened, LoadError> {
    let (header, pack) = parse(envelope)?;
    let key = keys.find(&header.signer).ok_or(LoadError::UnknownKey {
        key: HexHash(header.signer),
    })?;
    let signature = Signature::from_bytes(&array(envelope, SIGNED_HEADER_BYTES));
    let pack_hash: [u8; 32] = Sha256::digest(pack).into();
    let message = signed_message(envelope, &pack_hash);
    if !keys.verify(key, &message, &signature) {
        return Err(LoadError::BadSignature {
            key: HexHash(header.signer),
        });
    }
    let id = ContentId {
        version: header.version,
        hash: pack_hash,
    };
    match admission {
        Admission::Update {
            channel,
            newest,
            quarantine,
        } => {
            if header.channel != channel {
                return Err(LoadError::WrongChannel {
                    offered: header.channel,
                    expected: channel,
                });
            }
            if let Some(q) = quarantine.iter().find(|q| q.hash == pack_hash) {
                return Err(LoadError::Quarantined {
                    version: q.version,
                    hash: HexHash(q.hash),
                });
            }
            if header.version <= newest {
                return Err(LoadError::Downgrade {
                    offered: header.version,
                    current: newest,
                });
            }
        }
        Admission::Stored {
            channel,
            id: expected,
        } => {
            if header.channel != channel {
                return Err(LoadError::WrongChannel {
                    offered: header.channel,
                    expected: channel,
                });
            }
            if id != expected {
                return Err(LoadError::NotTheStoredContent {
                    offered: id.version,
                    offered_hash: HexHash(id.hash),
                    expected: expected.version,
                    expected_hash: HexHash(expected.hash),
                });
            }
        }
    }
    let sensor = bulwark_interpreter::schema_hash();
    if header.schema_hash != sensor {
        return Err(LoadError::SchemaMismatch {
            envelope: HexHash(header.schema_hash),
            sensor: HexHash(sensor),
        });
    }
    reserve_verify_heap(pack.len())?;
    let pack = keys.verify_pack(pack).map_err(LoadError::Verify)?;
    Ok(Opened { header, pack, id })
}

/// Builds a signed envelope around `pack` (host side: `bulwark sign`). `secret` is the signer's
/// 32-byte ed25519 secret key. The pack is not verified here; `bulwark sign` verifies it first.
pub fn seal(
    secret: &[u8; 32],
    channel: u32,
    version: u64,
    schema_hash: [u8; 32],
    pack: &[u8],
) -> Result<Vec<u8>, LoadError> {
    use ed25519_dalek::Signer;
    if pack.len() > MAX_PACK_BYTES {
        return Err(LoadError::TooLarge {
            len: pack.len().saturating_add(HEADER_BYTES),
            max: MAX_ENVELOPE_BYTES,
        });
    }
    let key = ed25519_dalek::SigningKey::from_bytes(secret);
    let len = u32::try_from(pack.len()).map_err(|_| LoadError::TooLarge {
        len: pack.len(),
        max: MAX_ENVELOPE_BYTES,
    })?;
    let mut out = Vec::with_capacity(HEADER_BYTES.saturating_add(pack.len()));
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&ENVELOPE_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&channel.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&schema_hash);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(key.verifying_key().as_bytes());
    let pack_hash: [u8; 32] = Sha256::digest(pack).into();
    let signature = key.sign(&signed_message(&out, &pack_hash));
    out.extend_from_slice(&signature.to_bytes());
    out.extend_from_slice(pack);
    Ok(out)
}

/// The public key that goes with a 32-byte secret key.
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(secret)
        .verifying_key()
        .to_bytes()
}
