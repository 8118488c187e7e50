//! The record: [`State`] encoded in a fixed-size, checksummed layout, written alternately to two
//! slots so a torn or lost write always leaves the previous record intact.
//!
//! Layout (integers little-endian), [`RECORD_BYTES`] bytes, always written whole:
//!
//! ```text
//! 0     magic "BWGR"
//! 4     u16 record version (1)
//! 6     u16 record length (RECORD_BYTES)
//! 8     u64 sequence number (odd: slot A, even: slot B)
//! 16    u32 channel
//! 20    u64 newest accepted version
//! 28    u64 boots
//! 36    u8 flags (bit 0: last-known-good present, bit 1: candidate present; others 0)
//! 37    u8 candidate attempts
//! 38    u8 last-known-good unfinished runs
//! 39    u8 active (0 none, 1 last-known-good, 2 candidate)
//! 40    last-known-good: u64 version, [32] pack hash
//! 80    candidate: u64 version, [32] pack hash
//! 120   u8 quarantine entries, u8 reserved, u16 reserved
//! 124   u64 next event sequence number
//! 132   32 quarantine entries of 40 bytes (u64 version, [32] hash), unused ones zero
//! 1412  32 event slots of 64 bytes: u64 seq, u64 time, u16 kind, u8 attempts, u8 reserved,
//!       u32 detail, u64 version, [32] hash (seq 0: empty)
//! 3460  u32 CRC-32 of bytes 0..3460
//! ```

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::crc::crc32;
use crate::state::{
    Active, Event, EventKind, State, EMPTY_EVENT, MAX_EVENTS, MAX_QUARANTINE, MAX_THRESHOLD,
};
use crate::ContentId;

/// `BWGR`: the first four bytes of every record.
pub const MAGIC: [u8; 4] = *b"BWGR";
/// The record version this crate writes and reads.
pub const RECORD_VERSION: u16 = 1;
const QUARANTINE_AT: usize = 132;
const EVENT_BYTES: usize = 64;
const EVENTS_AT: usize = QUARANTINE_AT + MAX_QUARANTINE * 40;
const CRC_AT: usize = EVENTS_AT + MAX_EVENTS * EVENT_BYTES;
/// The size of every record.
pub const RECORD_BYTES: usize = CRC_AT + 4;

/// The two record slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Holds the records with odd sequence numbers.
    A,
    /// Holds the records with even sequence numbers.
    B,
}

impl Slot {
    /// The slot a record with this sequence number goes to.
    pub fn for_seq(seq: u64) -> Slot {
        if seq % 2 == 1 {
            Slot::A
        } else {
            Slot::B
        }
    }

    /// A short name for messages and file names.
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }
}

/// Why a record slot was not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is {len} bytes, expected {expected} (torn or truncated write)")]
    WrongLength { len: usize, expected: usize },
    #[error("bad record magic {found:02x?} at byte offset 0, expected \"BWGR\"")]
    BadMagic { found: [u8; 4] },
    #[error("record version {found} at byte offset 4 is not supported (this guard reads version {supported})")]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("record checksum mismatch: stored CRC-32 {stored:#010x} at byte offset {CRC_AT}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("record is not in canonical form at byte offset {offset} (unused or reserved bytes must be zero)")]
    NonCanonical { offset: usize },
    #[error("record field {field} at byte offset {offset} has invalid value {value}")]
    BadField {
        field: &'static str,
        offset: usize,
        value: u64,
    },
    /// Every field is valid on its own, but the fields contradict each other: the record is not
    /// one this guard writes (tampered with, or written by a faulty guard) and is never trusted.
    #[error("inconsistent record: {field} {relation} {other}: {rule}")]
    Inconsistent {
        /// The field found wrong.
        field: FieldRef,
        /// How it contradicts `other`.
        relation: &'static str,
        /// The field it contradicts.
        other: FieldRef,
        /// The invariant broken.
        rule: &'static str,
    },
}

