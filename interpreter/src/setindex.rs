//! Any-of sets (`set.*` instructions) with many items, indexed at load time so a test costs about
//! one pass over the value instead of one per item: equality and prefix by a hash of the items'
//! ASCII-case-folded bytes, suffix by a hash of them read backwards (so the hashes of all a
//! value's prefixes, or suffixes, come from one pass over it, probed at the items' lengths),
//! substring by a [`GramIndex`]; each part is built only when some instruction tests the set that
//! way. Every hash hit is confirmed with the exact comparison, so the index can only speed a test
//! up, never change it.
//!
//! Building reads each item's hashes from the pack's per-string facts, so a string in many sets
//! is hashed once; every test adds the work it does to a meter, and [`SetIndex::bound`] bounds it
//! from the value's length alone (the cost model).

use alloc::vec::Vec;

use crate::gramindex::{
    fold_hash, fold_hash_step, Arena, GramIndex, GramScratch, GramStore, Payloads, FOLD_HASH_EMPTY,
};

use crate::insn::{Case, StrOp};
use crate::matching::{compare_bound, compare_metered};

/// Sets with at least this many items are indexed; smaller ones are scanned.
pub(crate) const INDEX_MIN_ITEMS: usize = 4;

/// How a set is tested, so only the index parts it needs are built.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SetUse {
    /// With equality or prefix tests.
    pub(crate) forward: bool,
    /// With suffix tests.
    pub(crate) backward: bool,
    /// With substring tests.
    pub(crate) contains: bool,
}

/// The index of one set; its tables are in the pack's [`GramStore`] and [`AffixStore`].
#[derive(Clone, Debug)]
pub(crate) struct SetIndex {
    /// For equality and prefix tests, when some instruction needs them.
    forward: Option<Affix>,
    /// For suffix tests, when some instruction needs them (hashes of the items read backwards).
    backward: Option<Affix>,
    /// For `contains`, when some instruction needs it: item position by item.
    contains: Option<GramIndex>,
    /// Whether some item is empty (every value contains it).
    has_empty: bool,
}

/// The affix tables of every set index of a pack, each kind in one allocation (as
/// [`GramStore`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct AffixStore {
    /// (hash of the folded item, item position), sorted within each set's range.
    hashes: Vec<(u64, u32)>,
    /// Distinct item lengths in bytes, ascending within each set's range.
    lengths: Vec<usize>,
}

/// Where one set's affix hashes and item lengths lie in the [`AffixStore`], and the most items
/// one hash is shared by (which a probe confirms one by one).
#[derive(Clone, Debug)]
struct Affix {
    hashes: core::ops::Range<usize>,
    lengths: core::ops::Range<usize>,
    /// The most items sharing one hash.
    widest_group: u64,
    /// The longest item, in bytes.
    longest: usize,
}

/// What [`SetIndex::test`] reads: the pack's index tables and its strings.
#[derive(Clone, Copy)]
pub(crate) struct Tables<'a> {
    pub(crate) grams: &'a GramStore,
    pub(crate) affixes: &'a AffixStore,
    pub(crate) arena: &'a [u8],
}

/// Steps of a binary search over `n` items (`partition_point`, `binary_search`).
fn search_steps(n: usize) -> u64 {
    u64::from(usize::BITS.saturating_sub(n.leading_zeros())).saturating_add(1)
}

