//! Signed metadata's signature checks and parsed files, shared by the verifiers of one process.
//!
//! A metadata file signed once is verified by every endpoint that fetches it. In one process
//! that runs many endpoints (the fleet simulator: 100,000 agents, each verifying every releases
//! and rollout file the server signs) the same ed25519 check of the same bytes is repeated
//! hundreds of thousands of times. A [`MetadataMemo`] shared by those verifiers does each
//! distinct check once.
//!
//! It answers only for the very same input: the public key's bytes, the signature's bytes and the
//! whole message, compared byte for byte (no hash stands for the message). `verify_strict` is a
//! deterministic function of those three, so a remembered answer is the answer the check would
//! give, valid or not: a damaged file (a torn write, a flipped byte) is a different message and
//! is checked afresh. A process with one verifier gains nothing from a memo and does not use one:
//! the default, [`MetadataMemo::off`], checks every time.
//!
//! Bounded: at most [`MEMO_MAX_ENTRIES`] checks and [`MEMO_MAX_BYTES`] of messages are kept;
//! past either, checks are still done, and not kept.
//!
//! The same memo shares parsed files: the [`MEMO_PARSED_KEPT`] files parsed last, by role and
//! exact text. Parsing is a function of the text, so an endpoint given a file another parsed gets
//! the same body, shared rather than its own copy (nothing is verified by parsing: each endpoint
//! still checks the signatures, through the memo, against its own trusted root). 100,000 agents
//! holding one rollout body instead of 100,000 copies is most of the simulator's memory traffic.
//! And other values made from bytes alone ([`MetadataMemo::share`]): the release keys parsed, and
//! the verifier's answer for each pack the fleet's guards open (the service's `EnvelopeMemo`).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use crate::error::Error;
use crate::metadata::{Metadata, Role};
use crate::signed::{parse, SignedFile};

/// The most checks a memo keeps.
pub const MEMO_MAX_ENTRIES: usize = 4096;

/// The most message bytes a memo keeps, all entries together.
pub const MEMO_MAX_BYTES: usize = 64 << 20;

/// The most parsed files a memo keeps (the newest; each role has a few current files).
pub const MEMO_PARSED_KEPT: usize = 16;

/// A file parsed as `M`'s metadata (nothing verified): the file, its body, the SHA-256 of its
/// signed bytes and its text.
#[derive(Debug)]
pub(crate) struct Parsed<M> {
    pub(crate) signed: SignedFile,
    pub(crate) body: Arc<M>,
    pub(crate) signed_sha256: [u8; 32],
    pub(crate) text: Arc<FileText>,
    /// Set once the body passed its own validation (a root's [`Root::validate`](crate::Root)):
    /// a function of the body alone, so a body shared through the memo is validated once.
    pub(crate) validated: OnceLock<()>,
}

/// A parsed file kept: its role, its text and the `Arc<Parsed<M>>` of the role's type.
type Kept = (Role, Arc<FileText>, Arc<dyn Any + Send + Sync>);

