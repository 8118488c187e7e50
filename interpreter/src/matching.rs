//! String predicates: comparisons with optional ASCII case folding and wildcard patterns. All are
//! total functions over any input, allocate nothing, and run in time linear in the lengths
//! (wildcard segments holding `?` excepted, see [`glob_bound`]).
//!
//! Each predicate has a metered form that adds the work it did to a counter, in units of one byte
//! read or compared by an inner loop step (every step of every loop that walks the value or the
//! constant, precomputation included), and a bound function that gives, from the lengths alone, an
//! upper bound on what the metered form can add: the verifier's cost model charges the bound, the
//! VM counts the same units while it runs.
//!
//! Substring search ([`StrOp::Contains`] and the middle segments of a wildcard pattern) first runs
//! the naive search (fast on short needles and ordinary text) while its work stays within
//! `2 x (bytes passed) + needle length`; past that it switches, at the position it reached, to
//! Crochemore and Perrin's Two-Way algorithm (constant space, at most `3 x text + 9 x needle + 2`
//! steps including its precomputation). Either way the search costs at most
//! `3 x text + 12 x needle + 4` units.

use alloc::string::String;
use alloc::vec::Vec;

use crate::insn::{Case, StrOp};

/// ASCII case folding, or none; `CI` selects at compile time so that inner loops do not branch on it.
#[inline(always)]
fn fold<const CI: bool>(b: u8) -> u8 {
    if CI {
        b.to_ascii_lowercase()
    } else {
        b
    }
}

fn u(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn add(work: &mut u64, n: usize) {
    *work = work.saturating_add(u(n));
}

/// Compares `a` and `b` (same length) byte by byte up to the first difference; the units are the
/// bytes compared.
fn eq_counted<const CI: bool>(a: &[u8], b: &[u8], work: &mut u64) -> bool {
    match a
        .iter()
        .zip(b)
        .position(|(x, y)| fold::<CI>(*x) != fold::<CI>(*y))
    {
        Some(i) => {
            add(work, i.saturating_add(1));
            false
        }
        None => {
            add(work, a.len());
            true
        }
    }
}

fn eq_metered(a: &[u8], b: &[u8], case: Case, work: &mut u64) -> bool {
    add(work, 1);
    if a.len() != b.len() {
        return false;
    }
    match case {
        Case::Insensitive => eq_counted::<true>(a, b, work),
        Case::Sensitive => eq_counted::<false>(a, b, work),
    }
}

/// Compares `value` with the constant `needle`.
pub fn compare(value: &str, op: StrOp, needle: &str, case: Case) -> bool {
    compare_metered(value, op, needle, case, &mut 0)
}

/// [`compare`], adding the units of work done to `work` (at most [`compare_bound`]).
pub fn compare_metered(value: &str, op: StrOp, needle: &str, case: Case, work: &mut u64) -> bool {
    let (v, n) = (value.as_bytes(), needle.as_bytes());
    match op {
        StrOp::Eq => eq_metered(v, n, case, work),
        StrOp::StartsWith => match v.get(..n.len()) {
            Some(p) => eq_metered(p, n, case, work),
            None => {
                add(work, 1);
                false
            }
        },
        StrOp::EndsWith => match v.len().checked_sub(n.len()).and_then(|s| v.get(s..)) {
            Some(p) => eq_metered(p, n, case, work),
            None => {
                add(work, 1);
                false
            }
        },
        StrOp::Contains => {
            add(work, 1);
            match case {
                Case::Insensitive => find::<true, _>(v, n, work).is_some(),
                Case::Sensitive => find::<false, _>(v, n, work).is_some(),
            }
        }
    }
}

/// An upper bound on the units [`compare_metered`] adds for `op` with a needle of `needle_len`
/// bytes and any value of at most `value_len` bytes, either case:
///
/// - `Eq`, `StartsWith`, `EndsWith`: `min(value_len, needle_len) + 1`;
/// - `Contains`: `1` if the needle is empty or longer than `value_len`, else
///   `3 x value_len + 12 x needle_len + 5`.
pub fn compare_bound(op: StrOp, value_len: usize, needle_len: usize) -> u64 {
    match op {
        StrOp::Eq | StrOp::StartsWith | StrOp::EndsWith => {
            u(value_len.min(needle_len)).saturating_add(1)
        }
        StrOp::Contains => {
            if needle_len == 0 || needle_len > value_len {
                1
            } else {
                find_bound(value_len, needle_len).saturating_add(1)
            }
        }
    }
}

/// The bound on [`find`]'s units for `text` bytes passed (the text searched up to the end of the
/// match, or all of it) and a needle of `m >= 1` bytes.
fn find_bound(text: usize, m: usize) -> u64 {
    u(text)
        .saturating_mul(3)
        .saturating_add(u(m).saturating_mul(12))
        .saturating_add(4)
}

/// A needle for substring search: a byte string, or the UTF-8 encoding of a run of literal glob
/// tokens, read through cursors that step one byte either way in constant time.
trait Needle: Copy {
    type Cur: Copy;
    /// Length in bytes.
    fn len(self) -> usize;
    /// A cursor at byte 0.
    fn start(self) -> Self::Cur;
    /// The byte under the cursor (0 past the end, which the searches never read).
    fn at(self, c: Self::Cur) -> u8;
    fn next(self, c: Self::Cur) -> Self::Cur;
    fn prev(self, c: Self::Cur) -> Self::Cur;
    /// A cursor at byte `i`, adding the steps taken to `work`.
    fn seek(self, i: usize, work: &mut u64) -> Self::Cur;
}

impl Needle for &[u8] {
    type Cur = usize;
    #[inline(always)]
    fn len(self) -> usize {
        <[u8]>::len(self)
    }
    #[inline(always)]
    fn start(self) -> usize {
        0
    }
    #[inline(always)]
    fn at(self, c: usize) -> u8 {
        self.get(c).copied().unwrap_or(0)
    }
    #[inline(always)]
    fn next(self, c: usize) -> usize {
        c.saturating_add(1)
    }
    #[inline(always)]
    fn prev(self, c: usize) -> usize {
        c.saturating_sub(1)
    }
    #[inline(always)]
    fn seek(self, i: usize, _work: &mut u64) -> usize {
        i
    }
}

/// A run of [`GlobTok::Lit`] tokens (no `*` or `?`) seen as the bytes of its UTF-8 encoding.
#[derive(Clone, Copy)]
struct Lits<'a> {
    toks: &'a [GlobTok],
    bytes: usize,
}

