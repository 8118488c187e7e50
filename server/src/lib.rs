//! Bulwark's release server (work in progress).
#![forbid(unsafe_code)]
