//! A multi-literal substring index built at load time in one linear pass, with no automaton: each
//! literal is keyed by one short window of its ASCII-case-folded bytes (its whole self when it is
//! at most [`GRAM`] bytes long, else its least common window of [`GRAM`] bytes: windows of text
//! every Windows event is full of, such as `m32` of `system32`, last), and a scan slides over the
//! text once, testing each window against a bitmap, probing a hash table only on a bitmap hit, and
//! confirming every literal keyed by that window at the one place it would have to start. So a
//! scan reports exactly the (literal, position) pairs where a literal occurs, ASCII case folded,
//! at about one bitmap test per byte per distinct window length; except that deep inside a run of
//! one repeated byte (padding: `;;;;`, spaces) it reports each literal made of that byte once,
//! not at every position (see `View::run_skips`: no answer a caller draws changes).
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

/// [`COMMON`] as a table: byte → commonness (0 for rare bytes), both ASCII cases alike. The lead
/// bytes of multi-byte UTF-8 characters count as common as `e`: every emoji starts `F0 9F`, every
/// dash `E2 80`, so a key window starting at a character's first byte would be shared by all the
/// literals of a block (hundreds, in rules listing emoji), and its continuation bytes tell them
/// apart.
static COMMONNESS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut lead = 0xC0;
    while lead <= 0xFF {
        // In range: 0xC0..=0xFF.
        #[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
        {
            table[lead] = (COMMON.len() - 1) as u8;
            lead += 1;
        }
    }
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

/// The commonest windows of base64-encoded UTF-16 text (`-EncodedCommand`), ASCII-lowercased: the
/// 200 that encoded English and PowerShell yield most at any of the three alignments (written by
/// `scripts/base64-windows`). They encode the zero bytes of UTF-16 and common letters (`zqb`,
/// `agu`: an `e`), so every encoded blob is full of them; a base64 literal from a `base64offset`
/// rule is keyed elsewhere if it can be (see [`BASE64_WINDOWS`]).
const BASE64_COMMON: &[u8] = b"aca aia caa aga iab bla agu gua azq b0a ada ahq hqa gag dab abw bva zqb ag8 g8a bwb bpa aaq bha \
bua aqb 0ag ayq agk gka age gea acg abg abl ag4 g4a qag yqb acw bza ahm hma uab bgb cgb bta uac \
aaa pag ahi hia qbu qb0 bya wag aab vag abq boa zqa iaa gah ag0 g0a qaa bja aag lag bsa lac abh \
agw gwa kag cwb uag aba lah hag kab abp gac oag agg gga yag aka uai bka ayw ywb qaz agm gma aza \
agq gqa aua 0ac aay abv bab qbz abo ab0 kac 4az vah bqb ata qbt aad tag hah ac0 c0a alq lqb ahu \
hua adq dqb bqa daa b1a sag qai aat eab jag gaz bwa wbl cab 8ab bma cwa ead gbv haa gbl agy gya \
azg zab mad pah qbs zac aha wbv qby mab bna aal aak acq zah uad mai uah alg gb0 tae ac4 c4a qbj \
aac aoa bga zag aja jab cqa 8az azw mac 8ac gbh agc gca aeq kad 4ad ahk hka wb0 gbk aao qay wby \
wbu jah b5a qbl uae iac b3a 4ai";

/// Bits of a 16384-bit set of the windows of [`BASE64_COMMON`], by [`base64_window_bit`].
static BASE64_WINDOWS: [u64; 256] = {
    let mut set = [0u64; 256];
    // Windows of three bytes, each followed by a space.
    let mut i = 0;
    while i + 3 <= BASE64_COMMON.len() {
        // In range: `i + 2 < BASE64_COMMON.len()`; the bit index is below 16384.
        #[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
        {
            let w = ((BASE64_COMMON[i] as u64) << 16)
                | ((BASE64_COMMON[i + 1] as u64) << 8)
                | BASE64_COMMON[i + 2] as u64;
            let bit = base64_window_bit(w);
            set[bit / 64] |= 1u64 << (bit % 64);
            i += 4;
        }
    }
    set
};

/// Where a 3-byte window (folded bytes, big-endian) falls in [`BASE64_WINDOWS`].
const fn base64_window_bit(window: u64) -> usize {
    (window.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 50) as usize
}

/// Whether the (folded) 3-byte window is one of [`BASE64_COMMON`] (or shares its bit with one).
fn base64_window(window: u64) -> bool {
    has_bit(&BASE64_WINDOWS, base64_window_bit(window))
}

/// Added to a window's score when it is one of [`BASE64_COMMON`]: more than any byte commonness
/// can sum to, less than [`COMMON_WINDOW_PENALTY`].
const BASE64_WINDOW_PENALTY: u32 = 1 << 12;

/// Where a 3-byte window (folded bytes, big-endian) falls in [`COMMON_WINDOW_COUNTS`].
const fn common_window_bit(window: u64) -> usize {
    (window.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize
}

/// Byte → the byte ASCII-lowercased, as a table: one load per byte in the scans' loops, where
/// [`u8::to_ascii_lowercase`] is a compare, a flag and three more operations.
static FOLD: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        // In range: b < 256, so the cast is exact and the index valid.
        #[allow(clippy::indexing_slicing, clippy::cast_possible_truncation)]
        {
            table[b] = (b as u8).to_ascii_lowercase();
        }
        b += 1;
    }
    table
};

