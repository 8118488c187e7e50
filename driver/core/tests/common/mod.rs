//! What the driver core's tests share: an in-memory guard store, a process creation from a
//! command line, and guard events read through the protocol handler as user mode reads them.
#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::HashMap;

use bulwark_driver_core::events::ProcessCreateFacts;
use bulwark_driver_core::sensor::{ControlPlane, Sensor};
use bulwark_loader_boot_guard::{ContentId, Slot, Store, StoreError};
use bulwark_protocol::GuardEventRecord;

/// Records and blobs in memory, surviving "reboots" (the store is moved from one run to the next).
#[derive(Default, Clone)]
pub struct Mem {
    pub records: [Vec<u8>; 2],
    pub blobs: HashMap<ContentId, Vec<u8>>,
}

impl Store for Mem {
    fn read_record(&mut self, slot: Slot, buf: &mut Vec<u8>, max: usize) -> Result<(), StoreError> {
        let r = &self.records[slot as usize];
        if r.len() > max {
            return Err(StoreError::TooLarge { max });
        }
        buf.clear();
        buf.extend_from_slice(r);
        Ok(())
    }
    fn write_record(&mut self, slot: Slot, bytes: &[u8]) -> Result<(), StoreError> {
        self.records[slot as usize] = bytes.to_vec();
        Ok(())
    }
    fn put_blob(&mut self, id: &ContentId, bytes: &[u8]) -> Result<(), StoreError> {
        self.blobs.insert(*id, bytes.to_vec());
        Ok(())
    }
    fn get_blob(
        &mut self,
        id: &ContentId,
        buf: &mut Vec<u8>,
        _max: usize,
    ) -> Result<(), StoreError> {
        let b = self.blobs.get(id).ok_or(StoreError::NotFound)?;
        buf.clear();
        buf.extend_from_slice(b);
        Ok(())
    }
    fn remove_blob(&mut self, id: &ContentId) -> Result<(), StoreError> {
        self.blobs.remove(id);
        Ok(())
    }
}

/// Tells the sensor that `C:\x.exe` started with command line `cmd`; the detections it raised.
pub fn create_process(sensor: &Sensor, cmd: &str) -> u64 {
    let image: Vec<u16> = "\\??\\C:\\x.exe".encode_utf16().collect();
    let cmd: Vec<u16> = cmd.encode_utf16().collect();
    let before = sensor.counters().detections;
    sensor.on_process_create(
        &ProcessCreateFacts {
            process_id: 8,
            create_time: 1,
            parent_process_id: 4,
            parent_create_time: None,
            image_file_name: Some(&image),
            command_line: Some(&cmd),
            user: None,
            integrity: None,
            logon_id: None,
            session_id: None,
        },
        9,
    );
    sensor.counters().detections.saturating_sub(before)
}

/// One request through the protocol handler, as user mode sends it; the reply's bytes.
pub fn request(
    sensor: &Sensor,
    control: &mut dyn ControlPlane,
    req: bulwark_protocol::Request<'_>,
    now: u64,
) -> Vec<u8> {
    let mut input = vec![0u8; req.encoded_len()];
    req.encode(&mut input).unwrap();
    let mut output = vec![0u8; req.op().max_reply_len()];
    let n = sensor
        .handle_ioctl(
            req.op().ioctl(),
            &input,
            &mut output,
            control,
            now,
            &mut || {},
        )
        .unwrap();
    output.truncate(n);
    output
}

/// Guard events read through the protocol handler, as user mode reads them.
pub fn guard_events(sensor: &Sensor, control: &mut dyn ControlPlane) -> Vec<GuardEventRecord> {
    let reply = request(
        sensor,
        control,
        bulwark_protocol::Request::ReadGuardEvents { max: 64 },
        0,
    );
    bulwark_protocol::parse_guard_events(&reply)
        .unwrap()
        .records
        .collect()
}
