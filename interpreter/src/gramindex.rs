//! A multi-literal substring index built at load time in one linear pass, with no automaton: each
//! literal is keyed by one short window of its ASCII-case-folded bytes (its whole self when it is
//! at most [`GRAM`] bytes long, else its least common window of [`GRAM`] bytes: windows of text
//! every Windows event is full of, such as `m32` of `system32`, last), and a scan slides over the
//! text once, testing each window against a bitmap, probing a hash table only on a bitmap hit, and
//! confirming every literal keyed by that window at the one place it would have to start. So a
//! scan reports exactly the (literal, position) pairs where a literal occurs, ASCII case folded,
//! at about one bitmap test per byte per distinct window length.
//!
//! A rule prefilter whose literals are all long (hashes) is *strided*: each literal is keyed by
//! `STRIDE` consecutive windows, and a scan tests only every `STRIDE`-th window of the text, which
//! meets exactly one of them per occurrence.
//!
//! It is the rule prefilter (literal → rules) and the index behind `set.contains` (item → item
//! position in the set). All of a pack's indexes keep their tables in one [`GramStore`], so
//! loading a pack allocates per kind of table, not per index. Building allocates; scanning never
//! does.

use alloc::vec::Vec;

/// The longest window a literal is keyed by.
pub(crate) const GRAM: usize = 3;

/// The stride of an index of long literals only (see `GramIndex::strided`).
const STRIDE: usize = 4;

/// Literals at least this long make an index strided (hashes, long paths: most of an index's
/// windows then need no test).
const STRIDED_MIN_LEN: usize = 16;

/// How common a byte is in Windows paths and command lines, most common first; the window a long
/// literal is keyed by is the one whose bytes are least common by this order, so a scan confirms
/// as few literals as possible. Bytes not listed count as rare.
const COMMON: &[u8] = b" e\\.stoiarnclmx:wdpu-h\"g/0123ybfv4k=5_698,'%jq";

/// [`COMMON`] as a table: byte → commonness (0 for rare bytes), both ASCII cases alike.
static COMMONNESS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut p = 0;
    while p < COMMON.len() {
        // COMMON is shorter than 256 and ASCII, so these neither overflow nor index out of range.
        #[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
        {
            let c = COMMON[p];
            let score = (COMMON.len() - p) as u8;
            table[c as usize] = score;
            table[c.to_ascii_uppercase() as usize] = score;
            p += 1;
        }
    }
    table
};

/// Text every Windows machine's process events are full of (system paths, the processes that
/// always run, hash prefixes), lower case. Its 3-byte windows are avoided as keys: a literal keyed
/// by `m32` (of `system32`) would be confirmed on nearly every event.
const COMMON_TEXT: &[u8] =
    b"c:\\windows\\system32\\ c:\\windows\\syswow64\\ c:\\windows\\winsxs\\ \
c:\\program files (x86)\\ c:\\program files\\common files\\ c:\\programdata\\ c:\\users\\ \
\\appdata\\local\\temp\\ \\appdata\\roaming\\ \\microsoft\\windows\\ \
\\windowspowershell\\v1.0\\powershell.exe svchost.exe -k netsvcs -p -s services.exe explorer.exe \
conhost.exe cmd.exe /c rundll32.exe dllhost.exe /processid: msiexec.exe taskhostw.exe \
runtimebroker.exe searchindexer.exe wmiprvse.exe chrome.exe msedge.exe nt authority\\system integrity medium high \
sha256= sha1= md5= imphash= .dll .exe .tmp .txt";

/// Bits of a 4096-bit set of the 3-byte windows of [`COMMON_TEXT`], by [`common_window_bit`].
static COMMON_WINDOWS: [u64; 64] = {
    let mut set = [0u64; 64];
    let mut i = 2;
    while i < COMMON_TEXT.len() {
        // `i - 2` and `i` are in range; the bit index is below 4096.
        #[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
        {
            let w = ((COMMON_TEXT[i - 2] as u64) << 16)
                | ((COMMON_TEXT[i - 1] as u64) << 8)
                | COMMON_TEXT[i] as u64;
            let bit = common_window_bit(w);
            set[bit / 64] |= 1u64 << (bit % 64);
            i += 1;
        }
    }
    set
};