/// A value kept by [`MetadataMemo::share`]: its kind, the bytes it was made from, the value.
type Shared = (&'static str, Box<[u8]>, Arc<dyn Any + Send + Sync>);

/// A metadata file's text as it was verified, and the JSON string it is persisted as (written
/// the first time it is asked for, then kept): an endpoint saves its trust state whenever one
/// of its files changes, and the files it holds are shared through the memo by every endpoint
/// holding them, so each file is escaped once in the process rather than at every save.
#[derive(Debug)]
pub(crate) struct FileText {
    text: Box<str>,
    json: OnceLock<Box<[u8]>>,
}

impl FileText {
    pub(crate) fn new(text: &str) -> FileText {
        FileText {
            text: Box::from(text),
            json: OnceLock::new(),
        }
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The text as a JSON string, quoted and escaped: the bytes `serde_json` writes for it.
    pub(crate) fn json(&self) -> &[u8] {
        self.json.get_or_init(|| {
            // Writing a string to a Vec cannot fail.
            serde_json::to_vec(&*self.text)
                .unwrap_or_default()
                .into_boxed_slice()
        })
    }
}

/// What one signature check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The signature is valid for the message under the key.
    Valid,
    /// The key is a valid point, the signature is not valid for the message under it.
    Invalid,
    /// The public key's bytes are not a valid key.
    BadKey,
}

/// One remembered check: the message and what the check found.
type Remembered = (Box<[u8]>, Check);

#[derive(Default)]
struct Table {
    /// By key and signature, the messages checked with them.
    checks: HashMap<([u8; 32], [u8; 64]), Vec<Remembered>>,
    entries: usize,
    bytes: usize,
    /// The files parsed last, oldest first.
    parsed: Vec<Kept>,
    /// The values shared last ([`MetadataMemo::share`]), oldest first.
    shared: Vec<Shared>,
}

/// Signature checks and parsed files shared by verifiers in one process (see the module's
/// documentation). Cloning shares the same memo.
#[derive(Clone, Default)]
pub struct MetadataMemo(Option<Arc<Mutex<Table>>>);

impl core::fmt::Debug for MetadataMemo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0 {
            None => f.write_str("MetadataMemo(off)"),
            Some(t) => {
                let t = t.lock().unwrap_or_else(PoisonError::into_inner);
                write!(f, "MetadataMemo({} checks, {} bytes)", t.entries, t.bytes)
            }
        }
    }
}

/// A [`MetadataMemo`] that does not keep it alive ([`MetadataMemo::downgrade`]).
#[derive(Clone, Default)]
pub struct WeakMetadataMemo(Option<Weak<Mutex<Table>>>);

impl core::fmt::Debug for WeakMetadataMemo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("WeakMetadataMemo")
    }
}

impl WeakMetadataMemo {
    /// The memo, while anything else keeps it; once nothing does, [`MetadataMemo::off`] (every
    /// check done).
    #[must_use]
    pub fn upgrade(&self) -> MetadataMemo {
        MetadataMemo(self.0.as_ref().and_then(Weak::upgrade))
    }
}

impl MetadataMemo {
    /// No memo: every check is done (the service, the server, the tools).
    #[must_use]
    pub fn off() -> MetadataMemo {
        MetadataMemo(None)
    }

    /// A new, empty memo; clone it to share it.
    #[must_use]
    pub fn shared() -> MetadataMemo {
        MetadataMemo(Some(Arc::new(Mutex::new(Table::default()))))
    }

    /// Whether this is [`MetadataMemo::off`].
    #[must_use]
    pub fn is_off(&self) -> bool {
        self.0.is_none()
    }

    /// A handle that does not keep the memo alive: for a value kept in the memo itself
    /// ([`MetadataMemo::share`]) that checks through it, which would otherwise keep the memo
    /// alive through it after its last user is gone.
    #[must_use]
    pub fn downgrade(&self) -> WeakMetadataMemo {
        WeakMetadataMemo(self.0.as_ref().map(Arc::downgrade))
    }

