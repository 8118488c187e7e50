//! Fixed limits on everything a pack may contain. The verifier enforces each one; the VM relies on
//! them (for example the candidate-rule bitset is sized by [`MAX_RULES`]).

/// The largest pack accepted, in bytes: the one size limit for packs everywhere (the verifier,
/// envelopes, and the control protocol's stage request, which carries a pack in its envelope).
pub const MAX_PACK_BYTES: usize = 8 * 1024 * 1024;
/// Rules in one pack.
pub const MAX_RULES: usize = 4096;
/// Instructions in one rule.
pub const MAX_INSNS_PER_RULE: usize = 4096;
/// Instructions in the whole pack.
pub const MAX_INSNS: usize = 1 << 20;
/// Strings in the constant pool.
pub const MAX_STRINGS: usize = 1 << 20;
/// Bytes in one constant string.
pub const MAX_STRING_BYTES: usize = 64 * 1024;
/// String sets.
pub const MAX_SETS: usize = 1 << 16;
/// Items in one string set.
pub const MAX_SET_ITEMS: usize = 1 << 16;
/// Integer constants.
pub const MAX_INTS: usize = 1 << 16;
/// Regular expressions (serialized DFAs).
pub const MAX_REGEXES: usize = 1024;
/// Bytes in one serialized regex DFA.
pub const MAX_REGEX_BYTES: usize = 256 * 1024;
/// Bytes of all serialized regex DFAs together.
pub const MAX_REGEX_TOTAL_BYTES: usize = 4 * 1024 * 1024;
/// Tags on one rule.
pub const MAX_TAGS_PER_RULE: usize = 64;
/// Prefilter anchors on one rule.
pub const MAX_ANCHORS_PER_RULE: usize = 4096;
/// The work one event may cost is bounded by the cost model: see [`crate::cost::BUDGET_PER_EVENT`].
pub use crate::cost::BUDGET_PER_EVENT;