fn units(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl SetIndex {
    /// Indexes the set whose items are the strings `items` for the tests `uses` says they get,
    /// adding its tables to the stores. Reads each item's forward hash from the strings' facts
    /// (computed once per string); a backward hash costs the item's length.
    pub(crate) fn build(
        items: &[u32],
        uses: SetUse,
        grams: &mut GramStore,
        affixes: &mut AffixStore,
        scratch: &mut GramScratch<'_>,
    ) -> SetIndex {
        let arena = scratch.arena;
        let contains = uses.contains.then(|| {
            grams.add(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| (s, u32::try_from(i).unwrap_or(u32::MAX))),
                scratch,
            )
        });
        let GramScratch { facts, hashes, .. } = scratch;
        let forward = uses.forward.then(|| {
            hashes.clear();
            hashes.extend(
                items
                    .iter()
                    .map(|&s| facts.fold_hash(s, arena.get(s).unwrap_or(&[]))),
            );
            affixes.add(arena, items, hashes)
        });
        let backward = uses.backward.then(|| {
            hashes.clear();
            hashes.extend(
                items
                    .iter()
                    .map(|&s| facts.back_hash(s, arena.get(s).unwrap_or(&[]))),
            );
            affixes.add(arena, items, hashes)
        });
        SetIndex {
            forward,
            backward,
            contains,
            has_empty: items
                .iter()
                .any(|&s| arena.get(s).is_none_or(<[u8]>::is_empty)),
        }
    }

    /// Whether any item passes `op` on `value`; `None` when this index cannot answer (the part
    /// for `op` was not built), and the caller scans the items. Adds its work to `work`, at most
    /// [`SetIndex::bound`] for the value's length.
    pub(crate) fn test<'s>(
        &self,
        tables: Tables<'_>,
        value: &str,
        op: StrOp,
        case: Case,
        item: &dyn Fn(u32) -> Option<&'s str>,
        work: &mut u64,
    ) -> Option<bool> {
        let bytes = value.as_bytes();
        if op == StrOp::Contains {
            let ix = self.contains.as_ref()?;
            *work = work.saturating_add(1);
            if self.has_empty {
                return Some(true);
            }
            return Some(
                tables.grams.scan(
                    ix,
                    tables.arena,
                    bytes,
                    work,
                    |i, start, _, work| match case {
                        Case::Insensitive => true,
                        Case::Sensitive => item(i).is_some_and(|needle| {
                            *work = work.saturating_add(units(needle.len()).saturating_add(1));
                            bytes.get(start..start.saturating_add(needle.len()))
                                == Some(needle.as_bytes())
                        }),
                    },
                ),
            );
        }
        let affixes = tables.affixes;
        let mut meter = 0u64;
        let confirm = |i: u32, meter: &mut u64| {
            *meter = meter.saturating_add(1);
            item(i).is_some_and(|needle| compare_metered(value, op, needle, case, meter))
        };
        let found = match op {
            StrOp::Eq => {
                let ix = self.forward.as_ref()?;
                let lengths = affixes.lengths(ix);
                meter = meter.saturating_add(search_steps(lengths.len()));
                lengths.binary_search(&bytes.len()).is_ok() && {
                    meter = meter.saturating_add(units(bytes.len()));
                    affixes.probe(ix, fold_hash(bytes), &mut meter, &confirm)
                }
            }
            StrOp::StartsWith => affixes.probe_affixes(
                self.forward.as_ref()?,
                bytes.iter().copied(),
                &mut meter,
                &confirm,
            ),
            StrOp::EndsWith => affixes.probe_affixes(
                self.backward.as_ref()?,
                bytes.iter().rev().copied(),
                &mut meter,
                &confirm,
            ),
            StrOp::Contains => return None,
        };
        *work = work.saturating_add(meter);
        Some(found)
    }

    /// The most work [`SetIndex::test`] adds for a value of at most `value_len` bytes, `None`
    /// when this index cannot answer `op` (the caller scans the items). `items` are the set's
    /// item lengths' source: the strings `item` gives.
    pub(crate) fn bound(
        &self,
        value_len: usize,
        op: StrOp,
        case: Case,
        affixes: &AffixStore,
    ) -> Option<u64> {
        match op {
            StrOp::Contains => {
                let ix = self.contains.as_ref()?;
                let payloads = match case {
                    Case::Insensitive => Payloads::First,
                    Case::Sensitive => Payloads::Confirmed,
                };
                Some(ix.scan_bound(value_len, payloads).saturating_add(1))
            }
            StrOp::Eq | StrOp::StartsWith | StrOp::EndsWith => {
                let ix = match op {
                    StrOp::EndsWith => self.backward.as_ref()?,
                    _ => self.forward.as_ref()?,
                };
                // A probe: a binary search, then one confirmation per item of the widest group
                // of equal hashes, each at most the comparison's bound for the longest item.
                let confirm = 1u64.saturating_add(compare_bound(op, value_len, ix.longest));
                let probe = search_steps(ix.hashes.len())
                    .saturating_add(ix.widest_group.saturating_mul(confirm));
                let hashed = units(value_len.min(ix.longest));
                let lengths = affixes.lengths(ix).len();
                Some(match op {
                    StrOp::Eq => search_steps(lengths)
                        .saturating_add(hashed)
                        .saturating_add(probe),
                    _ => hashed
                        .saturating_add(units(lengths.saturating_add(1)).saturating_mul(probe)),
                })
            }
        }
    }
}

