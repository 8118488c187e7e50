//! The control protocol between Bulwark's driver and user mode (the service and `bulwark`).
//!
//! One IOCTL per operation ([`Op`]), `METHOD_BUFFERED`. Every request and reply starts with a
//! fixed header (magic, protocol version, operation, body length); bodies are fixed little-endian
//! layouts, except the staged pack, which is opaque bytes the driver hands to its loader.
//!
//! The driver parses requests with [`Request::parse`], the one entry point for untrusted input from
//! user mode: it checks the IOCTL code, every length and every field, and never panics or allocates.
//! Replies are written into the caller's buffer with the `encode` methods, and parsed back by the
//! client with the matching `parse` functions, so both ends share one definition of every layout.
#![no_std]

mod codec;
mod error;
mod message;

pub use codec::{truncate_utf8, FixedStr, Reader, Writer};
pub use error::ProtocolError;
pub use message::*;

/// The protocol version this crate speaks. A request with any other version is refused.
/// Version 2: detection records carry the command line, user, parent image and hashes, and the
/// revert and next-boot stage operations exist.
pub const PROTOCOL_VERSION: u16 = 2;

/// `BWRQ`: the first four bytes of every request.
pub const REQUEST_MAGIC: u32 = u32::from_le_bytes(*b"BWRQ");
/// `BWRP`: the first four bytes of every reply.
pub const REPLY_MAGIC: u32 = u32::from_le_bytes(*b"BWRP");

/// The control device's NT name and the symbolic link user mode opens (`\\.\Bulwark`).
pub const DEVICE_NAME: &str = "\\Device\\Bulwark";
/// The DOS-visible link to [`DEVICE_NAME`].
pub const SYMLINK_NAME: &str = "\\DosDevices\\Bulwark";
/// The user-mode path of the control device.
pub const USER_PATH: &str = "\\\\.\\Bulwark";
/// Security descriptor of the control device: full access for SYSTEM and Administrators only.
pub const DEVICE_SDDL: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)";

/// Limits on everything that crosses the boundary.
pub mod limits {
    /// The largest signed envelope a stage request may carry: the largest pack (8 MiB, the
    /// interpreter's `limits::MAX_PACK_BYTES`, the one size limit for packs everywhere) plus the
    /// envelope's 152-byte signature header. It equals the loader's `MAX_ENVELOPE_BYTES` (this
    /// crate depends on neither; `driver/core/tests/limits.rs` checks they agree).
    pub const MAX_STAGE_BYTES: usize = 8 * 1024 * 1024 + 152;
    /// The most detection records one read may return.
    pub const MAX_DETECTIONS_PER_READ: u32 = 256;
    /// The most guard events one read may return.
    pub const MAX_GUARD_EVENTS_PER_READ: u32 = 64;
    /// Bytes of the image path kept in a detection record (UTF-8, truncated on a char boundary).
    pub const DETECTION_IMAGE_BYTES: usize = 256;
    /// Bytes of the command line kept in a detection record (UTF-8, truncated on a char
    /// boundary, flagged in `truncated`).
    pub const DETECTION_COMMAND_LINE_BYTES: usize = 512;
    /// Bytes of the user (`DOMAIN\name`) kept in a detection record.
    pub const DETECTION_USER_BYTES: usize = 128;
    /// Bytes of the parent's image path kept in a detection record.
    pub const DETECTION_PARENT_IMAGE_BYTES: usize = 256;
    /// Bytes of the image's hashes (`SHA256=...,IMPHASH=...`) kept in a detection record.
    pub const DETECTION_HASHES_BYTES: usize = 192;
    /// Bytes of the reason kept in a stage or confirm reply (UTF-8, truncated on a char boundary).
    pub const MESSAGE_BYTES: usize = 256;
}

/// Windows' `CTL_CODE` macro: device type, function, method and required access in one code.
pub const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// `FILE_DEVICE_UNKNOWN`: the device type of the control device.
pub const FILE_DEVICE_UNKNOWN: u32 = 0x22;
/// `METHOD_BUFFERED`: the I/O manager copies both buffers; the driver never touches user memory.
pub const METHOD_BUFFERED: u32 = 0;
/// `FILE_READ_DATA`: read-only operations need a handle opened for reading.
pub const FILE_READ_ACCESS: u32 = 1;
/// `FILE_WRITE_DATA`: operations that change state need a handle opened for writing.
pub const FILE_WRITE_ACCESS: u32 = 2;
