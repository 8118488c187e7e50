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
    spool: Option<MemorySpool>,
}

impl MemoryStorage {
    /// Empty storage.
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }
}

impl Storage for MemoryStorage {
    type Spool = MemorySpool;
    fn read(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.docs.get(name).cloned())
    }
    fn write(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
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
