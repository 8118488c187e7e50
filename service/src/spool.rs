//! The crash-safe spool: every sequenced message (heartbeats and telemetry) is numbered and
//! written to SQLite in one transaction before any attempt to send it, and removed only once the
//! server has it. The sequence counter lives in the same database, so numbers are strictly
//! increasing across restarts. The spool is bounded in bytes: over the bound the oldest messages
//! are dropped first and counted.
//!
//! [`SpoolStore`] is what the agent needs of a spool: [`Spool`] is the SQLite one the service
//! runs; [`MemorySpool`] keeps the same promises in memory for the fleet simulator (a "restart"
//! there keeps what was pushed, as the file would).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// Which endpoint a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `POST /v1/heartbeat`.
    Heartbeat,
    /// `POST /v1/telemetry`.
    Telemetry,
}

impl Kind {
    fn code(self) -> i64 {
        match self {
            Kind::Heartbeat => 1,
            Kind::Telemetry => 2,
        }
    }
    fn from_code(c: i64) -> Kind {
        if c == 1 {
            Kind::Heartbeat
        } else {
            Kind::Telemetry
        }
    }
}

/// A spooled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its sequence number.
    pub seq: u64,
    /// Where it goes.
    pub kind: Kind,
    /// The JSON body, `seq` included.
    pub body: Vec<u8>,
}

/// The spool.
pub struct Spool {
    db: Connection,
    max_bytes: u64,
}

/// A spool failure.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The database failed.
    #[error("spool database: {0}")]
    Database(#[from] rusqlite::Error),
}

/// What the agent needs of a spool.
pub trait SpoolStore {
    /// Numbers `body` (what serializes to a JSON object without a `seq` member; its `seq` is set
    /// here) and stores it, dropping the oldest messages (counted) while the bodies are over the
    /// bound. Returns the sequence number.
    fn push<B: Serialize + ?Sized>(&mut self, kind: Kind, body: &B) -> Result<u64, SpoolError>;
    /// As [`push`](SpoolStore::push), for a body its caller wrote as JSON: `object` is the text
    /// of a JSON object without a `seq` member, in pieces (their concatenation), numbered as
    /// [`push`](SpoolStore::push) numbers a body. For what is sent most (a heartbeat), whose
    /// text is mostly the same at every push.
    fn push_json(&mut self, kind: Kind, object: &[&[u8]]) -> Result<u64, SpoolError>;
    /// The oldest message not yet delivered.
    fn oldest(&self) -> Result<Option<Message>, SpoolError>;
    /// `f` of the oldest message not yet delivered, lent where the spool holds it when it can
    /// be (the agent sends each message once: no copy of it is needed).
    fn with_oldest<R>(&self, f: impl FnOnce(Option<&Message>) -> R) -> Result<R, SpoolError> {
        Ok(f(self.oldest()?.as_ref()))
    }
    /// The server has message `seq`: forget it.
    fn delivered(&mut self, seq: u64) -> Result<(), SpoolError>;
    /// Messages waiting.
    fn len(&self) -> Result<u64, SpoolError>;
    /// Whether nothing is waiting.
    fn is_empty(&self) -> Result<bool, SpoolError> {
        Ok(self.len()? == 0)
    }
    /// Messages dropped because the spool was full.
    fn dropped(&self) -> Result<u64, SpoolError>;
    /// The next sequence number.
    fn next_seq(&self) -> Result<u64, SpoolError>;
}

/// `body` numbered `seq`, as bytes: `{"seq":N,` then the members of the object `body`
/// serializes to, written once (no intermediate value). A body that is not an object is kept as
/// it is, unnumbered (no caller sends one).
fn numbered<B: Serialize + ?Sized>(seq: u64, body: &B) -> Vec<u8> {
    numbered_with(seq, |out| serde_json::to_writer(out, body).is_ok())
}

/// [`numbered`] for a body written as JSON text, in pieces ([`SpoolStore::push_json`]).
fn numbered_json(seq: u64, object: &[&[u8]]) -> Vec<u8> {
    numbered_with(seq, |out| {
        for piece in object {
            out.extend_from_slice(piece);
        }
        true
    })
}

