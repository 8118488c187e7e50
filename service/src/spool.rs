//! The crash-safe spool: every sequenced message (heartbeats and telemetry) is numbered and
//! written to SQLite in one transaction before any attempt to send it, and removed only once the
//! server has it. The sequence counter lives in the same database, so numbers are strictly
//! increasing across restarts. The spool is bounded in bytes: over the bound the oldest messages
//! are dropped first and counted.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

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
pub type SpoolError = rusqlite::Error;

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
             INSERT OR IGNORE INTO meta VALUES ('next_seq', 1), ('dropped', 0);",
        )?;
        Ok(Spool { db, max_bytes })
    }

    fn meta(tx: &Connection, key: &str) -> Result<u64, SpoolError> {
        tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .map(to_u64)
    }

    /// Numbers `body` (a JSON object; its `seq` is set here) and stores it, in one
    /// transaction, dropping the oldest messages if the spool is over its bound. Returns the
    /// sequence number.
    pub fn push(&mut self, kind: Kind, mut body: serde_json::Value) -> Result<u64, SpoolError> {
        let tx = self.db.transaction()?;
        let seq = Self::meta(&tx, "next_seq")?;
        if let Some(o) = body.as_object_mut() {
            o.insert("seq".into(), seq.into());
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        tx.execute(
            "INSERT INTO spool (seq, kind, body) VALUES (?1, ?2, ?3)",
            params![to_i64(seq), kind.code(), bytes],
        )?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'next_seq'",
            [to_i64(seq.saturating_add(1))],
        )?;
        loop {
            let total: i64 = tx.query_row(
                "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM spool",
                [],
                |r| r.get(0),
            )?;
            if to_u64(total) <= self.max_bytes {
                break;
            }
            let n = tx.execute(
                "DELETE FROM spool WHERE seq = (SELECT MIN(seq) FROM spool)",
                [],
            )?;
            if n == 0 {
                break;
            }
            tx.execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'dropped'",
                [],
            )?;
        }
        tx.commit()?;
        Ok(seq)
    }

    /// The oldest message not yet delivered.
    pub fn oldest(&self) -> Result<Option<Message>, SpoolError> {
        self.db
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
            .optional()
    }

    /// The server has message `seq`: forget it.
    pub fn delivered(&mut self, seq: u64) -> Result<(), SpoolError> {
        self.db
            .execute("DELETE FROM spool WHERE seq = ?1", [to_i64(seq)])?;
        Ok(())
    }

    /// Messages waiting.
    pub fn len(&self) -> Result<u64, SpoolError> {
        self.db
            .query_row("SELECT COUNT(*) FROM spool", [], |r| r.get(0))
            .map(to_u64)
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
    fn numbers_survive_a_reopen_and_the_oldest_are_dropped_and_counted() {
        let d = dir("bound");
        let path = d.join("spool.sqlite");
        {
            let mut s = Spool::open(&path, 200).unwrap();
            for i in 0..3 {
                assert_eq!(
                    s.push(Kind::Heartbeat, serde_json::json!({"n": i}))
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
            s.push(Kind::Telemetry, serde_json::json!({"n": 3}))
                .unwrap(),
            4
        );
        // Each body is ~20 bytes: a large one pushes the oldest out, counted.
        let big = "x".repeat(150);
        s.push(Kind::Telemetry, serde_json::json!({"big": big}))
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
}