fn tok_char(t: Option<&GlobTok>) -> char {
    match t {
        Some(GlobTok::Lit(c)) => *c,
        _ => '\0',
    }
}

impl Needle for Lits<'_> {
    /// (token index, byte within its character)
    type Cur = (usize, usize);
    fn len(self) -> usize {
        self.bytes
    }
    fn start(self) -> (usize, usize) {
        (0, 0)
    }
    fn at(self, (t, o): (usize, usize)) -> u8 {
        let c = tok_char(self.toks.get(t));
        if c.is_ascii() {
            return u8::try_from(u32::from(c)).unwrap_or(0);
        }
        let mut buf = [0u8; 4];
        c.encode_utf8(&mut buf)
            .as_bytes()
            .get(o)
            .copied()
            .unwrap_or(0)
    }
    fn next(self, (t, o): (usize, usize)) -> (usize, usize) {
        let o = o.saturating_add(1);
        if o < tok_char(self.toks.get(t)).len_utf8() {
            (t, o)
        } else {
            (t.saturating_add(1), 0)
        }
    }
    fn prev(self, (t, o): (usize, usize)) -> (usize, usize) {
        match o.checked_sub(1) {
            Some(o) => (t, o),
            None => {
                let t = t.saturating_sub(1);
                (t, tok_char(self.toks.get(t)).len_utf8().saturating_sub(1))
            }
        }
    }
    fn seek(self, i: usize, work: &mut u64) -> (usize, usize) {
        let mut at = 0usize;
        for (t, tok) in self.toks.iter().enumerate() {
            add(work, 1);
            let l = tok_char(Some(tok)).len_utf8();
            if i < at.saturating_add(l) {
                return (t, i.saturating_sub(at));
            }
            at = at.saturating_add(l);
        }
        (self.toks.len(), 0)
    }
}

/// The leftmost occurrence of `needle` (non-empty) in `hay`: naive search while its work stays
/// within `2 x (bytes passed) + m`, then Two-Way from where it stopped. At most
/// [`find_bound`]`(s, m)` units, where `s` is the end of the match or the length of `hay`.
fn find<const CI: bool, N: Needle>(hay: &[u8], needle: N, work: &mut u64) -> Option<usize> {
    let m = needle.len();
    let c0 = needle.start();
    let first = fold::<CI>(needle.at(c0));
    let rest = needle.next(c0);
    let last = hay.len().checked_sub(m)?;
    if m == 0 {
        return Some(0);
    }
    let mut i = 0usize;
    let mut spent = 0usize;
    let res = loop {
        let Some(window) = hay.get(i..=last) else {
            break None;
        };
        let Some(off) = window.iter().position(|&b| fold::<CI>(b) == first) else {
            spent = spent.saturating_add(window.len());
            break None;
        };
        spent = spent.saturating_add(off).saturating_add(1);
        i = i.saturating_add(off);
        if spent > i.saturating_mul(2).saturating_add(m) {
            add(work, spent);
            return two_way::<CI, N>(hay, i, needle, work);
        }
        // Compare the rest of the window.
        let mut c = rest;
        let mut ok = true;
        for &h in hay
            .get(i.saturating_add(1)..i.saturating_add(m))
            .unwrap_or(&[])
        {
            spent = spent.saturating_add(1);
            if fold::<CI>(h) != fold::<CI>(needle.at(c)) {
                ok = false;
                break;
            }
            c = needle.next(c);
        }
        if ok {
            break Some(i);
        }
        i = i.saturating_add(1);
    };
    add(work, spent);
    res
}

/// Crochemore-Perrin's maximal suffix of `needle` for the order `<` (or `>` when `rev`): its
/// start (the critical position) and its period. At most `2m - 1` steps: each step increases
/// `left + right + offset`, which stays below `2m`.
fn maximal_suffix<const CI: bool, N: Needle>(
    needle: N,
    rev: bool,
    work: &mut u64,
) -> (usize, usize) {
    let m = needle.len();
    let (mut left, mut right, mut offset, mut period) = (0usize, 1usize, 0usize, 1usize);
    let mut c_left = needle.start();
    let mut c_right = needle.next(c_left);
    let (mut c_lo, mut c_ro) = (c_left, c_right); // at left + offset, right + offset
    while right.saturating_add(offset) < m {
        add(work, 1);
        let a = fold::<CI>(needle.at(c_ro));
        let b = fold::<CI>(needle.at(c_lo));
        if a == b {
            if offset.saturating_add(1) == period {
                right = right.saturating_add(offset).saturating_add(1);
                offset = 0;
                c_right = needle.next(c_ro);
                c_ro = c_right;
                c_lo = c_left;
            } else {
                offset = offset.saturating_add(1);
                c_ro = needle.next(c_ro);
                c_lo = needle.next(c_lo);
            }
        } else if (a < b) != rev {
            // The suffix at `right` is smaller: the period is the whole prefix so far.
            right = right.saturating_add(offset).saturating_add(1);
            offset = 0;
            period = right.saturating_sub(left);
            c_right = needle.next(c_ro);
            c_ro = c_right;
            c_lo = c_left;
        } else {
            // The suffix at `right` is larger: start over from it.
            left = right;
            right = right.saturating_add(1);
            offset = 0;
            period = 1;
            c_left = c_right;
            c_right = needle.next(c_right);
            c_ro = c_right;
            c_lo = c_left;
        }
    }
    (left, period)
}

