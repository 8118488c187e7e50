//! Shared test helpers: packs, keys, envelopes, and an in-memory store that fails, tears or loses
//! a chosen write.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

pub mod machine;

use bulwark_loader_boot_guard::{seal, ContentId, Slot, Store, StoreError, TrustedKeys};

pub const SECRET: [u8; 32] = [7; 32];
pub const OTHER_SECRET: [u8; 32] = [9; 32];
pub const CHANNEL: u32 = 1;

/// A valid pack whose content differs with `n`.
pub fn pack(n: u32) -> Vec<u8> {
    let text = format!(
        "rule\n  id \"rule-{n}\"\n  title \"test rule {n}\"\n  author \"tests\"\n  level high\n  action alert\n  event process_creation\n  str.contains CommandLine \"marker-{n}\"\n  ret\nend\n"
    );
    bulwark_interpreter::text::asm(&text).expect("assemble test pack")
}

/// `pack(n)` signed with [`SECRET`] as version `version` on [`CHANNEL`].
pub fn envelope(n: u32, version: u64) -> Vec<u8> {
    seal(
        &SECRET,
        CHANNEL,
        version,
        bulwark_interpreter::schema_hash(),
        &pack(n),
    )
    .unwrap()
}

pub fn keys() -> TrustedKeys {
    TrustedKeys::new(&[bulwark_loader_boot_guard::envelope::public_key(&SECRET)]).unwrap()
}

pub fn id_of(n: u32, version: u64) -> ContentId {
    use sha2::{Digest, Sha256};
    ContentId {
        version,
        hash: Sha256::digest(pack(n)).into(),
    }
}

/// How the chosen write goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The write reports an error and changes nothing.
    Fail,
    /// Power is lost during the write: the first `n` bytes are new, the rest are what was there
    /// before (a torn sector write; with nothing before, a truncated file). The machine is down.
    Torn(usize),
    /// The write reports success but never reaches the disk; power is lost right after the
    /// operation.
    Lost,
}

/// An in-memory store with one injected fault.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    pub records: [Vec<u8>; 2],
    pub blobs: Vec<(ContentId, Vec<u8>)>,
    /// Writes attempted (records and blobs).
    pub writes: usize,
    /// Which write (0-based) goes wrong, and how.
    pub fault: Option<(usize, Fault)>,
    /// The fault has fired.
    pub fired: Option<Fault>,
    /// Power is off: writes do nothing.
    pub dead: bool,
    /// Every record written completely, by sequence number.
    pub complete: Vec<Vec<u8>>,
}

fn slot_index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

impl MemStore {
    /// Decides what happens to this write: `Some(bytes)` to store, `None` to store nothing,
    /// `Err` to report.
    fn fate(&mut self, old: &[u8], new: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if self.dead {
            return Ok(None);
        }
        let k = self.writes;
        self.writes += 1;
        match self.fault {
            Some((at, f)) if at == k => {
                self.fired = Some(f);
                match f {
                    Fault::Fail => Err(StoreError::Io(5)),
                    Fault::Lost => Ok(None),
                    Fault::Torn(n) => {
                        self.dead = true;
                        let n = n.min(new.len());
                        let mut torn = new[..n].to_vec();
                        if old.len() > n {
                            torn.extend_from_slice(&old[n..]);
                        }
                        Ok(Some(torn))
                    }
                }
            }
            _ => Ok(Some(new.to_vec())),
        }
    }
}

impl Store for MemStore {
    fn read_record(&mut self, slot: Slot, buf: &mut Vec<u8>, max: usize) -> Result<(), StoreError> {
        let r = &self.records[slot_index(slot)];
        if r.len() > max {
            return Err(StoreError::TooLarge { max });
        }
        buf.clear();
        buf.extend_from_slice(r);
        Ok(())
    }

    fn write_record(&mut self, slot: Slot, bytes: &[u8]) -> Result<(), StoreError> {
        let old = self.records[slot_index(slot)].clone();
        if let Some(b) = self.fate(&old, bytes)? {
            if b == bytes {
                self.complete.push(b.clone());
            }
            self.records[slot_index(slot)] = b;
        }
        Ok(())
    }

    fn put_blob(&mut self, id: &ContentId, bytes: &[u8]) -> Result<(), StoreError> {
        let old = self
            .blobs
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        if let Some(b) = self.fate(&old, bytes)? {
            self.blobs.retain(|(i, _)| i != id);
            self.blobs.push((*id, b));
        }
        Ok(())
    }

    fn get_blob(
        &mut self,
        id: &ContentId,
        buf: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), StoreError> {
        let b = &self
            .blobs
            .iter()
            .find(|(i, _)| i == id)
            .ok_or(StoreError::NotFound)?
            .1;
        if b.len() > max {
            return Err(StoreError::TooLarge { max });
        }
        buf.clear();
        buf.extend_from_slice(b);
        Ok(())
    }

    fn remove_blob(&mut self, id: &ContentId) -> Result<(), StoreError> {
        if !self.dead {
            self.blobs.retain(|(i, _)| i != id);
        }
        Ok(())
    }

    fn retain_blobs(&mut self, keep: &[ContentId]) -> Result<(), StoreError> {
        if !self.dead {
            self.blobs.retain(|(i, _)| keep.contains(i));
        }
        Ok(())
    }
}
