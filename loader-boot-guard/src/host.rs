//! The host store: records and envelopes as files in one directory (feature `std`), used by
//! `bulwark guard` and by tests. Every write goes to a temporary file, is flushed with `fsync`,
//! renamed over the target, and the directory is flushed.
//!
//! Files: `record-a`, `record-b` and `packs/<version>-<sha256>.envelope`.

extern crate std;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::guard::{Store, StoreError};
use crate::record::Slot;
use crate::ContentId;

/// A [`Store`] in a directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    /// The store in `dir` (created if missing).
    pub fn new(dir: &Path) -> std::io::Result<DirStore> {
        fs::create_dir_all(dir.join("packs"))?;
        Ok(DirStore {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of a record slot.
    pub fn record_path(&self, slot: Slot) -> PathBuf {
        self.dir.join(match slot {
            Slot::A => "record-a",
            Slot::B => "record-b",
        })
    }

    /// The file of a stored envelope.
    pub fn blob_path(&self, id: &ContentId) -> PathBuf {
        self.dir.join("packs").join(blob_name(id))
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = path.with_extension("tmp");
        let result = (|| -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, path)?;
            if let Some(parent) = path.parent() {
                // Flush the rename itself (not possible on every platform; best effort there).
                if let Ok(d) = fs::File::open(parent) {
                    let _ = d.sync_all();
                }
            }
            Ok(())
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io(&e)
        })
    }
}

fn blob_name(id: &ContentId) -> String {
    let hex: String = id.hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("{:020}-{hex}.envelope", id.version)
}

fn io(e: &std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StoreError::NotFound
    } else {
        StoreError::Io(
            e.raw_os_error()
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(u32::MAX),
        )
    }
}

fn read_limited(path: &Path, buf: &mut Vec<u8>, max: usize) -> Result<(), StoreError> {
    buf.clear();
    let f = fs::File::open(path).map_err(|e| io(&e))?;
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    f.take(limit).read_to_end(buf).map_err(|e| io(&e))?;
    if buf.len() > max {
        buf.clear();
        return Err(StoreError::TooLarge { max });
    }
    Ok(())
}

impl Store for DirStore {
    fn read_record(&mut self, slot: Slot, buf: &mut Vec<u8>, max: usize) -> Result<(), StoreError> {
        match read_limited(&self.record_path(slot), buf, max) {
            Err(StoreError::NotFound) => {
                buf.clear();
                Ok(())
            }
            r => r,
        }
    }

    fn write_record(&mut self, slot: Slot, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_atomic(&self.record_path(slot), bytes)
    }

    fn put_blob(&mut self, id: &ContentId, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_atomic(&self.blob_path(id), bytes)
    }

    fn get_blob(
        &mut self,
        id: &ContentId,
        buf: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), StoreError> {
        read_limited(&self.blob_path(id), buf, max)
    }

    fn remove_blob(&mut self, id: &ContentId) -> Result<(), StoreError> {
        match fs::remove_file(self.blob_path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&e)),
            _ => Ok(()),
        }
    }

    fn retain_blobs(&mut self, keep: &[ContentId]) -> Result<(), StoreError> {
        let names: Vec<String> = keep.iter().map(blob_name).collect();
        let dir = fs::read_dir(self.dir.join("packs")).map_err(|e| io(&e))?;
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !names.contains(&name) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}
