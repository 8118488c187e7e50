//! A bounded table of live processes, keyed by process id and creation time, so a process-creation
//! event can carry its parent's image and command line (the kernel hands over only the parent's
//! id), and image-load and registry events the acting process's image.
//!
//! Process ids are reused, so an entry matches only with the creation time the kernel reports for
//! that process. The table has a fixed capacity; when it is full the oldest entry is evicted and
//! counted (a parent that started long ago then reports its fields absent, never wrong).

use alloc::sync::Arc;
use alloc::vec::Vec;

use alloc::string::String;

use crate::text::NoMemory;

/// The default number of processes remembered.
pub const DEFAULT_CAPACITY: usize = 4096;

/// What is remembered about one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process id.
    pub process_id: u32,
    /// Its creation time (100 ns units since 1601), which makes `process_id` unique.
    pub create_time: u64,
    /// Its image, `C:\...` form. Like every text here, at most its field's `max_len` bytes
    /// (`bulwark_interpreter::schema::max_len`): the process-creation builder cuts it, and the
    /// parent fields of later events are these texts as they are.
    pub image: String,
    /// Its command line.
    pub command_line: String,
    /// Its user (`DOMAIN\name` or SID).
    pub user: String,
    /// Its Sysmon-style GUID.
    pub guid: String,
}

#[derive(Debug)]
struct Slot {
    info: Arc<ProcessInfo>,
    /// Insertion order, for evicting the oldest.
    seq: u64,
}

/// Spare entries beyond the capacity: an entry evicted or removed while an event still borrows it
/// (a callback on another CPU holding its parent's `Arc`) cannot be reused until it is returned,
/// so a few more than the capacity are allocated. One per CPU that can be inside a callback at
/// once is enough; this is far more.
pub const SPARE_ENTRIES: usize = 64;

/// The table. Not synchronised itself: the sensor keeps it behind a lock and holds the lock only to
/// insert, remove or clone an `Arc` out.
///
/// Every entry it will ever hand out is allocated when it is made: inserting moves a process's
/// text into a spare entry nobody borrows, so the event path never allocates here (an allocation
/// failure in the kernel is a bugcheck), and when every spare is still borrowed the process is
/// not remembered and counted.
#[derive(Debug)]
pub struct ProcessTable {
    slots: Vec<Option<Slot>>,
    /// Entries not in a slot: a capacity of `slots.len() + SPARE_ENTRIES`, never exceeded, since
    /// the entries only move between here and the slots.
    spares: Vec<Arc<ProcessInfo>>,
    len: usize,
    next_seq: u64,
    evicted: u64,
    unremembered: u64,
}

impl ProcessTable {
    /// An empty table for `capacity` processes, with every entry allocated here, once. Fails
    /// (allocating nothing that stays) when the memory is not there.
    pub fn with_capacity(capacity: usize) -> Result<Self, NoMemory> {
        let entries = capacity.saturating_add(SPARE_ENTRIES);
        let mut slots = Vec::new();
        slots.try_reserve_exact(capacity).map_err(|_| NoMemory)?;
        slots.resize_with(capacity, || None);
        let mut spares = Vec::new();
        spares.try_reserve_exact(entries).map_err(|_| NoMemory)?;
        // `Arc::new` cannot report failure on stable Rust: the entries' memory is claimed once,
        // fallibly, just before, so that a shortage is refused here instead of aborting below.
        let mut probe: Vec<u8> = Vec::new();
        probe
            .try_reserve_exact(entries.saturating_mul(ENTRY_BYTES))
            .map_err(|_| NoMemory)?;
        drop(probe);
        for _ in 0..entries {
            spares.push(Arc::new(ProcessInfo::default()));
        }
        Ok(ProcessTable {
            slots,
            spares,
            len: 0,
            next_seq: 0,
            evicted: 0,
            unremembered: 0,
        })
    }

    /// The number of live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries evicted because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Processes not remembered because every spare entry was still borrowed.
    pub fn unremembered(&self) -> u64 {
        self.unremembered
    }

    /// A spare entry no event borrows, with `info` moved in. `None` if every spare is borrowed.
    fn take_spare(&mut self, info: ProcessInfo) -> Option<Arc<ProcessInfo>> {
        let i = self
            .spares
            .iter_mut()
            .position(|a| Arc::get_mut(a).is_some())?;
        let mut entry = self.spares.swap_remove(i);
        let slot = Arc::get_mut(&mut entry)?;
        // The previous process's text is freed here (freeing cannot fail).
        *slot = info;
        Some(entry)
    }

    /// Puts an entry back among the spares (its text stays until the entry is reused).
    fn retire(&mut self, entry: Arc<ProcessInfo>) {
        // Entries only move between the slots and the spares, so this is within the capacity
        // reserved at the start and does not allocate.
        if self.spares.len() < self.spares.capacity() {
            self.spares.push(entry);
        }
    }

    /// Remembers a process. A previous entry with the same id (a reused id whose exit was missed)
    /// is replaced; when the table is full the oldest entry is evicted.
    pub fn insert(&mut self, info: ProcessInfo) {
        if self.slots.is_empty() {
            return;
        }
        let pid = info.process_id;
        // One pass: the entry with this id (a reused id whose exit was missed), else the first
        // free slot, else the oldest entry.
        let (mut same, mut free, mut oldest) = (None, None, None::<(usize, u64)>);
        for (i, s) in self.slots.iter().enumerate() {
            match s {
                Some(s) if s.info.process_id == pid => {
                    same = Some(i);
                    break;
                }
                Some(s) => {
                    if oldest.is_none_or(|(_, seq)| s.seq < seq) {
                        oldest = Some((i, s.seq));
                    }
                }
                None => {
                    free = free.or(Some(i));
                }
            }
        }
        let Some(entry) = self.take_spare(info) else {
            self.unremembered = self.unremembered.saturating_add(1);
            return;
        };
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let target = match (same, free) {
            (Some(i), _) => i,
            (None, Some(i)) => {
                self.len = self.len.saturating_add(1);
                i
            }
            (None, None) => {
                self.evicted = self.evicted.saturating_add(1);
                oldest.map_or(0, |(i, _)| i)
            }
        };
        let old = match self.slots.get_mut(target) {
            Some(s) => s.replace(Slot { info: entry, seq }),
            None => None,
        };
        if let Some(old) = old {
            self.retire(old.info);
        }
    }

