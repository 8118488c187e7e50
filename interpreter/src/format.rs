//! The pack container: its byte layout, the encoder and the structural decoder.
//!
//! Layout (all integers little-endian; format version 2):
//!
//! ```text
//! header    magic "BWPK" | u16 format version | u16 flags (0) | u32 total length | [32] schema hash
//!           u8 event type count, then per type: u8 event type id, u8 field count
//! strings   u32 count, then per string: u32 length, u16 key window start, bytes (UTF-8)
//! sets      u32 count, then per set: u32 item count, u32 string index per item
//! ints      u32 count, then u64 per integer
//! regexes   u32 count, then per regex: u32 length, a serialized sparse DFA (regex-automata)
//! rules     u32 count, then per rule:
//!             u8 event type, u8 level, u8 action, u8 reserved (0)
//!             u32 id string, u32 title string, u32 author string
//!             u16 tag count, u32 string index per tag
//!             u16 anchor count, per anchor: u8 field, u32 string index
//!             u32 instruction count, 8 bytes per instruction (see `insn`)
//! checksum  [32] SHA-256 of every byte before it
//! ```
//!
//! A string's key window is the window of up to 3 bytes a prefilter keys it by when it is an
//! anchor or an item of a set tested with `contains` (`gramindex`): the compiler picks the least
//! common one; the verifier only checks it lies inside the string (any window finds the same
//! occurrences), so loading does not choose them again.
//!
//! Decoding here is structural only (lengths, counts, bounds of the container): it yields a
//! [`RawPack`] that may still be unsafe to run. Only `verify` turns bytes into runnable content.

use alloc::vec::Vec;
use sha2::{Digest, Sha256};

use crate::error::{ErrorKind, VerifyError};
use crate::insn::RawInsn;
use crate::limits;

/// The magic bytes that open every pack.
pub const MAGIC: [u8; 4] = *b"BWPK";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 2;
/// Bytes of the checksum trailer.
pub const CHECKSUM_BYTES: usize = 32;
/// Bytes of the fixed part of the header.
pub const FIXED_HEADER_BYTES: usize = 4 + 2 + 2 + 4 + 32;

/// One rule as it stands in a pack.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RawRule {
    /// Event type id.
    pub event_type: u8,
    /// Level byte.
    pub level: u8,
    /// Action byte.
    pub action: u8,
    /// Reserved byte (must be 0).
    pub reserved: u8,
    /// String index of the rule id.
    pub id: u32,
    /// String index of the title.
    pub title: u32,
    /// String index of the author.
    pub author: u32,
    /// String indices of the tags.
    pub tags: Vec<u32>,
    /// Prefilter anchors: (field, string index).
    pub anchors: Vec<(u8, u32)>,
    /// The code.
    pub code: Vec<RawInsn>,
    /// Byte offset of the rule in the pack (set by the decoder; ignored by the encoder).
    pub offset: usize,
    /// Byte offset of the first instruction (set by the decoder; ignored by the encoder).
    pub code_offset: usize,
}

/// A pack's contents, structurally decoded but not verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawPack {
    /// Magic bytes.
    pub magic: [u8; 4],
    /// Format version.
    pub format_version: u16,
    /// Header flags (must be 0).
    pub flags: u16,
    /// Hash of the schema the pack was built for.
    pub schema_hash: [u8; 32],
    /// Declared event types: (id, field count).
    pub event_types: Vec<(u8, u8)>,
    /// Constant strings (bytes; UTF-8 is checked by the verifier).
    pub strings: StringTable,
    /// String sets (string indices).
    pub sets: Vec<Vec<u32>>,
    /// Integer constants.
    pub ints: Vec<u64>,
    /// Serialized sparse DFAs.
    pub regexes: Vec<Vec<u8>>,
    /// Rules.
    pub rules: Vec<RawRule>,
    /// Byte offsets of each string, set and regex (set by the decoder).
    pub offsets: Offsets,
}

