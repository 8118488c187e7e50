//! placeholder
pub mod agent;
pub mod link;
pub mod net;
pub mod spool;
