//! The driver's build script.
//!
//! 1. The trusted keys: reads the list named by `BULWARK_TRUSTED_KEYS` (default
//!    `driver/trusted-keys.txt`), KEY.pub lines as `bulwark keygen` writes them, checks it with the
//!    same parser the CLI uses for key files (`loader-boot-guard/src/keyfile.rs`, included by path)
//!    and writes the keys as a constant to `$OUT_DIR/trusted_keys.rs`. A malformed list fails the
//!    build with its file, line and column, on every target: a driver that would refuse all
//!    content because of a typo is never built.
//! 2. For a Windows target (decided by `CARGO_CFG_TARGET_OS`, not by the host this script runs
//!    on): wdk-build's driver configuration (WDK paths, /DRIVER, /SUBSYSTEM:NATIVE,
//!    /ENTRY:DriverEntry), plus the static `wdmsec.lib`, where `IoCreateDeviceSecure` lives. The
//!    Linux type-check (`--features wdk-typecheck`) gets the configuration without the link.
//!    Anywhere else the root package is an empty shell around its tested core.
//!
//! wdk-build itself compiles only on a Windows host; a Linux host that cross-builds the driver
//! (`scripts/windows-build`) enables the `cross-wdk-build` feature with a wdk-build relaxed for
//! Linux (patched in by that script).

extern crate alloc;

use std::fmt::Write as _;
use std::path::PathBuf;

#[path = "loader-boot-guard/src/keyfile.rs"]
#[allow(dead_code)]
mod keyfile;

/// The default list, relative to the package root.
const DEFAULT_KEYS: &str = "driver/trusted-keys.txt";

fn trusted_keys() -> Result<(), String> {
    println!("cargo::rerun-if-env-changed=BULWARK_TRUSTED_KEYS");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let path = match std::env::var_os("BULWARK_TRUSTED_KEYS") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => manifest.join(DEFAULT_KEYS),
    };
    println!("cargo::rerun-if-changed={}", path.display());
    let text = std::fs::read(&path)
        .map_err(|e| format!("cannot read the trusted keys {}: {e}", path.display()))?;
    let text = String::from_utf8(text).map_err(|e| {
        format!(
            "{}: not UTF-8 text (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    // The limit is the loader's (envelope::MAX_TRUSTED_KEYS); the generated file asserts the two
    // agree at compile time.
    let keys = keyfile::parse_key_list(&text, 8).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = String::from(
        "/// The trusted public keys, from the list checked by build.rs.\n\
         pub const TRUSTED_KEYS: &[[u8; 32]] = &[\n",
    );
    for key in &keys {
        out.push_str("    [");
        for b in key {
            let _ = write!(out, "{b:#04x}, ");
        }
        out.push_str("],\n");
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?).join("trusted_keys.rs");
    std::fs::write(&dest, out).map_err(|e| format!("cannot write {}: {e}", dest.display()))
}

#[cfg(any(windows, feature = "wdk-typecheck", feature = "cross-wdk-build"))]
fn configure_wdk(target_is_windows: bool) -> Result<(), String> {
    wdk_build::configure_wdk_binary_build().map_err(|e| format!("wdk-build: {e}"))?;
    if target_is_windows {
        // IoCreateDeviceSecure is not an ntoskrnl export: it is static code in wdmsec.lib.
        println!("cargo::rustc-link-lib=static=wdmsec");
    }
    Ok(())
}

#[cfg(not(any(windows, feature = "wdk-typecheck", feature = "cross-wdk-build")))]
fn configure_wdk(_target_is_windows: bool) -> Result<(), String> {
    Err(String::from(
        "building the driver for Windows on a non-Windows host needs wdk-build, which compiles \
         only on Windows: use scripts/windows-build (feature `cross-wdk-build` with a relaxed \
         wdk-build), or build on Windows",
    ))
}

fn main() {
    let target_is_windows = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "windows");
    let typecheck = std::env::var_os("CARGO_FEATURE_WDK_TYPECHECK").is_some();
    let result = trusted_keys().and_then(|()| {
        if target_is_windows || typecheck {
            configure_wdk(target_is_windows)
        } else {
            Ok(())
        }
    });
    if let Err(e) = result {
        // `cargo::error` shows the message without a backtrace; the exit status fails the build.
        println!("cargo::error={e}");
        std::process::exit(1);
    }
}