/// The pack's constant strings, in one allocation (a [`Ragged`] of bytes), and where each one's
/// key window starts. Not checked UTF-8, nor the key windows: the verifier does that.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StringTable {
    strings: Ragged<u8>,
    key_windows: Vec<u16>,
}

impl StringTable {
    /// An empty table with room for `count` strings of `bytes` bytes in total.
    pub fn with_capacity(count: usize, bytes: usize) -> StringTable {
        StringTable {
            strings: Ragged {
                items: Vec::with_capacity(bytes),
                ends: Vec::with_capacity(count),
            },
            key_windows: Vec::with_capacity(count),
        }
    }

    /// Appends a string with the key window the prefilter would choose for it; its index is the
    /// previous [`StringTable::len`].
    pub fn push(&mut self, s: &[u8]) {
        let start = crate::gramindex::key_window_start(s);
        self.push_keyed(s, u16::try_from(start).unwrap_or(u16::MAX));
    }

    /// Appends a string whose key window starts at `key_window` (as decoded, unchecked).
    pub fn push_keyed(&mut self, s: &[u8], key_window: u16) {
        self.strings.items.extend_from_slice(s);
        self.strings.end_list();
        self.key_windows.push(key_window);
    }

    /// Where string `index`'s key window starts, if there is such a string.
    pub fn key_window(&self, index: usize) -> Option<u16> {
        self.key_windows.get(index).copied()
    }

    /// Sets where string `index`'s key window starts (to write any bytes, valid or not, as the
    /// assembler's raw access does).
    pub fn set_key_window(&mut self, index: usize, start: u16) {
        if let Some(k) = self.key_windows.get_mut(index) {
            *k = start;
        }
    }

    /// String `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.strings.get(index)
    }

    /// How many strings there are.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.strings.len() == 0
    }

    /// The strings in index order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// Where item `index` of a concatenation lies, given where each item ends: from the previous end
/// (0 for the first) to its own.
pub(crate) fn span(ends: &[usize], index: usize) -> Option<core::ops::Range<usize>> {
    let end = *ends.get(index)?;
    let start = match index.checked_sub(1) {
        Some(prev) => *ends.get(prev)?,
        None => 0,
    };
    Some(start..end)
}

impl<S: AsRef<[u8]>> FromIterator<S> for StringTable {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> StringTable {
        let mut table = StringTable::default();
        for s in iter {
            table.push(s.as_ref());
        }
        table
    }
}

/// Lists of `T` in one allocation: list `i` is `items[ends[i - 1]..ends[i]]` (from 0 for the
/// first). The pack's strings, sets, and rules' lists are each one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ragged<T> {
    items: Vec<T>,
    ends: Vec<usize>,
}

impl<T> Default for Ragged<T> {
    fn default() -> Self {
        Ragged {
            items: Vec::new(),
            ends: Vec::new(),
        }
    }
}

impl<T> Ragged<T> {
    fn with_capacity(lists: usize) -> Self {
        Ragged {
            items: Vec::new(),
            ends: Vec::with_capacity(lists),
        }
    }

    /// Ends the list being built: the items pushed since the last end are list [`Ragged::len`].
    fn end_list(&mut self) {
        self.ends.push(self.items.len());
    }

    /// Adds a list of the items `fill` pushes, if it returns `true`; if not, drops them.
    pub(crate) fn push_list_with(&mut self, fill: impl FnOnce(&mut Vec<T>) -> bool) -> bool {
        let start = self.items.len();
        if fill(&mut self.items) {
            self.end_list();
            true
        } else {
            self.items.truncate(start);
            false
        }
    }

    /// List `index`, if there is one.
    pub(crate) fn get(&self, index: usize) -> Option<&[T]> {
        self.items.get(span(&self.ends, index)?)
    }