/// `b` ASCII-lowercased, by [`FOLD`].
#[inline(always)]
fn fold(b: u8) -> u64 {
    u64::from(FOLD.get(usize::from(b)).copied().unwrap_or(b))
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

/// By [`common_window_bit`], how many of the 3-byte windows of [`COMMON_TEXT`] fall there (at
/// most 255): 0 for a window not in the common text.
static COMMON_WINDOW_COUNTS: [u8; 4096] = {
    let mut counts = [0u8; 4096];
    let mut i = 2;
    while i < COMMON_TEXT.len() {
        // `i - 2` and `i` are in range; the index is below 4096.
        #[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
        {
            let w = ((COMMON_TEXT[i - 2] as u64) << 16)
                | ((COMMON_TEXT[i - 1] as u64) << 8)
                | COMMON_TEXT[i] as u64;
            let bit = common_window_bit(w);
            counts[bit] = counts[bit].saturating_add(1);
            i += 1;
        }
    }
    counts
};

/// Whether the (folded) 3-byte window is common in Windows process events (or shares its bit
/// with one that is).
fn common_window(window: u64) -> bool {
    common_window_count(window) > 0
}

/// How many windows of [`COMMON_TEXT`] share the (folded) 3-byte window's place in
/// [`COMMON_WINDOW_COUNTS`].
fn common_window_count(window: u64) -> u8 {
    COMMON_WINDOW_COUNTS
        .get(common_window_bit(window))
        .copied()
        .unwrap_or(0)
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

/// Whether a literal is worth a key in a prefilter scanned on every event: two bytes or more,
/// or one byte that is rare in Windows paths and command lines (a backtick, say, not a space).
pub(crate) fn worth_a_key(lit: &[u8]) -> bool {
    match lit {
        [] => false,
        [b] => rare_byte(*b),
        _ => true,
    }
}

/// Whether `b` is rare in Windows paths and command lines (not in [`COMMON`]).
pub(crate) fn rare_byte(b: u8) -> bool {
    commonness(b) == 0
}

/// How common byte `b` is in Windows paths and command lines (0: rare; see [`COMMON`]).
pub(crate) fn commonness(b: u8) -> u32 {
    u32::from(COMMONNESS.get(usize::from(b)).copied().unwrap_or(0))
}

/// Where literal `lit` is best keyed: the end of its key window, the whole literal when it is at
/// most [`GRAM`] bytes long, else its least common window of [`GRAM`] bytes, the first of equals
/// (windows of [`COMMON_TEXT`] last, then [`BASE64_COMMON`], then by the commonness of their
/// bytes). The compiler records it in the pack for every string
/// (`key_window_start`); loading only checks it.
fn key_window_end(lit: &[u8]) -> usize {
    key_window_end_balanced(lit, |_| 0)
}

/// [`key_window_end`], with `load(window)` (the window's folded bytes, big-endian) added to each
/// window's score: the compiler passes how many literal bytes other strings already keyed by that
/// window hold, so that literals alike (emoji, base64 of one word) spread over windows instead of
/// crowding one, every literal of which a scan would confirm wherever the window occurs.
pub(crate) fn key_window_end_balanced(lit: &[u8], load: impl Fn(u64) -> u32) -> usize {
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
        // The penalties only add, so they are looked up only for a window that could be best.
        if end >= GRAM && score < best.1 {
            let count = common_window_count(window);
            let penalty = if count > 0 {
                // The more of the common text a window is found in, the later it comes.
                COMMON_WINDOW_PENALTY.saturating_add(u32::from(count).saturating_mul(256))
            } else if base64_window(window) {
                BASE64_WINDOW_PENALTY
            } else {
                0
            };
            let total = score.saturating_add(penalty).saturating_add(load(window));
            if total < best.1 {
                best = (end, total);
            }
        }
    }
    best.0
}

/// The key window of `lit` as a number (its folded bytes, big-endian), when it ends at `end`.
pub(crate) fn window_at(lit: &[u8], end: usize) -> u64 {
    key_of(lit.get(end.saturating_sub(GRAM)..end).unwrap_or(lit)) & 0xFF_FFFF
}

/// Where the key window [`key_window_end`] chooses for `lit` starts: what a pack records for
/// each of its strings.
pub(crate) fn key_window_start(lit: &[u8]) -> usize {
    key_window_end(lit).saturating_sub(lit.len().min(GRAM))
}

/// A hash of a string's folded bytes cheap enough to take of every string at load: its length
/// and its first and last eight bytes. Strings it confuses are told apart by their bytes when
/// canonical ids are given; it only brings equal strings together.
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

/// [`fold_hash`] of `bytes` read backwards.
pub(crate) fn back_fold_hash(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(FOLD_HASH_EMPTY, |h, &b| fold_hash_step(h, b))
}

/// [`fold_hash`] of nothing.
pub(crate) const FOLD_HASH_EMPTY: u64 = FNV_OFFSET;

fn hash(key: u64) -> u64 {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The pack's strings as loading keeps them: one text, and where each string ends in it (string
/// `i` is `text[ends[i - 1]..ends[i]]`, from 0 for the first). Literals of every index are spans
/// of this text, never copies, so a string in many indexes costs its bytes once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arena<'s> {
    pub(crate) text: &'s [u8],
    pub(crate) ends: &'s [usize],
}

impl<'s> Arena<'s> {
    /// Where string `index` lies in the text.
    pub(crate) fn span(&self, index: u32) -> Option<core::ops::Range<usize>> {
        crate::format::span(self.ends, usize::try_from(index).ok()?)
    }

    /// String `index`.
    pub(crate) fn get(&self, index: u32) -> Option<&'s [u8]> {
        self.text.get(self.span(index)?)
    }

    /// How many strings there are.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }
}

/// What loading learns once per string and every index then reuses, so that building indexes
/// costs per reference to a string, not per byte of it: where its key window ends (from the
/// pack, checked), its canonical id, the least index of a string equal to it ASCII case folded
/// (so equal literals are told apart in O(1)), and, once some index needs them, its
/// [`fold_hash`] forwards and backwards.
#[derive(Debug, Default)]
pub(crate) struct StringFacts {
    pub(crate) key_ends: Vec<u32>,
    pub(crate) canon: Vec<u32>,
    /// The hash of each string (a prefix index's), once computed.
    fold_hashes: Vec<Option<u64>>,
    /// Where a strided index's key span ends in each string, once computed.
    spans: Vec<Option<usize>>,
    /// The hash of each string read backwards (a suffix index's), once computed.
    back_hashes: Vec<Option<u64>>,
}

impl StringFacts {
    /// The facts of every string of `arena`, whose key windows end at `key_ends` (each inside
    /// its string). O(n log n) in the number of strings, plus O(total bytes × log n) for strings
    /// whose lengths and first and last bytes agree.
    pub(crate) fn new(arena: Arena<'_>, key_ends: Vec<u32>) -> StringFacts {
        let count = u32::try_from(arena.len()).unwrap_or(u32::MAX);
        let quick: Vec<u64> = (0..count)
            .map(|i| literal_hash(arena.get(i).unwrap_or(&[])))
            .collect();
        let canon = canonical_ids(arena, &quick);
        StringFacts {
            key_ends,
            canon,
            fold_hashes: Vec::new(),
            spans: Vec::new(),
            back_hashes: Vec::new(),
        }
    }

    /// [`fold_hash`] of string `string` (`lit`), computed once.
    pub(crate) fn fold_hash(&mut self, string: u32, lit: &[u8]) -> u64 {
        once(&mut self.fold_hashes, self.canon.len(), string, || {
            fold_hash(lit)
        })
    }

    /// [`fold_hash`] of string `string` (`lit`) read backwards, computed once.
    pub(crate) fn back_hash(&mut self, string: u32, lit: &[u8]) -> u64 {
        once(&mut self.back_hashes, self.canon.len(), string, || {
            back_fold_hash(lit)
        })
    }

    /// For tests: the facts of `strings`, keyed by the windows the compiler would choose.
    #[cfg(test)]
    pub(crate) fn of(arena: Arena<'_>) -> StringFacts {
        let ends = (0..u32::try_from(arena.len()).unwrap_or(u32::MAX))
            .map(|i| pos(key_window_end(arena.get(i).unwrap_or(&[]))))
            .collect();
        StringFacts::new(arena, ends)
    }

    pub(crate) fn canon_of(&self, string: u32) -> u32 {
        self.canon
            .get(usize::try_from(string).unwrap_or(usize::MAX))
            .copied()
            .unwrap_or(string)
    }

    fn key_end(&self, string: u32, lit: &[u8]) -> usize {
        match self
            .key_ends
            .get(usize::try_from(string).unwrap_or(usize::MAX))
        {
            Some(&end) => usize::try_from(end).unwrap_or(0),
            None => key_window_end(lit),
        }
    }

    /// [`key_span`] of string `string` (`lit`), computed once.
    fn span_end(&mut self, string: u32, lit: &[u8]) -> usize {
        once(&mut self.spans, self.canon.len(), string, || key_span(lit))
    }
}

/// `cache[string]` of a per-string cache of `strings` entries, made by `compute` the first time
/// it is asked for (the cache is allocated on first use: most packs need few of them).
fn once<T: Copy>(
    cache: &mut Vec<Option<T>>,
    strings: usize,
    string: u32,
    compute: impl FnOnce() -> T,
) -> T {
    if cache.len() != strings {
        *cache = alloc::vec![None; strings];
    }
    match cache.get_mut(usize::try_from(string).unwrap_or(usize::MAX)) {
        Some(Some(v)) => *v,
        Some(slot) => *slot.insert(compute()),
        None => compute(),
    }
}

/// Compares two byte strings ASCII case folded, lexicographically.
fn folded_cmp(a: &[u8], b: &[u8]) -> core::cmp::Ordering {
    a.iter()
        .map(u8::to_ascii_lowercase)
        .cmp(b.iter().map(u8::to_ascii_lowercase))
}