/// Where a 3-byte window (folded bytes, big-endian) falls in [`COMMON_WINDOWS`].
const fn common_window_bit(window: u64) -> usize {
    (window.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize
}

/// Whether bit `bit` of the bit set `words` is set (false past its end).
fn has_bit(words: &[u64], bit: usize) -> bool {
    words
        .get(bit / 64)
        .is_some_and(|w| w & (1u64 << (bit % 64)) != 0)
}

/// Sets bit `bit` of the bit set `words` (nothing past its end).
fn set_bit(words: &mut [u64], bit: usize) {
    if let Some(w) = words.get_mut(bit / 64) {
        *w |= 1u64 << (bit % 64);
    }
}

/// Whether the (folded) 3-byte window is common in Windows process events (or shares its bit
/// with one that is).
fn common_window(window: u64) -> bool {
    has_bit(&COMMON_WINDOWS, common_window_bit(window))
}

/// Added to a window's score when it is a window of [`COMMON_TEXT`]: more than any byte
/// commonness can sum to, so such windows come last.
const COMMON_WINDOW_PENALTY: u32 = 1 << 16;

/// How many bytes of `lit` lie in none of its (folded) 3-byte windows that are windows of
/// [`COMMON_TEXT`]: what is left of a literal once the text every event is full of is discounted.
pub(crate) fn uncommon_bytes(lit: &[u8]) -> usize {
    // Bit `k` of `covered`: byte `i - k` is in a common window seen so far.
    let mut window = 0u64;
    let mut covered = 0u32;
    let mut uncommon = 0usize;
    for (i, &b) in lit.iter().enumerate() {
        window = ((window << 8) | u64::from(b.to_ascii_lowercase())) & 0xFF_FFFF;
        covered <<= 1;
        if i >= GRAM - 1 && common_window(window) {
            covered |= 0b111;
        }
        // Byte `i - 2` can be covered by no later window: count it now.
        if i >= GRAM - 1 && covered & 0b100 == 0 {
            uncommon = uncommon.saturating_add(1);
        }
    }
    // The last two bytes (or all, if fewer than three): covered only by the windows seen.
    let tail = lit.len().min(GRAM - 1);
    for k in 0..tail {
        if covered & (1 << k) == 0 {
            uncommon = uncommon.saturating_add(1);
        }
    }
    uncommon
}

/// Whether `b` is rare in Windows paths and command lines (not in [`COMMON`]).
pub(crate) fn rare_byte(b: u8) -> bool {
    commonness(b) == 0
}

fn commonness(b: u8) -> u32 {
    u32::from(COMMONNESS.get(usize::from(b)).copied().unwrap_or(0))
}

/// Where literal `lit` is best keyed: the end of its key window, the whole literal when it is at
/// most [`GRAM`] bytes long, else its least common window of [`GRAM`] bytes, the first of equals
/// (windows of [`COMMON_TEXT`] last, then by the commonness of their bytes). The compiler records
/// it in the pack for every string (`key_window_start`); loading only checks it.
fn key_window_end(lit: &[u8]) -> usize {
    let mut best = (lit.len().min(GRAM), u32::MAX);
    let mut score = 0u32;
    let mut window = 0u64;
    for (i, &b) in lit.iter().enumerate() {
        window = ((window << 8) | u64::from(b.to_ascii_lowercase())) & 0xFF_FFFF;
        score = score.saturating_add(commonness(b));
        if let Some(gone) = i.checked_sub(GRAM).and_then(|o| lit.get(o)) {
            score = score.saturating_sub(commonness(*gone));
        }
        let end = i.saturating_add(1);
        // The penalty only adds, so it is looked up only for a window that could be best.
        if end >= GRAM && score < best.1 {
            let penalty = if common_window(window) {
                COMMON_WINDOW_PENALTY
            } else {
                0
            };
            if score.saturating_add(penalty) < best.1 {
                best = (end, score.saturating_add(penalty));
            }
        }
    }
    best.0
}

/// Where the key window [`key_window_end`] chooses for `lit` starts: what a pack records for
/// each of its strings.
pub(crate) fn key_window_start(lit: &[u8]) -> usize {
    key_window_end(lit).saturating_sub(lit.len().min(GRAM))
}

/// A hash of a literal's folded bytes cheap enough to take of every literal at load: its length
/// and its first and last eight bytes. Literals it confuses are still told apart when an index is
/// built (their bytes are compared); it only brings equal literals together.
fn literal_hash(lit: &[u8]) -> u64 {
    let word = |b: &[u8]| {
        b.iter()
            .fold(0u64, |w, &c| (w << 8) | u64::from(c.to_ascii_lowercase()))
    };
    let head = word(lit.get(..8).unwrap_or(lit));
    let tail = word(lit.get(lit.len().saturating_sub(8)..).unwrap_or(lit));
    let len = u64::try_from(lit.len()).unwrap_or(u64::MAX);
    (head.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ tail.rotate_left(29) ^ len)
        .wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// For a strided index: where the `STRIDE` consecutive windows a literal is keyed by end (the
/// last of them), the span whose windows are least common by the same order as
/// [`key_window_end`]. `lit` is at least `GRAM + STRIDE - 1` bytes long.
fn key_span(lit: &[u8]) -> usize {
    // Rolling: the last `STRIDE` window scores and their sum.
    let mut recent = [0u32; STRIDE];
    let mut sum = 0u32;
    let mut best = (lit.len(), u32::MAX);
    let mut window = 0u64;
    let mut bytes_score = 0u32;
    for (i, &b) in lit.iter().enumerate() {
        window = ((window << 8) | u64::from(b.to_ascii_lowercase())) & 0xFF_FFFF;
        bytes_score = bytes_score.saturating_add(commonness(b));
        if let Some(gone) = i.checked_sub(GRAM).and_then(|o| lit.get(o)) {
            bytes_score = bytes_score.saturating_sub(commonness(*gone));
        }
        let end = i.saturating_add(1);
        if end < GRAM {
            continue;
        }
        let penalty = if common_window(window) {
            COMMON_WINDOW_PENALTY
        } else {
            0
        };
        let score = bytes_score.saturating_add(penalty);
        if let Some(slot) = recent.get_mut(end % STRIDE) {
            sum = sum.saturating_sub(*slot).saturating_add(score);
            *slot = score;
        }
        if end >= GRAM.saturating_add(STRIDE).saturating_sub(1) && sum < best.1 {
            best = (end, sum);
        }
    }
    best.0
}

/// The key of a window: its folded bytes, big-endian, tagged with its length so windows of
/// different lengths never collide.
fn key_of(window: &[u8]) -> u64 {
    let mut g: u64 = 0;
    for &b in window {
        g = (g << 8) | u64::from(b.to_ascii_lowercase());
    }
    g | (u64::try_from(window.len()).unwrap_or(0) << 32)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over the ASCII-lowercased bytes.
pub(crate) fn fold_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| fold_hash_step(h, b))
}

/// [`fold_hash`] one byte further: `fold_hash_step(fold_hash(a), b) == fold_hash(a + [b])`.
pub(crate) fn fold_hash_step(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(FNV_PRIME)
}

/// [`fold_hash`] of nothing.
pub(crate) const FOLD_HASH_EMPTY: u64 = FNV_OFFSET;

fn hash(key: u64) -> u64 {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Literals sharing one key.
#[derive(Clone, Debug)]
struct Entry {
    key: u64,
    /// `lits[first..end]` of the store.
    first: u32,
    end: u32,
}

/// One literal: its folded bytes in the store's `bytes`, where its key window ends inside it, and
/// its payloads.
#[derive(Clone, Debug)]
struct Lit {
    start: u32,
    len: u32,
    window_end: u32,
    /// `payloads[first..end]` of the store.
    first: u32,
    end: u32,
}

/// The tables of every gram index of a pack, each kind in one allocation whichever index it
/// belongs to: a pack has hundreds of indexes, most of them small, and loading it should not
/// cost an allocation per table per index. All positions stored in the tables are positions in
/// the store.
#[derive(Clone, Debug, Default)]
pub(crate) struct GramStore {
    bitmaps: Vec<u64>,
    /// Open addressing: entry position + 1, 0 for empty.
    slots: Vec<u32>,
    entries: Vec<Entry>,
    lits: Vec<Lit>,
    bytes: Vec<u8>,
    payloads: Vec<u32>,
    /// Short-window tables, [`SHORT_TABLE_WORDS`] each.
    shorts: Vec<u64>,
}

/// A short-window table: one bit per pair of (folded) bytes, set when the pair is a 2-byte key or
/// its second byte a 1-byte key, so one test per byte covers both lengths.
const SHORT_TABLE_WORDS: usize = (1 << 16) / 64;

/// One index: where its bitmap and hash table lie in its [`GramStore`]. See the module
/// documentation.
#[derive(Clone, Debug)]
pub(crate) struct GramIndex {
    /// `64 - log2(bitmap bits)`; the bitmap is `bitmaps[bitmap_start..]`, `2^bits / 64` words.
    bitmap_shift: u32,
    bitmap_start: usize,
    /// `64 - log2(slots)`; the table is `slots[slot_start..]`, `2^bits` slots.
    slot_shift: u32,
    slot_start: usize,
    /// Bit `n` set when some literal is keyed by a window of `n` bytes.
    window_lengths: u8,
    /// Whether the literals are keyed by `STRIDE` windows each and a scan tests only every
    /// `STRIDE`-th window.
    strided: bool,
    /// Where its short-window table starts in the store's `shorts`, for an index scanned on every
    /// event that has 1- or 2-byte keys (they are then tested there, not in the bitmap).
    short_start: Option<usize>,
}

/// A literal on its way into an index: its [`sort_key`], its position in the scratch list of
/// literals, and where its key window ends in it.
type Item = (u64, u32, u32);

/// What an index's literals are sorted by: their key (26 bits: the window's bytes and length),
/// then 38 bits of the hash of the folded literal, so that the literals of a key are together and
/// equal literals are next to each other (unless their hashes collide in those bits; they then
/// get one `Lit` per run, which costs a confirmation, not a result).
fn sort_key(key: u64, literal_hash: u64) -> u64 {
    let compact = (key & 0xFF_FFFF) | (((key >> 32) & 3) << 24);
    (compact << 38) | (literal_hash >> 26)
}

/// The key a [`sort_key`] was made from.
fn key_of_sort_key(sort_key: u64) -> u64 {
    let compact = sort_key >> 38;
    (compact & 0xFF_FFFF) | (((compact >> 24) & 3) << 32)
}

/// A literal to index: its text, the payload a scan reports for it, and its position in the
/// pack's string table ([`NOT_A_STRING`] if it is not one), by which its key window is looked up
/// rather than chosen again.
pub(crate) type Literal<'s> = (&'s str, u32, u32);

/// The string position of a literal that is not in a string table.
pub(crate) const NOT_A_STRING: u32 = u32::MAX;

/// Buffers reused by every index built from strings that live for `'s`, so building hundreds of
/// indexes allocates them once, and where each string's key window ends.
#[derive(Debug, Default)]
pub(crate) struct GramScratch<'s> {
    literals: Vec<(&'s [u8], u32, u32)>,
    items: Vec<Item>,
    /// By string position: where its key window ends (checked to lie inside the string).
    key_ends: Vec<u32>,
}

impl GramScratch<'_> {
    /// Scratch for literals from a string table whose strings' key windows end at `key_ends`
    /// (each inside its string, at least [`GRAM`] bytes in or the whole string).
    pub(crate) fn for_strings(key_ends: Vec<u32>) -> Self {
        GramScratch {
            key_ends,
            ..GramScratch::default()
        }
    }
}

