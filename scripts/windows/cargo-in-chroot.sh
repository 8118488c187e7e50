#!/bin/bash
# Runs inside the chroot (scripts/windows-build): the cross builds.
#   cargo-in-chroot.sh fetch
#   cargo-in-chroot.sh driver PROFILE JOBS    x86_64-pc-windows-msvc, build-std core+alloc, lld-link
#   cargo-in-chroot.sh cli PROFILE JOBS       x86_64-pc-windows-gnu, build-std std, mingw gcc
#   cargo-in-chroot.sh service PROFILE JOBS   bulwark-service.exe, the same way as the CLI
# BULWARK_TRUSTED_KEYS (optional) names the trusted-key list build.rs compiles into the driver.
set -euo pipefail
B=/build/bulwark
cd "$B/tree"
export CARGO_HOME=/build/cargo-home CARGO_HTTP_CAINFO=/build/host-ca.crt
unset CARGO_TARGET_DIR   # wdk-build finds the workspace from OUT_DIR: the target dir stays in the tree
export RUSTC_BOOTSTRAP=1   # -Zbuild-std on Debian's stable rustc-web
what=$1
profile=${2:-release}
jobs=${3:-2}
release=(); [ "$profile" = release ] && release=(--release)
case $what in
fetch)
  # Offline first: a warm cache needs no network.
  cargo fetch --locked --offline -q 2>/dev/null || cargo fetch --locked -q
  ;;
driver)
  export WDKContentRoot=$B/fakewdk LIBCLANG_PATH=/usr/lib/llvm-19/lib
  resdir=$(ls -d /usr/lib/llvm-19/lib/clang/* | sort -V | tail -1)
  export BINDGEN_EXTRA_CLANG_ARGS="--target=x86_64-w64-windows-gnu -fgnuc-version=4.2.1 -resource-dir=$resdir"
  # cross-wdk-build: build.rs uses wdk-build on a non-Windows host (patched in, relaxed for Linux).
  # compiler_builtins in one codegen unit drags in fma/fmaf references (msvc targets have no libm
  # in compiler_builtins); the prebuilt sysroot uses many codegen units, so do the same.
  exec cargo build -j"$jobs" -p bulwark-driver --features cross-wdk-build "${release[@]}" \
    --target x86_64-pc-windows-msvc -Zbuild-std=core,alloc \
    --config "patch.crates-io.wdk-build.path=\"$B/wdk-build-0.6.0\"" \
    --config "target.x86_64-pc-windows-msvc.linker=\"$B/tree/scripts/windows/lld-link-driver\"" \
    --config 'profile.dev.package.compiler_builtins.codegen-units=10000' \
    --config 'profile.release.package.compiler_builtins.codegen-units=10000'
  ;;
cli)
  exec cargo build -j"$jobs" -p bulwark-cli "${release[@]}" \
    --target x86_64-pc-windows-gnu -Zbuild-std=std,panic_abort \
    --config 'target.x86_64-pc-windows-gnu.linker="x86_64-w64-mingw32-gcc"'
  ;;
service)
  exec cargo build -j"$jobs" -p bulwark-service "${release[@]}" \
    --target x86_64-pc-windows-gnu -Zbuild-std=std,panic_abort \
    --config 'target.x86_64-pc-windows-gnu.linker="x86_64-w64-mingw32-gcc"'
  ;;
*) echo "cargo-in-chroot.sh: unknown step $what" >&2; exit 2 ;;
esac