    /// How many lists there are.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The lists in index order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[T]> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// One rule as decoded for the verifier: [`RawRule`] without its lists, which are the rule's
/// entries in the [`FlatPack`]'s tables.
#[derive(Clone, Debug)]
pub(crate) struct FlatRule {
    pub(crate) event_type: u8,
    pub(crate) level: u8,
    pub(crate) action: u8,
    pub(crate) reserved: u8,
    pub(crate) id: u32,
    pub(crate) title: u32,
    pub(crate) author: u32,
    pub(crate) offset: usize,
    pub(crate) code_offset: usize,
}

/// A pack's contents as the verifier reads them: a [`RawPack`] whose sets and whose rules'
/// tags, anchors and code are each one table, so decoding costs a few allocations, not a few
/// per rule (in the driver every allocation is a pool allocation).
#[derive(Clone, Debug)]
pub(crate) struct FlatPack {
    pub(crate) magic: [u8; 4],
    pub(crate) format_version: u16,
    pub(crate) flags: u16,
    pub(crate) schema_hash: [u8; 32],
    pub(crate) event_types: Vec<(u8, u8)>,
    pub(crate) strings: StringTable,
    pub(crate) sets: Ragged<u32>,
    pub(crate) ints: Vec<u64>,
    pub(crate) regexes: Vec<Vec<u8>>,
    pub(crate) rules: Vec<FlatRule>,
    /// By rule index.
    pub(crate) tags: Ragged<u32>,
    /// By rule index.
    pub(crate) anchors: Ragged<(u8, u32)>,
    /// By rule index.
    pub(crate) code: Ragged<RawInsn>,
    pub(crate) offsets: Offsets,
}

impl FlatPack {
    /// The same content with a vector per set and per rule list.
    fn into_raw(self) -> RawPack {
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| RawRule {
                event_type: r.event_type,
                level: r.level,
                action: r.action,
                reserved: r.reserved,
                id: r.id,
                title: r.title,
                author: r.author,
                tags: self.tags.get(i).unwrap_or(&[]).to_vec(),
                anchors: self.anchors.get(i).unwrap_or(&[]).to_vec(),
                code: self.code.get(i).unwrap_or(&[]).to_vec(),
                offset: r.offset,
                code_offset: r.code_offset,
            })
            .collect();
        RawPack {
            magic: self.magic,
            format_version: self.format_version,
            flags: self.flags,
            schema_hash: self.schema_hash,
            event_types: self.event_types,
            strings: self.strings,
            sets: self.sets.iter().map(<[u32]>::to_vec).collect(),
            ints: self.ints,
            regexes: self.regexes,
            rules,
            offsets: self.offsets,
        }
    }
}

/// Where things were found, for error messages.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Offsets {
    /// Offset of each string.
    pub strings: Vec<usize>,
    /// Offset of each set.
    pub sets: Vec<usize>,
    /// Offset of each regex.
    pub regexes: Vec<usize>,
    /// Offset of the event type table.
    pub event_types: usize,
}

impl Default for RawPack {
    fn default() -> Self {
        RawPack {
            magic: MAGIC,
            format_version: FORMAT_VERSION,
            flags: 0,
            schema_hash: crate::schema::schema_hash(),
            event_types: crate::schema::EventType::ALL
                .iter()
                .map(|t| (t.id(), t.field_count()))
                .collect(),
            strings: StringTable::default(),
            sets: Vec::new(),
            ints: Vec::new(),
            regexes: Vec::new(),
            rules: Vec::new(),
            offsets: Offsets::default(),
        }
    }
}