fn log2_at_least(n: usize, min_bits: u32, max_bits: u32) -> u32 {
    let mut bits = min_bits;
    while bits < max_bits && (1usize << bits) < n {
        bits = bits.saturating_add(1);
    }
    bits
}

/// A position in a store table as stored in another table.
fn pos(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn range(a: u32, b: u32) -> core::ops::Range<usize> {
    usize::try_from(a).unwrap_or(0)..usize::try_from(b).unwrap_or(0)
}

impl GramStore {
    /// Indexes non-empty `literals`, each with the payload a scan reports for it (empty literals
    /// are skipped: the caller handles them). Equal literals (after folding) share one entry and
    /// report each of their payloads.
    pub(crate) fn add<'s>(
        &mut self,
        literals: impl IntoIterator<Item = Literal<'s>>,
        scratch: &mut GramScratch<'s>,
    ) -> GramIndex {
        self.add_with(literals, false, scratch)
    }

    /// [`GramStore::add`] for an index scanned on every event (a rule prefilter), where scan
    /// time saved is worth a larger index: strided when every literal is at least
    /// `STRIDED_MIN_LEN` bytes long, and with a short-window table when it has 1- or 2-byte keys.
    pub(crate) fn add_for_every_event<'s>(
        &mut self,
        literals: impl IntoIterator<Item = Literal<'s>>,
        scratch: &mut GramScratch<'s>,
    ) -> GramIndex {
        self.add_with(literals, true, scratch)
    }

    fn add_with<'s>(
        &mut self,
        literals: impl IntoIterator<Item = Literal<'s>>,
        every_event: bool,
        scratch: &mut GramScratch<'s>,
    ) -> GramIndex {
        let GramScratch {
            literals: lits_in,
            items,
            key_ends,
        } = scratch;
        lits_in.clear();
        items.clear();
        lits_in.extend(
            literals
                .into_iter()
                .filter(|(s, _, _)| !s.is_empty())
                .map(|(s, payload, string)| (s.as_bytes(), payload, string)),
        );
        // Literals all long (hashes, long paths): each is keyed by `STRIDE` consecutive windows,
        // so a scan need test only every `STRIDE`-th window of the text. Their spans are chosen
        // here (few literals: the pack records one window per string, not a span).
        let strided = every_event
            && !lits_in.is_empty()
            && lits_in.iter().all(|(l, _, _)| l.len() >= STRIDED_MIN_LEN);
        for (at, &(lit, _, string)) in lits_in.iter().enumerate() {
            let hash = literal_hash(lit);
            let ends = if strided {
                let last = key_span(lit);
                last.saturating_add(1).saturating_sub(STRIDE)..last.saturating_add(1)
            } else {
                let end = match key_ends.get(usize::try_from(string).unwrap_or(usize::MAX)) {
                    Some(&end) => usize::try_from(end).unwrap_or(0),
                    None => key_window_end(lit),
                };
                end..end.saturating_add(1)
            };
            for end in ends {
                let key = key_of(lit.get(end.saturating_sub(GRAM)..end).unwrap_or(lit));
                items.push((sort_key(key, hash), pos(at), pos(end)));
            }
        }
        items.sort_unstable();

        let first_entry = self.entries.len();
        let mut window_lengths = 0u8;
        let literal = |at: u32| {
            lits_in
                .get(usize::try_from(at).unwrap_or(usize::MAX))
                .map_or((&[][..], 0), |&(lit, payload, _)| (lit, payload))
        };
        let mut prev: Option<(u64, &[u8], u32)> = None;
        for &(sort, at, window_end) in items.iter() {
            let (lit, payload) = literal(at);
            let same_key = prev.is_some_and(|(p, _, _)| p >> 38 == sort >> 38);
            let same_lit = same_key
                && prev.is_some_and(|(p, l, e)| {
                    p == sort && e == window_end && l.eq_ignore_ascii_case(lit)
                });
            prev = Some((sort, lit, window_end));
            if !same_key {
                let key = key_of_sort_key(sort);
                self.entries.push(Entry {
                    key,
                    first: pos(self.lits.len()),
                    end: pos(self.lits.len()),
                });
                window_lengths |= 1u8 << ((key >> 32) & 7);
            }
            if !same_lit {
                self.lits.push(Lit {
                    start: pos(self.bytes.len()),
                    len: pos(lit.len()),
                    window_end,
                    first: pos(self.payloads.len()),
                    end: pos(self.payloads.len()),
                });
                self.bytes.extend(lit.iter().map(u8::to_ascii_lowercase));
                if let Some(e) = self.entries.last_mut() {
                    e.end = pos(self.lits.len());
                }
            }
            self.payloads.push(payload);
            if let Some(l) = self.lits.last_mut() {
                l.end = pos(self.payloads.len());
            }
        }

        let short_start = (every_event && window_lengths & 0b110 != 0).then(|| {
            let start = self.shorts.len();
            self.shorts
                .resize(start.saturating_add(SHORT_TABLE_WORDS), 0);
            let table = self.shorts.get_mut(start..).unwrap_or(&mut []);
            let mut set = |pair: u64| set_bit(table, usize::try_from(pair & 0xFFFF).unwrap_or(0));
            for e in self.entries.get(first_entry..).unwrap_or(&[]) {
                match e.key >> 32 {
                    1 => (0..=255u64).for_each(|before| set((before << 8) | (e.key & 0xFF))),
                    2 => set(e.key),
                    _ => {}
                }
            }
            start
        });
        let entries = self.entries.len().saturating_sub(first_entry);
        let slot_bits = log2_at_least(entries.saturating_mul(2), 4, 24);
        let bitmap_bits = log2_at_least(entries.saturating_mul(16), 9, 24);
        let slot_start = self.slots.len();
        let bitmap_start = self.bitmaps.len();
        self.slots
            .resize(slot_start.saturating_add(1 << slot_bits), 0);
        self.bitmaps
            .resize(bitmap_start.saturating_add((1 << bitmap_bits) / 64), 0);
        let slots = self.slots.get_mut(slot_start..).unwrap_or(&mut []);
        let bitmap = self.bitmaps.get_mut(bitmap_start..).unwrap_or(&mut []);
        let slot_shift = 64u32.saturating_sub(slot_bits);
        let bitmap_shift = 64u32.saturating_sub(bitmap_bits);
        let mask = slots.len().saturating_sub(1);
        for (i, e) in self.entries.iter().enumerate().skip(first_entry) {
            let h = hash(e.key);
            let b = usize::try_from(h >> bitmap_shift).unwrap_or(0);
            let in_short_table = short_start.is_some() && e.key >> 32 < GRAM as u64;
            if !in_short_table {
                set_bit(bitmap, b);
            }
            // At most half the slots are full, so an empty one is always found.
            let mut s = usize::try_from(h >> slot_shift).unwrap_or(0);
            while slots.get(s).is_some_and(|&x| x != 0) {
                s = s.wrapping_add(1) & mask;
            }
            if let Some(slot) = slots.get_mut(s) {
                *slot = pos(i.saturating_add(1));
            }
        }
        GramIndex {
            bitmap_shift,
            bitmap_start,
            slot_shift,
            slot_start,
            window_lengths,
            strided,
            short_start,
        }
    }

    /// Calls `on_hit(payload, start)` for every occurrence in `text` of every literal of `ix`
    /// (ASCII case folded; `start` is where it begins), in order of where the occurrence's key
    /// window ends, until `on_hit` returns `true`. Returns whether it did.
    pub(crate) fn scan(
        &self,
        ix: &GramIndex,
        text: &[u8],
        mut on_hit: impl FnMut(u32, usize) -> bool,
    ) -> bool {
        let bitmap_words = (1usize << 64u32.saturating_sub(ix.bitmap_shift)) / 64;
        let slot_count = 1usize << 64u32.saturating_sub(ix.slot_shift);
        let view = View {
            bitmap_shift: ix.bitmap_shift,
            bitmap: self
                .bitmaps
                .get(ix.bitmap_start..ix.bitmap_start.saturating_add(bitmap_words))
                .unwrap_or(&[]),
            slot_shift: ix.slot_shift,
            slots: self
                .slots
                .get(ix.slot_start..ix.slot_start.saturating_add(slot_count))
                .unwrap_or(&[]),
            store: self,
        };
        if ix.strided {
            return view.scan_strided(text, &mut on_hit);
        }
        if let Some(start) = ix.short_start {
            let table = self
                .shorts
                .get(start..start.saturating_add(SHORT_TABLE_WORDS))
                .unwrap_or(&[]);
            return if ix.window_lengths & (1 << GRAM) != 0 {
                view.scan_short::<true>(table, text, &mut on_hit)
            } else {
                view.scan_short::<false>(table, text, &mut on_hit)
            };
        }
        // (mask, length tag) of each window length some key has, shortest first.
        let mut probes = [(0u64, 0u64); GRAM];
        let mut count = 0usize;
        for n in 1..=GRAM {
            if ix.window_lengths & (1u8 << n) != 0 {
                if let Some(p) = probes.get_mut(count) {
                    let n = u64::try_from(n).unwrap_or(0);
                    *p = ((1u64 << n.saturating_mul(8)).wrapping_sub(1), n << 32);
                    count = count.saturating_add(1);
                }
            }
        }
        // One loop per number of window lengths, so each is unrolled.
        match (count, probes) {
            (0, _) => false,
            (1, [a, ..]) => view.scan_with([a], text, &mut on_hit),
            (2, [a, b, ..]) => view.scan_with([a, b], text, &mut on_hit),
            (_, all) => view.scan_with(all, text, &mut on_hit),
        }
    }
}