    /// A scan bounded by the capacity: a few thousand comparisons of integers, once per event.
    fn find_index(&self, pred: impl Fn(&Slot) -> bool) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(&pred))
    }

    /// The process with this id and creation time.
    pub fn get(&self, process_id: u32, create_time: u64) -> Option<Arc<ProcessInfo>> {
        let i = self
            .find_index(|s| s.info.process_id == process_id && s.info.create_time == create_time)?;
        self.slots.get(i)?.as_ref().map(|s| Arc::clone(&s.info))
    }

    /// The process with this id, whatever its creation time (for events that do not carry one;
    /// exits remove entries, so a live id names one process).
    pub fn get_live(&self, process_id: u32) -> Option<Arc<ProcessInfo>> {
        let i = self.find_index(|s| s.info.process_id == process_id)?;
        self.slots.get(i)?.as_ref().map(|s| Arc::clone(&s.info))
    }

    /// Forgets a process that exited. Returns whether it was known.
    pub fn remove(&mut self, process_id: u32) -> bool {
        let Some(i) = self.find_index(|s| s.info.process_id == process_id) else {
            return false;
        };
        let old = self.slots.get_mut(i).and_then(Option::take);
        self.len = self.len.saturating_sub(1);
        if let Some(old) = old {
            self.retire(old.info);
        }
        true
    }
}

/// What one entry takes on the heap: the `Arc`'s counts and the `ProcessInfo` (its text comes
/// later, from the event that fills it).
const ENTRY_BYTES: usize = 2 * core::mem::size_of::<usize>() + core::mem::size_of::<ProcessInfo>();

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    fn info(pid: u32, t: u64) -> ProcessInfo {
        ProcessInfo {
            process_id: pid,
            create_time: t,
            image: format!("C:\\p{pid}.exe"),
            command_line: format!("p{pid} --run"),
            user: String::from("NT AUTHORITY\\SYSTEM"),
            guid: String::new(),
        }
    }

    #[test]
    fn lookups_need_the_creation_time() {
        let mut t = ProcessTable::with_capacity(8).unwrap();
        t.insert(info(100, 1));
        assert_eq!(t.get(100, 1).unwrap().image, "C:\\p100.exe");
        assert!(t.get(100, 2).is_none(), "a reused pid must not match");
        assert!(t.get_live(100).is_some());
        assert!(t.remove(100));
        assert!(!t.remove(100));
        assert!(t.get_live(100).is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn a_reused_id_replaces_the_stale_entry() {
        let mut t = ProcessTable::with_capacity(8).unwrap();
        t.insert(info(100, 1));
        t.insert(info(100, 5));
        assert_eq!(t.len(), 1);
        assert!(t.get(100, 1).is_none());
        assert!(t.get(100, 5).is_some());
    }

    #[test]
    fn full_table_evicts_the_oldest_and_counts() {
        let mut t = ProcessTable::with_capacity(4).unwrap();
        for pid in 1..=4 {
            t.insert(info(pid * 4, u64::from(pid)));
        }
        assert_eq!(t.len(), 4);
        t.insert(info(400, 9));
        assert_eq!(t.len(), 4);
        assert_eq!(t.evicted(), 1);
        assert!(t.get(4, 1).is_none(), "oldest evicted");
        for pid in 2..=4 {
            assert!(t.get(pid * 4, u64::from(pid)).is_some());
        }
        assert!(t.get(400, 9).is_some());
    }

    #[test]
    fn entries_outlive_removal_while_borrowed() {
        let mut t = ProcessTable::with_capacity(2).unwrap();
        t.insert(info(8, 1));
        let parent = t.get(8, 1).unwrap();
        t.remove(8);
        assert_eq!(parent.command_line, "p8 --run");
    }

    #[test]
    fn zero_capacity_is_harmless() {
        let mut t = ProcessTable::with_capacity(0).unwrap();
        t.insert(info(8, 1));
        assert!(t.get_live(8).is_none());
    }

    #[test]
    fn entries_are_reused_and_borrowed_ones_are_not_overwritten() {
        let mut t = ProcessTable::with_capacity(2).unwrap();
        // Hold every spare entry through a borrowed parent: fill, borrow, remove, repeat.
        let mut held = Vec::new();
        for pid in 0..(2 + SPARE_ENTRIES as u32) {
            t.insert(info(pid, 1));
            held.push(t.get(pid, 1).unwrap());
            assert!(t.remove(pid));
        }
        assert_eq!(t.unremembered(), 0);
        t.insert(info(9999, 1));
        assert_eq!(
            t.unremembered(),
            1,
            "every entry is borrowed: not remembered"
        );
        assert!(t.get_live(9999).is_none());
        // The borrowed entries still hold their own processes.
        for (pid, p) in held.iter().enumerate() {
            assert_eq!(p.process_id, pid as u32);
            assert_eq!(p.image, format!("C:\\p{pid}.exe"));
        }
        held.clear();
        t.insert(info(9999, 1));
        assert_eq!(t.get_live(9999).unwrap().command_line, "p9999 --run");
    }
}
