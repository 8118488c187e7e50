//! Where the agent keeps what must survive a restart: its named documents (`state.json`,
//! `trust.json`, the administrator's `admin.json`) and its spool. [`DirStorage`] is the state
//! directory the service runs with (documents written to a temporary file, fsynced, renamed;
//! the SQLite spool); [`MemoryStorage`] keeps them in memory for the fleet simulator, which runs
//! the same agent core for every endpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::spool::{MemorySpool, Spool, SpoolError, SpoolStore};

/// What the agent stores.
pub trait Storage {
    /// Its spool.
    type Spool: SpoolStore;
    /// A document's bytes, if it exists.
    fn read(&self, name: &str) -> std::io::Result<Option<Vec<u8>>>;
    /// Replaces a document, atomically: after a crash it is the old or the new one, whole.
    fn write(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()>;
    /// Opens the spool (again, after a restart: what was pushed before is there).
    fn open_spool(&mut self, max_bytes: u64) -> Result<Self::Spool, SpoolError>;
    /// Where the documents are, for messages.
    fn describe(&self, name: &str) -> String;
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct DirStorage {
    dir: PathBuf,
}

impl DirStorage {
    /// The state directory `dir`, created if needed.
    pub fn open(dir: &Path) -> std::io::Result<DirStorage> {
        std::fs::create_dir_all(dir)?;
        Ok(DirStorage {
            dir: dir.to_owned(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Storage for DirStorage {
    type Spool = Spool;
    fn read(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn write(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        crate::agent::write_atomic(&self.dir.join(name), bytes)
    }
    fn open_spool(&mut self, max_bytes: u64) -> Result<Spool, SpoolError> {
        Spool::open(&self.dir.join("spool.sqlite"), max_bytes)
    }
    fn describe(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// Documents and spool in memory (the fleet simulator). A restart of the agent reads back what
/// was written.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    docs: BTreeMap<String, Vec<u8>>,
    /// One bit per name ever written (by its hash): a name whose bit is clear is not in `docs`,
    /// and is answered without a search there (the agent looks for the administrator's file at
    /// every step, and it is rarely there; the simulator runs 100,000 such agents).
    written: u64,
    spool: Option<MemorySpool>,
}

impl MemoryStorage {
    /// Empty storage.
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }
}

/// `name`'s bit among 64 (FNV-1a, its top six bits).
fn name_bit(name: &str) -> u64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    1 << (hash >> 58)
}

impl Storage for MemoryStorage {
    type Spool = MemorySpool;
    fn read(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        if self.written & name_bit(name) == 0 {
            return Ok(None);
        }
        Ok(self.docs.get(name).cloned())
    }
    fn write(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.written |= name_bit(name);
        self.docs.insert(name.to_owned(), bytes.to_vec());
        Ok(())
    }
    fn open_spool(&mut self, max_bytes: u64) -> Result<MemorySpool, SpoolError> {
        Ok(self
            .spool
            .get_or_insert_with(|| MemorySpool::new(max_bytes))
            .clone())
    }
    fn describe(&self, name: &str) -> String {
        format!("(memory)/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_storage_reads_what_was_written_and_nothing_else() {
        let mut s = MemoryStorage::new();
        let names: Vec<String> = (0..200).map(|i| format!("doc-{i}.json")).collect();
        assert_eq!(s.read("admin.json").unwrap(), None);
        // Every other name written: with 100 names most of the 64 bits are set, so the reads of
        // the others go past the filter to the map, and must still find nothing.
        for (i, n) in names.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
            s.write(n, n.as_bytes()).unwrap();
            s.write(n, format!("{n}:{i}").as_bytes()).unwrap();
        }
        for (i, n) in names.iter().enumerate() {
            let expected = (i % 2 == 0).then(|| format!("{n}:{i}").into_bytes());
            assert_eq!(s.read(n).unwrap(), expected, "{n}");
        }
        assert_eq!(s.read("admin.json").unwrap(), None);
        s.write("admin.json", b"{}").unwrap();
        assert_eq!(s.read("admin.json").unwrap(), Some(b"{}".to_vec()));
    }

    #[test]
    fn name_bits_spread() {
        let bits: std::collections::BTreeSet<u64> = ["state.json", "trust.json", "admin.json"]
            .iter()
            .map(|n| name_bit(n))
            .collect();
        assert_eq!(
            bits.len(),
            3,
            "the agent's three documents have bits of their own"
        );
        assert!(bits.iter().all(|b| b.count_ones() == 1));
    }
}