/// Two-Way search for `needle` (non-empty) in `hay`, starting at `from`. Units: precomputation at
/// most `9m` (two maximal suffixes `4m`, the periodicity check `m`, three cursor seeks `3m`, the
/// byte set `m`); search at most `3s + 2` where `s` is the text passed from `from` (each text byte
/// is compared at most once by the right half; left-half comparisons never exceed the shift that
/// follows them, except the final match's, at most `m`; one byte-set probe per window).
fn two_way<const CI: bool, N: Needle>(
    hay: &[u8],
    from: usize,
    needle: N,
    work: &mut u64,
) -> Option<usize> {
    let m = needle.len();
    let (crit_a, per_a) = maximal_suffix::<CI, N>(needle, false, work);
    let (crit_b, per_b) = maximal_suffix::<CI, N>(needle, true, work);
    let (crit, period) = if crit_a > crit_b {
        (crit_a, per_a)
    } else {
        (crit_b, per_b)
    };
    // Short period: needle[..crit] == needle[period..period + crit], then the period is the
    // needle's and the search remembers the prefix already matched.
    let mut c = needle.start();
    let mut d = needle.seek(period, work);
    let mut short = period.saturating_add(crit) <= m;
    for _ in 0..crit {
        if !short {
            break;
        }
        add(work, 1);
        short = fold::<CI>(needle.at(c)) == fold::<CI>(needle.at(d));
        c = needle.next(c);
        d = needle.next(d);
    }
    let (period, mem_pos) = if short {
        (period, m.saturating_sub(period))
    } else {
        (crit.max(m.saturating_sub(crit)).saturating_add(1), crit)
    };
    let c_crit = needle.seek(crit, work);
    let c_mem = needle.seek(mem_pos, work);
    let mut byteset = 0u64;
    let mut c = needle.start();
    for _ in 0..m {
        add(work, 1);
        byteset |= 1u64 << (fold::<CI>(needle.at(c)) & 63);
        c = needle.next(c);
    }
    let mut position = from;
    let mut memory = 0usize; // with a short period: needle[..memory] is known to match here
    'search: loop {
        let tail = hay.get(position.saturating_add(m).saturating_sub(1))?;
        add(work, 1);
        if byteset & (1u64 << (fold::<CI>(*tail) & 63)) == 0 {
            position = position.saturating_add(m);
            memory = 0;
            continue;
        }
        // Right half, from the critical position (or past what memory says matched).
        let (mut i, mut c) = if short && memory > crit {
            (memory, c_mem)
        } else {
            (crit, c_crit)
        };
        while i < m {
            add(work, 1);
            let h = hay.get(position.saturating_add(i)).copied().unwrap_or(0);
            if fold::<CI>(h) != fold::<CI>(needle.at(c)) {
                position = position
                    .saturating_add(i.saturating_sub(crit))
                    .saturating_add(1);
                memory = 0;
                continue 'search;
            }
            i = i.saturating_add(1);
            c = needle.next(c);
        }
        // Left half, right to left.
        let stop = if short { memory } else { 0 };
        let (mut i, mut c) = (crit, c_crit);
        while i > stop {
            i = i.saturating_sub(1);
            c = needle.prev(c);
            add(work, 1);
            let h = hay.get(position.saturating_add(i)).copied().unwrap_or(0);
            if fold::<CI>(h) != fold::<CI>(needle.at(c)) {
                position = position.saturating_add(period);
                if short {
                    memory = m.saturating_sub(period);
                }
                continue 'search;
            }
        }
        return Some(position);
    }
}

/// A token of a parsed wildcard pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobTok {
    /// A literal character.
    Lit(char),
    /// `?`: any one character.
    One,
    /// `*`: any run of characters, including none.
    Any,
}

/// Parses a wildcard pattern: `*` any run, `?` one character, `\*` `\?` `\\` literals, and a
/// backslash before any other character (or at the end) is itself literal, as in Sigma. `None` if
/// the pattern is not UTF-8.
pub fn parse_glob(pattern: &[u8]) -> Option<Vec<GlobTok>> {
    let mut out = Vec::new();
    parse_glob_into(pattern, &mut out).then_some(out)
}

/// [`parse_glob`], appending the tokens to `out` (which may hold other patterns' tokens); on
/// failure `out` may hold some of this pattern's tokens, and the caller drops them.
pub(crate) fn parse_glob_into(pattern: &[u8], out: &mut Vec<GlobTok>) -> bool {
    let Ok(s) = core::str::from_utf8(pattern) else {
        return false;
    };
    let start = out.len();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                if out.len() == start || out.last() != Some(&GlobTok::Any) {
                    out.push(GlobTok::Any);
                }
            }
            '?' => out.push(GlobTok::One),
            '\\' => match chars.peek() {
                Some(&n @ ('*' | '?' | '\\')) => {
                    chars.next();
                    out.push(GlobTok::Lit(n));
                }
                _ => out.push(GlobTok::Lit('\\')),
            },
            c => out.push(GlobTok::Lit(c)),
        }
    }
    true
}

fn char_eq(a: char, b: char, case: Case) -> bool {
    match case {
        Case::Insensitive => a.eq_ignore_ascii_case(&b),
        Case::Sensitive => a == b,
    }
}

/// Matches `value` against a parsed wildcard pattern (whole value), in linear time (see
/// [`glob_bound`]).
pub fn glob_match(value: &str, pat: &[GlobTok], case: Case) -> bool {
    glob_match_metered(value, pat, case, &mut 0)
}

