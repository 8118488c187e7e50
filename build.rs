//! Configures the driver build with wdk-build (linker flags, WDK paths) on Windows, and for the
//! Linux type-check (`--features wdk-typecheck`). Anywhere else the root package is an empty shell
//! around its tested core, so the workspace builds and tests without the WDK.

#[cfg(any(windows, feature = "wdk-typecheck"))]
fn main() -> Result<(), wdk_build::ConfigError> {
    wdk_build::configure_wdk_binary_build()
}

#[cfg(not(any(windows, feature = "wdk-typecheck")))]
fn main() {}