impl AffixStore {
    /// Adds the affix table of the set whose items are the strings `items`, hashed `hashes`.
    fn add(&mut self, arena: Arena<'_>, items: &[u32], hashes: &[u64]) -> Affix {
        let h = self.hashes.len();
        let mut longest = 0usize;
        self.hashes
            .extend(items.iter().zip(hashes).enumerate().map(|(i, (&s, &x))| {
                longest = longest.max(arena.span(s).map_or(0, |r| r.len()));
                (x, u32::try_from(i).unwrap_or(u32::MAX))
            }));
        let hashes = self.hashes.get_mut(h..).unwrap_or(&mut []);
        crate::heapsort::sort(hashes);
        let mut widest_group = 0u64;
        let mut run = 0u64;
        let mut prev: Option<u64> = None;
        for &(x, _) in hashes.iter() {
            run = if prev == Some(x) {
                run.saturating_add(1)
            } else {
                1
            };
            widest_group = widest_group.max(run);
            prev = Some(x);
        }
        let l = self.lengths.len();
        self.lengths
            .extend(items.iter().map(|&s| arena.get(s).map_or(0, <[u8]>::len)));
        let lengths = self.lengths.get_mut(l..).unwrap_or(&mut []);
        crate::heapsort::sort(lengths);
        // Dedup in place: each length kept once, at the front of the set's range.
        let mut kept = 0usize;
        for i in 0..lengths.len() {
            let v = lengths.get(i).copied();
            if kept == 0 || lengths.get(kept.saturating_sub(1)).copied() != v {
                if let (Some(slot), Some(v)) = (lengths.get_mut(kept), v) {
                    *slot = v;
                }
                kept = kept.saturating_add(1);
            }
        }
        self.lengths.truncate(l.saturating_add(kept));
        Affix {
            hashes: h..self.hashes.len(),
            lengths: l..self.lengths.len(),
            widest_group,
            longest,
        }
    }

    fn lengths(&self, ix: &Affix) -> &[usize] {
        self.lengths.get(ix.lengths.clone()).unwrap_or(&[])
    }

    /// Whether `confirm` holds for an item of `ix` whose hash is `h`.
    fn probe(
        &self,
        ix: &Affix,
        h: u64,
        meter: &mut u64,
        confirm: &dyn Fn(u32, &mut u64) -> bool,
    ) -> bool {
        let hashes = self.hashes.get(ix.hashes.clone()).unwrap_or(&[]);
        *meter = meter.saturating_add(search_steps(hashes.len()));
        let start = hashes.partition_point(|&(x, _)| x < h);
        hashes
            .get(start..)
            .unwrap_or(&[])
            .iter()
            .take_while(|&&(x, _)| x == h)
            .any(|&(_, i)| confirm(i, meter))
    }

