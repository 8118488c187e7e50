//! Where the agent keeps what must survive a restart: its named documents (`state.json`,
//! `trust.json`, the administrator's `admin.json`) and its spool. [`DirStorage`] is the state
//! directory the service runs with (documents written to a temporary file, fsynced, renamed;
//! the SQLite spool); [`MemoryStorage`] keeps them in memory for the fleet simulator, which runs
//! the same agent core for every endpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    docs: BTreeMap<String, Arc<[u8]>>,
    /// Where a document the same as another storage's is found, to be held once.
    shared: Option<SharedDocuments>,
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

    /// Empty storage whose documents are held once with the same documents of every storage
    /// sharing `shared`.
    pub fn sharing(shared: SharedDocuments) -> MemoryStorage {
        MemoryStorage {
            shared: Some(shared),
            ..MemoryStorage::default()
        }
    }
}

/// Documents that [`MemoryStorage`]s hold in common: a document written with the same name and
/// bytes as one of the last [`SharedDocuments::KEPT`] written under that name through any of
/// them is held once. A simulated fleet's agents write the same trust state as each other, a
/// few KB each: a sixth of a 40,000-endpoint run's memory before they shared it.
#[derive(Debug, Default, Clone)]
pub struct SharedDocuments(Arc<Mutex<RecentByName>>);

/// By name, the last documents written under it, the most recent first.
type RecentByName = BTreeMap<String, Vec<Arc<[u8]>>>;

impl SharedDocuments {
    /// How many distinct documents are looked through by name (the most recent first): a fleet
    /// moves from one version of its trust state to the next, and not all at once.
    pub const KEPT: usize = 4;

    /// `bytes`, held once with the same document written under `name` before, if it is one of
    /// the last [`SharedDocuments::KEPT`].
    fn hold(&self, name: &str, bytes: &[u8]) -> Arc<[u8]> {
        let Ok(mut by_name) = self.0.lock() else {
            return Arc::from(bytes);
        };
        let recent = match by_name.get_mut(name) {
            Some(recent) => recent,
            None => by_name.entry(name.to_owned()).or_default(),
        };
        if let Some(i) = recent.iter().position(|doc| **doc == *bytes) {
            let doc = recent.remove(i);
            recent.insert(0, doc.clone());
            return doc;
        }
        let doc: Arc<[u8]> = Arc::from(bytes);
        recent.truncate(Self::KEPT - 1);
        recent.insert(0, doc.clone());
        doc
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
        Ok(self.docs.get(name).map(|doc| doc.to_vec()))
    }
    fn write(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.written |= name_bit(name);
        let doc = match &self.shared {
            Some(shared) => shared.hold(name, bytes),
            None => Arc::from(bytes),
        };
        match self.docs.get_mut(name) {
            Some(held) => *held = doc,
            None => {
                self.docs.insert(name.to_owned(), doc);
            }
        }
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
    fn storages_sharing_documents_hold_equal_ones_once_and_read_their_own() {
        let shared = SharedDocuments::default();
        let mut a = MemoryStorage::sharing(shared.clone());
        let mut b = MemoryStorage::sharing(shared.clone());
        let mut alone = MemoryStorage::new();
        let held = |s: &MemoryStorage, name: &str| s.docs.get(name).cloned().unwrap();
        a.write("trust.json", b"v1").unwrap();
        b.write("trust.json", b"v1").unwrap();
        alone.write("trust.json", b"v1").unwrap();
        assert!(Arc::ptr_eq(
            &held(&a, "trust.json"),
            &held(&b, "trust.json")
        ));
        assert!(!Arc::ptr_eq(
            &held(&a, "trust.json"),
            &held(&alone, "trust.json")
        ));
        // Another name with the same bytes is another document.
        b.write("state.json", b"v1").unwrap();
        assert_eq!(b.read("state.json").unwrap(), Some(b"v1".to_vec()));
        // One moves on; the other still reads what it wrote.
        b.write("trust.json", b"v2").unwrap();
        assert_eq!(a.read("trust.json").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(b.read("trust.json").unwrap(), Some(b"v2".to_vec()));
        // An older version written again is still found among the last KEPT.
        a.write("trust.json", b"v2").unwrap();
        assert!(Arc::ptr_eq(
            &held(&a, "trust.json"),
            &held(&b, "trust.json")
        ));
        b.write("trust.json", b"v1").unwrap();
        let v1 = held(&b, "trust.json");
        for i in 3..=SharedDocuments::KEPT + 2 {
            a.write("trust.json", format!("v{i}").as_bytes()).unwrap();
        }
        // KEPT other versions since v1: written again, it is a new copy, with its bytes.
        assert_eq!(
            a.read("trust.json").unwrap(),
            Some(format!("v{}", SharedDocuments::KEPT + 2).into_bytes())
        );
        a.write("trust.json", b"v1").unwrap();
        assert!(!Arc::ptr_eq(&held(&a, "trust.json"), &v1));
        assert_eq!(a.read("trust.json").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(b.read("trust.json").unwrap(), Some(b"v1".to_vec()));
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