/// Each string's canonical id (see [`StringFacts`]): strings are sorted by (`hashes`, length),
/// and only a run of equal hashes and lengths whose strings are not all equal is sorted by its
/// bytes.
fn canonical_ids(arena: Arena<'_>, hashes: &[u64]) -> Vec<u32> {
    let get = |i: u32| arena.get(i).unwrap_or(&[]);
    let mut order: Vec<(u64, usize, u32)> = hashes
        .iter()
        .enumerate()
        .map(|(i, &h)| {
            let i = pos(i);
            (h, get(i).len(), i)
        })
        .collect();
    crate::heapsort::sort(&mut order);
    let mut canon = alloc::vec![0u32; hashes.len()];
    let mut rest = order.as_mut_slice();
    while let Some(&(h, len, first)) = rest.first() {
        let run_len = rest
            .iter()
            .take_while(|&&(h2, l2, _)| h2 == h && l2 == len)
            .count()
            .max(1);
        let (run, tail) = rest.split_at_mut(run_len);
        let lead = get(first);
        let all_equal = run
            .iter()
            .all(|&(_, _, i)| get(i).eq_ignore_ascii_case(lead));
        if !all_equal {
            crate::heapsort::sort_by(run, |a, b| {
                folded_cmp(get(a.2), get(b.2)).then(a.2.cmp(&b.2))
            });
        }
        let mut leader: Option<u32> = None;
        let mut prev: Option<u32> = None;
        for &(_, _, i) in run.iter() {
            let same = all_equal || prev.is_some_and(|p| get(p).eq_ignore_ascii_case(get(i)));
            if !same || leader.is_none() {
                leader = Some(i);
            }
            if let (Some(slot), Some(l)) = (
                canon.get_mut(usize::try_from(i).unwrap_or(usize::MAX)),
                leader,
            ) {
                *slot = l;
            }
            prev = Some(i);
        }
        rest = tail;
    }
    canon
}

/// Literals sharing one key, while an index is built.
#[derive(Clone, Debug)]
struct Entry {
    key: u64,
    /// `lits[first..end]` of the store.
    first: u32,
    end: u32,
}

/// One slot of an index's hash table: an [`Entry`] in place (a lookup reads one slot, not a
/// slot and then the entry it names), its key compacted by [`compact_key`]; key 0 is an empty
/// slot (every key has a length tag, so none compacts to 0).
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    key: u32,
    /// `lits[first..end]` of the store.
    first: u32,
    end: u32,
}

/// A key (a window of at most [`GRAM`] bytes and its length tag) in 32 bits: the bytes, then the
/// length in the top byte.
fn compact_key(key: u64) -> u32 {
    u32::try_from((key & 0xFF_FFFF) | (((key >> 32) & 0xFF) << 24)).unwrap_or(0)
}

/// One literal: where its bytes lie in the [`Arena`]'s text, where its key window ends inside
/// it, its first bytes folded (so most confirmations read neither the arena nor byte by byte),
/// and its payloads.
#[derive(Clone, Debug)]
struct Lit {
    /// Its first `min(len, 8)` bytes ASCII-lowercased, little-endian (the rest 0).
    head: u64,
    start: u32,
    len: u32,
    window_end: u32,
    /// `payloads[first..end]` of the store.
    first: u32,
    end: u32,
}

/// Eight bytes, little-endian, with the ASCII capitals among them lowercased (SWAR: a byte is a
/// capital when it is ASCII and in `A..=Z`; adding 0x20 to those only sets their bit 5).
fn fold8(x: u64) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low = x & LOW7;
    // High bit set where the low 7 bits are >= 'A' (0x41), and where they are > 'Z' (0x5A);
    // no carry crosses bytes (each sum is below 0x100).
    let ge_a = low.wrapping_add(0x3F3F_3F3F_3F3F_3F3F);
    let gt_z = low.wrapping_add(0x2525_2525_2525_2525);
    let upper = ge_a & !gt_z & !x & HIGH;
    x | (upper >> 2)
}

/// Bit 5 of every byte of a word: the bit [`fold8`] sets in capitals.
const CASE_BITS: u64 = 0x2020_2020_2020_2020;

/// The first `min(bytes.len(), 8)` bytes of `bytes`, little-endian, the rest 0.
#[inline(always)]
fn head_of(bytes: &[u8]) -> u64 {
    match bytes.first_chunk::<8>() {
        Some(eight) => u64::from_le_bytes(*eight),
        // Fewer than 8 bytes: one by one (a copy of a variable length would call memcpy).
        None => bytes
            .iter()
            .rev()
            .fold(0u64, |w, &b| (w << 8) | u64::from(b)),
    }
}

/// The mask of the first `len` bytes of a little-endian word (all of it from 8 on).
fn head_mask(len: usize) -> u64 {
    if len >= 8 {
        u64::MAX
    } else {
        (1u64 << (len.saturating_mul(8))).wrapping_sub(1)
    }
}

/// The tables of every gram index of a pack, each kind in one allocation whichever index it
/// belongs to: a pack has hundreds of indexes, most of them small, and loading it should not
/// cost an allocation per table per index. All positions stored in the tables are positions in
/// the store, or (literals' bytes) in the pack's [`Arena`].
#[derive(Clone, Debug, Default)]
pub(crate) struct GramStore {
    bitmaps: Vec<u64>,
    /// Open addressing, the entries in place (see [`Slot`]).
    slots: Vec<Slot>,
    lits: Vec<Lit>,
    payloads: Vec<u32>,
    /// Short-window tables, [`SHORT_TABLE_WORDS`] each.
    shorts: Vec<u64>,
    /// Run tables, 256 entries each (see [`GramIndex::runs_start`]).
    runs: Vec<u32>,
}

/// A short-window table: one bit per pair of (folded) bytes, set when the pair is a 2-byte key or
/// its second byte a 1-byte key, so one test per byte covers both lengths.
const SHORT_TABLE_WORDS: usize = (1 << 16) / 64;

/// How a scan's caller uses the payloads of the literals it finds, which decides what a scan can
/// cost (see [`GramIndex::scan_bound`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Payloads {
    /// Every payload is reported and costs one unit (a rule prefilter marking candidates).
    Each = 0,
    /// The first payload reported ends the scan (`set.contains`, ASCII case folded).
    First = 1,
    /// Each payload is confirmed against its item's exact bytes, at most the literal's length
    /// plus one unit, and the first confirmed ends the scan (`set.contains.cased`).
    Confirmed = 2,
}

/// The most work a scan of one index can do per byte of text, in the cost model's units (one
/// unit: about one byte touched): for each window length it has, one table test, the longest
/// probe sequence of its hash table, and the most confirmation work one window can cause (the
/// literals keyed by one key: their bytes, and their payloads as each [`Payloads`] use costs them).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ScanCost {
    per_byte: [u64; 3],
}

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
    /// Where its run table starts in the store's `runs`, for an index (not strided) with a key of
    /// one byte repeated (`;;;`, three spaces): by byte (folded), the longest literal keyed by a
    /// window of that byte alone. A scan skips most of a run of that byte ([`View::run_skips`]).
    runs_start: Option<usize>,
    /// Table tests per byte of text (per chunk, strided).
    tests_per_byte: u64,
    cost: ScanCost,
}

impl GramIndex {
    /// The most work, in the cost model's units, a scan of `text_len` bytes can do when its
    /// payloads are used as `payloads` says. [`GramStore::scan`] adds what it does to its meter,
    /// never more than this.
    pub(crate) fn scan_bound(&self, text_len: usize, payloads: Payloads) -> u64 {
        let per_byte = self
            .cost
            .per_byte
            .get(payloads as usize)
            .copied()
            .unwrap_or(u64::MAX);
        u64::try_from(text_len)
            .unwrap_or(u64::MAX)
            .saturating_mul(per_byte)
            .saturating_add(1)
    }
}

/// A literal on its way into an index: its [`sort_key`], its string and its payload.
type Item = (u64, u32, u32);

/// Bits of a [`sort_key`] below the key.
const SORT_KEY_SHIFT: u32 = 37;

/// What an index's literals are sorted by: their key (26 bits: the window's bytes and length),
/// then the literal's canonical id (20 bits: string indexes are below `MAX_STRINGS`), then where
/// the key window ends in it (17 bits: strings are at most 64 KiB), so that the literals of a key
/// are together and equal literals keyed alike are next to each other.
fn sort_key(key: u64, canon: u32, window_end: usize) -> u64 {
    let compact = (key & 0xFF_FFFF) | (((key >> 32) & 3) << 24);
    (compact << SORT_KEY_SHIFT)
        | ((u64::from(canon) & 0xF_FFFF) << 17)
        | (u64::try_from(window_end).unwrap_or(0) & 0x1_FFFF)
}

