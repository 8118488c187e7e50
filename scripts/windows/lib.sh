# Shared by scripts/windows-build and scripts/windows-smoke (sourced, not run).
#
# The Windows cross build runs in a Debian trixie chroot (rustc-web/cargo-web/rust-web-src 1.96,
# mingw-w64 12, lld/llvm 19, Wine 10), cached between runs on one machine:
#
#   $BULWARK_WIN_CACHE            default /var/tmp/bulwark-win (the layout of ../shared/tools/win-cross)
#     chroot/                     the Debian chroot; created when missing or incomplete
#     chroot/build/cargo-home     crates (shared with win-cross)
#     chroot/build/bulwark/       this project's own part: tree (a copy of the checkout, with its
#                                 target directory), fakewdk, wdk-build-0.6.0 (relaxed), keys,
#                                 wineprefix, smoke (the Wine run's inputs and outputs)
#     keys/                       the smoke test's signing keys (kept, so the driver is not rebuilt)
#     out/<profile>/              bulwark_driver.sys and .pdb, bulwark.exe, objdump -p, Wine logs
#     lock                        one run at a time (flock)
#
# Mounts (proc, sys, dev) are made in a private mount namespace per command (unshare -m), so they
# never leak to the host and never disturb another user of the same chroot.

set -euo pipefail

PROJECT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${BULWARK_WIN_CACHE:-/var/tmp/bulwark-win}
R=$CACHE/chroot
B=/build/bulwark              # this project's directory, as seen inside the chroot
RELAX=${BULWARK_RELAX_WDK_BUILD:-$PROJECT/../shared/tools/wdk-typecheck/relax_wdk_build.py}
JOBS=${BULWARK_WIN_JOBS:-2}
SUITE=trixie
PACKAGES="rustc-web cargo-web rust-web-src mingw-w64-x86-64-dev binutils-mingw-w64-x86-64
  gcc-mingw-w64-x86-64-win32 lld llvm libclang-dev wine64 ca-certificates"
export DEBIAN_FRONTEND=noninteractive

say() { printf '%s\n' "$*" >&2; }
die() { printf '%s: %s\n' "${ME:-windows}" "$*" >&2; exit 1; }

# step NAME CMD...: runs CMD, prints its time, and keeps it for the summary.
TIMES=()
step() {
  local name=$1 s=$SECONDS; shift
  say "== $name"
  "$@"
  local t=$((SECONDS - s))
  TIMES+=("$(printf '%5ss  %s' "$t" "$name")")
  say "[time] ${t}s $name"
}
print_times() {
  say ""; say "== ${ME:-windows}: step times"
  local l; for l in "${TIMES[@]}"; do say "$l"; done
}