impl RecordError {
    /// The byte offset the problem was found at, if it names one.
    pub fn offset(&self) -> Option<usize> {
        match self {
            RecordError::WrongLength { .. } => None,
            RecordError::BadMagic { .. } => Some(0),
            RecordError::UnsupportedVersion { .. } => Some(4),
            RecordError::BadCrc { .. } => Some(CRC_AT),
            RecordError::NonCanonical { offset } | RecordError::BadField { offset, .. } => {
                Some(*offset)
            }
            RecordError::Inconsistent { field, .. } => Some(field.offset),
        }
    }
}

/// A record field named in an [`RecordError::Inconsistent`] error: its name, byte offset and
/// (when it is a number) value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldRef {
    /// The field's name.
    pub name: &'static str,
    /// Its byte offset in the record.
    pub offset: usize,
    /// Its value, when it is a number.
    pub value: Option<u64>,
}

impl core::fmt::Display for FieldRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.value {
            Some(v) => write!(f, "{} {v} (byte offset {})", self.name, self.offset),
            None => write!(f, "{} (byte offset {})", self.name, self.offset),
        }
    }
}

struct W<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl W<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at.saturating_add(bytes.len());
        if let Some(dst) = self.buf.get_mut(self.at..end) {
            dst.copy_from_slice(bytes);
        }
        self.at = end;
    }
    fn id(&mut self, id: &ContentId) {
        self.put(&id.version.to_le_bytes());
        self.put(&id.hash);
    }
}

/// Encodes a state as a record (its `seq` included).
pub fn encode(state: &State) -> Vec<u8> {
    let mut buf = alloc::vec![0u8; RECORD_BYTES];
    if let Ok(record) = <&mut [u8; RECORD_BYTES]>::try_from(buf.as_mut_slice()) {
        encode_into(state, record);
    }
    buf
}

/// Encodes a state as a record into `buf` (no allocation: the guard writes records from a
/// buffer on the stack, on the driver's large stack).
pub fn encode_into(state: &State, buf: &mut [u8; RECORD_BYTES]) {
    encode_body_into(state, buf);
    let crc = crc32(buf.get(..CRC_AT).unwrap_or(&[]));
    if let Some(dst) = buf.get_mut(CRC_AT..RECORD_BYTES) {
        dst.copy_from_slice(&crc.to_le_bytes());
    }
}

/// [`encode_into`] but the CRC, left zero: what [`decode`] compares a record's checked bytes
/// with.
fn encode_body_into(state: &State, buf: &mut [u8; RECORD_BYTES]) {
    buf.fill(0);
    let mut w = W { buf, at: 0 };
    w.put(&MAGIC);
    w.put(&RECORD_VERSION.to_le_bytes());
    w.put(&(RECORD_BYTES as u16).to_le_bytes());
    w.put(&state.seq.to_le_bytes());
    w.put(&state.channel.to_le_bytes());
    w.put(&state.newest.to_le_bytes());
    w.put(&state.boots.to_le_bytes());
    let flags = u8::from(state.lkg.is_some()) | (u8::from(state.candidate.is_some()) << 1);
    w.put(&[
        flags,
        state.attempts,
        state.lkg_attempts,
        state.active as u8,
    ]);
    w.id(&state.lkg.unwrap_or(ContentId::NONE));
    w.id(&state.candidate.unwrap_or(ContentId::NONE));
    let (quarantine, events, next_event) = state.raw_parts();
    w.put(&[u8::try_from(quarantine.len()).unwrap_or(0), 0, 0, 0]);
    w.put(&next_event.to_le_bytes());
    for q in quarantine {
        w.id(q);
    }
    w.at = EVENTS_AT;
    for e in events {
        if e.seq == 0 {
            w.at = w.at.saturating_add(EVENT_BYTES);
            continue;
        }
        w.put(&e.seq.to_le_bytes());
        w.put(&e.time.to_le_bytes());
        w.put(&e.kind.code().to_le_bytes());
        w.put(&[e.attempts, 0]);
        w.put(&e.detail.to_le_bytes());
        w.id(&e.content);
    }
}

struct R<'a> {
    buf: &'a [u8],
    at: usize,
}

impl R<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        if let Some(s) = self.buf.get(self.at..self.at.saturating_add(N)) {
            a.copy_from_slice(s);
        }
        self.at = self.at.saturating_add(N);
        a
    }
    fn u8(&mut self) -> u8 {
        let [b] = self.take::<1>();
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn id(&mut self) -> ContentId {
        ContentId {
            version: self.u64(),
            hash: self.take(),
        }
    }
}

