//! Any-of sets (`set.*` instructions) with many items, indexed at load time so a test costs about
//! one pass over the value instead of one per item: equality and prefix by a hash of the items'
//! ASCII-case-folded bytes, suffix by a hash of them read backwards (so the hashes of all a
//! value's prefixes, or suffixes, come from one pass over it, probed at the items' lengths),
//! substring by a [`GramIndex`]; each part is built only when some instruction tests the set that
//! way. Every hash hit is confirmed with the exact comparison, so the index can only speed a test
//! up, never change it.

use alloc::vec::Vec;

use crate::gramindex::{fold_hash, fold_hash_step, GramIndex, FOLD_HASH_EMPTY};

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

/// The index of one set.
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

#[derive(Clone, Debug)]
struct Affix {
    /// (hash of the folded item, item position), sorted.
    hashes: Vec<(u64, u32)>,
    /// Distinct item lengths in bytes, ascending.
    lengths: Vec<usize>,
}

impl SetIndex {
    /// Indexes `items` for the tests `uses` says they get.
    pub(crate) fn build(items: &[&str], uses: SetUse) -> SetIndex {
        let contains = uses.contains.then(|| {
            GramIndex::build(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (*s, u32::try_from(i).unwrap_or(u32::MAX))),
            )
        });
        SetIndex {
            forward: uses
                .forward
                .then(|| Affix::build(items, |s| fold_hash(s.as_bytes()))),
            backward: uses.backward.then(|| {
                Affix::build(items, |s| {
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
            return Some(ix.scan(bytes, |i, start| match case {
                Case::Insensitive => true,
                Case::Sensitive => item(i).is_some_and(|needle| {
                    bytes.get(start..start.saturating_add(needle.len())) == Some(needle.as_bytes())
                }),
            }));
        }
        let confirm = |i: u32| item(i).is_some_and(|needle| compare(value, op, needle, case));
        match op {
            StrOp::Eq => {
                let ix = self.forward.as_ref()?;
                Some(
                    ix.lengths.binary_search(&bytes.len()).is_ok()
                        && ix.probe(fold_hash(bytes), &confirm),
                )
            }
            StrOp::StartsWith => Some(
                self.forward
                    .as_ref()?
                    .probe_affixes(bytes.iter().copied(), &confirm),
            ),
            StrOp::EndsWith => Some(
                self.backward
                    .as_ref()?
                    .probe_affixes(bytes.iter().rev().copied(), &confirm),
            ),
            StrOp::Contains => None,
        }
    }
}

impl Affix {
    fn build(items: &[&str], hash: impl Fn(&str) -> u64) -> Affix {
        let mut hashes: Vec<(u64, u32)> = items
            .iter()
            .enumerate()
            .map(|(i, s)| (hash(s), u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        hashes.sort_unstable();
        let mut lengths: Vec<usize> = items.iter().map(|s| s.len()).collect();
        lengths.sort_unstable();
        lengths.dedup();
        Affix { hashes, lengths }
    }

    /// Whether `confirm` holds for an item whose hash is `h`.
    fn probe(&self, h: u64, confirm: &dyn Fn(u32) -> bool) -> bool {
        let start = self.hashes.partition_point(|&(x, _)| x < h);
        self.hashes
            .get(start..)
            .unwrap_or(&[])
            .iter()
            .take_while(|&&(x, _)| x == h)
            .any(|&(_, i)| confirm(i))
    }

    /// Hashes `bytes` one byte at a time and probes at every item length (all prefixes, or read
    /// backwards all suffixes, of those lengths), in one pass.
    fn probe_affixes(
        &self,
        bytes: impl Iterator<Item = u8>,
        confirm: &dyn Fn(u32) -> bool,
    ) -> bool {
        let mut lengths = self.lengths.iter().copied().peekable();
        let mut h = FOLD_HASH_EMPTY;
        if lengths.next_if_eq(&0).is_some() && self.probe(h, confirm) {
            return true;
        }
        for (i, b) in bytes.enumerate() {
            let Some(&want) = lengths.peek() else {
                return false;
            };
            h = fold_hash_step(h, b);
            if want == i.saturating_add(1) {
                lengths.next();
                if self.probe(h, confirm) {
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
            let ix = SetIndex::build(&texts, uses);
            let item = |i: u32| texts.get(i as usize).copied();
            for op in [StrOp::Eq, StrOp::StartsWith, StrOp::EndsWith, StrOp::Contains] {
                for case in [Case::Insensitive, Case::Sensitive] {
                    let want = texts.iter().any(|t| compare(&value, op, t, case));
                    prop_assert_eq!(ix.test(&value, op, case, &item), Some(want), "{:?} {:?}", op, case);
                }
            }
        }
    }

    #[test]
    fn unbuilt_parts_defer_to_scanning() {
        let texts = ["a", "b", "c", "d"];
        let ix = SetIndex::build(
            &texts,
            SetUse {
                contains: true,
                ..SetUse::default()
            },
        );
        let item = |i: u32| texts.get(i as usize).copied();
        assert_eq!(
            ix.test("xa", StrOp::EndsWith, Case::Insensitive, &item),
            None
        );
        assert_eq!(
            ix.test("xa", StrOp::Contains, Case::Insensitive, &item),
            Some(true)
        );
    }
}