/// One index's bitmap and hash table, and the store its positions are in: what a scan reads.
struct View<'a> {
    bitmap_shift: u32,
    bitmap: &'a [u64],
    slot_shift: u32,
    slots: &'a [u32],
    store: &'a GramStore,
}

impl View<'_> {
    /// Whether the bitmap has the bit of a key whose hash is `h` (if not, no literal is keyed by
    /// it; if so, perhaps one is).
    fn maybe_has(&self, h: u64) -> bool {
        has_bit(
            self.bitmap,
            usize::try_from(h >> self.bitmap_shift).unwrap_or(0),
        )
    }

    /// The entry for `key` (whose hash is `h`), if some literal is keyed by it.
    fn entry(&self, key: u64, h: u64) -> Option<&Entry> {
        let mask = self.slots.len().saturating_sub(1);
        let mut s = usize::try_from(h >> self.slot_shift).unwrap_or(0);
        // Bounded by the table size; the table always has an empty slot.
        for _ in 0..self.slots.len() {
            let slot = *self.slots.get(s)?;
            let e = self
                .store
                .entries
                .get(usize::try_from(slot.checked_sub(1)?).ok()?)?;
            if e.key == key {
                return Some(e);
            }
            s = s.wrapping_add(1) & mask;
        }
        None
    }

    /// [`GramStore::scan`] with its (mask, length tag) probes. The hot loop keeps to bitmap
    /// tests; a bitmap hit goes to `found` (not inlined).
    fn scan_with<const N: usize>(
        &self,
        probes: [(u64, u64); N],
        text: &[u8],
        on_hit: &mut impl FnMut(u32, usize) -> bool,
    ) -> bool {
        let mut g: u64 = 0;
        for (i, &b) in text.iter().enumerate() {
            g = (g << 8) | u64::from(b.to_ascii_lowercase());
            for (mask, tag) in probes {
                let key = (g & mask) | tag;
                let h = hash(key);
                if self.maybe_has(h) && self.found(key, h, text, i, on_hit) {
                    return true;
                }
            }
        }
        false
    }

    /// [`GramStore::scan`] of an index with a short-window table: one table test per byte for
    /// the 1- and 2-byte keys, and with `LONG` one bitmap test for the [`GRAM`]-byte ones.
    fn scan_short<const LONG: bool>(
        &self,
        table: &[u64],
        text: &[u8],
        on_hit: &mut impl FnMut(u32, usize) -> bool,
    ) -> bool {
        let mut g: u64 = 0;
        for (i, &b) in text.iter().enumerate() {
            g = (g << 8) | u64::from(b.to_ascii_lowercase());
            let pair = usize::try_from(g & 0xFFFF).unwrap_or(0);
            if has_bit(table, pair) && self.found_short(g, text, i, on_hit) {
                return true;
            }
            if LONG {
                let key = (g & 0xFF_FFFF) | ((GRAM as u64) << 32);
                let h = hash(key);
                if self.maybe_has(h) && self.found(key, h, text, i, on_hit) {
                    return true;
                }
            }
        }
        false
    }

    /// After a short-window table hit for the window ending at `text[i]` (`g` its last bytes):
    /// the 1-byte key, then the 2-byte one.
    #[inline(never)]
    fn found_short(
        &self,
        g: u64,
        text: &[u8],
        i: usize,
        on_hit: &mut impl FnMut(u32, usize) -> bool,
    ) -> bool {
        for (mask, n) in [(0xFF, 1u64), (0xFFFF, 2)] {
            let key = (g & mask) | (n << 32);
            if self.found(key, hash(key), text, i, on_hit) {
                return true;
            }
        }
        false
    }

    /// [`GramStore::scan`] of a strided index: only the windows ending at multiples of `STRIDE`,
    /// the last 3 bytes of each `STRIDE`-byte chunk. Every occurrence of a literal spans
    /// `STRIDE` consecutive windows, so exactly one of them ends at such a multiple.
    fn scan_strided(&self, text: &[u8], on_hit: &mut impl FnMut(u32, usize) -> bool) -> bool {
        for (c, chunk) in text.chunks_exact(STRIDE).enumerate() {
            let key = chunk
                .iter()
                .skip(STRIDE.saturating_sub(GRAM))
                .fold(0u64, |g, &b| (g << 8) | u64::from(b.to_ascii_lowercase()))
                | (3 << 32);
            let h = hash(key);
            let i = c.saturating_mul(STRIDE).saturating_add(STRIDE - 1);
            if self.maybe_has(h) && self.found(key, h, text, i, on_hit) {
                return true;
            }
        }
        false
    }

    /// After a bitmap hit for the window `key` (hash `h`) ending at `text[i]`: confirms the
    /// literals keyed by it, if any, and reports them.
    #[inline(never)]
    fn found(
        &self,
        key: u64,
        h: u64,
        text: &[u8],
        i: usize,
        on_hit: &mut impl FnMut(u32, usize) -> bool,
    ) -> bool {
        let end = i.saturating_add(1);
        // A window longer than the text read so far holds zero bytes that are not there.
        let len = usize::try_from((key >> 32) & 0xFF).unwrap_or(usize::MAX);
        if len > end {
            return false;
        }
        match self.entry(key, h) {
            Some(e) => self.confirm(e, text, end, on_hit),
            None => false,
        }
    }

    /// Checks each literal of `e` at the place its key window would put it, given the window ends
    /// at `window_end` in `text`.
    fn confirm(
        &self,
        e: &Entry,
        text: &[u8],
        window_end: usize,
        on_hit: &mut impl FnMut(u32, usize) -> bool,
    ) -> bool {
        let store = self.store;
        for lit in store.lits.get(range(e.first, e.end)).unwrap_or(&[]) {
            let Some(start) = window_end.checked_sub(usize::try_from(lit.window_end).unwrap_or(0))
            else {
                continue;
            };
            let len = usize::try_from(lit.len).unwrap_or(usize::MAX);
            let Some(there) = text.get(start..start.saturating_add(len)) else {
                continue;
            };
            let folded = store
                .bytes
                .get(range(lit.start, lit.start.saturating_add(lit.len)))
                .unwrap_or(&[]);
            if !there.eq_ignore_ascii_case(folded) {
                continue;
            }
            for &p in store.payloads.get(range(lit.first, lit.end)).unwrap_or(&[]) {
                if on_hit(p, start) {
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec;

    /// One index in a store of its own, as tests build them.
    fn build<'s>(lits: impl IntoIterator<Item = (&'s str, u32)>) -> (GramStore, GramIndex) {
        let mut store = GramStore::default();
        let ix = store.add(unnumbered(lits), &mut GramScratch::default());
        (store, ix)
    }

    /// Literals with no string table position.
    fn unnumbered<'s>(
        lits: impl IntoIterator<Item = (&'s str, u32)>,
    ) -> impl Iterator<Item = Literal<'s>> {
        lits.into_iter().map(|(s, p)| (s, p, NOT_A_STRING))
    }

    fn hits((store, ix): (&GramStore, &GramIndex), text: &str) -> Vec<(u32, usize)> {
        let mut out = Vec::new();
        store.scan(ix, text.as_bytes(), |p, s| {
            out.push((p, s));
            false
        });
        out.sort_unstable();
        out
    }

    /// Every (payload, start) where a literal occurs, ASCII case folded, the slow way.
    fn naive(lits: &[(&str, u32)], text: &str) -> Vec<(u32, usize)> {
        let mut out = Vec::new();
        let t = text.as_bytes();
        for &(l, p) in lits {
            let l = l.as_bytes();
            if l.is_empty() || l.len() > t.len() {
                continue;
            }
            for s in 0..=t.len() - l.len() {
                if t[s..s + l.len()].eq_ignore_ascii_case(l) {
                    out.push((p, s));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    #[test]
    fn finds_every_occurrence_of_every_literal() {
        let lits = [
            ("powershell", 0),
            ("PowerShell.exe", 1),
            ("-enc", 2),
            ("ab", 3),
            ("a", 4),
            ("\\cmd.exe", 5),
            ("cmd", 6),
            ("cmd", 7),
            ("", 8),
        ];
        let ix = build(lits);
        for text in [
            "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe -Enc AAAA",
            "cmd.exe /c C:\\Windows\\cmd.exe CMD",
            "aaaab",
            "",
            "p",
        ] {
            assert_eq!(hits((&ix.0, &ix.1), text), naive(&lits, text), "{text}");
        }
    }

    #[test]
    fn uncommon_bytes_discount_common_windows() {
        assert_eq!(uncommon_bytes(b"\\Windows\\System32\\"), 0);
        assert_eq!(uncommon_bytes(b"ab"), 2);
        assert_eq!(uncommon_bytes(b""), 0);
        // The naive way: a byte is common if some common window holds it.
        for lit in [
            &b"\\..\\Windows\\"[..],
            b"sekurlsa::logonpasswords",
            b"C:\\Users\\x.exe",
        ] {
            let naive = (0..lit.len())
                .filter(|&i| {
                    !(i.saturating_sub(2)..=i).any(|s| {
                        lit.get(s..s + 3)
                            .is_some_and(|w| common_window(key_of(w) & 0xFF_FFFF))
                    })
                })
                .count();
            assert_eq!(uncommon_bytes(lit), naive);
        }
    }

    #[test]
    fn key_window_is_the_least_common() {
        // Short literals are their own key.
        assert_eq!(key_window_end(b"ab"), 2);
        assert_eq!(key_window_end(b"abc"), 3);
        // `zqj` beats every window of common bytes; the first of equal windows wins.
        assert_eq!(key_window_end(b"eeezqjeee"), 6);
        assert_eq!(key_window_end(b"zqjzqj"), 3);
        // Windows of common Windows text come last even if their bytes are rarer: `86)` of
        // `(x86)` loses to `6)e`, whose `e` is the most common letter.
        assert_eq!(key_window_end(b"(x86)e"), 6);
        assert!(commonness(b'8') < commonness(b'e'));
    }

    #[test]
    fn stops_when_asked() {
        let (store, ix) = build([("abc", 1), ("bcd", 2)]);
        let mut seen = vec![];
        assert!(store.scan(&ix, b"xabcd", |p, _| {
            seen.push(p);
            true
        }));
        assert_eq!(seen, vec![1]);
        assert!(!store.scan(&ix, b"xyz", |_, _| true));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn agrees_with_naive_search(
            lits in proptest::collection::vec("[abcAB.\\\\]{0,7}", 0..12),
            text in "[abcAB.\\\\x]{0,40}",
        ) {
            let lits: Vec<(&str, u32)> = lits.iter().enumerate().map(|(i, s)| (s.as_str(), i as u32)).collect();
            let (store, ix) = build(lits.iter().copied());
            proptest::prop_assert_eq!(hits((&store, &ix), &text), naive(&lits, &text));
        }

        /// Indexes sharing a store, and literals from one string table shared by indexes and
        /// keyed by whichever of their windows the table says, each find their own literals,
        /// and only those.
        #[test]
        fn indexes_in_one_store_keep_apart(
            pool in proptest::collection::vec("[abcAB.\\\\]{0,7}", 1..10),
            picks in proptest::collection::vec(0usize..8, 10),
            sets in proptest::collection::vec(proptest::collection::vec(0usize..10, 0..8), 1..5),
            text in "[abcAB.\\\\x]{0,40}",
        ) {
            let mut store = GramStore::default();
            // Any window of a string, not only the one the compiler would choose.
            let ends = pool.iter().zip(&picks).map(|(s, pick)| {
                let shortest = s.len().min(GRAM);
                (shortest + pick % (s.len() - shortest + 1)) as u32
            });
            let mut scratch = GramScratch::for_strings(ends.collect());
            let lits: Vec<Vec<(&str, u32, u32)>> = sets
                .iter()
                .map(|set| {
                    set.iter()
                        .filter(|&&i| i < pool.len())
                        .enumerate()
                        .map(|(p, &i)| (pool[i].as_str(), p as u32, i as u32))
                        .collect()
                })
                .collect();
            let indexes: Vec<GramIndex> =
                lits.iter().map(|l| store.add(l.iter().copied(), &mut scratch)).collect();
            for (ix, l) in indexes.iter().zip(&lits) {
                let plain: Vec<(&str, u32)> = l.iter().map(|&(s, p, _)| (s, p)).collect();
                proptest::prop_assert_eq!(hits((&store, ix), &text), naive(&plain, &text));
            }
        }

        /// An index scanned on every event with short literals: its short-window table and its
        /// bitmap together find what naive search finds.
        #[test]
        fn short_window_table_agrees_with_naive_search(
            lits in proptest::collection::vec("[abcAB.\\\\]{1,5}", 1..12),
            text in "[abcAB.\\\\x]{0,40}",
        ) {
            let lits: Vec<(&str, u32)> = lits.iter().enumerate().map(|(i, s)| (s.as_str(), i as u32)).collect();
            let mut store = GramStore::default();
            let ix = store.add_for_every_event(unnumbered(lits.iter().copied()), &mut GramScratch::default());
            let short = lits.iter().any(|(l, _)| l.len() < GRAM);
            proptest::prop_assert_eq!(ix.short_start.is_some(), short);
            proptest::prop_assert_eq!(hits((&store, &ix), &text), naive(&lits, &text));
        }

        /// Long literals only (a strided index), in texts made of them and noise at every offset.
        #[test]
        fn strided_index_agrees_with_naive_search(
            lits in proptest::collection::vec("[abAB.x]{16,20}", 1..6),
            picks in proptest::collection::vec((0usize..8, "[abx.]{0,5}"), 0..8),
        ) {
            let lits: Vec<(&str, u32)> = lits.iter().enumerate().map(|(i, s)| (s.as_str(), i as u32)).collect();
            let mut text = String::new();
            for (i, noise) in &picks {
                if let Some((l, _)) = lits.get(*i) {
                    text.push_str(l);
                }
                text.push_str(noise);
            }
            let mut store = GramStore::default();
            let ix = store.add_for_every_event(unnumbered(lits.iter().copied()), &mut GramScratch::default());
            proptest::prop_assert!(ix.strided);
            proptest::prop_assert_eq!(hits((&store, &ix), &text), naive(&lits, &text));
        }
    }
}
