//! Any-of sets (`set.*` instructions) with many items, indexed at load time so a test costs about
//! one pass over the value instead of one per item: equality, prefix and suffix by a hash of the
//! ASCII-case-folded bytes (one probe per distinct item length), substring by a [`GramIndex`]
//! built only for sets some instruction tests with `contains`. Every hash hit is
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
    /// (hash of the folded item, item position), sorted.
    hashes: Vec<(u64, u32)>,
    /// Distinct item lengths in bytes, ascending.
    lengths: Vec<usize>,
    /// For `contains`, when some instruction needs it: item position by item.
    contains: Option<GramIndex>,
    /// Whether some item is empty (every value contains it).
    has_empty: bool,
}

impl SetIndex {
    /// Indexes `items`; `need_contains` builds the substring automaton too.
    pub(crate) fn build(items: &[&str], need_contains: bool) -> SetIndex {
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
        let contains = need_contains.then(|| {
            GramIndex::build(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (*s, u32::try_from(i).unwrap_or(u32::MAX))),
            )
        });
        SetIndex {
            hashes,
            lengths,
            contains,
            has_empty: items.iter().any(|s| s.is_empty()),
        }
    }

    /// Whether any item passes `op` on `value`; `None` when this index cannot answer (a
    /// `contains` test without an automaton), and the caller scans the items.
    pub(crate) fn test<'s>(
        &self,
        value: &str,
        op: StrOp,
        case: Case,
        item: &dyn Fn(u32) -> Option<&'s str>,
    ) -> Option<bool> {
        let bytes = value.as_bytes();
        let probe = |part: &[u8]| -> bool {
            let h = fold_hash(part);
            let start = self.hashes.partition_point(|&(x, _)| x < h);
            self.hashes
                .get(start..)
                .unwrap_or(&[])
                .iter()
                .take_while(|&&(x, _)| x == h)
                .any(|&(_, i)| item(i).is_some_and(|needle| compare(value, op, needle, case)))
        };
        match op {
            StrOp::Eq => Some(probe(bytes)),
            StrOp::StartsWith => Some(
                self.lengths
                    .iter()
                    .take_while(|&&n| n <= bytes.len())
                    .any(|&n| bytes.get(..n).is_some_and(&probe)),
            ),
            StrOp::EndsWith => Some(self.lengths.iter().take_while(|&&n| n <= bytes.len()).any(
                |&n| {
                    bytes
                        .len()
                        .checked_sub(n)
                        .and_then(|s| bytes.get(s..))
                        .is_some_and(&probe)
                },
            )),
            StrOp::Contains => {
                let ix = self.contains.as_ref()?;
                if self.has_empty {
                    return Some(true);
                }
                Some(ix.scan(bytes, |i, start| match case {
                    Case::Insensitive => true,
                    Case::Sensitive => item(i).is_some_and(|needle| {
                        bytes.get(start..start.saturating_add(needle.len()))
                            == Some(needle.as_bytes())
                    }),
                }))
            }
        }
    }
}
