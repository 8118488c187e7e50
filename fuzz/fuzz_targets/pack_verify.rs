//! Decode + verify any bytes: must return Ok or Err, never panic, never hang. Each input is tried
//! as it is, and again with its total length (bytes 8..12) and trailing SHA-256 checksum (the last
//! 32 bytes, over everything before them) fixed up, so mutations reach the decoder's counts and
//! the verifier's semantic checks instead of stopping at the checksum. What decodes must encode
//! back to the same bytes.
#![no_main]

use bulwark_interpreter::format::{RawPack, CHECKSUM_BYTES};
use sha2::{Digest, Sha256};

/// The pack with its length field and checksum made consistent with its bytes.
fn fix_up(pack: &mut [u8]) {
    if pack.len() < 12 + CHECKSUM_BYTES {
        return;
    }
    let total = u32::try_from(pack.len()).unwrap_or(u32::MAX).to_le_bytes();
    pack[8..12].copy_from_slice(&total);
    let body = pack.len() - CHECKSUM_BYTES;
    let sum: [u8; 32] = Sha256::digest(&pack[..body]).into();
    pack[body..].copy_from_slice(&sum);
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bulwark_interpreter::verify(data);
    let _ = bulwark_interpreter::text::disasm(data);
    let mut fixed = data.to_vec();
    fix_up(&mut fixed);
    if fixed != data {
        let _ = bulwark_interpreter::verify(&fixed);
        let _ = bulwark_interpreter::text::disasm(&fixed);
    }
    if let Ok(raw) = RawPack::decode(&fixed) {
        assert_eq!(raw.encode(), fixed, "decode then encode changed the pack");
    }
});