# Preconditions every run checks: root, and the relax script (else a printed skip, exit 0).
require_root() {
  [ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and mounts); run it as root (CI does)"
  command -v unshare >/dev/null && command -v flock >/dev/null && command -v chroot >/dev/null ||
    die "needs unshare, flock and chroot (util-linux, coreutils)"
  local missing=() t
  for t in python3 curl; do command -v $t >/dev/null || missing+=("$t"); done
  if [ ${#missing[@]} -gt 0 ]; then
    say "host: installing ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
      die "cannot install ${missing[*]} on the host (no network?)"
  fi
}
relax_present_or_skip() {
  if [ ! -f "$RELAX" ]; then
    say "${ME:-windows}: skipped: $RELAX is absent (../shared/tools/wdk-typecheck edits wdk-build to run on Linux)"
    exit 0
  fi
}

# One run at a time per cache directory.
take_lock() {
  # scripts/windows-smoke holds the lock while it runs scripts/windows-build.
  [ "${BULWARK_WIN_LOCK_HELD:-}" = "$CACHE" ] && return 0
  mkdir -p "$CACHE"
  exec 9>"$CACHE/lock"
  if ! flock -n 9; then
    say "waiting for another run holding $CACHE/lock (up to 1 h)"
    flock -w 3600 9 || die "$CACHE/lock is still held after an hour"
  fi
  export BULWARK_WIN_LOCK_HELD=$CACHE
}

# net_ok URL: is the registry reachable? (Only asked when something must be downloaded.)
net_ok() { curl -sS -o /dev/null --max-time 30 --retry 2 -I "$1" 2>/dev/null; }
need_net() {
  net_ok "$1" || die "no network: cannot reach $1 (needed to $2); check the connection or proxy"
}

# inch CMD...: run CMD in the chroot with a clean environment; proc, sys and dev are mounted in a
# private mount namespace that ends with the command.
inch() {
  unshare -m --propagation private -- /bin/sh -c '
    R=$1; shift
    mount -t proc proc "$R/proc" && mount -t sysfs sys "$R/sys" && mount --rbind /dev "$R/dev" || {
      echo "windows: cannot mount proc, sys and dev under $R (needs CAP_SYS_ADMIN)" >&2; exit 125; }
    exec chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
  ' sh "$R" "$@"
}

mirror() {
  local m=${MIRROR:-}
  [ -n "$m" ] || m=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$m" ] || m=$(awk '$1=="deb" && $2 ~ /^http/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  printf '%s\n' "${m:-http://deb.debian.org/debian}"
}

# The chroot: created when missing, re-created when debootstrap never finished (its
# /debootstrap directory is still there), packages installed when any is missing.
ensure_chroot() {
  local m; m=$(mirror)
  if [ -d "$R/debootstrap" ] || { [ -e "$R" ] && [ ! -x "$R/usr/bin/apt-get" ]; }; then
    if findmnt -rn -o TARGET | grep -q "^$R/"; then
      die "$R is incomplete but has mounts under it (another run?); unmount them or remove it by hand"
    fi
    say "the chroot $R is incomplete: removing it"
    rm -rf "$R"
  fi
  if [ ! -x "$R/usr/bin/apt-get" ]; then
    if ! command -v debootstrap >/dev/null; then
      need_net "$m/dists/" "install debootstrap"
      step "host: apt-get install debootstrap" apt-get install -y -q --no-install-recommends debootstrap
    fi
    need_net "$m/dists/$SUITE/Release" "debootstrap Debian $SUITE from $m"
    step "debootstrap $SUITE (minbase)" debootstrap --variant=minbase "$SUITE" "$R" "$m"
  fi
  cp /etc/resolv.conf "$R/etc/resolv.conf"
  # shellcheck disable=SC2086
  local installed
  installed=$({ inch dpkg-query -W -f='${Package} ${Status}\n' $PACKAGES 2>/dev/null || true; } |
    awk '$NF=="installed"{n++} END{print n+0}')
  if [ "$installed" -ne "$(echo $PACKAGES | wc -w)" ]; then
    need_net "$m/dists/$SUITE/Release" "install the chroot's packages"
    step "chroot: apt-get install" inch /bin/sh -c "apt-get update -q >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(echo $PACKAGES) |
      grep -E 'Need to get|newly installed' || true"
  else
    say "chroot: $R has every package"
  fi
  mkdir -p "$R$B"
  # Trust the host's CAs inside the chroot (a TLS-intercepting proxy may sit before the registries).
  cp /etc/ssl/certs/ca-certificates.crt "$R/build/host-ca.crt"
}

# The project's files (tracked, and untracked but not ignored) copied into the chroot's tree by
# content (scripts/windows/sync-tree.py), so cargo rebuilds exactly what changed. tree/target is
# kept: wdk-build looks for Cargo.lock among OUT_DIR's ancestors, so the target directory must be
# inside the tree.
sync_tree() {
  mkdir -p "$R$B/tree"
  (cd "$PROJECT" && git ls-files -z --cached --others --exclude-standard) |
    python3 "$PROJECT/scripts/windows/sync-tree.py" "$PROJECT" "$R$B/tree"
}
