//! Helpers shared by the CLI tests that look at exit code, stdout and stderr together.

use std::path::PathBuf;
use std::process::Command;

/// Runs the `bulwark` binary: (exit code, stdout, stderr).
pub fn bulwark(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run bulwark: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A path under a per-test-binary temporary folder named after `suite`.
pub fn tmp(suite: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bulwark-cli-{suite}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d.join(name)
}
