//! Decode + verify any bytes: must return Ok or Err, never panic, never hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bulwark_interpreter::verify(data);
    let _ = bulwark_interpreter::text::disasm(data);
});