/// Matches the `*`-free tokens `seg` at the start of `chars` (forward or, reversed, at the end);
/// `Some(bytes consumed)`. Units: the bytes of each character read, so at most
/// [`seg_cost`]`(seg)`.
fn match_anchored<'a>(
    mut chars: impl Iterator<Item = char>,
    seg: impl Iterator<Item = &'a GlobTok>,
    case: Case,
    work: &mut u64,
) -> Option<usize> {
    let mut used = 0usize;
    for t in seg {
        let Some(c) = chars.next() else {
            add(work, 1);
            return None;
        };
        add(work, c.len_utf8());
        match t {
            GlobTok::Lit(l) if !char_eq(*l, c, case) => return None,
            _ => used = used.saturating_add(c.len_utf8()),
        }
    }
    Some(used)
}

/// What [`match_anchored`] can spend on `seg`: the literals' bytes (a matched character is as long
/// as its literal), 4 per `?`, and 4 for the character that fails.
fn seg_cost(seg: &[GlobTok]) -> u64 {
    seg.iter()
        .map(|t| match t {
            GlobTok::Lit(c) => u(c.len_utf8()),
            _ => 4,
        })
        .fold(4u64, u64::saturating_add)
}

/// The literal of a segment with `?` that a search looks for first: the one whose first byte is
/// least common in Windows paths and command lines (the first of equals), as (how many tokens
/// come before it, that byte). `None` when the segment has no literal.
fn pivot(seg: &[GlobTok]) -> Option<(usize, u8)> {
    let mut best: Option<(usize, u8, u32)> = None;
    for (k, t) in seg.iter().enumerate() {
        if let GlobTok::Lit(c) = t {
            let mut buf = [0u8; 4];
            let b = c
                .encode_utf8(&mut buf)
                .as_bytes()
                .first()
                .copied()
                .unwrap_or(0);
            let score = crate::gramindex::commonness(b);
            if best.is_none_or(|(_, _, s)| score < s) {
                best = Some((k, b, score));
            }
        }
    }
    best.map(|(k, b, _)| (k, b))
}

/// The leftmost match of the `*`-free, non-empty segment `seg` in `region`; `Some(end)`, the byte
/// just past it. A segment of literals only is a substring search ([`find`]). One with `?` is
/// tried only where its [`pivot`] literal's first byte occurs, `k` tokens in: the `k` tokens
/// before it matched backwards from there, the rest forwards. Tries go in order, and where a
/// try's match would start grows with where its pivot is, so the first try that matches is the
/// leftmost match: at most `s x (seg_cost + 1)` units with `k = 0`, `s x (seg_cost + 5)` else
/// (two matches, each with its failing character), `s` the region passed. A segment of `?`
/// only is tried at each character, `s x (seg_cost + 1)`.
fn find_segment(region: &str, seg: &[GlobTok], case: Case, work: &mut u64) -> Option<usize> {
    add(work, 1);
    let lits = !seg.contains(&GlobTok::One);
    if lits {
        let bytes = seg.iter().map(|t| tok_char(Some(t)).len_utf8()).sum();
        let needle = Lits { toks: seg, bytes };
        let at = match case {
            Case::Insensitive => find::<true, _>(region.as_bytes(), needle, work),
            Case::Sensitive => find::<false, _>(region.as_bytes(), needle, work),
        }?;
        return Some(at.saturating_add(bytes));
    }
    // The fewest bytes the segment can match.
    let min: usize = seg
        .iter()
        .map(|t| match t {
            GlobTok::Lit(c) => c.len_utf8(),
            _ => 1,
        })
        .sum();
    if let Some((k, byte)) = pivot(seg) {
        return match case {
            Case::Insensitive => find_pivoted::<true>(region, seg, (k, byte), min, work),
            Case::Sensitive => find_pivoted::<false>(region, seg, (k, byte), min, work),
        };
    }
    for (p, _) in region.char_indices() {
        add(work, 1);
        let rest = region.get(p..)?;
        if rest.len() < min {
            return None;
        }
        if let Some(n) = match_anchored(rest.chars(), seg.iter(), case, work) {
            return Some(p.saturating_add(n));
        }
    }
    None
}

/// Where `a` or `b` first occurs in `hay`: memchr's SSE2 search on x86-64 whatever memchr's
/// features (SSE2 is the x86-64 baseline, which kernel code may use; with `std` memchr would pick
/// AVX2 at run time, which the driver must not), so a benchmark on the host measures what the
/// driver runs; memchr's portable search elsewhere.
fn find_byte(a: u8, b: u8, hay: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        use memchr::arch::x86_64::sse2::memchr as sse2;
        let found = if a == b {
            sse2::One::new(a).map(|s| s.find(hay))
        } else {
            sse2::Two::new(a, b).map(|s| s.find(hay))
        };
        if let Some(found) = found {
            return found;
        }
    }
    use memchr::arch::all::memchr as portable;
    if a == b {
        portable::One::new(a).find(hay)
    } else {
        portable::Two::new(a, b).find(hay)
    }
}

/// [`find_segment`] of a segment with `?` and its pivot (`k` tokens in, first byte `byte`). Not
/// inlined: its locals would join the frame of the VM's evaluation, which the driver's callbacks
/// run on a small stack budget (see `stack-budget/`).
#[inline(never)]
fn find_pivoted<const CI: bool>(
    region: &str,
    seg: &[GlobTok],
    (k, byte): (usize, u8),
    min: usize,
    work: &mut u64,
) -> Option<usize> {
    let case = if CI {
        Case::Insensitive
    } else {
        Case::Sensitive
    };
    let bytes = region.as_bytes();
    let want = fold::<CI>(byte);
    let mut from = 0usize;
    loop {
        let rest = bytes.get(from..)?;
        // The pivot byte, in either case if folded.
        let other = if CI { want.to_ascii_uppercase() } else { want };
        let Some(off) = find_byte(want, other, rest) else {
            add(work, rest.len());
            return None;
        };
        add(work, off.saturating_add(1));
        let q = from.saturating_add(off);
        from = q.saturating_add(1);
        // A pivot byte is ASCII or a character's first byte, so `q` is where a character starts.
        let (Some(before), Some(after)) = (region.get(..q), region.get(q..)) else {
            continue;
        };
        let (head, tail) = seg.split_at(k.min(seg.len()));
        let Some(back) = match_anchored(before.chars().rev(), head.iter().rev(), case, work) else {
            continue;
        };
        if bytes.len().saturating_sub(q.saturating_sub(back)) < min {
            // Every later try starts later still.
            return None;
        }
        if let Some(n) = match_anchored(after.chars(), tail.iter(), case, work) {
            return Some(q.saturating_add(n));
        }
    }
}

