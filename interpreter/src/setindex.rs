//! Any-of sets (`set.*` instructions) with many items, indexed at load time so a test costs about
//! one pass over the value instead of one per item: equality and prefix by a hash of the items'
//! ASCII-case-folded bytes, suffix by a hash of them read backwards (so the hashes of all a
//! value's prefixes, or suffixes, come from one pass over it, probed at the items' lengths),
//! substring by a [`GramIndex`]; each part is built only when some instruction tests the set that
//! way. Every hash hit is confirmed with the exact comparison, so the index can only speed a test
//! up, never change it.

use alloc::vec::Vec;

use crate::gramindex::{
    fold_hash, fold_hash_step, GramIndex, GramScratch, GramStore, FOLD_HASH_EMPTY, NOT_A_STRING,
};

use crate::insn::{Case, StrOp};
use crate::matching::compare;

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

/// Where one set's affix hashes and item lengths lie in the [`AffixStore`].
#[derive(Clone, Debug)]
struct Affix {
    hashes: core::ops::Range<usize>,
    lengths: core::ops::Range<usize>,
}

/// What [`SetIndex::test`] reads: the pack's index tables.
#[derive(Clone, Copy)]
pub(crate) struct Tables<'a> {
    pub(crate) grams: &'a GramStore,
    pub(crate) affixes: &'a AffixStore,
}

impl SetIndex {
    /// Indexes `items` (at `strings` in the pack's string table, or [`NOT_A_STRING`]) for the
    /// tests `uses` says they get, adding its tables to the stores.
    pub(crate) fn build<'s>(
        items: &[&'s str],
        strings: &[u32],
        uses: SetUse,
        grams: &mut GramStore,
        affixes: &mut AffixStore,
        scratch: &mut GramScratch<'s>,
    ) -> SetIndex {
        let contains = uses.contains.then(|| {
            grams.add(
                items.iter().enumerate().map(|(i, s)| {
                    let string = strings.get(i).copied().unwrap_or(NOT_A_STRING);
                    (*s, u32::try_from(i).unwrap_or(u32::MAX), string)
                }),
                scratch,
            )
        });
        SetIndex {
            forward: uses
                .forward
                .then(|| affixes.add(items, |s| fold_hash(s.as_bytes()))),
            backward: uses.backward.then(|| {
                affixes.add(items, |s| {
                    s.bytes().rev().fold(FOLD_HASH_EMPTY, fold_hash_step)
                })
            }),
            contains,
            has_empty: items.iter().any(|s| s.is_empty()),
        }
    }

    /// Whether any item passes `op` on `value`; `None` when this index cannot answer (the part
    /// for `op` was not built), and the caller scans the items.
    pub(crate) fn test<'s>(
        &self,
        tables: Tables<'_>,
        value: &str,
        op: StrOp,
        case: Case,
        item: &dyn Fn(u32) -> Option<&'s str>,
    ) -> Option<bool> {
        let bytes = value.as_bytes();
        if op == StrOp::Contains {
            let ix = self.contains.as_ref()?;
            if self.has_empty {
                return Some(true);
            }
            return Some(tables.grams.scan(ix, bytes, |i, start| match case {
                Case::Insensitive => true,
                Case::Sensitive => item(i).is_some_and(|needle| {
                    bytes.get(start..start.saturating_add(needle.len())) == Some(needle.as_bytes())
                }),
            }));
        }
        let confirm = |i: u32| item(i).is_some_and(|needle| compare(value, op, needle, case));
        let affixes = tables.affixes;
        match op {
            StrOp::Eq => {
                let ix = self.forward.as_ref()?;
                Some(
                    affixes.lengths(ix).binary_search(&bytes.len()).is_ok()
                        && affixes.probe(ix, fold_hash(bytes), &confirm),
                )
            }
            StrOp::StartsWith => {
                Some(affixes.probe_affixes(self.forward.as_ref()?, bytes.iter().copied(), &confirm))
            }
            StrOp::EndsWith => Some(affixes.probe_affixes(
                self.backward.as_ref()?,
                bytes.iter().rev().copied(),
                &confirm,
            )),
            StrOp::Contains => None,
        }
    }
}

