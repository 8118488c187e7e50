#!/usr/bin/env bash
# The boot-count guard, demonstrated off Windows with `bulwark guard` on a state directory.
# A good pack becomes last-known-good; a pack that "crashes the kernel" is tried N = 3 times, then
# quarantined, and the machine goes back to last-known-good by itself; re-delivery is refused.
#
# Usage: loader-boot-guard/demo.sh [WORK_DIR]     (default: a new temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p bulwark-cli
BW="${CARGO_TARGET_DIR:-target}/debug/bulwark"
W="${1:-$(mktemp -d)}"
mkdir -p "$W"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

cat > "$W/bad.bwasm" <<'ASM'
rule
  id "pretend-channel-file-291"
  title "content that reaches a driver bug"
  author "demo"
  level high
  action alert
  event process_creation
  str.contains CommandLine "boom"
  ret
end
ASM

step "$BW" asm examples/content/suspicious-shells.bwasm -o "$W/good.pack"
step "$BW" asm "$W/bad.bwasm" -o "$W/bad.pack"
step "$BW" keygen -o "$W/release.key" --force
step "$BW" sign --key "$W/release.key" --channel 1 --version 1 "$W/good.pack" -o "$W/good-v1.envelope"
step "$BW" sign --key "$W/release.key" --channel 1 --version 2 "$W/bad.pack" -o "$W/bad-v2.envelope"
rm -rf "$W/state"
step "$BW" guard init --state "$W/state" --trust "$W/release.key.pub" --threshold 3 --stable-secs 600

# Good content: staged, tried at the next boot, blessed after the stable period.
step "$BW" guard stage --state "$W/state" "$W/good-v1.envelope"
step "$BW" guard boot --state "$W/state"
step "$BW" guard run --state "$W/state" --secs 600
step "$BW" guard shutdown --state "$W/state"

# Bad content: each boot with it crashes the machine.
step "$BW" guard stage --state "$W/state" "$W/bad-v2.envelope"
for i in 1 2 3; do
  step "$BW" guard boot --state "$W/state"
  step "$BW" guard crash --state "$W/state"
done
# The fourth boot: quarantined, back to last-known-good with nobody in safe mode.
step "$BW" guard boot --state "$W/state"
# Delivered again: refused (exit 1).
if "$BW" guard stage --state "$W/state" "$W/bad-v2.envelope"; then
  echo "expected a refusal" >&2
  exit 1
fi
step "$BW" guard status --state "$W/state"

# The records lost (slot A damaged, slot B erased): the floor, LKG and quarantine list are gone,
# so nothing stages (exit 1) until an administrator re-creates the records with a floor.
printf 'garbage' > "$W/state/record-a"
rm -f "$W/state/record-b"
step "$BW" sign --key "$W/release.key" --channel 1 --version 3 "$W/good.pack" -o "$W/good-v3.envelope"
if "$BW" guard stage --state "$W/state" "$W/good-v3.envelope"; then
  echo "expected a refusal" >&2
  exit 1
fi
step "$BW" guard reset --state "$W/state" --floor 2
step "$BW" guard stage --state "$W/state" "$W/good-v3.envelope"
echo
echo "demo files in $W"
