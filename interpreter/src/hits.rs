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
//! test then reads one bit. The scan reports every literal that occurs, at every place that
//! can decide a test (it is never cut short; in a run of one repeated byte it leaves out only
//! repeats of what it reported there, none at the value's start or end), so a slot's bit is
//! exactly the test's answer.
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

/// What a payload reports, for an occurrence of its literal at `start..start + len` in a value
/// of `value_len` bytes: a candidate rule, or a slot whose test holds; `None` when the
/// occurrence does not satisfy the slot's test (a startswith literal found past the start).
#[inline]
pub(crate) fn decode(p: u32, start: usize, len: usize, value_len: usize) -> Option<(bool, usize)> {
    let index = usize::try_from(p & ((1 << KIND_SHIFT) - 1)).unwrap_or(usize::MAX);
    let at_end = start.saturating_add(len) == value_len;
    let holds = match p >> KIND_SHIFT {
        0 => return Some((true, index)),
        1 => true,
        2 => start == 0,
        3 => at_end,
        4 => start == 0 && at_end,
        _ => false,
    };
    holds.then_some((false, index))
}

/// Sets bit `bit` of `words` (nothing past its end); whether it was in range.
#[inline]
pub(crate) fn set(words: &mut [u64], bit: usize) -> bool {
    match words.get_mut(bit / 64) {
        Some(w) => {
            *w |= 1u64 << (bit % 64);
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
