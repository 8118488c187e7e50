//! Any-of sets (`set.*` instructions) with many items, indexed at load time so a test costs about
//! one pass over the value instead of one per item: equality, prefix and suffix by a hash of the
//! ASCII-case-folded bytes (one probe per distinct item length), substring by a [`GramIndex`];
//! each part is built only when some instruction tests the set that way. Every hash hit is
//! confirmed with the exact comparison, so the index can only speed a test up, never change it.

use alloc::vec::Vec;

use crate::gramindex::{fold_hash, GramIndex};

use crate::insn::{Case, StrOp};
use crate::matching::compare;

/// Sets with at least this many items are indexed; smaller ones are scanned.
pub(crate) const INDEX_MIN_ITEMS: usize = 4;

/// The index of one set.
#[derive(Clone, Debug)]
pub(crate) struct SetIndex {
    /// For equality, prefix and suffix, when some instruction needs them: (hash of the folded
    /// item, item position), sorted.
    affix: Option<Affix>,
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
    /// Indexes `items` for equality, prefix and suffix tests (`affix`), substring tests
    /// (`contains`), or both.
    pub(crate) fn build(items: &[&str], affix: bool, contains: bool) -> SetIndex {
        let affix = affix.then(|| Affix::build(items));
        let contains = contains.then(|| {
            GramIndex::build(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (*s, u32::try_from(i).unwrap_or(u32::MAX))),
            )
        });
        SetIndex {
            affix,
            contains,
            has_empty: items.iter().any(|s| s.is_empty()),
        }
    }
}

impl Affix {
    fn build(items: &[&str]) -> Affix {
        let mut hashes: Vec<(u64, u32)> = items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    fold_hash(s.as_bytes()),
                    u32::try_from(i).unwrap_or(u32::MAX),
                )
            })
            .collect();
        hashes.sort_unstable();
        let mut lengths: Vec<usize> = items.iter().map(|s| s.len()).collect();
        lengths.sort_unstable();
        lengths.dedup();
        Affix { hashes, lengths }
    }
}

impl SetIndex {
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
        let affix = self.affix.as_ref()?;
        let probe = |part: &[u8]| -> bool {
            let h = fold_hash(part);
            let start = affix.hashes.partition_point(|&(x, _)| x < h);
            affix
                .hashes
                .get(start..)
                .unwrap_or(&[])
                .iter()
                .take_while(|&&(x, _)| x == h)
                .any(|&(_, i)| item(i).is_some_and(|needle| compare(value, op, needle, case)))
        };
        match op {
            StrOp::Eq => Some(probe(bytes)),
            StrOp::StartsWith => Some(
                affix
                    .lengths
                    .iter()
                    .take_while(|&&n| n <= bytes.len())
                    .any(|&n| bytes.get(..n).is_some_and(&probe)),
            ),
            StrOp::EndsWith => Some(affix.lengths.iter().take_while(|&&n| n <= bytes.len()).any(
                |&n| {
                    bytes
                        .len()
                        .checked_sub(n)
                        .and_then(|s| bytes.get(s..))
                        .is_some_and(&probe)
                },
            )),
            StrOp::Contains => None,
        }
    }
}