/// [`glob_match`], adding the units of work done to `work` (at most [`glob_bound`]). The segments
/// between `*`s are matched one by one: the first at the start, the last at the end, and each
/// middle one at its leftmost occurrence after the previous one (earliest is always best, since
/// a segment matches a fixed number of characters), so no position is ever retried.
pub fn glob_match_metered(value: &str, pat: &[GlobTok], case: Case, work: &mut u64) -> bool {
    let (Some(first), Some(last)) = (
        pat.iter().position(|t| *t == GlobTok::Any),
        pat.iter().rposition(|t| *t == GlobTok::Any),
    ) else {
        return match_anchored(value.chars(), pat.iter(), case, work) == Some(value.len());
    };
    let head = pat.get(..first).unwrap_or(&[]);
    let tail = pat.get(last.saturating_add(1)..).unwrap_or(&[]);
    let middle = pat.get(first.saturating_add(1)..last).unwrap_or(&[]);
    let Some(mut pos) = match_anchored(value.chars(), head.iter(), case, work) else {
        return false;
    };
    let Some(rest) = value.get(pos..) else {
        return false;
    };
    let Some(tail_len) = match_anchored(rest.chars().rev(), tail.iter().rev(), case, work) else {
        return false;
    };
    let limit = value.len().saturating_sub(tail_len);
    for seg in middle.split(|t| *t == GlobTok::Any) {
        if seg.is_empty() {
            continue;
        }
        let Some(region) = value.get(pos..limit) else {
            return false;
        };
        match find_segment(region, seg, case, work) {
            Some(end) => pos = pos.saturating_add(end),
            None => return false,
        }
    }
    true
}

/// An upper bound on the units [`glob_match_metered`] adds for `pat` and any value of at most
/// `value_len` bytes, either case. With `seg_cost(s)` = 4 + the bytes of `s`'s literals + 4 per
/// `?`:
///
/// - no `*`: `seg_cost(pat)`;
/// - else `seg_cost(head) + seg_cost(tail) + rate x value_len + sum over middle segments of
///   (12 x bytes + 5)` for literal-only segments and `(seg_cost + 2)` for segments with `?`, where
///   `rate` is 3 if there is a literal-only middle segment and at least `seg_cost + 1` of each
///   middle segment with `?` (`seg_cost + 5` when its [`pivot`] is not its first token). The
///   middle segments share the value (each is searched from where the previous one ended), so
///   their text terms add up to `value_len` once: linear for literal-only segments,
///   `value_len x (segment length)` for the longest segment with `?`.
pub fn glob_bound(pat: &[GlobTok], value_len: usize) -> u64 {
    let (Some(first), Some(last)) = (
        pat.iter().position(|t| *t == GlobTok::Any),
        pat.iter().rposition(|t| *t == GlobTok::Any),
    ) else {
        return seg_cost(pat);
    };
    let head = pat.get(..first).unwrap_or(&[]);
    let tail = pat.get(last.saturating_add(1)..).unwrap_or(&[]);
    let middle = pat.get(first.saturating_add(1)..last).unwrap_or(&[]);
    let mut rate = 0u64;
    let mut fixed = seg_cost(head).saturating_add(seg_cost(tail));
    for seg in middle.split(|t| *t == GlobTok::Any) {
        if seg.is_empty() {
            continue;
        }
        if seg.contains(&GlobTok::One) {
            let c = seg_cost(seg);
            // Per byte passed: the pivot test, and at most one try, which matches the tokens
            // before the pivot backwards and the rest forwards (see `find_segment`). Without a
            // pivot, a try per character.
            let per_byte = match pivot(seg) {
                Some((k, _)) if k > 0 => c.saturating_add(5),
                _ => c.saturating_add(1),
            };
            rate = rate.max(per_byte);
            fixed = fixed.saturating_add(c).saturating_add(2);
        } else {
            let bytes: usize = seg.iter().map(|t| tok_char(Some(t)).len_utf8()).sum();
            rate = rate.max(3);
            fixed = fixed
                .saturating_add(u(bytes).saturating_mul(12))
                .saturating_add(5);
        }
    }
    rate.saturating_mul(u(value_len)).saturating_add(fixed)
}

