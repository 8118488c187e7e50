//! One pass per field: the literal tests of every rule answered by the field's prefilter scan.
//!
//! A rule's string tests on a field (`str` and `set` instructions: contains, startswith,
//! endswith, equals, ASCII case folded) would each read the field again when the rule runs; a
//! long command line read by every candidate rule's tests, and by each `set.contains` index, is
//! most of what a hostile event costs. Instead, at load time every such test gets a *slot*
//! (tests alike share one: the same field, operation and literal, or the same set), its
//! literals join the field's prefilter index beside the rules' anchors, and the instruction
//! becomes [`Insn::Hit`](crate::verify::Insn) of its slot. Per event, the one scan of the field
//! that marks candidate rules also marks the slots whose literal occurs: anywhere (contains),
//! at the start (startswith), at the end (endswith), or as the whole value (equals); the rule's
//! test then reads one bit (and takes the conditional jump after it, where there is one, in the
//! same step: `Insn::HitJump`, charged as the two instructions it runs). The scan reports every
//! literal that occurs, at every place that can decide a test (it is never cut short; in a run
//! of one repeated byte it leaves out only repeats of what it reported there, none at the
//! value's start or end), so a slot's bit is exactly the test's answer.
//!
//! What stays as it was: case-sensitive tests (the index folds case), literals too common to
//! be worth a key (one common byte: a space, a dash), sets with an empty item, and tests past
//! [`MAX_SLOTS`]. The pack format is unchanged: this is how a verified pack is laid out in
//! memory, and what the cost model charges (one payload per literal occurrence in the scan's
//! bound, nothing per test).

/// The most test slots of a pack (a bitset of them is on the VM's stack: 512 bytes; the
/// driver's callbacks evaluate on an 8 KiB stack budget).
pub(crate) const MAX_SLOTS: usize = 4096;

/// Words of the per-event slot bitset.
pub(crate) const SLOT_WORDS: usize = MAX_SLOTS / 64;

/// Where a payload's kind starts: the bits below hold the rule or slot.
const KIND_SHIFT: u32 = 29;

/// What a prefilter payload marks when its literal occurs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// The rule (its anchor occurs): a candidate.
    Rule = 0,
    /// The slot of a contains test: wherever the literal occurs.
    Contains = 1,
    /// The slot of a startswith test: the literal at the value's start.
    StartsWith = 2,
    /// The slot of an endswith test: the literal at the value's end.
    EndsWith = 3,
    /// The slot of an equality test: the literal is the whole value.
    Eq = 4,
}

/// The payload reporting `index` (a rule or slot) as `kind`.
pub(crate) fn payload(kind: Kind, index: u32) -> u32 {
    ((kind as u32) << KIND_SHIFT) | (index & ((1 << KIND_SHIFT) - 1))
}

/// Words of the candidate-rule bitset.
pub(crate) const RULE_WORDS: usize = crate::limits::MAX_RULES / 64;

/// Words of the per-event marks: the candidate rules (`MAX_RULES` bits), then the slots
/// ([`MAX_SLOTS`] bits).
pub(crate) const MARK_WORDS: usize = RULE_WORDS + SLOT_WORDS;

/// Marks in `marks` (see [`MARK_WORDS`]) what payload `p` reports for an occurrence of its
/// literal at `start..start + len` in a value of `value_len` bytes: its rule as a candidate, or
/// its slot when the occurrence satisfies the slot's test (a startswith literal found past the
/// start marks nothing). Without a branch on the payload's kind: a jump by kind for every payload
/// was mispredicted often, payloads of every kind coming in any order. Returns whether the rule
/// or slot is in range (always, in a verified pack).
#[inline]
pub(crate) fn mark(marks: &mut [u64], p: u32, start: usize, len: usize, value_len: usize) -> bool {
    let kind = p >> KIND_SHIFT;
    let index = usize::try_from(p & ((1 << KIND_SHIFT) - 1)).unwrap_or(usize::MAX);
    let at_start = u32::from(start == 0);
    let at_end = u32::from(start.saturating_add(len) == value_len);
    // Bit k: whether a payload of kind k holds here (Rule and Contains always, StartsWith at the
    // start, EndsWith at the end, Eq both; no kind past Eq).
    let holds = 0b11 | (at_start << 2) | (at_end << 3) | ((at_start & at_end) << 4);
    let holds = u64::from(holds.checked_shr(kind).unwrap_or(0) & 1);
    let (base, limit) = if kind == Kind::Rule as u32 {
        (0, crate::limits::MAX_RULES)
    } else {
        (crate::limits::MAX_RULES, MAX_SLOTS)
    };
    if index >= limit {
        return false;
    }
    let bit = base.saturating_add(index);
    match marks.get_mut(bit / 64) {
        Some(w) => {
            *w |= holds << (bit % 64);
            true
        }
        None => false,
    }
}

/// Whether bit `bit` of `words` is set (false past its end).
#[inline]
pub(crate) fn get(words: &[u64], bit: usize) -> bool {
    words
        .get(bit / 64)
        .is_some_and(|w| w & (1u64 << (bit % 64)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_RULES;
    use alloc::vec::Vec;

    /// What a payload marks, by its kind, as the tests it answers read it: the bit it sets, if
    /// any, and whether it is in range.
    fn reference(p: u32, start: usize, len: usize, value_len: usize) -> (Option<usize>, bool) {
        let index = (p & ((1 << KIND_SHIFT) - 1)) as usize;
        let at_end = start + len == value_len;
        let (base, limit, holds) = match p >> KIND_SHIFT {
            0 => (0, MAX_RULES, true),
            1 => (MAX_RULES, MAX_SLOTS, true),
            2 => (MAX_RULES, MAX_SLOTS, start == 0),
            3 => (MAX_RULES, MAX_SLOTS, at_end),
            4 => (MAX_RULES, MAX_SLOTS, start == 0 && at_end),
            _ => (MAX_RULES, MAX_SLOTS, false),
        };
        if index >= limit {
            return (None, false);
        }
        (holds.then_some(base + index), true)
    }

    #[test]
    fn a_payload_marks_its_rule_or_the_slot_its_test_holds_for() {
        let value_len = 10;
        for kind in 0..8u32 {
            for index in [0, 1, 63, 64, 4095, 4096, (1 << KIND_SHIFT) - 1] {
                let p = (kind << KIND_SHIFT) | index;
                for (start, len) in [(0, 10), (0, 3), (7, 3), (2, 3), (0, 0), (10, 0)] {
                    let mut marks = [0u64; MARK_WORDS];
                    let in_range = mark(&mut marks, p, start, len, value_len);
                    let set: Vec<usize> =
                        (0..MARK_WORDS * 64).filter(|&b| get(&marks, b)).collect();
                    let (want, want_in_range) = reference(p, start, len, value_len);
                    assert_eq!(
                        (set, in_range),
                        (want.into_iter().collect(), want_in_range),
                        "kind {kind}, index {index}, {start}..{}",
                        start + len
                    );
                }
            }
        }
    }
}
