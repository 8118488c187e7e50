//! Why the verifier rejected a pack, and where.

use alloc::string::String;
use core::fmt;

use crate::schema::FieldType;

/// A rejected pack: what is wrong ([`ErrorKind`]) and where (byte offset, rule, instruction).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// Byte offset in the pack where the problem was found.
    pub offset: usize,
    /// The rule's index in the pack and its id when known.
    pub rule: Option<(usize, Option<String>)>,
    /// The instruction's index within the rule.
    pub insn: Option<usize>,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl VerifyError {
    pub(crate) fn at(offset: usize, kind: ErrorKind) -> Self {
        VerifyError {
            offset,
            rule: None,
            insn: None,
            kind,
        }
    }
    pub(crate) fn in_rule(mut self, index: usize, id: Option<&str>) -> Self {
        self.rule = Some((index, id.map(String::from)));
        self
    }
    pub(crate) fn in_insn(mut self, index: usize) -> Self {
        self.insn = Some(index);
        self
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((index, id)) = &self.rule {
            write!(f, "rule {index}")?;
            if let Some(id) = id {
                write!(f, " ({id})")?;
            }
            if let Some(insn) = self.insn {
                write!(f, ", instruction {insn}")?;
            }
            write!(f, ", ")?;
        }
        write!(f, "byte offset {}: {}", self.offset, self.kind)
    }
}

impl core::error::Error for VerifyError {}

/// The classes of rejection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("pack is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("pack is {size} bytes, shorter than the smallest possible pack ({minimum})")]
    TooShort { size: usize, minimum: usize },
    #[error("bad magic {found:02x?}, expected \"BWPK\"")]
    BadMagic { found: [u8; 4] },
    #[error("format version {found} is not supported (this sensor reads version {supported})")]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("header flags {found:#06x} are not supported (must be 0)")]
    BadFlags { found: u16 },
    #[error("header says the pack is {declared} bytes, it is {actual}")]
    LengthMismatch { declared: u32, actual: usize },
    #[error("checksum mismatch: the pack is corrupt")]
    ChecksumMismatch,
    #[error("truncated: {what} runs past the end")]
    Truncated { what: &'static str },
    #[error("{count} unexpected bytes after the last rule")]
    TrailingBytes { count: usize },
    #[error("{what}: {found} exceeds the limit of {limit}")]
    LimitExceeded {
        what: &'static str,
        limit: usize,
        found: usize,
    },
    #[error("schema hash {pack} differs from the running sensor's {sensor}: the pack was built for another event schema")]
    SchemaMismatch { pack: HexHash, sensor: HexHash },
    #[error("unknown event type id {id}")]
    UnknownEventType { id: u8 },
    #[error("event type {name} is declared twice")]
    DuplicateEventType { name: &'static str },
    #[error("pack declares {pack} fields for {name}, the sensor supplies {sensor}")]
    FieldCountMismatch {
        name: &'static str,
        pack: u8,
        sensor: u8,
    },
    #[error("rule is for event type id {id}, which the pack header does not declare")]
    EventTypeNotDeclared { id: u8 },
    #[error("string {index} is not valid UTF-8")]
    BadUtf8 { index: usize },
    #[error("string {index}'s key window starts at byte {start}, where no {window}-byte window of its {len} bytes does", window = (*.len).min(crate::gramindex::GRAM))]
    BadKeyWindow {
        index: usize,
        start: u16,
        len: usize,
    },
    #[error("{what} {index} is out of range (the pack has {count})")]
    RefOutOfRange {
        what: &'static str,
        index: u32,
        count: usize,
    },
    #[error("regex {index} is not a valid DFA: {reason}")]
    BadRegex { index: usize, reason: String },
    #[error("bad level byte {found} (0..=4)")]
    BadLevel { found: u8 },
    #[error("bad action byte {found} (0 alert, 1 block)")]
    BadAction { found: u8 },
    #[error("reserved byte is {found:#04x}, must be 0")]
    Reserved { found: u8 },
    #[error("field index {field} is out of range: {event_type} events have {count} fields (0..={last})", last = .count.saturating_sub(1))]
    FieldOutOfRange {
        event_type: &'static str,
        field: u8,
        count: u8,
    },
    #[error("field {field} ({name}) is {actual}, {what} needs {expected}", actual = .actual.name(), expected = .expected.name())]
    TypeMismatch {
        field: u8,
        name: &'static str,
        actual: FieldType,
        expected: FieldType,
        what: &'static str,
    },
    #[error("unknown opcode {op:#04x}")]
    BadOpcode { op: u8 },
    #[error("bad operand {what}: {value}")]
    BadOperand { what: &'static str, value: u32 },
    #[error(
        "jump to instruction {target} is not forward (jumps must go past the current instruction)"
    )]
    BackwardJump { target: u32 },
    #[error("jump to instruction {target} is out of range (the rule has {count} instructions)")]
    JumpOutOfRange { target: u32, count: usize },
    #[error("rule has no instructions")]
    EmptyCode,
    #[error("the last instruction must be ret")]
    MissingRet,
    #[error("glob pattern {index} ends in a lone escape backslash")]
    BadGlob { index: u32 },
    #[error("anchor string {index} is empty")]
    EmptyAnchor { index: u32 },
    #[error("set {set} holds string {string} more than once")]
    DuplicateSetItem { set: usize, string: u32 },
    #[error("this ret can return true when none of the rule's anchors occurs: a rule's anchors must be literals its code requires (a str constant, every item of a set, a wildcard pattern's longest literal run, or text containing one) on the fields they are anchored on")]
    AnchorsNotImplied,
    #[error("evaluating one {event_type} event can cost {total} work units with this rule, over the budget of {budget}: the rule's costliest path costs {rule_cost}, this instruction {insn_cost}")]
    CostOverBudget {
        event_type: &'static str,
        total: u64,
        budget: u64,
        rule_cost: u64,
        insn_cost: u64,
    },
    #[error("the prefilter of {event_type} field {field} ({name}) brings the cost of one event to {cost} work units, over the budget of {budget}")]
    PrefilterOverBudget {
        event_type: &'static str,
        field: u8,
        name: &'static str,
        cost: u64,
        budget: u64,
    },
}

/// A hash shown in hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HexHash(pub [u8; 32]);

impl fmt::Display for HexHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for HexHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
