//! The `bulwark-server` binary.
fn main() {}
