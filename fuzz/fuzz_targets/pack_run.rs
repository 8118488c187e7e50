//! Verify + run: the input is split into a pack and event field values. Whatever verifies must
//! evaluate every event type without a fault (no panic, no runtime check failure). The pack's
//! length field and checksum are fixed up first, so mutations reach the verifier's semantic
//! checks instead of stopping at the checksum.
#![no_main]

use sha2::{Digest, Sha256};
use bulwark_interpreter::{schema::ProcessCreation, schema::RegistryEvent, verify, Event};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The first two bytes give the pack's length; the rest after the pack are event text.
    let Some((len, rest)) = data.split_first_chunk::<2>() else { return };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (pack, text) = rest.split_at(len);
    let mut pack = pack.to_vec();
    if pack.len() >= 12 + 32 {
        let total = (pack.len() as u32).to_le_bytes();
        pack[8..12].copy_from_slice(&total);
        let body = pack.len() - 32;
        let sum: [u8; 32] = Sha256::digest(&pack[..body]).into();
        pack[body..].copy_from_slice(&sum);
    }
    let Ok(pack) = verify(&pack) else { return };
    let text = String::from_utf8_lossy(text);
    let mut parts = text.split('\u{0}');
    let mut next = || parts.next();
    let pc = ProcessCreation {
        image: next(),
        command_line: next(),
        parent_image: next(),
        parent_command_line: next(),
        original_file_name: next(),
        current_directory: next(),
        user: next(),
        process_id: next().and_then(|s| s.parse().ok()),
        ..Default::default()
    };
    let values = pc.values();
    let stats = pack.evaluate(&Event::from_typed((&values).into()), &mut |_| {});
    assert_eq!(stats.errors, 0, "a verified pack faulted at run time");
    let reg = RegistryEvent { target_object: next(), details: next(), image: next(), ..Default::default() };
    let values = reg.values();
    let stats = pack.evaluate(&Event::from_typed((&values).into()), &mut |_| {});
    assert_eq!(stats.errors, 0, "a verified pack faulted at run time");
});