fn bad(field: &'static str, offset: usize, value: u64) -> RecordError {
    RecordError::BadField {
        field,
        offset,
        value,
    }
}

/// Decodes a record. Length, magic, version and CRC are checked before any field is read, and
/// every field is checked after, the record must be exactly the bytes this guard writes for the
/// state it decodes to, and its fields must agree with each other ([`check`]): a record that
/// fails any check is never trusted.
///
/// The state is returned boxed and filled in place: it is kilobytes, and this runs on a kernel
/// stack.
pub fn decode(bytes: &[u8]) -> Result<Box<State>, RecordError> {
    if bytes.len() != RECORD_BYTES {
        return Err(RecordError::WrongLength {
            len: bytes.len(),
            expected: RECORD_BYTES,
        });
    }
    let mut r = R { buf: bytes, at: 0 };
    let magic: [u8; 4] = r.take();
    if magic != MAGIC {
        return Err(RecordError::BadMagic { found: magic });
    }
    let version = r.u16();
    if version != RECORD_VERSION {
        return Err(RecordError::UnsupportedVersion {
            found: version,
            supported: RECORD_VERSION,
        });
    }
    let computed = crc32(bytes.get(..CRC_AT).unwrap_or(&[]));
    let stored = u32::from_le_bytes(
        R {
            buf: bytes,
            at: CRC_AT,
        }
        .take(),
    );
    if stored != computed {
        return Err(RecordError::BadCrc { stored, computed });
    }
    let len = r.u16();
    if usize::from(len) != RECORD_BYTES {
        return Err(bad("record length", 6, u64::from(len)));
    }
    let seq = r.u64();
    if seq == 0 {
        return Err(bad("sequence number", 8, 0));
    }
    let mut state = Box::new(State::new(r.u32()));
    state.seq = seq;
    state.newest = r.u64();
    state.boots = r.u64();
    let flags = r.u8();
    if flags & !3 != 0 {
        return Err(bad("flags", 36, u64::from(flags)));
    }
    state.attempts = r.u8();
    state.lkg_attempts = r.u8();
    let active = r.u8();
    state.active = Active::from_u8(active).ok_or(bad("active", 39, u64::from(active)))?;
    let lkg = r.id();
    let candidate = r.id();
    state.lkg = (flags & 1 != 0).then_some(lkg);
    state.candidate = (flags & 2 != 0).then_some(candidate);
    let qlen = r.u8();
    if usize::from(qlen) > MAX_QUARANTINE {
        return Err(bad("quarantine entries", 120, u64::from(qlen)));
    }
    let reserved = [r.u8(), r.u8(), r.u8()];
    if reserved != [0; 3] {
        return Err(bad("reserved", 121, 0));
    }
    let next_event = r.u64();
    if next_event == 0 {
        return Err(bad("next event sequence number", 124, 0));
    }
    let (quarantine, events) = state.raw_arrays_mut();
    for q in quarantine.iter_mut() {
        *q = r.id();
    }
    for (i, e) in events.iter_mut().enumerate() {
        let at = EVENTS_AT.saturating_add(i.saturating_mul(EVENT_BYTES));
        let mut er = R { buf: bytes, at };
        let seq = er.u64();
        if seq == 0 {
            continue;
        }
        if seq >= next_event || seq.checked_rem(MAX_EVENTS as u64) != Some(i as u64) {
            return Err(bad("event sequence number", at, seq));
        }
        let time = er.u64();
        let code = er.u16();
        let kind = EventKind::from_code(code).ok_or(bad(
            "event kind",
            at.saturating_add(16),
            u64::from(code),
        ))?;
        let attempts = er.u8();
        let _reserved = er.u8();
        *e = Event {
            seq,
            time,
            kind,
            attempts,
            detail: er.u32(),
            content: er.id(),
        };
    }
    state.set_raw_lengths(qlen, next_event);
    // Exactly what this guard writes for that state, byte for byte: unused entries, absent slots
    // and reserved bytes are zero, so no two byte strings decode to the same record. The CRC
    // needs no second look: it was checked against these very bytes above. Compared as slices
    // first (a vectorized compare), then searched for the offset only when they differ.
    let mut canonical = alloc::vec![0u8; RECORD_BYTES];
    if let Ok(record) = <&mut [u8; RECORD_BYTES]>::try_from(canonical.as_mut_slice()) {
        encode_body_into(&state, record);
    }
    let (ours, theirs) = (canonical.get(..CRC_AT), bytes.get(..CRC_AT));
    if ours != theirs {
        let offset = canonical
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(RecordError::NonCanonical { offset });
    }
    check(&state)?;
    Ok(state)
}