/// The key a [`sort_key`] was made from.
fn key_of_sort_key(sort_key: u64) -> u64 {
    let compact = sort_key >> SORT_KEY_SHIFT;
    (compact & 0xFF_FFFF) | (((compact >> 24) & 3) << 32)
}

/// A literal to index: its string (an index into the [`Arena`]) and the payload a scan reports
/// for it.
pub(crate) type Literal = (u32, u32);

/// What building indexes reads and reuses: the strings, their [`StringFacts`], and a buffer, so
/// building hundreds of indexes allocates it once.
#[derive(Debug)]
pub(crate) struct GramScratch<'s> {
    pub(crate) arena: Arena<'s>,
    pub(crate) facts: StringFacts,
    items: Vec<Item>,
    /// The entries of the index being built, before they go into its hash table.
    entries: Vec<Entry>,
    /// Hashes of a set's items, for its affix index.
    pub(crate) hashes: Vec<u64>,
}

impl<'s> GramScratch<'s> {
    /// Scratch for literals from `arena`, whose facts are `facts`.
    pub(crate) fn new(arena: Arena<'s>, facts: StringFacts) -> Self {
        GramScratch {
            arena,
            facts,
            items: Vec::new(),
            entries: Vec::new(),
            hashes: Vec::new(),
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

/// Most confirmation work of one entry, per [`Payloads`] use, accumulated literal by literal.
fn add_lit_cost(acc: &mut [u64; 3], len: u64, payloads: u64) {
    let [each, first, confirmed] = acc;
    let bytes = len.saturating_add(1);
    *each = each.saturating_add(bytes).saturating_add(payloads);
    *first = first.saturating_add(bytes).saturating_add(1);
    *confirmed = confirmed
        .saturating_add(bytes)
        .saturating_add(payloads.saturating_mul(len.saturating_add(2)));
}

impl GramStore {
    /// Indexes the non-empty literals of `literals`, each with the payload a scan reports for it
    /// (empty literals are skipped: the caller handles them). Equal literals (after folding)
    /// share one entry and report each of their payloads. O(literals × log) plus, for a strided
    /// index, each distinct string's length once.
    pub(crate) fn add(
        &mut self,
        literals: impl IntoIterator<Item = Literal>,
        scratch: &mut GramScratch<'_>,
    ) -> GramIndex {
        self.add_with(literals, false, scratch)
    }

    /// [`GramStore::add`] for an index scanned on every event (a rule prefilter), where scan
    /// time saved is worth a larger index: strided when every literal is at least
    /// `STRIDED_MIN_LEN` bytes long, and with a short-window table when it has 1- or 2-byte keys.
    pub(crate) fn add_for_every_event(
        &mut self,
        literals: impl IntoIterator<Item = Literal>,
        scratch: &mut GramScratch<'_>,
    ) -> GramIndex {
        self.add_with(literals, true, scratch)
    }

    fn add_with(
        &mut self,
        literals: impl IntoIterator<Item = Literal>,
        every_event: bool,
        scratch: &mut GramScratch<'_>,
    ) -> GramIndex {
        let GramScratch {
            arena,
            facts,
            items,
            entries,
            ..
        } = scratch;
        let arena = *arena;
        items.clear();
        entries.clear();
        // Literals all long (hashes, long paths): each is keyed by `STRIDE` consecutive windows,
        // so a scan need test only every `STRIDE`-th window of the text. Their spans are chosen
        // here, once per string (the pack records one window per string, not a span).
        let mut all_long = true;
        let mut any = false;
        for (string, payload) in literals {
            let lit = arena.get(string).unwrap_or(&[]);
            if lit.is_empty() {
                continue;
            }
            any = true;
            all_long &= lit.len() >= STRIDED_MIN_LEN;
            items.push((0, string, payload));
        }
        let strided = every_event && any && all_long;
        if strided {
            let mut keyed = Vec::with_capacity(items.len().saturating_mul(STRIDE));
            for &(_, string, payload) in items.iter() {
                let lit = arena.get(string).unwrap_or(&[]);
                let canon = facts.canon_of(string);
                let last = facts.span_end(string, lit);
                for end in last.saturating_add(1).saturating_sub(STRIDE)..last.saturating_add(1) {
                    let key = key_of(lit.get(end.saturating_sub(GRAM)..end).unwrap_or(lit));
                    keyed.push((sort_key(key, canon, end), string, payload));
                }
            }
            *items = keyed;
        } else {
            for item in items.iter_mut() {
                let lit = arena.get(item.1).unwrap_or(&[]);
                let end = facts.key_end(item.1, lit);
                let key = key_of(lit.get(end.saturating_sub(GRAM)..end).unwrap_or(lit));
                item.0 = sort_key(key, facts.canon_of(item.1), end);
            }
        }
        crate::heapsort::sort(items);

        let mut window_lengths = 0u8;
        // Most confirmation work of one entry, per window length and payload use.
        let mut worst = [[0u64; 3]; GRAM.saturating_add(1)];
        let mut entry_cost = [0u64; 3];
        let mut lit_len = 0u64;
        let mut lit_payloads = 0u64;
        let mut prev: Option<u64> = None;
        let close_lit = |entry_cost: &mut [u64; 3], len: u64, payloads: u64| {
            if payloads > 0 {
                add_lit_cost(entry_cost, len, payloads);
            }
        };
        let close_entry = |worst: &mut [[u64; 3]; GRAM + 1], key: u64, cost: &mut [u64; 3]| {
            let len = usize::try_from((key >> 32) & 0xFF).unwrap_or(0);
            if let Some(w) = worst.get_mut(len) {
                for (w, c) in w.iter_mut().zip(cost.iter()) {
                    *w = (*w).max(*c);
                }
            }
            *cost = [0; 3];
        };
        for &(sort, string, payload) in items.iter() {
            let same_key = prev.is_some_and(|p| p >> SORT_KEY_SHIFT == sort >> SORT_KEY_SHIFT);
            let same_lit = prev == Some(sort);
            if !same_lit {
                close_lit(&mut entry_cost, lit_len, lit_payloads);
                lit_payloads = 0;
            }
            if !same_key {
                if let Some(p) = prev {
                    close_entry(&mut worst, key_of_sort_key(p), &mut entry_cost);
                }
                let key = key_of_sort_key(sort);
                entries.push(Entry {
                    key,
                    first: pos(self.lits.len()),
                    end: pos(self.lits.len()),
                });
                window_lengths |= 1u8 << ((key >> 32) & 7);
            }
            prev = Some(sort);
            if !same_lit {
                let span = arena.span(string).unwrap_or(0..0);
                lit_len = u64::try_from(span.len()).unwrap_or(u64::MAX);
                self.lits.push(Lit {
                    head: fold8(head_of(arena.get(string).unwrap_or(&[]))),
                    start: pos(span.start),
                    len: pos(span.len()),
                    window_end: pos(usize::try_from(sort & 0x1_FFFF).unwrap_or(0)),
                    first: pos(self.payloads.len()),
                    end: pos(self.payloads.len()),
                });
                if let Some(e) = entries.last_mut() {
                    e.end = pos(self.lits.len());
                }
            }
            self.payloads.push(payload);
            lit_payloads = lit_payloads.saturating_add(1);
            if let Some(l) = self.lits.last_mut() {
                l.end = pos(self.payloads.len());
            }
        }
        close_lit(&mut entry_cost, lit_len, lit_payloads);
        if let Some(p) = prev {
            close_entry(&mut worst, key_of_sort_key(p), &mut entry_cost);
        }

        let short_start = (every_event && window_lengths & 0b110 != 0).then(|| {
            let start = self.shorts.len();
            self.shorts
                .resize(start.saturating_add(SHORT_TABLE_WORDS), 0);
            let table = self.shorts.get_mut(start..).unwrap_or(&mut []);
            let mut set = |pair: u64| set_bit(table, usize::try_from(pair & 0xFFFF).unwrap_or(0));
            for e in entries.iter() {
                match e.key >> 32 {
                    1 => (0..=255u64).for_each(|before| set((before << 8) | (e.key & 0xFF))),
                    2 => set(e.key),
                    _ => {}
                }
            }
            start
        });
        let runs_start = if strided {
            None
        } else {
            self.run_table(entries)
        };
        let slot_bits = log2_at_least(entries.len().saturating_mul(2), 4, 24);
        let bitmap_bits = log2_at_least(entries.len().saturating_mul(16), 9, 24);
        let slot_start = self.slots.len();
        let bitmap_start = self.bitmaps.len();
        self.slots
            .resize(slot_start.saturating_add(1 << slot_bits), Slot::default());
        self.bitmaps
            .resize(bitmap_start.saturating_add((1 << bitmap_bits) / 64), 0);
        let slots = self.slots.get_mut(slot_start..).unwrap_or(&mut []);
        let bitmap = self.bitmaps.get_mut(bitmap_start..).unwrap_or(&mut []);
        let slot_shift = 64u32.saturating_sub(slot_bits);
        let bitmap_shift = 64u32.saturating_sub(bitmap_bits);
        let mask = slots.len().saturating_sub(1);
        for e in entries.iter() {
            let h = hash(e.key);
            let b = usize::try_from(h >> bitmap_shift).unwrap_or(0);
            let in_short_table = short_start.is_some() && e.key >> 32 < GRAM as u64;
            if !in_short_table {
                set_bit(bitmap, b);
            }
            // At most half the slots are full, so an empty one is always found.
            let mut s = usize::try_from(h >> slot_shift).unwrap_or(0);
            while slots.get(s).is_some_and(|x| x.key != 0) {
                s = s.wrapping_add(1) & mask;
            }
            if let Some(slot) = slots.get_mut(s) {
                *slot = Slot {
                    key: compact_key(e.key),
                    first: e.first,
                    end: e.end,
                };
            }
        }
        // A lookup probes at most the longest run of full slots (wrapping) and one empty slot.
        let lookup = u64::try_from(longest_full_run(slots))
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        // Lengths a scan tests: the short-window table looks up both 1- and 2-byte keys.
        let tested = if short_start.is_some() {
            window_lengths | 0b110
        } else {
            window_lengths
        };
        // A scan with a run table reads each byte of a run once more to find where it ends.
        let run_work = if runs_start.is_some() {
            RUN_WORK_PER_BYTE
        } else {
            0
        };
        let mut per_byte = [run_work; 3];
        for (n, w) in worst.iter().enumerate() {
            if tested & (1u8 << n) != 0 {
                for (p, c) in per_byte.iter_mut().zip(w) {
                    *p = p
                        .saturating_add(1)
                        .saturating_add(lookup)
                        .saturating_add(*c);
                }
            }
        }
        let tests_per_byte = if strided {
            1
        } else if short_start.is_some() {
            1u64.saturating_add(u64::from(window_lengths & (1 << GRAM) != 0))
        } else {
            u64::from(window_lengths.count_ones())
        };
        GramIndex {
            bitmap_shift,
            bitmap_start,
            slot_shift,
            slot_start,
            window_lengths,
            strided,
            short_start,
            runs_start,
            tests_per_byte,
            cost: ScanCost { per_byte },
        }
    }

    /// The run table of an index whose keys are `entries` (their literals already in `lits`), if
    /// some key is one byte repeated: by that byte, the longest literal keyed by such a window.
    fn run_table(&mut self, entries: &[Entry]) -> Option<usize> {
        let mut start = None;
        for e in entries {
            let n = (e.key >> 32) & 0xFF;
            let byte = e.key & 0xFF;
            let repeated = (1..n).all(|k| (e.key >> k.saturating_mul(8)) & 0xFF == byte);
            if n == 0 || !repeated {
                continue;
            }
            let start = *start.get_or_insert_with(|| {
                let at = self.runs.len();
                self.runs.resize(at.saturating_add(256), 0);
                at
            });
            let longest = self
                .lits
                .get(range(e.first, e.end))
                .unwrap_or(&[])
                .iter()
                .map(|l| l.len)
                .max()
                .unwrap_or(0);
            let at = start.saturating_add(usize::try_from(byte).unwrap_or(0));
            if let Some(slot) = self.runs.get_mut(at) {
                *slot = (*slot).max(longest);
            }
        }
        start
    }

    /// Calls `on_hit(payload, start, len, work)` for every occurrence in `text` of every literal
    /// of `ix` (ASCII case folded; `start` is where it begins, `len` its length; the literals' bytes are in
    /// `arena_text`), in order of where the occurrence's key window ends, until `on_hit` returns
    /// `true`. Occurrences deep in a run of one byte that repeat one already reported there are
    /// left out ([`View::run_skips`]). Returns whether it did. Adds the work it does to `work`
    /// (`on_hit` adds its own), at most [`GramIndex::scan_bound`].
    ///
    /// Not inlined: the scan loops' locals stay out of the frame of the VM that calls it (the
    /// driver evaluates on a kernel stack budget, and the VM's deepest path is a regex search).
    #[inline(never)]
    pub(crate) fn scan(
        &self,
        ix: &GramIndex,
        arena_text: &[u8],
        text: &[u8],
        work: &mut u64,
        mut on_hit: impl FnMut(u32, usize, usize, &mut u64) -> bool,
    ) -> bool {
        let bitmap_words = (1usize << 64u32.saturating_sub(ix.bitmap_shift)) / 64;
        let slot_count = 1usize << 64u32.saturating_sub(ix.slot_shift);
        let view = View {
            runs: ix
                .runs_start
                .and_then(|start| self.runs.get(start..start.saturating_add(256)))
                .unwrap_or(&[]),
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
            arena: arena_text,
        };
        let mut meter = Meter { work: *work };
        let found = view.scan_any(ix, text, &mut meter, &mut on_hit);
        // The table tests of the bytes (or chunks) read, counted once rather than per test.
        let read = match found {
            Some(i) => i.saturating_add(1),
            None => text.len(),
        };
        let read = if ix.strided { read / STRIDE } else { read };
        *work = meter.work.saturating_add(
            u64::try_from(read)
                .unwrap_or(u64::MAX)
                .saturating_mul(ix.tests_per_byte),
        );
        found.is_some()
    }
}

/// The longest run of non-zero slots, wrapping around the end of the table.
fn longest_full_run(slots: &[Slot]) -> usize {
    let Some(empty) = slots.iter().position(|s| s.key == 0) else {
        return slots.len();
    };
    let mut best = 0usize;
    let mut run = 0usize;
    // Start just after an empty slot, so a run that wraps is counted whole.
    for k in 1..=slots.len() {
        let s = slots
            .get(
                empty
                    .saturating_add(k)
                    .checked_rem(slots.len())
                    .unwrap_or(0),
            )
            .map_or(0, |s| s.key);
        if s == 0 {
            run = 0;
        } else {
            run = run.saturating_add(1);
            best = best.max(run);
        }
    }
    best
}

/// The work a scan has done so far (see [`GramStore::scan`]).
struct Meter {
    work: u64,
}

impl Meter {
    fn add(&mut self, units: u64) {
        self.work = self.work.saturating_add(units);
    }
}

/// Where a scan is in a run of one repeated byte (see [`View::run_skips`]).
#[derive(Default)]
struct Run {
    /// The windows ending here are skipped.
    skip: core::ops::Range<usize>,
    /// The end of the last run analysed (windows before it are not analysed again).
    end: usize,
}

/// How far back a scan looks for the start of a run it meets (it meets one at its fourth byte).
const RUN_LOOKBACK: usize = 8;

/// The work [`View::analyse_run`] can add per byte of text: the runs it reads are disjoint, each
/// at least four bytes and charged its length and one.
const RUN_WORK_PER_BYTE: u64 = 2;

/// One index's bitmap and hash table, and the store its positions are in: what a scan reads.
struct View<'a> {
    bitmap_shift: u32,
    bitmap: &'a [u64],
    /// The index's run table (empty if it has none).
    runs: &'a [u32],
    slot_shift: u32,
    slots: &'a [Slot],
    store: &'a GramStore,
    arena: &'a [u8],
}

impl View<'_> {
    /// Scans `text` the way `ix` is built for; returns where the scan stopped (the position of
    /// the window that ended it), if `on_hit` stopped it.
    fn scan_any(
        &self,
        ix: &GramIndex,
        text: &[u8],
        meter: &mut Meter,
        on_hit: &mut impl FnMut(u32, usize, usize, &mut u64) -> bool,
    ) -> Option<usize> {
        if ix.strided {
            return self.scan_strided(text, meter, on_hit);
        }
        if let Some(start) = ix.short_start {
            let table = self
                .store
                .shorts
                .get(start..start.saturating_add(SHORT_TABLE_WORDS))
                .unwrap_or(&[]);
            return if ix.window_lengths & (1 << GRAM) != 0 {
                self.scan_short::<true>(table, text, meter, on_hit)
            } else {
                self.scan_short::<false>(table, text, meter, on_hit)
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
            (0, _) => None,
            (1, [a, ..]) => self.scan_with([a], text, meter, on_hit),
            (2, [a, b, ..]) => self.scan_with([a, b], text, meter, on_hit),
            (_, all) => self.scan_with(all, text, meter, on_hit),
        }
    }

    /// Whether the bitmap has the bit of a key whose hash is `h` (if not, no literal is keyed by
    /// it; if so, perhaps one is).
    fn maybe_has(&self, h: u64) -> bool {
        has_bit(
            self.bitmap,
            usize::try_from(h >> self.bitmap_shift).unwrap_or(0),
        )
    }

    /// The entry for `key` (whose hash is `h`), if some literal is keyed by it.
    fn entry(&self, key: u64, h: u64, meter: &mut Meter) -> Option<&Slot> {
        let mask = self.slots.len().saturating_sub(1);
        let mut s = usize::try_from(h >> self.slot_shift).unwrap_or(0);
        let key = compact_key(key);
        // Bounded by the table size; the table always has an empty slot.
        for _ in 0..self.slots.len() {
            meter.add(1);
            let slot = self.slots.get(s)?;
            if slot.key == key {
                return Some(slot);
            }
            if slot.key == 0 {
                return None;
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
        meter: &mut Meter,
        on_hit: &mut impl FnMut(u32, usize, usize, &mut u64) -> bool,
    ) -> Option<usize> {
        let mut g: u64 = 0;
        let mut run = Run::default();
        for (i, &b) in text.iter().enumerate() {
            g = (g << 8) | fold(b);
            for (mask, tag) in probes {
                let key = (g & mask) | tag;
                let h = hash(key);
                if self.maybe_has(h)
                    && !self.run_skips(g, &mut run, text, i, meter)
                    && self.found(key, h, text, i, meter, on_hit)
                {
                    return Some(i);
                }
            }
        }
        None
    }

    /// [`GramStore::scan`] of an index with a short-window table: one table test per byte for
    /// the 1- and 2-byte keys, and with `LONG` one bitmap test for the [`GRAM`]-byte ones.
    fn scan_short<const LONG: bool>(
        &self,
        table: &[u64],
        text: &[u8],
        meter: &mut Meter,
        on_hit: &mut impl FnMut(u32, usize, usize, &mut u64) -> bool,
    ) -> Option<usize> {
        let mut g: u64 = 0;
        let mut run = Run::default();
        for (i, &b) in text.iter().enumerate() {
            g = (g << 8) | fold(b);
            let pair = usize::try_from(g & 0xFFFF).unwrap_or(0);
            if has_bit(table, pair)
                && !self.run_skips(g, &mut run, text, i, meter)
                && self.found_short(g, text, i, meter, on_hit)
            {
                return Some(i);
            }
            if LONG {
                let key = (g & 0xFF_FFFF) | ((GRAM as u64) << 32);
                let h = hash(key);
                if self.maybe_has(h)
                    && !self.run_skips(g, &mut run, text, i, meter)
                    && self.found(key, h, text, i, meter, on_hit)
                {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Whether a scan can pass over its table hit for the windows ending at `text[i]`, because
    /// they lie deep in a run of one repeated byte (padding: `;;;;`, spaces, `^^^^`), where every
    /// window is the same and the literals a window brings would only be found again.
    ///
    /// In a run `text[a..r]` of byte `x`, let `L` be the longest literal keyed by a window of
    /// `x` alone (the index's run table). A window ending at `i` with `a + max(L, 2) <= i < r - L`
    /// is `x` repeated in every length, and a literal it brings spans at most `L` bytes each side
    /// of it: an occurrence found there lies inside the run, neither at the text's start nor at its
    /// end, so it is that literal's bytes `x` repeated, which also occur at `a`. Its key window
    /// there ends before `a + L`, which is not skipped, and reports the same payloads with the
    /// same bytes (a case-sensitive confirmation reads equal bytes: the run is of one raw byte).
    /// So skipping such windows loses no test's answer; the first occurrence of each literal is
    /// still reported. A run is found at the first hit with four equal bytes, and analysed once.
    ///
    /// `g` holds the scan's last bytes, folded: unless its last four are equal, the window is
    /// not skipped, and nothing else is read.
    #[inline(always)]
    fn run_skips(&self, g: u64, run: &mut Run, text: &[u8], i: usize, meter: &mut Meter) -> bool {
        (g ^ (g >> 8)) & 0xFF_FFFF == 0 && self.in_run(run, text, i, meter)
    }

    /// [`View::run_skips`] where the last four bytes are equal, folded.
    #[inline(never)]
    fn in_run(&self, run: &mut Run, text: &[u8], i: usize, meter: &mut Meter) -> bool {
        if i < run.end {
            return run.skip.contains(&i);
        }
        if self.runs.is_empty() {
            return false;
        }
        match text.get(i.saturating_sub(3)..=i) {
            Some(&[a, b, c, d]) if a == b && b == c && c == d && i >= 3 => {}
            _ => return false,
        }
        self.analyse_run(run, text, i, meter);
        run.skip.contains(&i)
    }

    /// [`View::run_skips`] at the first hit in a run: where the run starts (at most
    /// [`RUN_LOOKBACK`] bytes back: a later start only skips less) and ends, charged one unit per
    /// byte read and one for the table.
    fn analyse_run(&self, run: &mut Run, text: &[u8], i: usize, meter: &mut Meter) {
        let Some(&x) = text.get(i) else {
            return;
        };
        // The run's start: back over equal bytes, at most RUN_LOOKBACK of them.
        let back = text
            .get(i.saturating_sub(RUN_LOOKBACK)..i)
            .unwrap_or(&[])
            .iter()
            .rev()
            .take_while(|&&b| b == x)
            .count();
        let start = i.saturating_sub(back);
        let end = text
            .get(i..)
            .unwrap_or(&[])
            .iter()
            .position(|&b| b != x)
            .map_or(text.len(), |n| i.saturating_add(n));
        meter.add(
            u64::try_from(end.saturating_sub(start))
                .unwrap_or(u64::MAX)
                .saturating_add(1),
        );
        let longest = self
            .runs
            .get(usize::from(FOLD.get(usize::from(x)).copied().unwrap_or(x)))
            .map_or(usize::MAX, |&l| usize::try_from(l).unwrap_or(usize::MAX));
        run.end = end;
        run.skip = start.saturating_add(longest.max(GRAM - 1))..end.saturating_sub(longest);
    }

    /// After a short-window table hit for the window ending at `text[i]` (`g` its last bytes):
    /// the 1-byte key, then the 2-byte one.
    #[inline(always)]
    fn found_short(
        &self,
        g: u64,
        text: &[u8],
        i: usize,
        meter: &mut Meter,
        on_hit: &mut impl FnMut(u32, usize, usize, &mut u64) -> bool,
    ) -> bool {
        for (mask, n) in [(0xFF, 1u64), (0xFFFF, 2)] {
            let key = (g & mask) | (n << 32);
            if self.found(key, hash(key), text, i, meter, on_hit) {
                return true;
            }
        }
        false
    }

    /// [`GramStore::scan`] of a strided index: only the windows ending at multiples of `STRIDE`,
    /// the last 3 bytes of each `STRIDE`-byte chunk. Every occurrence of a literal spans
    /// `STRIDE` consecutive windows, so exactly one of them ends at such a multiple.
    fn scan_strided(
        &self,
        text: &[u8],
        meter: &mut Meter,
        on_hit: &mut impl FnMut(u32, usize, usize, &mut u64) -> bool,
    ) -> Option<usize> {
        for (c, chunk) in text.chunks_exact(STRIDE).enumerate() {
            let key = chunk
                .iter()
                .skip(STRIDE.saturating_sub(GRAM))
                .fold(0u64, |g, &b| (g << 8) | fold(b))
                | (3 << 32);
            let h = hash(key);
            let i = c.saturating_mul(STRIDE).saturating_add(STRIDE - 1);
            if self.maybe_has(h) && self.found(key, h, text, i, meter, on_hit) {
                return Some(i);
            }
        }
        None
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
        meter: &mut Meter,
        on_hit: &mut impl FnMut(u32, usize, usize, &mut u64) -> bool,
    ) -> bool {
        let end = i.saturating_add(1);
        // A window longer than the text read so far holds zero bytes that are not there.
        let len = usize::try_from((key >> 32) & 0xFF).unwrap_or(usize::MAX);
        if len > end {
            return false;
        }
        match self.entry(key, h, meter) {
            Some(e) => self.confirm(e, text, end, meter, on_hit),
            None => false,
        }
    }

    /// Checks each literal of `e` at the place its key window would put it, given the window ends
    /// at `window_end` in `text`.
    fn confirm(
        &self,
        e: &Slot,
        text: &[u8],
        window_end: usize,
        meter: &mut Meter,
        on_hit: &mut impl FnMut(u32, usize, usize, &mut u64) -> bool,
    ) -> bool {
        let store = self.store;
        for lit in store.lits.get(range(e.first, e.end)).unwrap_or(&[]) {
            meter.add(u64::from(lit.len).saturating_add(1));
            let Some(start) = window_end.checked_sub(usize::try_from(lit.window_end).unwrap_or(0))
            else {
                continue;
            };
            let len = usize::try_from(lit.len).unwrap_or(usize::MAX);
            let Some(there) = text.get(start..start.saturating_add(len)) else {
                continue;
            };
            // The first (up to) 8 bytes against the literal's folded head: a literal of at most
            // 8 bytes is confirmed by that alone, a longer one rejected there mostly.
            // Most literals a key window brings are not there: they are rejected first with bit 5
            // of every byte set on both sides (which keeps every match, and needs no folding).
            let word = head_of(text.get(start..).unwrap_or(there));
            let mask = head_mask(len);
            if ((word | CASE_BITS) ^ (lit.head | CASE_BITS)) & mask != 0
                || fold8(word) & mask != lit.head
            {
                continue;
            }
            if len > 8 {
                let rest = self
                    .arena
                    .get(range(
                        lit.start.saturating_add(8),
                        lit.start.saturating_add(lit.len),
                    ))
                    .unwrap_or(&[]);
                if !there.get(8..).is_some_and(|t| t.eq_ignore_ascii_case(rest)) {
                    continue;
                }
            }
            for &p in store.payloads.get(range(lit.first, lit.end)).unwrap_or(&[]) {
                meter.add(1);
                if on_hit(p, start, len, &mut meter.work) {
                    return true;
                }
            }
        }
        false
    }
}

/// Strings laid out as a pack's verified strings are.
#[cfg(test)]
pub(crate) struct Strs {
    text: Vec<u8>,
    ends: Vec<usize>,
}

#[cfg(test)]
impl Strs {
    pub(crate) fn new<S: AsRef<str>>(list: &[S]) -> Strs {
        let mut text = Vec::new();
        let mut ends = Vec::new();
        for s in list {
            text.extend_from_slice(s.as_ref().as_bytes());
            ends.push(text.len());
        }
        Strs { text, ends }
    }

    pub(crate) fn text(&self) -> &[u8] {
        &self.text
    }

    pub(crate) fn arena(&self) -> Arena<'_> {
        Arena {
            text: &self.text,
            ends: &self.ends,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::{String, ToString};
    use alloc::vec;

    /// One index in a store of its own over the literals (each its own string), as tests build
    /// them.
    fn build(lits: &[(&str, u32)], every_event: bool) -> (Strs, GramStore, GramIndex) {
        let strs = Strs::new(&lits.iter().map(|l| l.0).collect::<Vec<_>>());
        let mut store = GramStore::default();
        let mut scratch = GramScratch::new(strs.arena(), StringFacts::of(strs.arena()));
        let literals = lits.iter().enumerate().map(|(i, l)| (i as u32, l.1));
        let ix = if every_event {
            store.add_for_every_event(literals, &mut scratch)
        } else {
            store.add(literals, &mut scratch)
        };
        (strs, store, ix)
    }

    /// Every (payload, start) a scan reports, and checks its work against the bound.
    fn hits((strs, store, ix): &(Strs, GramStore, GramIndex), text: &str) -> Vec<(u32, usize)> {
        let mut out = Vec::new();
        let mut work = 0u64;
        store.scan(ix, &strs.text, text.as_bytes(), &mut work, |p, s, _, _| {
            out.push((p, s));
            false
        });
        assert!(
            work <= ix.scan_bound(text.len(), Payloads::Each),
            "work {work} over the bound {} for {text:?}",
            ix.scan_bound(text.len(), Payloads::Each)
        );
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

    /// Whether `reported` (a scan's (payload, start) pairs, sorted) is every occurrence of
    /// `lits` in `text` ([`naive`]) less only what a scan may skip in a run of one repeated
    /// byte (`View::run_skips`): each occurrence not reported lies in a run of one raw byte,
    /// neither at the text's start nor at its end, and its payload is reported at an earlier
    /// start in that run. So every test's answer (anywhere, at the start, at the end, the whole
    /// value) is the same.
    fn reports_occurrences(
        reported: &[(u32, usize)],
        lits: &[(&str, u32)],
        text: &str,
    ) -> Result<(), String> {
        let all = naive(lits, text);
        let t = text.as_bytes();
        let shown: String = text.chars().take(120).collect();
        if let Some(extra) = reported.iter().find(|r| !all.contains(r)) {
            return Err(format!(
                "reported {extra:?}, which does not occur in {shown:?}"
            ));
        }
        for &(p, start) in all.iter().filter(|o| !reported.contains(o)) {
            let skippable = lits.iter().any(|&(l, q)| {
                let end = start + l.len();
                q == p
                    && !l.is_empty()
                    && t[start..end].eq_ignore_ascii_case(l.as_bytes())
                    && start > 0
                    && end < t.len()
                    && reported.iter().any(|&(r, earlier)| {
                        r == p && earlier < start && t[earlier..end].iter().all(|&b| b == t[start])
                    })
            });
            if !skippable {
                return Err(format!(
                    "missed ({p}, {start}) in {shown:?} ({} bytes); {} reported",
                    t.len(),
                    reported.len()
                ));
            }
        }
        Ok(())
    }

    #[test]
    fn fold8_lowercases_exactly_the_ascii_capitals() {
        for b in 0..=255u8 {
            for at in 0..8 {
                // The byte among neighbours that are capitals, lowercase and non-ASCII.
                let mut word = *b"AzQ\xC9\x80Z@[";
                word[at] = b;
                let folded = fold8(u64::from_le_bytes(word)).to_le_bytes();
                let expected = word.map(|c| c.to_ascii_lowercase());
                assert_eq!(folded, expected, "byte {b:#04x} at {at}");
            }
        }
    }

    #[test]
    fn common_windows_go_last_by_how_common() {
        // Every window of this literal is a window of the common text; it is keyed by one the
        // text holds least (of `winsxs`), not by one of every `windows` (`dow`).
        let lit = b":\\Windows\\WinSxS\\";
        let end = key_window_end(lit);
        let count = common_window_count;
        let dow = count(key_of(b"dow") & 0xFF_FFFF);
        assert!(
            count(window_at(lit, end)) < dow,
            "keyed at {:?}",
            String::from_utf8_lossy(&lit[end - GRAM..end])
        );
    }

    #[test]
    fn base64_windows_are_the_commonest_of_encoded_text() {
        // An encoded `e` at each alignment, and UTF-16's zero bytes.
        for w in [b"zqb", b"agu", b"azq", b"aca", b"aaa"] {
            assert!(
                base64_window(key_of(w) & 0xFF_FFFF),
                "{:?}",
                String::from_utf8_lossy(w)
            );
        }
        // The set is sparse, so it rarely decides a path's key.
        let set: u32 = BASE64_WINDOWS.iter().map(|w| w.count_ones()).sum();
        assert!(set <= 200, "{set} of 16384 bits set");
        let path = b"\\windows\\temp\\mimikatz.exe";
        let marked = path
            .windows(GRAM)
            .filter(|w| base64_window(key_of(w) & 0xFF_FFFF))
            .count();
        assert!(marked <= 1, "{marked} windows of a path marked");
        // Base64 literals are keyed by a window of an uncommon character, not an `e`'s: the
        // encodings of `(New-Object Net.WebClient)` and `DisableRealtimeMonitoring`.
        for lit in [
            &b"uAGUAVAAuAFcAZQBCA"[..],
            b"kAGkAcwBhAGIAbABlAHIAZQBhAGwAdABpAG0AZQBtAG8AbgBpAHQAbwByAGkAbgBnACAA",
        ] {
            let end = key_window_end(lit);
            let key = &lit[end - GRAM..end];
            assert!(
                !base64_window(window_at(lit, end)),
                "keyed at {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn scans_fold_exactly_the_ascii_capitals() {
        // Every ASCII byte, as literals of 1, 2 and 3 bytes (the short-window table and the
        // bitmap) and of 16 (a strided index), against a text of every byte in both cases: a
        // literal occurs where its byte does, in either case, and nowhere else (`@` is not `` ` ``,
        // `[` is not `{`).
        let bytes: Vec<u8> = (1..=127u8).collect();
        let text: String = bytes
            .iter()
            .flat_map(|&b| {
                let (lower, upper) = (b.to_ascii_lowercase(), b.to_ascii_uppercase());
                [lower; 16]
                    .into_iter()
                    .chain([b' '])
                    .chain([upper; 16])
                    .chain([b' '])
            })
            .map(char::from)
            .collect();
        for n in [1usize, 2, 3, 16] {
            let owned: Vec<String> = bytes
                .iter()
                .filter(|b| !b.is_ascii_uppercase())
                .map(|&b| String::from(char::from(b)).repeat(n))
                .collect();
            let lits: Vec<(&str, u32)> = owned
                .iter()
                .zip(0u32..)
                .map(|(s, p)| (s.as_str(), p))
                .collect();
            for every_event in [false, true] {
                let got = hits(&build(&lits, every_event), &text);
                if let Err(e) = reports_occurrences(&got, &lits, &text) {
                    panic!("literals of {n} bytes, every_event {every_event}: {e}");
                }
            }
        }
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
        let ix = build(&lits, false);
        for text in [
            "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe -Enc AAAA",
            "cmd.exe /c C:\\Windows\\cmd.exe CMD",
            "aaaab",
            "",
            "p",
        ] {
            assert_eq!(reports_occurrences(&hits(&ix, text), &lits, text), Ok(()));
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
        let (strs, store, ix) = build(&[("abc", 1), ("bcd", 2)], false);
        let mut seen = vec![];
        let mut work = 0;
        assert!(
            store.scan(&ix, &strs.text, b"xabcd", &mut work, |p, _, _, _| {
                seen.push(p);
                true
            })
        );
        assert_eq!(seen, vec![1]);
        assert!(!store.scan(&ix, &strs.text, b"xyz", &mut work, |_, _, _, _| true));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn agrees_with_naive_search(
            lits in proptest::collection::vec("[abcAB.\\\\]{0,7}", 0..12),
            text in "[abcAB.\\\\x]{0,40}",
        ) {
            let lits: Vec<(&str, u32)> = lits.iter().enumerate().map(|(i, s)| (s.as_str(), i as u32)).collect();
            let ix = build(&lits, false);
            proptest::prop_assert_eq!(reports_occurrences(&hits(&ix, &text), &lits, &text), Ok(()));
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
            let strs = Strs::new(&pool);
            let facts = StringFacts::new(strs.arena(), ends.collect());
            let mut scratch = GramScratch::new(strs.arena(), facts);
            let lits: Vec<Vec<(u32, u32)>> = sets
                .iter()
                .map(|set| {
                    set.iter()
                        .filter(|&&i| i < pool.len())
                        .enumerate()
                        .map(|(p, &i)| (i as u32, p as u32))
                        .collect()
                })
                .collect();
            let indexes: Vec<GramIndex> =
                lits.iter().map(|l| store.add(l.iter().copied(), &mut scratch)).collect();
            let strs = (strs, store);
            for (ix, l) in indexes.into_iter().zip(&lits) {
                let plain: Vec<(&str, u32)> = l.iter().map(|&(i, p)| (pool[i as usize].as_str(), p)).collect();
                let (s, st) = (Strs { text: strs.0.text.clone(), ends: strs.0.ends.clone() }, strs.1.clone());
                proptest::prop_assert_eq!(reports_occurrences(&hits(&(s, st, ix), &text), &plain, &text), Ok(()));
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
            let ix = build(&lits, true);
            let short = lits.iter().any(|(l, _)| l.len() < GRAM);
            proptest::prop_assert_eq!(ix.2.short_start.is_some(), short);
            proptest::prop_assert_eq!(reports_occurrences(&hits(&ix, &text), &lits, &text), Ok(()));
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
            let ix = build(&lits, true);
            proptest::prop_assert!(ix.2.strided);
            proptest::prop_assert_eq!(hits(&ix, &text), naive(&lits, &text));
        }

        /// Texts of runs (padding: `;;;;`, spaces, one letter in either case) and literals made
        /// of runs, each keyed by any of its windows: a scan skips repeats deep in a run, and
        /// every literal is still reported where it first occurs in each run, at the text's start
        /// and at its end, and wherever a run meets other bytes. Its work stays within the bound.
        #[test]
        fn runs_are_skipped_without_losing_an_answer(
            lits in proptest::collection::vec(
                (proptest::collection::vec((0usize..5, 1usize..8), 1..3), 0usize..16), 1..10),
            runs in proptest::collection::vec((0usize..5, 0usize..40), 0..10),
            every_event in proptest::bool::ANY,
        ) {
            const BYTES: [char; 5] = [';', ' ', 'a', 'A', 'x'];
            let make = |parts: &[(usize, usize)]| -> String {
                parts.iter().map(|&(b, n)| BYTES[b].to_string().repeat(n)).collect()
            };
            let owned: Vec<String> = lits.iter().map(|(l, _)| make(l)).collect();
            let ends = owned.iter().zip(&lits).map(|(s, (_, pick))| {
                let shortest = s.len().min(GRAM);
                (shortest + pick % (s.len() - shortest + 1)) as u32
            });
            let strs = Strs::new(&owned);
            let mut scratch = GramScratch::new(strs.arena(), StringFacts::new(strs.arena(), ends.collect()));
            let mut store = GramStore::default();
            let literals = (0..owned.len()).map(|i| (i as u32, i as u32));
            let ix = if every_event {
                store.add_for_every_event(literals, &mut scratch)
            } else {
                store.add(literals, &mut scratch)
            };
            let plain: Vec<(&str, u32)> = owned.iter().zip(0u32..).map(|(s, p)| (s.as_str(), p)).collect();
            let text = make(&runs);
            proptest::prop_assert_eq!(reports_occurrences(&hits(&(strs, store, ix), &text), &plain, &text), Ok(()));
        }
    }
}
