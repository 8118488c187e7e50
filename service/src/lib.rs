//! placeholder
pub mod link;
pub mod net;
pub mod spool;