/// A checked-arithmetic `usize -> u32` conversion for lengths the encoder writes; lengths past
/// `u32::MAX` are clamped, which makes the pack fail verification rather than panic here.
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl RawPack {
    /// Encodes the pack, computing the total length and checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.magic);
        out.extend_from_slice(&self.format_version.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // total length, patched below
        out.extend_from_slice(&self.schema_hash);
        out.push(u8::try_from(self.event_types.len()).unwrap_or(u8::MAX));
        for (id, n) in &self.event_types {
            out.extend_from_slice(&[*id, *n]);
        }
        out.extend_from_slice(&len32(self.strings.len()).to_le_bytes());
        for (i, s) in self.strings.iter().enumerate() {
            out.extend_from_slice(&len32(s.len()).to_le_bytes());
            let key = self.strings.key_window(i).unwrap_or(0);
            out.extend_from_slice(&key.to_le_bytes());
            out.extend_from_slice(s);
        }
        out.extend_from_slice(&len32(self.sets.len()).to_le_bytes());
        for set in &self.sets {
            out.extend_from_slice(&len32(set.len()).to_le_bytes());
            for i in set {
                out.extend_from_slice(&i.to_le_bytes());
            }
        }
        out.extend_from_slice(&len32(self.ints.len()).to_le_bytes());
        for i in &self.ints {
            out.extend_from_slice(&i.to_le_bytes());
        }
        out.extend_from_slice(&len32(self.regexes.len()).to_le_bytes());
        for r in &self.regexes {
            out.extend_from_slice(&len32(r.len()).to_le_bytes());
            out.extend_from_slice(r);
        }
        out.extend_from_slice(&len32(self.rules.len()).to_le_bytes());
        for r in &self.rules {
            out.extend_from_slice(&[r.event_type, r.level, r.action, r.reserved]);
            out.extend_from_slice(&r.id.to_le_bytes());
            out.extend_from_slice(&r.title.to_le_bytes());
            out.extend_from_slice(&r.author.to_le_bytes());
            out.extend_from_slice(
                &u16::try_from(r.tags.len())
                    .unwrap_or(u16::MAX)
                    .to_le_bytes(),
            );
            for t in &r.tags {
                out.extend_from_slice(&t.to_le_bytes());
            }
            out.extend_from_slice(
                &u16::try_from(r.anchors.len())
                    .unwrap_or(u16::MAX)
                    .to_le_bytes(),
            );
            for (f, s) in &r.anchors {
                out.push(*f);
                out.extend_from_slice(&s.to_le_bytes());
            }
            out.extend_from_slice(&len32(r.code.len()).to_le_bytes());
            for i in &r.code {
                out.extend_from_slice(&i.to_bytes());
            }
        }
        let total = len32(out.len().saturating_add(CHECKSUM_BYTES)).to_le_bytes();
        if let Some(slot) = out.get_mut(8..12) {
            slot.copy_from_slice(&total);
        }
        let sum: [u8; 32] = Sha256::digest(&out).into();
        out.extend_from_slice(&sum);
        out
    }

    /// Structurally decodes a pack: header, counts, lengths and the checksum. Every count is
    /// checked against the fixed limits before anything is allocated for it.
    pub fn decode(bytes: &[u8]) -> Result<RawPack, VerifyError> {
        Self::decode_flat(bytes).map(|(flat, _)| flat.into_raw())
    }

    /// [`RawPack::decode`] into a [`FlatPack`], also returning the SHA-256 of all of `bytes`
    /// (the pack's content hash), computed in the same pass as the checksum.
    pub(crate) fn decode_flat(bytes: &[u8]) -> Result<(FlatPack, [u8; 32]), VerifyError> {
        if bytes.len() > limits::MAX_PACK_BYTES {
            return Err(VerifyError::at(
                0,
                ErrorKind::TooLarge {
                    size: bytes.len(),
                    limit: limits::MAX_PACK_BYTES,
                },
            ));
        }
        let min = FIXED_HEADER_BYTES
            .saturating_add(1)
            .saturating_add(CHECKSUM_BYTES);
        if bytes.len() < min {
            return Err(VerifyError::at(
                0,
                ErrorKind::TooShort {
                    size: bytes.len(),
                    minimum: min,
                },
            ));
        }
        let mut r = Reader { bytes, pos: 0 };
        let magic: [u8; 4] = r.array("magic")?;
        if magic != MAGIC {
            return Err(VerifyError::at(0, ErrorKind::BadMagic { found: magic }));
        }
        let format_version = r.u16("format version")?;
        if format_version != FORMAT_VERSION {
            return Err(VerifyError::at(
                4,
                ErrorKind::UnsupportedVersion {
                    found: format_version,
                    supported: FORMAT_VERSION,
                },
            ));
        }
        let flags = r.u16("flags")?;
        let total = r.u32("total length")?;
        if usize::try_from(total).ok() != Some(bytes.len()) {
            return Err(VerifyError::at(
                8,
                ErrorKind::LengthMismatch {
                    declared: total,
                    actual: bytes.len(),
                },
            ));
        }
        // The checksum covers everything before it; check it before trusting any count.
        let body_len = bytes.len().saturating_sub(CHECKSUM_BYTES);
        let (body, sum) = bytes.split_at(body_len);
        let mut hasher = Sha256::new();
        hasher.update(body);
        let computed: [u8; 32] = hasher.clone().finalize().into();
        if computed.as_slice() != sum {
            return Err(VerifyError::at(body_len, ErrorKind::ChecksumMismatch));
        }
        hasher.update(sum);
        let content_hash: [u8; 32] = hasher.finalize().into();
        let mut r = Reader {
            bytes: body,
            pos: r.pos,
        };
        let schema_hash: [u8; 32] = r.array("schema hash")?;
        let et_offset = r.pos;
        let n_types = r.u8("event type count")?;
        let mut event_types = Vec::new();
        for _ in 0..n_types {
            let id = r.u8("event type id")?;
            let n = r.u8("field count")?;
            event_types.push((id, n));
        }

        let mut offsets = Offsets {
            event_types: et_offset,
            ..Offsets::default()
        };
        let n = r.count("string count", limits::MAX_STRINGS, 6)?;
        // A first pass sums the strings' lengths so their table is allocated once; a malformed
        // length stops it, and the second pass reports it.
        let mut total = 0usize;
        let mut sizing = Reader {
            bytes: r.bytes,
            pos: r.pos,
        };
        for _ in 0..n {
            let Ok(len) = sizing.count("string length", limits::MAX_STRING_BYTES, 1) else {
                break;
            };
            if sizing.take(2, "key window").is_err() || sizing.take(len, "string bytes").is_err() {
                break;
            }
            total = total.saturating_add(len);
        }
        let mut strings = StringTable::with_capacity(n, total);
        for _ in 0..n {
            offsets.strings.push(r.pos);
            let len = r.count("string length", limits::MAX_STRING_BYTES, 1)?;
            let key = r.u16("key window")?;
            strings.push_keyed(r.take(len, "string bytes")?, key);
        }
        let n = r.count("set count", limits::MAX_SETS, 4)?;
        let mut sets = Ragged::with_capacity(n);
        for _ in 0..n {
            offsets.sets.push(r.pos);
            let m = r.count("set item count", limits::MAX_SET_ITEMS, 4)?;
            sets.items.reserve(m);
            for _ in 0..m {
                sets.items.push(r.u32("set item")?);
            }
            sets.end_list();
        }
        let n = r.count("integer count", limits::MAX_INTS, 8)?;
        let mut ints = Vec::with_capacity(n);
        for _ in 0..n {
            ints.push(r.u64("integer")?);
        }
        let n = r.count("regex count", limits::MAX_REGEXES, 4)?;
        let mut regexes = Vec::with_capacity(n);
        let mut regex_total = 0usize;
        for _ in 0..n {
            offsets.regexes.push(r.pos);
            let len = r.count("regex length", limits::MAX_REGEX_BYTES, 1)?;
            regex_total = regex_total.saturating_add(len);
            if regex_total > limits::MAX_REGEX_TOTAL_BYTES {
                return Err(VerifyError::at(
                    r.pos,
                    ErrorKind::LimitExceeded {
                        what: "regex bytes in total",
                        limit: limits::MAX_REGEX_TOTAL_BYTES,
                        found: regex_total,
                    },
                ));
            }
            regexes.push(r.take(len, "regex bytes")?.to_vec());
        }
        let n = r.count("rule count", limits::MAX_RULES, 24)?;
        let mut rules = Vec::with_capacity(n);
        let mut tags = Ragged::with_capacity(n);
        let mut anchors = Ragged::with_capacity(n);
        let mut code = Ragged::with_capacity(n);
        let mut insn_total = 0usize;
        for index in 0..n {
            let offset = r.pos;
            let ctx = |e: VerifyError| e.in_rule(index, None);
            let [event_type, level, action, reserved] = r.array("rule header").map_err(ctx)?;
            let id = r.u32("rule id").map_err(ctx)?;
            let title = r.u32("rule title").map_err(ctx)?;
            let author = r.u32("rule author").map_err(ctx)?;
            let nt = r
                .count16("tag count", limits::MAX_TAGS_PER_RULE)
                .map_err(ctx)?;
            for _ in 0..nt {
                tags.items.push(r.u32("tag").map_err(ctx)?);
            }
            tags.end_list();
            let na = r
                .count16("anchor count", limits::MAX_ANCHORS_PER_RULE)
                .map_err(ctx)?;
            for _ in 0..na {
                let f = r.u8("anchor field").map_err(ctx)?;
                let s = r.u32("anchor string").map_err(ctx)?;
                anchors.items.push((f, s));
            }
            anchors.end_list();
            let ni = r
                .count(
                    "instruction count",
                    limits::MAX_INSNS_PER_RULE,
                    RawInsn::SIZE,
                )
                .map_err(ctx)?;
            insn_total = insn_total.saturating_add(ni);
            if insn_total > limits::MAX_INSNS {
                return Err(ctx(VerifyError::at(
                    r.pos,
                    ErrorKind::LimitExceeded {
                        what: "instructions in the pack",
                        limit: limits::MAX_INSNS,
                        found: insn_total,
                    },
                )));
            }
            let code_offset = r.pos;
            code.items.reserve(ni);
            for _ in 0..ni {
                code.items
                    .push(RawInsn::from_bytes(r.array("instruction").map_err(ctx)?));
            }
            code.end_list();
            rules.push(FlatRule {
                event_type,
                level,
                action,
                reserved,
                id,
                title,
                author,
                offset,
                code_offset,
            });
        }
        if r.pos != body.len() {
            return Err(VerifyError::at(
                r.pos,
                ErrorKind::TrailingBytes {
                    count: body.len().saturating_sub(r.pos),
                },
            ));
        }
        let raw = FlatPack {
            magic,
            format_version,
            flags,
            schema_hash,
            event_types,
            strings,
            sets,
            ints,
            regexes,
            rules,
            tags,
            anchors,
            code,
            offsets,
        };
        Ok((raw, content_hash))
    }
}