impl AffixStore {
    fn add(&mut self, items: &[&str], hash: impl Fn(&str) -> u64) -> Affix {
        let h = self.hashes.len();
        self.hashes.extend(
            items
                .iter()
                .enumerate()
                .map(|(i, s)| (hash(s), u32::try_from(i).unwrap_or(u32::MAX))),
        );
        self.hashes.get_mut(h..).unwrap_or(&mut []).sort_unstable();
        let l = self.lengths.len();
        self.lengths.extend(items.iter().map(|s| s.len()));
        let lengths = self.lengths.get_mut(l..).unwrap_or(&mut []);
        lengths.sort_unstable();
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
        }
    }

    fn lengths(&self, ix: &Affix) -> &[usize] {
        self.lengths.get(ix.lengths.clone()).unwrap_or(&[])
    }

    /// Whether `confirm` holds for an item of `ix` whose hash is `h`.
    fn probe(&self, ix: &Affix, h: u64, confirm: &dyn Fn(u32) -> bool) -> bool {
        let hashes = self.hashes.get(ix.hashes.clone()).unwrap_or(&[]);
        let start = hashes.partition_point(|&(x, _)| x < h);
        hashes
            .get(start..)
            .unwrap_or(&[])
            .iter()
            .take_while(|&&(x, _)| x == h)
            .any(|&(_, i)| confirm(i))
    }

    /// Hashes `bytes` one byte at a time and probes at every item length of `ix` (all prefixes,
    /// or read backwards all suffixes, of those lengths), in one pass.
    fn probe_affixes(
        &self,
        ix: &Affix,
        bytes: impl Iterator<Item = u8>,
        confirm: &dyn Fn(u32) -> bool,
    ) -> bool {
        let mut lengths = self.lengths(ix).iter().copied().peekable();
        let mut h = FOLD_HASH_EMPTY;
        if lengths.next_if_eq(&0).is_some() && self.probe(ix, h, confirm) {
            return true;
        }
        for (i, b) in bytes.enumerate() {
            let Some(&want) = lengths.peek() else {
                return false;
            };
            h = fold_hash_step(h, b);
            if want == i.saturating_add(1) {
                lengths.next();
                if self.probe(ix, h, confirm) {
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
    use proptest::prelude::*;

    fn word() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!["a", "B", "ab", "\\", "é", "x.EXE"]),
            0..4,
        )
        .prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every op and case, through the index, decides what comparing item by item decides.
        #[test]
        fn index_agrees_with_scanning(items in prop::collection::vec(word(), INDEX_MIN_ITEMS..10), value in word()) {
            let texts: Vec<&str> = items.iter().map(String::as_str).collect();
            let uses = SetUse { forward: true, backward: true, contains: true };
            let (mut grams, mut affixes) = (GramStore::default(), AffixStore::default());
            let mut scratch = GramScratch::default();
            // Another set's tables first in the stores: an index reads only its own.
            SetIndex::build(&["zz", "a", "", "B"], &[], uses, &mut grams, &mut affixes, &mut scratch);
            let ix = SetIndex::build(&texts, &[], uses, &mut grams, &mut affixes, &mut scratch);
            let tables = Tables { grams: &grams, affixes: &affixes };
            let item = |i: u32| texts.get(i as usize).copied();
            for op in [StrOp::Eq, StrOp::StartsWith, StrOp::EndsWith, StrOp::Contains] {
                for case in [Case::Insensitive, Case::Sensitive] {
                    let want = texts.iter().any(|t| compare(&value, op, t, case));
                    prop_assert_eq!(ix.test(tables, &value, op, case, &item), Some(want), "{:?} {:?}", op, case);
                }
            }
        }
    }

    #[test]
    fn unbuilt_parts_defer_to_scanning() {
        let texts = ["a", "b", "c", "d"];
        let (mut grams, mut affixes) = (GramStore::default(), AffixStore::default());
        let ix = SetIndex::build(
            &texts,
            &[],
            SetUse {
                contains: true,
                ..SetUse::default()
            },
            &mut grams,
            &mut affixes,
            &mut GramScratch::default(),
        );
        let tables = Tables {
            grams: &grams,
            affixes: &affixes,
        };
        let item = |i: u32| texts.get(i as usize).copied();
        assert_eq!(
            ix.test(tables, "xa", StrOp::EndsWith, Case::Insensitive, &item),
            None
        );
        assert_eq!(
            ix.test(tables, "xa", StrOp::Contains, Case::Insensitive, &item),
            Some(true)
        );
    }
}