const NEWEST_AT: usize = 20;
const FLAGS_AT: usize = 36;
const ATTEMPTS_AT: usize = 37;
const LKG_ATTEMPTS_AT: usize = 38;
const ACTIVE_AT: usize = 39;
const LKG_AT: usize = 40;
const CANDIDATE_AT: usize = 80;
const NEXT_EVENT_AT: usize = 124;
const ENTRY_BYTES: usize = 40;
/// Where a content id's hash starts, after its u64 version.
const HASH_IN_ID: usize = 8;
/// Where an event's content id starts.
const CONTENT_IN_EVENT: usize = 24;
const FLOOR_RULE: &str = "the anti-downgrade floor must be at least every version the record names";

fn num(name: &'static str, offset: usize, value: u64) -> FieldRef {
    FieldRef {
        name,
        offset,
        value: Some(value),
    }
}

fn hash_at(name: &'static str, offset: usize) -> FieldRef {
    FieldRef {
        name,
        offset,
        value: None,
    }
}

fn inconsistent(
    field: FieldRef,
    relation: &'static str,
    other: FieldRef,
    rule: &'static str,
) -> RecordError {
    RecordError::Inconsistent {
        field,
        relation,
        other,
        rule,
    }
}

fn entry_at(base: usize, i: usize, size: usize) -> usize {
    base.saturating_add(i.saturating_mul(size))
}