/// A bounds-checked little-endian reader that reports the byte offset of anything missing.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], VerifyError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.bytes.get(self.pos..end)) {
            Some(s) => {
                self.pos = self.pos.saturating_add(n);
                Ok(s)
            }
            None => Err(VerifyError::at(self.pos, ErrorKind::Truncated { what })),
        }
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], VerifyError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, VerifyError> {
        Ok(u8::from_le_bytes(self.array(what)?))
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, VerifyError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, VerifyError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, VerifyError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A u32 count, checked against its limit and against the bytes left (each item takes at
    /// least `min_item_bytes`), so a forged count cannot make the decoder allocate.
    fn count(
        &mut self,
        what: &'static str,
        limit: usize,
        min_item_bytes: usize,
    ) -> Result<usize, VerifyError> {
        let at = self.pos;
        let n = usize::try_from(self.u32(what)?).unwrap_or(usize::MAX);
        self.check_count(at, what, n, limit, min_item_bytes)
    }
    fn count16(&mut self, what: &'static str, limit: usize) -> Result<usize, VerifyError> {
        let at = self.pos;
        let n = usize::from(self.u16(what)?);
        self.check_count(at, what, n, limit, 4)
    }
    fn check_count(
        &self,
        at: usize,
        what: &'static str,
        n: usize,
        limit: usize,
        min_item_bytes: usize,
    ) -> Result<usize, VerifyError> {
        if n > limit {
            return Err(VerifyError::at(
                at,
                ErrorKind::LimitExceeded {
                    what,
                    limit,
                    found: n,
                },
            ));
        }
        let left = self.bytes.len().saturating_sub(self.pos);
        if n.saturating_mul(min_item_bytes) > left {
            return Err(VerifyError::at(at, ErrorKind::Truncated { what }));
        }
        Ok(n)
    }
}