/// `{"seq":N,` then the members of the object `write` writes (see [`numbered`]); nothing if it
/// fails.
fn numbered_with(seq: u64, write: impl FnOnce(&mut Vec<u8>) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"seq\":");
    // The number's decimal digits, as serde_json writes integers (itoa): not through the
    // formatting machinery, for every heartbeat. Writing to a Vec cannot fail.
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    let at = out.len();
    if !write(&mut out) {
        return Vec::new();
    }
    match out.get(at..) {
        Some(b"{}") => {
            out.truncate(at);
            out.push(b'}');
        }
        Some([b'{', ..]) => {
            if let Some(b) = out.get_mut(at) {
                *b = b',';
            }
        }
        _ => {
            out.drain(..at);
        }
    }
    out
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Spool {
    /// Opens (or creates) the spool at `path`, bounded to `max_bytes` of message bodies.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL,
                 body BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta VALUES ('next_seq', 1), ('dropped', 0);
             INSERT OR IGNORE INTO meta SELECT 'bytes', COALESCE(SUM(LENGTH(body)), 0) FROM spool;",
        )?;
        Ok(Spool { db, max_bytes })
    }

    fn meta(tx: &Connection, key: &str) -> Result<u64, SpoolError> {
        Ok(tx
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .map(to_u64)?)
    }

    /// Numbers `body` (see [`SpoolStore::push`]) and stores it, in one
    /// transaction, dropping the oldest messages if the spool is over its bound. Returns the
    /// sequence number. The bodies' total is kept in the database, so a push costs the same
    /// however full the spool is.
    pub fn push<B: Serialize + ?Sized>(&mut self, kind: Kind, body: &B) -> Result<u64, SpoolError> {
        self.store(kind, |seq| numbered(seq, body))
    }

    /// Numbers the JSON text `object` (see [`SpoolStore::push_json`]) and stores it, as
    /// [`Spool::push`] does.
    pub fn push_json(&mut self, kind: Kind, object: &[&[u8]]) -> Result<u64, SpoolError> {
        self.store(kind, |seq| numbered_json(seq, object))
    }

    /// Stores the message `numbered` writes for the next sequence number, in one transaction
    /// with the bound's drops.
    fn store(
        &mut self,
        kind: Kind,
        numbered: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<u64, SpoolError> {
        let tx = self.db.transaction()?;
        let seq = Self::meta(&tx, "next_seq")?;
        let bytes = numbered(seq);
        tx.execute(
            "INSERT INTO spool (seq, kind, body) VALUES (?1, ?2, ?3)",
            params![to_i64(seq), kind.code(), bytes],
        )?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'next_seq'",
            [to_i64(seq.saturating_add(1))],
        )?;
        let mut total = Self::meta(&tx, "bytes")?.saturating_add(bytes.len() as u64);
        while total > self.max_bytes {
            let oldest: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT seq, LENGTH(body) FROM spool ORDER BY seq LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((oldest, len)) = oldest else {
                break;
            };
            tx.execute("DELETE FROM spool WHERE seq = ?1", [oldest])?;
            tx.execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'dropped'",
                [],
            )?;
            total = total.saturating_sub(to_u64(len));
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'bytes'",
            [to_i64(total)],
        )?;
        tx.commit()?;
        Ok(seq)
    }

    /// The oldest message not yet delivered.
    pub fn oldest(&self) -> Result<Option<Message>, SpoolError> {
        Ok(self
            .db
            .query_row(
                "SELECT seq, kind, body FROM spool ORDER BY seq LIMIT 1",
                [],
                |r| {
                    Ok(Message {
                        seq: to_u64(r.get(0)?),
                        kind: Kind::from_code(r.get(1)?),
                        body: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// The server has message `seq`: forget it.
    pub fn delivered(&mut self, seq: u64) -> Result<(), SpoolError> {
        let tx = self.db.transaction()?;
        let len: Option<i64> = tx
            .query_row(
                "SELECT LENGTH(body) FROM spool WHERE seq = ?1",
                [to_i64(seq)],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(len) = len {
            tx.execute("DELETE FROM spool WHERE seq = ?1", [to_i64(seq)])?;
            tx.execute(
                "UPDATE meta SET value = MAX(value - ?1, 0) WHERE key = 'bytes'",
                [len],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Messages waiting.
    pub fn len(&self) -> Result<u64, SpoolError> {
        Ok(self
            .db
            .query_row("SELECT COUNT(*) FROM spool", [], |r| r.get(0))
            .map(to_u64)?)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> Result<bool, SpoolError> {
        Ok(self.len()? == 0)
    }

    /// Messages dropped because the spool was full.
    pub fn dropped(&self) -> Result<u64, SpoolError> {
        Self::meta(&self.db, "dropped")
    }

    /// The next sequence number.
    pub fn next_seq(&self) -> Result<u64, SpoolError> {
        Self::meta(&self.db, "next_seq")
    }
}

impl SpoolStore for Spool {
    fn push<B: Serialize + ?Sized>(&mut self, kind: Kind, body: &B) -> Result<u64, SpoolError> {
        Spool::push(self, kind, body)
    }
    fn push_json(&mut self, kind: Kind, object: &[&[u8]]) -> Result<u64, SpoolError> {
        Spool::push_json(self, kind, object)
    }
    fn oldest(&self) -> Result<Option<Message>, SpoolError> {
        Spool::oldest(self)
    }
    fn delivered(&mut self, seq: u64) -> Result<(), SpoolError> {
        Spool::delivered(self, seq)
    }
    fn len(&self) -> Result<u64, SpoolError> {
        Spool::len(self)
    }
    fn dropped(&self) -> Result<u64, SpoolError> {
        Spool::dropped(self)
    }
    fn next_seq(&self) -> Result<u64, SpoolError> {
        Spool::next_seq(self)
    }
}

#[derive(Debug, Default)]
struct MemoryInner {
    messages: VecDeque<Message>,
    bytes: u64,
    next_seq: u64,
    dropped: u64,
}

/// A spool in memory with the same numbering, bound and drop counting as [`Spool`]. Clones
/// share it: a simulated service restart opens the same one again.
#[derive(Debug, Clone)]
pub struct MemorySpool {
    inner: Rc<RefCell<MemoryInner>>,
    max_bytes: u64,
}

impl MemorySpool {
    /// An empty spool bounded to `max_bytes` of bodies.
    pub fn new(max_bytes: u64) -> MemorySpool {
        MemorySpool {
            inner: Rc::new(RefCell::new(MemoryInner {
                next_seq: 1,
                ..MemoryInner::default()
            })),
            max_bytes,
        }
    }

    /// Where its messages are held (shared by its clones), opaque: for a caller that wants it in
    /// the caches before the next push (the fleet simulator's look-ahead over 100,000 agents).
    pub fn held(&self) -> &impl Sized {
        &*self.inner
    }

    /// Stores the message `numbered` writes for the next sequence number, dropping the oldest
    /// while over the bound (as [`Spool`] does). Returns the sequence number.
    fn store(&mut self, kind: Kind, numbered: impl FnOnce(u64) -> Vec<u8>) -> u64 {
        let mut m = self.inner.borrow_mut();
        let seq = m.next_seq;
        m.next_seq = seq.saturating_add(1);
        let body = numbered(seq);
        m.bytes = m.bytes.saturating_add(body.len() as u64);
        m.messages.push_back(Message { seq, kind, body });
        while m.bytes > self.max_bytes {
            let Some(old) = m.messages.pop_front() else {
                break;
            };
            m.bytes = m.bytes.saturating_sub(old.body.len() as u64);
            m.dropped = m.dropped.saturating_add(1);
        }
        seq
    }
}

impl SpoolStore for MemorySpool {
    fn push<B: Serialize + ?Sized>(&mut self, kind: Kind, body: &B) -> Result<u64, SpoolError> {
        Ok(self.store(kind, |seq| numbered(seq, body)))
    }
    fn push_json(&mut self, kind: Kind, object: &[&[u8]]) -> Result<u64, SpoolError> {
        Ok(self.store(kind, |seq| numbered_json(seq, object)))
    }
    fn oldest(&self) -> Result<Option<Message>, SpoolError> {
        Ok(self.inner.borrow().messages.front().cloned())
    }
    fn with_oldest<R>(&self, f: impl FnOnce(Option<&Message>) -> R) -> Result<R, SpoolError> {
        Ok(f(self.inner.borrow().messages.front()))
    }
    fn delivered(&mut self, seq: u64) -> Result<(), SpoolError> {
        let mut m = self.inner.borrow_mut();
        if let Some(i) = m.messages.iter().position(|x| x.seq == seq) {
            if let Some(x) = m.messages.remove(i) {
                m.bytes = m.bytes.saturating_sub(x.body.len() as u64);
            }
        }
        if m.messages.is_empty() {
            // Its buffer given back: the next push takes one the allocator just freed (warm),
            // not this spool's own, untouched since its last push (the simulator steps 100,000
            // agents in turn, and each step's push missed the caches there).
            m.messages = VecDeque::new();
        }
        Ok(())
    }
    fn len(&self) -> Result<u64, SpoolError> {
        Ok(self.inner.borrow().messages.len() as u64)
    }
    fn dropped(&self) -> Result<u64, SpoolError> {
        Ok(self.inner.borrow().dropped)
    }
    fn next_seq(&self) -> Result<u64, SpoolError> {
        Ok(self.inner.borrow().next_seq)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("bulwark-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_body_is_numbered_first_and_keeps_its_members() {
        #[derive(Serialize)]
        struct Beat<'a> {
            channel: &'a str,
            content_version: u64,
        }
        let typed = numbered(
            7,
            &Beat {
                channel: "st\"able",
                content_version: 3,
            },
        );
        assert_eq!(
            typed,
            br#"{"seq":7,"channel":"st\"able","content_version":3}"#
        );
        let value = numbered(
            u64::MAX,
            &serde_json::json!({"a": [1, {"b": {}}], "c": null}),
        );
        let parsed: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"seq": u64::MAX, "a": [1, {"b": {}}], "c": null})
        );
        assert_eq!(numbered(1, &serde_json::json!({})), br#"{"seq":1}"#);
        for seq in [0, 10, 1_234_567_890, u64::MAX] {
            assert_eq!(
                numbered(seq, &serde_json::json!({"a": 1})),
                format!("{{\"seq\":{seq},\"a\":1}}").as_bytes()
            );
        }
        // Not an object: kept as it is.
        assert_eq!(numbered(1, &serde_json::json!([1])), b"[1]");
        // Written by the caller, in pieces cut anywhere: numbered alike.
        let text = br#"{"channel":"st\"able","content_version":3}"#;
        for cut in 0..=text.len() {
            let (a, b) = text.split_at(cut);
            assert_eq!(numbered_json(7, &[a, b]), typed, "cut at {cut}");
        }
        assert_eq!(numbered_json(1, &[b"{", b"}"]), br#"{"seq":1}"#);
        assert_eq!(numbered_json(1, &[b"[1]"]), b"[1]");
    }

    #[test]
    fn a_body_pushed_as_json_text_is_spooled_as_its_struct_would_be() {
        let d = dir("json");
        let mut spools: (Spool, MemorySpool) = (
            Spool::open(&d.join("spool.db"), 1 << 20).unwrap(),
            MemorySpool::new(1 << 20),
        );
        let body = serde_json::json!({"channel": "prod", "content_version": 9});
        let text = serde_json::to_vec(&body).unwrap();
        fn both<A: SpoolStore, B: SpoolStore>(
            a: &mut A,
            b: &mut B,
            body: &serde_json::Value,
            text: &[u8],
        ) {
            assert_eq!(a.push(Kind::Heartbeat, body).unwrap(), 1);
            assert_eq!(a.push_json(Kind::Heartbeat, &[text]).unwrap(), 2);
            let first = a.oldest().unwrap().unwrap();
            a.delivered(1).unwrap();
            let second = a.oldest().unwrap().unwrap();
            assert_eq!(second.seq, 2);
            assert_eq!(second.kind, Kind::Heartbeat);
            assert_eq!(second.body, numbered(2, body));
            assert_eq!(first.body, numbered(1, body));
            assert_eq!(b.push_json(Kind::Telemetry, &[text]).unwrap(), 1);
            assert_eq!(b.oldest().unwrap().unwrap().body, first.body);
        }
        let (sqlite, memory) = &mut spools;
        both(sqlite, memory, &body, &text);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn numbers_survive_a_reopen_and_the_oldest_are_dropped_and_counted() {
        let d = dir("bound");
        let path = d.join("spool.sqlite");
        {
            let mut s = Spool::open(&path, 200).unwrap();
            for i in 0..3 {
                assert_eq!(
                    s.push(Kind::Heartbeat, &serde_json::json!({"n": i}))
                        .unwrap(),
                    i + 1
                );
            }
            assert_eq!(s.dropped().unwrap(), 0);
        }
        // Reopened (a restart): numbering continues, nothing committed is lost.
        let mut s = Spool::open(&path, 200).unwrap();
        assert_eq!(s.len().unwrap(), 3);
        assert_eq!(
            s.push(Kind::Telemetry, &serde_json::json!({"n": 3}))
                .unwrap(),
            4
        );
        // Each body is ~20 bytes: a large one pushes the oldest out, counted.
        let big = "x".repeat(150);
        s.push(Kind::Telemetry, &serde_json::json!({"big": big}))
            .unwrap();
        assert!(s.dropped().unwrap() >= 1);
        let oldest = s.oldest().unwrap().unwrap();
        assert!(oldest.seq > 1, "{oldest:?}");
        let body: serde_json::Value = serde_json::from_slice(&oldest.body).unwrap();
        assert_eq!(body["seq"], serde_json::json!(oldest.seq));
        s.delivered(oldest.seq).unwrap();
        assert_ne!(s.oldest().unwrap().unwrap().seq, oldest.seq);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The same pushes and deliveries on both spools: the same numbers, drops and bodies.
    fn script<S: SpoolStore>(s: &mut S) -> Vec<(u64, u64, u64, Option<u64>)> {
        let mut seen = Vec::new();
        for i in 0..40u64 {
            let body = serde_json::json!({"n": i, "pad": "y".repeat((i as usize * 7) % 60)});
            let kind = if i % 3 == 0 {
                Kind::Heartbeat
            } else {
                Kind::Telemetry
            };
            s.push(kind, &body).unwrap();
            if i % 5 == 4 {
                if let Some(m) = s.oldest().unwrap() {
                    s.delivered(m.seq).unwrap();
                }
            }
            // Lent in place or read out, the same message.
            assert_eq!(s.with_oldest(|m| m.cloned()).unwrap(), s.oldest().unwrap());
            seen.push((
                s.len().unwrap(),
                s.dropped().unwrap(),
                s.next_seq().unwrap(),
                s.oldest().unwrap().map(|m| m.seq),
            ));
        }
        // Everything delivered (the memory spool then gives its buffer back), then more pushed.
        while let Some(m) = s.oldest().unwrap() {
            s.delivered(m.seq).unwrap();
        }
        for i in 0..3u64 {
            s.push(Kind::Heartbeat, &serde_json::json!({"after": i}))
                .unwrap();
            seen.push((
                s.len().unwrap(),
                s.dropped().unwrap(),
                s.next_seq().unwrap(),
                s.oldest().unwrap().map(|m| m.seq),
            ));
        }
        seen
    }

    #[test]
    fn memory_spool_clones_hold_the_same_messages() {
        let a = MemorySpool::new(400);
        let b = a.clone();
        assert!(core::ptr::eq(a.held(), b.held()));
        assert!(!core::ptr::eq(a.held(), MemorySpool::new(400).held()));
    }

    #[test]
    fn the_memory_spool_keeps_the_sqlite_spools_promises() {
        let d = dir("same");
        let mut sqlite = Spool::open(&d.join("spool.sqlite"), 400).unwrap();
        let mut memory = MemorySpool::new(400);
        let a = script(&mut sqlite);
        assert_eq!(a, script(&mut memory));
        assert!(a.iter().any(|x| x.1 > 0), "the bound was reached: {a:?}");
        assert_eq!(
            sqlite.oldest().unwrap().unwrap().body,
            memory.oldest().unwrap().unwrap().body
        );
        // The running total survives a reopen: the bound holds as before.
        drop(sqlite);
        let mut sqlite = Spool::open(&d.join("spool.sqlite"), 400).unwrap();
        let mut reopened = memory.clone();
        for i in 0..10 {
            let body = serde_json::json!({"again": i});
            sqlite.push(Kind::Telemetry, &body).unwrap();
            reopened.push(Kind::Telemetry, &body).unwrap();
        }
        assert_eq!(sqlite.len().unwrap(), reopened.len().unwrap());
        assert_eq!(sqlite.dropped().unwrap(), reopened.dropped().unwrap());
        let _ = std::fs::remove_dir_all(&d);
    }
}