/// Checks that a record's fields agree with each other, as they do in every record this guard
/// writes; [`decode`] runs it on every record it reads. The anti-downgrade floor (the newest
/// accepted version) is at least every version the record names: last-known-good, the candidate,
/// every quarantine entry and the content of every event that names accepted content (a refusal
/// or a failed store names content that was not accepted, so those are not counted). Content
/// versions are at least 1 (the floor starts at 0 and an update must be above it). The candidate
/// is newer than last-known-good and not quarantined; no pack is quarantined twice. What runs is
/// present (and a running candidate has its attempt counted); attempt counters belong to content
/// that is present and never exceed the largest threshold. The event ring holds exactly the
/// newest events before the next event sequence number, with no gaps.
pub fn check(state: &State) -> Result<(), RecordError> {
    let newest = num("newest accepted version", NEWEST_AT, state.newest);
    let flags = u64::from(state.lkg.is_some()) | (u64::from(state.candidate.is_some()) << 1);
    let flags = num("flags", FLAGS_AT, flags);
    let floor = |name: &'static str, offset: usize, version: u64| {
        if version > state.newest {
            Err(inconsistent(
                newest,
                "is below",
                num(name, offset, version),
                FLOOR_RULE,
            ))
        } else {
            Ok(())
        }
    };
    if let Some(l) = state.lkg {
        if l.version == 0 {
            return Err(bad("last-known-good version", LKG_AT, 0));
        }
        floor("last-known-good version", LKG_AT, l.version)?;
    }
    if let Some(c) = state.candidate {
        if c.version == 0 {
            return Err(bad("candidate version", CANDIDATE_AT, 0));
        }
        floor("candidate version", CANDIDATE_AT, c.version)?;
        if let Some(l) = state.lkg.filter(|l| c.version <= l.version) {
            return Err(inconsistent(
                num("candidate version", CANDIDATE_AT, c.version),
                "is not above",
                num("last-known-good version", LKG_AT, l.version),
                "a candidate is always newer than last-known-good (it was accepted after it)",
            ));
        }
    }
    let (quarantine, events, next_event) = state.raw_parts();
    for (i, q) in quarantine.iter().enumerate() {
        let at = entry_at(QUARANTINE_AT, i, ENTRY_BYTES);
        if q.version == 0 {
            return Err(bad("quarantine entry version", at, 0));
        }
        floor("quarantine entry version", at, q.version)?;
        if state.candidate.is_some_and(|c| c.hash == q.hash) {
            return Err(inconsistent(
                hash_at(
                    "candidate pack hash",
                    CANDIDATE_AT.saturating_add(HASH_IN_ID),
                ),
                "equals",
                hash_at("quarantine entry pack hash", at.saturating_add(HASH_IN_ID)),
                "quarantined content is never the candidate",
            ));
        }
        let earlier = quarantine.get(..i).unwrap_or(&[]);
        if let Some(j) = earlier.iter().position(|p| p.hash == q.hash) {
            return Err(inconsistent(
                hash_at("quarantine entry pack hash", at.saturating_add(HASH_IN_ID)),
                "repeats",
                hash_at(
                    "quarantine entry pack hash",
                    entry_at(QUARANTINE_AT, j, ENTRY_BYTES).saturating_add(HASH_IN_ID),
                ),
                "each quarantined pack is listed once",
            ));
        }
    }
    let running = |code: u64, what: &'static str| {
        inconsistent(
            num("active", ACTIVE_AT, code),
            what,
            flags,
            "only content the record holds can be running",
        )
    };
    match state.active {
        Active::Lkg if state.lkg.is_none() => {
            return Err(running(1, "names last-known-good, which is absent by"));
        }
        Active::Candidate if state.candidate.is_none() => {
            return Err(running(2, "names the candidate, which is absent by"));
        }
        Active::Candidate if state.attempts == 0 => {
            return Err(inconsistent(
                num("active", ACTIVE_AT, 2),
                "says the candidate runs, but counts no attempt in",
                num("candidate attempts", ATTEMPTS_AT, 0),
                "a running candidate's attempt is counted before it loads",
            ));
        }
        _ => {}
    }
    if state.attempts > MAX_THRESHOLD {
        return Err(bad(
            "candidate attempts",
            ATTEMPTS_AT,
            u64::from(state.attempts),
        ));
    }
    if state.candidate.is_none() && state.attempts != 0 {
        return Err(inconsistent(
            num("candidate attempts", ATTEMPTS_AT, u64::from(state.attempts)),
            "are counted with no candidate present by",
            flags,
            "attempts belong to the candidate",
        ));
    }
    if state.lkg_attempts > MAX_THRESHOLD {
        return Err(bad(
            "last-known-good unfinished runs",
            LKG_ATTEMPTS_AT,
            u64::from(state.lkg_attempts),
        ));
    }
    if state.lkg.is_none() && state.lkg_attempts != 0 {
        return Err(inconsistent(
            num(
                "last-known-good unfinished runs",
                LKG_ATTEMPTS_AT,
                u64::from(state.lkg_attempts),
            ),
            "are counted with no last-known-good present by",
            flags,
            "unfinished runs belong to last-known-good",
        ));
    }
    let first = next_event.saturating_sub(MAX_EVENTS as u64).max(1);
    for seq in first..next_event {
        let i = usize::try_from(seq.checked_rem(MAX_EVENTS as u64).unwrap_or(0)).unwrap_or(0);
        let at = entry_at(EVENTS_AT, i, EVENT_BYTES);
        let e = events.get(i).copied().unwrap_or(EMPTY_EVENT);
        if e.seq != seq {
            return Err(inconsistent(
                num("event sequence number", at, e.seq),
                "is not the event this slot holds before",
                num("next event sequence number", NEXT_EVENT_AT, next_event),
                "the event ring holds the newest 32 events, each in slot seq mod 32, with no gaps",
            ));
        }
        if e.attempts > MAX_THRESHOLD {
            return Err(bad(
                "event attempts",
                at.saturating_add(18),
                u64::from(e.attempts),
            ));
        }
        if !matches!(e.kind, EventKind::Refused | EventKind::StoreFailed) {
            floor(
                "event content version",
                at.saturating_add(CONTENT_IN_EVENT),
                e.content.version,
            )?;
        }
    }
    Ok(())
}
