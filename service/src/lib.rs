//! placeholder
pub mod agent;
pub mod config;
pub mod link;
pub mod net;
pub mod spool;