    /// Hashes `bytes` one byte at a time and probes at every item length of `ix` (all prefixes,
    /// or read backwards all suffixes, of those lengths), in one pass.
    fn probe_affixes(
        &self,
        ix: &Affix,
        bytes: impl Iterator<Item = u8>,
        meter: &mut u64,
        confirm: &dyn Fn(u32, &mut u64) -> bool,
    ) -> bool {
        let mut lengths = self.lengths(ix).iter().copied().peekable();
        let mut h = FOLD_HASH_EMPTY;
        if lengths.next_if_eq(&0).is_some() && self.probe(ix, h, meter, confirm) {
            return true;
        }
        for (i, b) in bytes.enumerate() {
            let Some(&want) = lengths.peek() else {
                return false;
            };
            *meter = meter.saturating_add(1);
            h = fold_hash_step(h, b);
            if want == i.saturating_add(1) {
                lengths.next();
                if self.probe(ix, h, meter, confirm) {
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
    use crate::gramindex::{StringFacts, Strs};
    use crate::matching::compare;
    use alloc::string::String;
    use alloc::vec;
    use proptest::prelude::*;

    fn word() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!["a", "B", "ab", "\\", "é", "x.EXE"]),
            0..4,
        )
        .prop_map(|v| v.concat())
    }

    /// The set `items` indexed for every use, after another set's tables (an index reads only
    /// its own), and its strings.
    fn index(items: &[String]) -> (Strs, GramStore, AffixStore, SetIndex) {
        let mut all: Vec<String> = ["zz", "a", "", "B"]
            .iter()
            .map(|s| String::from(*s))
            .collect();
        all.extend(items.iter().cloned());
        let strs = Strs::new(&all);
        let uses = SetUse {
            forward: true,
            backward: true,
            contains: true,
        };
        let (mut grams, mut affixes) = (GramStore::default(), AffixStore::default());
        let mut scratch = GramScratch::new(strs.arena(), StringFacts::of(strs.arena()));
        SetIndex::build(&[0, 1, 2, 3], uses, &mut grams, &mut affixes, &mut scratch);
        let mine: Vec<u32> = (4..all.len() as u32).collect();
        let ix = SetIndex::build(&mine, uses, &mut grams, &mut affixes, &mut scratch);
        (strs, grams, affixes, ix)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every op and case, through the index, decides what comparing item by item decides,
        /// within the bound for the value's length.
        #[test]
        fn index_agrees_with_scanning(items in prop::collection::vec(word(), INDEX_MIN_ITEMS..10), value in word()) {
            let (strs, grams, affixes, ix) = index(&items);
            let tables = Tables { grams: &grams, affixes: &affixes, arena: strs.text() };
            let item = |i: u32| items.get(i as usize).map(String::as_str);
            for op in [StrOp::Eq, StrOp::StartsWith, StrOp::EndsWith, StrOp::Contains] {
                for case in [Case::Insensitive, Case::Sensitive] {
                    let want = items.iter().any(|t| compare(&value, op, t, case));
                    let mut work = 0;
                    prop_assert_eq!(ix.test(tables, &value, op, case, &item, &mut work), Some(want), "{:?} {:?}", op, case);
                    let bound = ix.bound(value.len(), op, case, &affixes).unwrap();
                    prop_assert!(work <= bound, "{:?} {:?}: work {} over bound {}", op, case, work, bound);
                }
            }
        }
    }

    #[test]
    fn case_variants_are_charged_per_variant() {
        // 64 case variants of one string: one hash group of 64 items for a cased equality test.
        let items: Vec<String> = (0..64u32)
            .map(|m| {
                (0..6)
                    .map(|b| if m & (1 << b) != 0 { 'A' } else { 'a' })
                    .collect()
            })
            .collect();
        let (strs, grams, affixes, ix) = index(&items);
        let tables = Tables {
            grams: &grams,
            affixes: &affixes,
            arena: strs.text(),
        };
        let item = |i: u32| items.get(i as usize).map(String::as_str);
        let mut work = 0;
        assert_eq!(
            ix.test(
                tables,
                "aaaaaa",
                StrOp::Eq,
                Case::Sensitive,
                &item,
                &mut work
            ),
            Some(true)
        );
        let bound = ix.bound(6, StrOp::Eq, Case::Sensitive, &affixes).unwrap();
        assert!(work <= bound);
        assert!(
            bound >= 64 * 7,
            "the bound {bound} must charge every variant"
        );
    }

    #[test]
    fn unbuilt_parts_defer_to_scanning() {
        let strs = Strs::new(&["a", "b", "c", "d"]);
        let (mut grams, mut affixes) = (GramStore::default(), AffixStore::default());
        let mut scratch = GramScratch::new(strs.arena(), StringFacts::of(strs.arena()));
        let ix = SetIndex::build(
            &[0, 1, 2, 3],
            SetUse {
                contains: true,
                ..SetUse::default()
            },
            &mut grams,
            &mut affixes,
            &mut scratch,
        );
        let tables = Tables {
            grams: &grams,
            affixes: &affixes,
            arena: strs.text(),
        };
        let texts = ["a", "b", "c", "d"];
        let item = |i: u32| texts.get(i as usize).copied();
        let mut work = 0;
        assert_eq!(
            ix.test(
                tables,
                "xa",
                StrOp::EndsWith,
                Case::Insensitive,
                &item,
                &mut work
            ),
            None
        );
        assert_eq!(
            ix.test(
                tables,
                "xa",
                StrOp::Contains,
                Case::Insensitive,
                &item,
                &mut work
            ),
            Some(true)
        );
        assert_eq!(
            ix.bound(2, StrOp::EndsWith, Case::Insensitive, &affixes),
            None
        );
    }
}