    /// How many checks are kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |t| {
            t.lock().unwrap_or_else(PoisonError::into_inner).entries
        })
    }

    /// Whether no check is kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What checking `signature` of `message` under `public` finds: remembered if this very
    /// check was done before, otherwise done by `check` (and kept, within the bounds).
    pub fn check(
        &self,
        public: &[u8; 32],
        signature: &[u8; 64],
        message: &[u8],
        check: impl FnOnce() -> Check,
    ) -> Check {
        let Some(table) = &self.0 else {
            return check();
        };
        let key = (*public, *signature);
        {
            let t = table.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(found) = t
                .checks
                .get(&key)
                .and_then(|seen| seen.iter().find(|(m, _)| **m == *message))
            {
                return found.1;
            }
        }
        // Checked outside the lock: another verifier may check the same meanwhile, and both
        // find the same.
        let found = check();
        let mut t = table.lock().unwrap_or_else(PoisonError::into_inner);
        let fits =
            t.entries < MEMO_MAX_ENTRIES && t.bytes.saturating_add(message.len()) <= MEMO_MAX_BYTES;
        let known = t
            .checks
            .get(&key)
            .is_some_and(|seen| seen.iter().any(|(m, _)| **m == *message));
        if fits && !known {
            t.entries = t.entries.saturating_add(1);
            t.bytes = t.bytes.saturating_add(message.len());
            t.checks
                .entry(key)
                .or_default()
                .push((message.to_vec().into_boxed_slice(), found));
        }
        found
    }

    /// What `make` makes of `bytes` (a function of them alone, such as a list of public keys
    /// parsed), shared with every earlier call for the same `kind` and the very same bytes that
    /// the memo still keeps (the [`MEMO_PARSED_KEPT`] newest), else made (and kept). Off, it is
    /// made every time. Each of the simulator's 100,000 agents parses the same release keys (a
    /// point decompression each), and would hold its own copy of them.
    pub fn share<T: Any + Send + Sync>(
        &self,
        kind: &'static str,
        bytes: &[u8],
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let Some(table) = &self.0 else {
            return Arc::new(make());
        };
        {
            let t = table.lock().unwrap_or_else(PoisonError::into_inner);
            let found = t
                .shared
                .iter()
                .rev()
                .find(|(k, b, _)| *k == kind && **b == *bytes)
                .and_then(|(_, _, kept)| Arc::clone(kept).downcast::<T>().ok());
            if let Some(found) = found {
                return found;
            }
        }
        let made = Arc::new(make());
        let mut t = table.lock().unwrap_or_else(PoisonError::into_inner);
        if t.shared.len() >= MEMO_PARSED_KEPT {
            t.shared.remove(0);
        }
        let kept: Arc<dyn Any + Send + Sync> = made.clone();
        t.shared.push((kind, Box::from(bytes), kept));
        made
    }

    /// `file` parsed as `M`'s metadata ([`parse`]): shared with every earlier parse of the very
    /// same text for the same role that the memo still keeps, else parsed (and kept). Refusals
    /// are not kept.
    pub(crate) fn parse<M: Metadata + Send + Sync + 'static>(
        &self,
        file: &str,
    ) -> Result<Arc<Parsed<M>>, Error> {
        let fresh = || -> Result<Arc<Parsed<M>>, Error> {
            let (signed, body, signed_sha256) = parse::<M>(file)?;
            Ok(Arc::new(Parsed {
                signed,
                body: Arc::new(body),
                signed_sha256,
                text: Arc::new(FileText::new(file)),
                validated: OnceLock::new(),
            }))
        };
        let Some(table) = &self.0 else {
            return fresh();
        };
        {
            let t = table.lock().unwrap_or_else(PoisonError::into_inner);
            let found = t
                .parsed
                .iter()
                .rev()
                .find(|(role, text, _)| *role == M::ROLE && text.as_str() == file)
                .and_then(|(_, _, kept)| Arc::clone(kept).downcast::<Parsed<M>>().ok());
            if let Some(found) = found {
                return Ok(found);
            }
        }
        let parsed = fresh()?;
        let mut t = table.lock().unwrap_or_else(PoisonError::into_inner);
        if t.parsed.len() >= MEMO_PARSED_KEPT {
            t.parsed.remove(0);
        }
        let kept: Arc<dyn Any + Send + Sync> = parsed.clone();
        t.parsed.push((M::ROLE, Arc::clone(&parsed.text), kept));
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_check_is_done_once_per_distinct_input() {
        let memo = MetadataMemo::shared();
        let other = memo.clone();
        let done = Cell::new(0u32);
        let run = |m: &MetadataMemo, key: u8, sig: u8, msg: &[u8], answer: Check| {
            m.check(&[key; 32], &[sig; 64], msg, || {
                done.set(done.get() + 1);
                answer
            })
        };
        assert_eq!(run(&memo, 1, 2, b"file", Check::Valid), Check::Valid);
        // The same input through a clone: remembered, whatever the closure would say.
        assert_eq!(run(&other, 1, 2, b"file", Check::Invalid), Check::Valid);
        assert_eq!(done.get(), 1);
        // A message differing in one byte, or only in length, is checked afresh.
        assert_eq!(run(&memo, 1, 2, b"filf", Check::Invalid), Check::Invalid);
        assert_eq!(run(&memo, 1, 2, b"fil", Check::Invalid), Check::Invalid);
        assert_eq!(run(&memo, 1, 2, b"file ", Check::Invalid), Check::Invalid);
        assert_eq!(done.get(), 4);
        // Another key or another signature over the same message: checked afresh.
        assert_eq!(run(&memo, 9, 2, b"file", Check::BadKey), Check::BadKey);
        assert_eq!(run(&memo, 1, 9, b"file", Check::Invalid), Check::Invalid);
        assert_eq!(done.get(), 6);
        // Every answer is remembered, failures too.
        assert_eq!(run(&memo, 1, 2, b"filf", Check::Valid), Check::Invalid);
        assert_eq!(run(&memo, 9, 2, b"file", Check::Valid), Check::BadKey);
        assert_eq!(done.get(), 6);
        assert_eq!(memo.len(), 6);
    }

    #[test]
    fn a_files_json_string_is_serdes_and_is_written_once() {
        for text in [
            "",
            "plain",
            "{\"signed\": {\"a\": [1, \"b\\\\c\"]},\n\t\"x\": \"\\u00e9\"}",
            "\u{0}\u{1}\u{1f}\u{7f} \r\u{8}\u{c} / \u{e9}\u{1F600}\u{2028}",
        ] {
            let file = FileText::new(text);
            assert_eq!(file.as_str(), text);
            let json = file.json();
            assert_eq!(
                json,
                serde_json::to_vec(text).unwrap().as_slice(),
                "{text:?}"
            );
            assert_eq!(serde_json::from_slice::<String>(json).unwrap(), text);
            // Kept: the same bytes, not written again.
            assert!(core::ptr::eq(json, file.json()));
        }
    }

    #[test]
    fn a_value_is_made_once_per_kind_and_bytes_and_off_every_time() {
        let memo = MetadataMemo::shared();
        let other = memo.clone();
        let made = Cell::new(0u32);
        let make = |m: &MetadataMemo, kind: &'static str, bytes: &[u8]| {
            m.share(kind, bytes, || {
                made.set(made.get() + 1);
                bytes.len() * 10 + kind.len()
            })
        };
        let first = make(&memo, "keys", b"abc");
        assert_eq!(*first, 34);
        // The same through a clone: the very same value, not made again.
        assert!(Arc::ptr_eq(&first, &make(&other, "keys", b"abc")));
        assert_eq!(made.get(), 1);
        // Other bytes (one differs, or one more), another kind: made afresh.
        assert_eq!(*make(&memo, "keys", b"abd"), 34);
        assert_eq!(*make(&memo, "keys", b"abcd"), 44);
        assert_eq!(*make(&memo, "other", b"abc"), 35);
        assert_eq!(made.get(), 4);
        // Another type for the same kind and bytes is not mistaken for the kept one.
        let text = memo.share("keys", b"abc", || String::from("text"));
        assert_eq!(*text, "text");
        // Only the newest are kept: past the bound, the oldest is made again.
        for n in 0..MEMO_PARSED_KEPT {
            make(&memo, "fill", &n.to_le_bytes());
        }
        let before = made.get();
        assert!(!Arc::ptr_eq(&first, &make(&memo, "keys", b"abc")));
        assert_eq!(made.get(), before + 1);
        // Off: made at every call.
        let off = MetadataMemo::off();
        let (a, b) = (make(&off, "keys", b"abc"), make(&off, "keys", b"abc"));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(made.get(), before + 3);
    }

    #[test]
    fn a_weak_handle_checks_through_the_memo_while_it_lives_and_does_not_keep_it() {
        let memo = MetadataMemo::shared();
        let weak = memo.downgrade();
        let done = Cell::new(0u32);
        let check = |m: &MetadataMemo| {
            m.check(&[1; 32], &[2; 64], b"file", || {
                done.set(done.get() + 1);
                Check::Valid
            })
        };
        check(&weak.upgrade());
        check(&memo);
        assert_eq!(done.get(), 1, "the same memo through the weak handle");
        // A value kept in the memo that holds the weak handle does not keep the memo alive.
        let kept = memo.share("holder", b"", || weak.clone());
        drop(kept);
        drop(memo);
        assert!(weak.upgrade().is_off());
        check(&weak.upgrade());
        assert_eq!(done.get(), 2, "gone: every check done");
        assert!(MetadataMemo::off().downgrade().upgrade().is_off());
    }

    #[test]
    fn off_checks_every_time() {
        let memo = MetadataMemo::off();
        let done = Cell::new(0u32);
        for _ in 0..3 {
            memo.check(&[1; 32], &[2; 64], b"file", || {
                done.set(done.get() + 1);
                Check::Valid
            });
        }
        assert_eq!(done.get(), 3);
        assert!(memo.is_empty());
    }

    #[test]
    fn past_its_bounds_checks_are_done_and_not_kept() {
        let memo = MetadataMemo::shared();
        let done = Cell::new(0usize);
        let count = || {
            done.set(done.get() + 1);
            Check::Valid
        };
        for i in 0..MEMO_MAX_ENTRIES + 10 {
            let n = u32::try_from(i).unwrap().to_le_bytes();
            memo.check(&[0; 32], &[0; 64], &n, count);
        }
        assert_eq!(memo.len(), MEMO_MAX_ENTRIES);
        let past = u32::try_from(MEMO_MAX_ENTRIES + 5).unwrap().to_le_bytes();
        let before = done.get();
        memo.check(&[0; 32], &[0; 64], &past, count);
        assert_eq!(done.get(), before + 1, "not kept, so checked again");
        let kept = 7u32.to_le_bytes();
        memo.check(&[0; 32], &[0; 64], &kept, count);
        assert_eq!(done.get(), before + 1, "kept, so remembered");

        // The byte bound: one message larger than all the room is checked, not kept.
        let big = MetadataMemo::shared();
        let huge = vec![0u8; MEMO_MAX_BYTES + 1];
        big.check(&[0; 32], &[0; 64], &huge, count);
        big.check(&[0; 32], &[0; 64], &huge, count);
        assert_eq!(done.get(), before + 3);
        assert!(big.is_empty());
    }

    #[test]
    fn parsed_files_are_shared_by_exact_text_and_role() {
        use crate::metadata::{Releases, Rollout};
        use bulwark_rollout::Timestamp;
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let file = |version: u64| {
            crate::signed::sign(&Releases::new(version, Timestamp(2_000_000_000)), &[&key]).unwrap()
        };
        let memo = MetadataMemo::shared();
        let first = memo.parse::<Releases>(&file(1)).unwrap();
        let again = memo.parse::<Releases>(&file(1)).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the same text: shared");
        // One byte more (a space the JSON allows): another text, parsed afresh.
        let spaced = format!("{} ", file(1));
        let other = memo.parse::<Releases>(&spaced).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(other.body, first.body);
        // The same text as another role is that role's parse: refused, and not kept.
        assert!(matches!(
            memo.parse::<Rollout>(&file(1)),
            Err(Error::WrongType { .. })
        ));
        // Without a memo nothing is shared.
        let off = MetadataMemo::off();
        let a = off.parse::<Releases>(&file(1)).unwrap();
        let b = off.parse::<Releases>(&file(1)).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        // The newest MEMO_PARSED_KEPT are kept: the first file is evicted by as many others.
        for v in 2..=u64::try_from(MEMO_PARSED_KEPT).unwrap() + 1 {
            memo.parse::<Releases>(&file(v)).unwrap();
        }
        let evicted = memo.parse::<Releases>(&file(1)).unwrap();
        assert!(!Arc::ptr_eq(&first, &evicted));
        assert_eq!(evicted.body, first.body);
    }
}
