//! The instruction set. Every instruction is 8 bytes: opcode, three byte operands `a b c`, and a
//! 32-bit operand `x`, little-endian. Unused operand bytes must be zero.
//!
//! A rule's code computes one boolean, the accumulator: predicates set it, `not` and `const`
//! change it, `jt`/`jf`/`jmp` jump strictly forward, and `ret` returns it. Control flow can only
//! move forward, so every rule terminates within its instruction count.

/// The string comparison of a `str` or `set` predicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StrOp {
    /// The whole value equals the constant.
    Eq = 0,
    /// The value starts with the constant.
    StartsWith = 1,
    /// The value ends with the constant.
    EndsWith = 2,
    /// The value contains the constant.
    Contains = 3,
}

impl StrOp {
    /// From the wire byte.
    pub const fn from_u8(b: u8) -> Option<StrOp> {
        match b {
            0 => Some(StrOp::Eq),
            1 => Some(StrOp::StartsWith),
            2 => Some(StrOp::EndsWith),
            3 => Some(StrOp::Contains),
            _ => None,
        }
    }
    /// The assembly mnemonic suffix.
    pub const fn name(self) -> &'static str {
        match self {
            StrOp::Eq => "eq",
            StrOp::StartsWith => "startswith",
            StrOp::EndsWith => "endswith",
            StrOp::Contains => "contains",
        }
    }
    /// From the assembly mnemonic suffix.
    pub fn from_name(s: &str) -> Option<StrOp> {
        [
            StrOp::Eq,
            StrOp::StartsWith,
            StrOp::EndsWith,
            StrOp::Contains,
        ]
        .into_iter()
        .find(|o| o.name() == s)
    }
}

/// Case handling of string comparisons: ASCII case folding or exact bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Case {
    /// ASCII letters compare without regard to case (Sigma's default).
    #[default]
    Insensitive = 0,
    /// Bytes compare exactly (Sigma's `cased`).
    Sensitive = 1,
}

impl Case {
    /// From the wire byte.
    pub const fn from_u8(b: u8) -> Option<Case> {
        match b {
            0 => Some(Case::Insensitive),
            1 => Some(Case::Sensitive),
            _ => None,
        }
    }
}

/// An integer comparison: `field CMP constant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntCmp {
    /// Equal.
    Eq = 0,
    /// Less than.
    Lt = 1,
    /// Less than or equal.
    Le = 2,
    /// Greater than.
    Gt = 3,
    /// Greater than or equal.
    Ge = 4,
}

impl IntCmp {
    /// From the wire byte.
    pub const fn from_u8(b: u8) -> Option<IntCmp> {
        match b {
            0 => Some(IntCmp::Eq),
            1 => Some(IntCmp::Lt),
            2 => Some(IntCmp::Le),
            3 => Some(IntCmp::Gt),
            4 => Some(IntCmp::Ge),
            _ => None,
        }
    }
    /// The assembly mnemonic suffix.
    pub const fn name(self) -> &'static str {
        match self {
            IntCmp::Eq => "eq",
            IntCmp::Lt => "lt",
            IntCmp::Le => "le",
            IntCmp::Gt => "gt",
            IntCmp::Ge => "ge",
        }
    }
    /// From the assembly mnemonic suffix.
    pub fn from_name(s: &str) -> Option<IntCmp> {
        [IntCmp::Eq, IntCmp::Lt, IntCmp::Le, IntCmp::Gt, IntCmp::Ge]
            .into_iter()
            .find(|o| o.name() == s)
    }
    /// Applies the comparison.
    pub const fn holds(self, lhs: u64, rhs: u64) -> bool {
        match self {
            IntCmp::Eq => lhs == rhs,
            IntCmp::Lt => lhs < rhs,
            IntCmp::Le => lhs <= rhs,
            IntCmp::Gt => lhs > rhs,
            IntCmp::Ge => lhs >= rhs,
        }
    }
}

/// Opcodes.
pub mod op {
    /// `exists F`: acc = field F is present.
    pub const EXISTS: u8 = 0x01;
    /// `empty F`: acc = field F is present and the empty string.
    pub const EMPTY: u8 = 0x02;
    /// `str.OP[.cased] F, S`: string comparison with constant string S (a = F, b = op, c = case, x = S).
    pub const STR: u8 = 0x03;
    /// `glob[.cased] F, S`: wildcard match of constant pattern S (`*`, `?`, `\` escapes).
    pub const GLOB: u8 = 0x04;
    /// `set.OP[.cased] F, T`: any string of set T compares true (a = F, b = op, c = case, x = T).
    pub const SET: u8 = 0x05;
    /// `regex F, R`: the regex DFA R finds a match in field F.
    pub const REGEX: u8 = 0x06;
    /// `fieldeq[.cased] F, G`: fields F and G are both present and equal (a = F, b = G, c = case).
    pub const FIELDEQ: u8 = 0x07;
    /// `int.CMP F, I`: integer comparison with constant I (a = F, b = cmp, x = I).
    pub const INT: u8 = 0x08;
    /// `not`: acc = !acc.
    pub const NOT: u8 = 0x10;
    /// `const B`: acc = B (a = 0 or 1).
    pub const CONST: u8 = 0x11;
    /// `jt L`: jump forward to instruction x if acc.
    pub const JT: u8 = 0x12;
    /// `jf L`: jump forward to instruction x unless acc.
    pub const JF: u8 = 0x13;
    /// `jmp L`: jump forward to instruction x.
    pub const JMP: u8 = 0x14;
    /// `ret`: the rule matches iff acc.
    pub const RET: u8 = 0x15;
}

/// An encoded instruction, as it stands in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RawInsn {
    /// The opcode.
    pub op: u8,
    /// Operand byte a (usually the field index).
    pub a: u8,
    /// Operand byte b.
    pub b: u8,
    /// Operand byte c.
    pub c: u8,
    /// The 32-bit operand (constant index or jump target).
    pub x: u32,
}

impl RawInsn {
    /// Encoded size in bytes.
    pub const SIZE: usize = 8;

    /// The wire encoding.
    pub fn to_bytes(self) -> [u8; 8] {
        let x = self.x.to_le_bytes();
        [self.op, self.a, self.b, self.c, x[0], x[1], x[2], x[3]]
    }

    /// From the wire encoding.
    pub fn from_bytes(b: [u8; 8]) -> RawInsn {
        let [op, a, bb, c, x0, x1, x2, x3] = b;
        RawInsn {
            op,
            a,
            b: bb,
            c,
            x: u32::from_le_bytes([x0, x1, x2, x3]),
        }
    }
}
