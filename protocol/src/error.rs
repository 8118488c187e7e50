//! Everything that can be wrong with a request or a reply, with the field and byte offset.

/// Why a request or reply was refused. Offsets count from the start of the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The IOCTL code is not one of ours.
    #[error("unknown control code {code:#010x}")]
    UnknownIoctl {
        /// The code user mode sent.
        code: u32,
    },
    /// The message ended before a field did.
    #[error("{field} at byte {offset}: message truncated (needs {need} bytes, {have} left)")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where it starts.
        offset: usize,
        /// Its size.
        need: usize,
        /// Bytes left in the message.
        have: usize,
    },
    /// The message does not start with the expected magic.
    #[error("bad magic {found:#010x} at byte 0 (expected {expected:#010x})")]
    BadMagic {
        /// What was there.
        found: u32,
        /// What should have been.
        expected: u32,
    },
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {found} at byte 4 (this build speaks {supported})")]
    UnsupportedVersion {
        /// The version in the header.
        found: u16,
        /// The one we speak.
        supported: u16,
    },
    /// The header names a different operation than the control code.
    #[error("operation {header} in the header at byte 6 does not match control code for {ioctl}")]
    OpMismatch {
        /// The operation the IOCTL code selects.
        ioctl: u16,
        /// The operation in the header.
        header: u16,
    },
    /// An unknown operation number.
    #[error("unknown operation {op} at byte 6")]
    UnknownOp {
        /// The number found.
        op: u16,
    },
    /// The header's body length disagrees with the bytes that follow.
    #[error(
        "body length {declared} at byte 8 disagrees with the {actual} bytes that follow the header"
    )]
    LengthMismatch {
        /// The length in the header.
        declared: u32,
        /// The bytes actually present.
        actual: usize,
    },
    /// A body of the wrong size for its operation.
    #[error("{op} body is {got} bytes, expected {expected}")]
    BodyLength {
        /// The operation.
        op: &'static str,
        /// The size its layout has (or its maximum).
        expected: usize,
        /// The size received.
        got: usize,
    },
    /// A field holds a value outside its range.
    #[error("{field} at byte {offset}: value {value} is invalid (expected {expected})")]
    BadField {
        /// The field.
        field: &'static str,
        /// Where it is.
        offset: usize,
        /// What it holds.
        value: u64,
        /// What it may hold.
        expected: &'static str,
    },
    /// Reserved bytes are not zero.
    #[error("{field}: reserved byte {offset} is not zero")]
    ReservedNotZero {
        /// The field.
        field: &'static str,
        /// The first non-zero byte.
        offset: usize,
    },
    /// Bytes left over after the last field.
    #[error("{what}: {count} unexpected trailing bytes at byte {offset}")]
    TrailingBytes {
        /// The message.
        what: &'static str,
        /// Where they start.
        offset: usize,
        /// How many.
        count: usize,
    },
    /// The output buffer cannot hold the reply.
    #[error("output buffer of {have} bytes is too small for the {need}-byte reply")]
    OutputTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The driver answered with a failure status.
    #[error("the driver refused the request: {status}")]
    Refused {
        /// The status in the reply header.
        status: crate::ReplyStatus,
    },
}