/// The longest run of literal characters of a parsed wildcard pattern (the first of equals), as
/// text every match contains, which the compiler anchors a wildcard rule on and the verifier
/// accepts as implied by the pattern.
pub fn longest_run(toks: &[GlobTok]) -> String {
    let mut best = String::new();
    let mut cur = String::new();
    for t in toks.iter().chain(core::iter::once(&GlobTok::Any)) {
        match t {
            GlobTok::Lit(c) => cur.push(*c),
            _ => {
                if cur.len() > best.len() {
                    best = core::mem::take(&mut cur);
                }
                cur.clear();
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec;
    use proptest::prelude::*;

    fn g(p: &str, v: &str) -> bool {
        glob_match(
            v,
            &parse_glob(p.as_bytes()).unwrap_or_default(),
            Case::Insensitive,
        )
    }

    // ---- Reference implementations (the previous ones). ----

    fn ref_contains(hay: &[u8], needle: &[u8], case: Case) -> bool {
        if hay.len() * needle.len() > 1 << 20 {
            // Too slow naively in a debug build: the standard library's search on folded copies.
            let f = |b: &[u8]| match case {
                Case::Insensitive => b.to_ascii_lowercase(),
                Case::Sensitive => b.to_vec(),
            };
            let (h, n) = (f(hay), f(needle));
            let (h, n) = (
                core::str::from_utf8(&h).unwrap(),
                core::str::from_utf8(&n).unwrap(),
            );
            return h.contains(n);
        }
        needle.is_empty()
            || hay.windows(needle.len()).any(|w| match case {
                Case::Insensitive => w.eq_ignore_ascii_case(needle),
                Case::Sensitive => w == needle,
            })
    }

    fn ref_compare(value: &str, op: StrOp, needle: &str, case: Case) -> bool {
        let (v, n) = (value.as_bytes(), needle.as_bytes());
        let eq = |a: &[u8], b: &[u8]| match case {
            Case::Insensitive => a.eq_ignore_ascii_case(b),
            Case::Sensitive => a == b,
        };
        match op {
            StrOp::Eq => eq(v, n),
            StrOp::StartsWith => v.len() >= n.len() && eq(&v[..n.len()], n),
            StrOp::EndsWith => v.len() >= n.len() && eq(&v[v.len() - n.len()..], n),
            StrOp::Contains => ref_contains(v, n, case),
        }
    }

    /// The previous backtracking matcher.
    fn ref_glob(value: &str, pat: &[GlobTok], case: Case) -> bool {
        let v: Vec<char> = value.chars().collect();
        let (mut vi, mut pi) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        loop {
            match (pat.get(pi), v.get(vi)) {
                (Some(GlobTok::Any), _) => {
                    star = Some((pi + 1, vi));
                    pi += 1;
                    continue;
                }
                (Some(GlobTok::One), Some(_)) => {
                    pi += 1;
                    vi += 1;
                    continue;
                }
                (Some(GlobTok::Lit(l)), Some(c)) if char_eq(*l, *c, case) => {
                    pi += 1;
                    vi += 1;
                    continue;
                }
                (None, None) => return true,
                _ => {}
            }
            match star {
                Some((after, retry)) if retry < v.len() => {
                    star = Some((after, retry + 1));
                    pi = after;
                    vi = retry + 1;
                }
                _ => return false,
            }
        }
    }

    /// A string for a failure message: long ones (the adversarial families) cut short.
    fn short(s: &str) -> String {
        match s.char_indices().nth(60) {
            Some((i, _)) => alloc::format!("{:?}... ({} bytes)", &s[..i], s.len()),
            None => alloc::format!("{s:?}"),
        }
    }

    fn short_pat(p: &[GlobTok]) -> String {
        if p.len() <= 30 {
            alloc::format!("{p:?}")
        } else {
            alloc::format!("{:?}... ({} tokens)", &p[..30], p.len())
        }
    }

    const OPS: [StrOp; 4] = [
        StrOp::Eq,
        StrOp::StartsWith,
        StrOp::EndsWith,
        StrOp::Contains,
    ];
    const CASES: [Case; 2] = [Case::Insensitive, Case::Sensitive];

    fn check_compare(value: &str, needle: &str) {
        for op in OPS {
            for case in CASES {
                let mut work = 0u64;
                let got = compare_metered(value, op, needle, case, &mut work);
                assert_eq!(
                    got,
                    ref_compare(value, op, needle, case),
                    "{op:?} {case:?} {} {}",
                    short(value),
                    short(needle)
                );
                assert_eq!(got, compare(value, op, needle, case));
                let bound = compare_bound(op, value.len(), needle.len());
                assert!(
                    work <= bound,
                    "{op:?} {case:?} work {work} > bound {bound}: {} {}",
                    short(value),
                    short(needle)
                );
            }
        }
    }

    fn check_glob(value: &str, pat: &[GlobTok]) {
        check_glob_expecting(value, pat, None);
    }

    /// With `expect`, the answer is known (and the backtracking reference would be too slow).
    fn check_glob_expecting(value: &str, pat: &[GlobTok], expect: Option<bool>) {
        for case in CASES {
            let mut work = 0u64;
            let got = glob_match_metered(value, pat, case, &mut work);
            let want = expect.unwrap_or_else(|| ref_glob(value, pat, case));
            assert_eq!(got, want, "{case:?} {} {}", short(value), short_pat(pat));
            assert_eq!(got, glob_match(value, pat, case));
            let bound = glob_bound(pat, value.len());
            assert!(
                work <= bound,
                "{case:?} work {work} > bound {bound}: {} {}",
                short(value),
                short_pat(pat)
            );
        }
    }

    /// Two-Way on its own (the naive phase hides it on short inputs), against the reference and
    /// its own bound `3s + 9m + 2`, from every start position.
    fn check_two_way(hay: &[u8], needle: &[u8]) {
        for from in 0..=hay.len() {
            for case in CASES {
                let mut work = 0u64;
                let got = match case {
                    Case::Insensitive => two_way::<true, _>(hay, from, needle, &mut work),
                    Case::Sensitive => two_way::<false, _>(hay, from, needle, &mut work),
                };
                let want = (from..hay.len()).find(|&p| {
                    ref_contains(hay.get(p..p + needle.len()).unwrap_or(&[]), needle, case)
                        && p + needle.len() <= hay.len()
                });
                assert_eq!(got, want, "{case:?} {hay:?} {needle:?} from {from}");
                let s = match got {
                    Some(p) => p + needle.len() - from,
                    None => hay.len() - from,
                };
                let bound = 3 * s as u64 + 9 * needle.len() as u64 + 2;
                assert!(
                    work <= bound,
                    "two-way work {work} > {bound}: {hay:?} {needle:?} {from}"
                );
            }
        }
    }

    fn all_strings(alphabet: &[u8], max_len: usize) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new()];
        let mut layer = vec![Vec::new()];
        for _ in 0..max_len {
            let mut next = Vec::new();
            for s in &layer {
                for &a in alphabet {
                    let mut t: Vec<u8> = s.clone();
                    t.push(a);
                    next.push(t);
                }
            }
            out.extend(next.iter().cloned());
            layer = next;
        }
        out
    }

    #[test]
    fn two_way_exhaustively_on_small_alphabets() {
        // Every needle up to 7 bytes over {a, b, A}, every text up to 9 bytes over {a, b}.
        let needles = all_strings(b"abA", 7);
        let texts = all_strings(b"ab", 9);
        for n in needles.iter().filter(|n| !n.is_empty()) {
            // The critical factorization: with a short period, the critical position is below
            // the period (the left half's comparisons never exceed the shift).
            for ci in [false, true] {
                let mut w = 0;
                let (a, pa) = if ci {
                    maximal_suffix::<true, _>(n.as_slice(), false, &mut w)
                } else {
                    maximal_suffix::<false, _>(n.as_slice(), false, &mut w)
                };
                let (b, pb) = if ci {
                    maximal_suffix::<true, _>(n.as_slice(), true, &mut w)
                } else {
                    maximal_suffix::<false, _>(n.as_slice(), true, &mut w)
                };
                assert!(w < 4 * n.len() as u64);
                let (crit, per) = if a > b { (a, pa) } else { (b, pb) };
                let fold = |x: u8| if ci { x.to_ascii_lowercase() } else { x };
                let short =
                    per + crit <= n.len() && (0..crit).all(|i| fold(n[i]) == fold(n[per + i]));
                assert!(!short || crit < per, "{n:?}");
            }
            for t in texts.iter().filter(|t| t.len() >= n.len()) {
                if t.len() <= 6 || n.len() <= 4 {
                    check_two_way(t, n);
                }
            }
        }
    }

    #[test]
    fn contains_exhaustively_on_small_alphabets() {
        let needles = all_strings(b"aBb", 5);
        let texts = all_strings(b"abA", 7);
        for n in &needles {
            for t in &texts {
                let (n, t) = (
                    core::str::from_utf8(n).unwrap(),
                    core::str::from_utf8(t).unwrap(),
                );
                check_compare(t, n);
            }
        }
    }

    #[test]
    fn adversarial_families_stay_within_the_bounds() {
        for (n, m) in [
            (16 * 1024, 8 * 1024),
            (5000, 40),
            (4096, 7),
            (3000, 2),
            (2000, 1999),
        ] {
            // Needle a...ab in text a...a; and a...aba...a variants.
            let text = "a".repeat(n);
            let mut needle = "a".repeat(m - 1);
            needle.push('b');
            check_compare(&text, &needle);
            check_compare(&text.to_uppercase(), &needle);
            let mut needle2 = "a".repeat(m / 2);
            needle2.push('b');
            needle2.push_str(&"a".repeat(m / 2));
            check_compare(&text, &needle2);
            let mut text2 = "ab".repeat(n / 2);
            text2.push('c');
            check_compare(&text2, &("ab".repeat(m / 2) + "c"));
            check_compare(&text2, &("ab".repeat(m / 2) + "a"));
            // A hit at the very end.
            let mut text3 = text.clone();
            text3.push('b');
            check_compare(&text3, &needle);
            // Globs: `*` + long literal + one byte, literal middles, `?` middles.
            let lit: String = "a".repeat(m);
            // (pattern, matches text, matches text3)
            for (p, t, t3) in [
                (alloc::format!("*{lit}b"), false, true),
                (alloc::format!("*{lit}b*"), false, true),
                (alloc::format!("*{needle}*"), false, true),
                (alloc::format!("a*{needle}*a*b"), false, false),
                ("*a?a*".into(), true, true),
                (alloc::format!("*{}?b*", &lit[..m.min(64)]), false, true),
            ] {
                let pat = parse_glob(p.as_bytes()).unwrap();
                let small = n * m <= 1 << 20;
                check_glob_expecting(&text, &pat, (!small).then_some(t));
                check_glob_expecting(&text3, &pat, (!small).then_some(t3));
            }
        }
        // The linear bounds are small: a 16 KiB text and an 8 KiB needle, under 200k units.
        assert!(compare_bound(StrOp::Contains, 16 * 1024, 8 * 1024) < 200_000);
        let pat = parse_glob(alloc::format!("*{}b", "a".repeat(8192)).as_bytes()).unwrap();
        assert!(glob_bound(&pat, 16 * 1024) < 20_000);
    }

    /// A segment with `?` is tried only where its pivot's byte occurs, a few characters in: texts
    /// where it occurs at every other byte, after two-byte characters, and every try fails late
    /// (or the last succeeds), stay within the bound and agree with the reference.
    #[test]
    fn pivoted_segments_stay_within_their_bound() {
        for (pat, unit, end) in [
            ("*??ab?z*", "éab", "éabz"),
            ("*??ab?z*", "ééab", "xxabxz"),
            ("*?=?21?*", "é=é2", "x=x21x"),
            ("*EventCode=?21?*", "EventCode=x2", "EventCode=\"21\""),
            ("*>?%temp%\\*", ">é%temp", "> %TEMP%\\"),
        ] {
            let pat = parse_glob(pat.as_bytes()).unwrap();
            for n in [1, 2, 50, 200] {
                let text = unit.repeat(n);
                check_glob(&text, &pat);
                check_glob(&(text.clone() + end), &pat);
                check_glob(&(String::from(end) + &text), &pat);
            }
        }
    }

    #[test]
    fn long_non_ascii_needles_are_linear_too() {
        let text = "éa".repeat(4000);
        let needle = "éa".repeat(1000) + "b";
        check_compare(&text, &needle);
        let pat = parse_glob(alloc::format!("x*{needle}*").as_bytes()).unwrap();
        check_glob(&text, &pat);
        let pat = parse_glob(alloc::format!("*{}*", "éA".repeat(1000)).as_bytes()).unwrap();
        check_glob(&text, &pat);
        let mut w = 0;
        assert!(glob_match_metered(&text, &pat, Case::Insensitive, &mut w));
        assert!(!glob_match_metered(&text, &pat, Case::Sensitive, &mut w));
    }

    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "a", "A", "b", "B", "é", "É", "ß", "😀", "\\", "ab", "aa",
        ])
    }

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(piece(), 0..24).prop_map(|v| v.concat())
    }

    fn glob_text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                "a", "A", "b", "é", "É", "ß", "😀", "*", "?", "\\*", "\\?", "\\\\", "\\", "**",
                "ab",
            ]),
            0..12,
        )
        .prop_map(|v| v.concat())
    }

    fn raw_tokens() -> impl Strategy<Value = Vec<GlobTok>> {
        prop::collection::vec(
            prop::sample::select(vec![
                GlobTok::Lit('a'),
                GlobTok::Lit('A'),
                GlobTok::Lit('b'),
                GlobTok::Lit('é'),
                GlobTok::Lit('😀'),
                GlobTok::One,
                GlobTok::Any,
            ]),
            0..10,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn compare_matches_the_reference(value in text(), needle in text()) {
            check_compare(&value, &needle);
        }

        #[test]
        fn compare_finds_planted_needles(pre in text(), needle in text(), post in text()) {
            // Insert the needle (sometimes case-changed) so that hits are common.
            let planted = alloc::format!("{pre}{}{post}", needle.to_uppercase());
            check_compare(&planted, &needle);
            check_compare(&alloc::format!("{pre}{needle}{post}"), &needle);
        }

        #[test]
        fn two_way_matches_the_reference(value in text(), needle in text()) {
            if !needle.is_empty() && value.len() <= 40 {
                check_two_way(value.as_bytes(), needle.as_bytes());
            }
        }

        #[test]
        fn glob_matches_the_reference(value in text(), pattern in glob_text()) {
            let pat = parse_glob(pattern.as_bytes()).unwrap();
            check_glob(&value, &pat);
        }

        #[test]
        fn glob_of_a_planted_value(value in text(), cut in 0usize..30, stars in prop::collection::vec(0usize..30, 0..4)) {
            // A pattern made from the value itself, with some characters turned into `*` or
            // `?`, matches often.
            let mut p = String::new();
            for (i, c) in value.chars().enumerate() {
                if stars.contains(&i) {
                    p.push('*');
                } else if i == cut {
                    p.push('?');
                } else if matches!(c, '*' | '?' | '\\') {
                    p.push('\\');
                    p.push(c);
                } else {
                    p.push(c);
                }
            }
            let pat = parse_glob(p.as_bytes()).unwrap();
            check_glob(&value, &pat);
            check_glob(&value.to_uppercase(), &pat);
        }

        #[test]
        fn raw_token_lists_match_the_reference(value in text(), pat in raw_tokens()) {
            check_glob(&value, &pat);
        }
    }

    #[test]
    fn comparisons_fold_ascii_case_only() {
        assert!(compare(
            "C:\\Windows\\CMD.exe",
            StrOp::EndsWith,
            "\\cmd.EXE",
            Case::Insensitive
        ));
        assert!(!compare(
            "C:\\Windows\\CMD.exe",
            StrOp::EndsWith,
            "\\cmd.EXE",
            Case::Sensitive
        ));
        assert!(compare("abc", StrOp::Contains, "", Case::Insensitive));
        assert!(!compare("ab", StrOp::Contains, "abc", Case::Insensitive));
        assert!(compare(
            "xxABCyy",
            StrOp::Contains,
            "abc",
            Case::Insensitive
        ));
        assert!(compare("ÄBC", StrOp::Eq, "ÄbC", Case::Insensitive));
        assert!(!compare("äbc", StrOp::Eq, "Äbc", Case::Insensitive));
        assert!(compare("abc", StrOp::StartsWith, "AB", Case::Insensitive));
        assert!(!compare("a", StrOp::StartsWith, "ab", Case::Insensitive));
    }

    #[test]
    fn a_pattern_appended_after_another_keeps_its_leading_star() {
        let mut out = parse_glob(b"a*").unwrap();
        assert!(parse_glob_into(b"*b", &mut out));
        assert_eq!(out[2..], parse_glob(b"*b").unwrap()[..]);
    }

    #[test]
    fn globs() {
        assert!(g("*\\cmd.exe", "C:\\Windows\\System32\\cmd.exe"));
        // Sigma: `\*` is a literal backslash then a wildcard; `\*` alone escapes the star.
        assert!(g("c:\\\\*\\cmd.exe", "C:\\a\\b\\cmd.exe"));
        assert!(!g("c:\\\\*\\cmd.exe", "C:\\cmd.exe"));
        assert!(g("c:\\*\\cmd.exe", "C:*\\cmd.exe"));
        assert!(g("a?c", "abc"));
        assert!(g("a?c", "aéc"));
        assert!(!g("a?c", "ac"));
        assert!(g("a\\*c", "a*c"));
        assert!(!g("a\\*c", "abc"));
        assert!(g("*", ""));
        assert!(g("**a**", "bab"));
        assert!(!g("", "a"));
        assert!(g("a\\b", "a\\b"));
        assert!(!g("ab*ba", "aba"));
        assert!(g("ab*ba", "abba"));
        let mut long = "a".repeat(30);
        assert!(!g("*a*a*a*a*b", &long));
        long.push('b');
        assert!(g("*a*a*a*a*b", &long));
    }
}
