//! The control protocol as the driver sees it: any IOCTL code, any input bytes, any output size,
//! through the driver core's handler. Must answer or refuse, never panic, never write past the
//! output buffer, never report more bytes than it has.
#![no_main]

use bulwark_driver_core::content::Content;
use bulwark_driver_core::sensor::{Capacities, ControlPlane, OutcomeBuf, Sensor};
use bulwark_protocol::{ContentSource, GuardEventRecord, GuardStatus, Op};

struct Refuse;

impl ControlPlane for Refuse {
    fn stage(&mut self, envelope: &[u8], _now: u64, _swap: &mut dyn FnMut(Content)) -> OutcomeBuf {
        OutcomeBuf::format(false, 1, format_args!("refused {} bytes", envelope.len()))
    }
    fn confirm_healthy(&mut self, _now: u64) -> OutcomeBuf {
        OutcomeBuf::new(false, 2, "nothing to confirm")
    }
    fn running_source(&self) -> ContentSource {
        ContentSource::Candidate
    }
    fn take_events(&mut self, _sink: &mut dyn FnMut(GuardEventRecord)) {}
    fn guard_status(&self) -> GuardStatus {
        GuardStatus::default()
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((out_bytes, input)) = rest.split_first_chunk::<2>() else {
        return;
    };
    // Mostly real codes (so the parser is reached), sometimes a raw code from the input.
    let ioctl = match Op::ALL.get(usize::from(selector % 8)) {
        Some(op) => op.ioctl(),
        None => input
            .first_chunk::<4>()
            .map_or(0, |b| u32::from_le_bytes(*b)),
    };
    let out_len = usize::from(u16::from_le_bytes(*out_bytes)) % (Op::ReadDetections.max_reply_len() + 64);
    let mut output = vec![0xA5u8; out_len + 16];
    let sensor = Sensor::new(
        Capacities {
            processes: 4,
            detections: 4,
            guard_events: 4,
        },
        0,
        0,
    );
    if let Ok(n) = sensor.handle_ioctl(ioctl, input, &mut output[..out_len], &mut Refuse, 0, &mut || {}) {
        assert!(n <= out_len);
    }
    assert!(output[out_len..].iter().all(|&b| b == 0xA5), "wrote past the output buffer");
});
