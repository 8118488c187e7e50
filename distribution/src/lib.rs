//! Bulwark's signed distribution metadata (work in progress).
#![forbid(unsafe_code)]
