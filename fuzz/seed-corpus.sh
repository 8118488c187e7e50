#!/usr/bin/env bash
# Seeds the fuzz corpora with the example packs (valid and invalid), assembled by the bulwark tool,
# and a validly signed envelope of the example pack (signed by the bulwark tool with the test key
# control_request trusts), all generated here: nothing binary is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p fuzz/corpus/pack_verify fuzz/corpus/pack_run fuzz/corpus/pack_struct fuzz/corpus/pack_differential
mkdir -p fuzz/corpus/pack_cost
for f in examples/content/*.bwasm examples/content/invalid/*.bwasm; do
  name=$(basename "$f" .bwasm)
  cargo run -q -p bulwark-cli -- asm "$f" -o "fuzz/corpus/pack_verify/$name.pack" 2>/dev/null || continue
  # pack_run input: u16 length, pack, then NUL-separated field values.
  python3 - "$name" <<'PY'
import struct, sys
name = sys.argv[1]
pack = open(f"fuzz/corpus/pack_verify/{name}.pack", "rb").read()
if len(pack) < 65536:
    fields = "C:\\Windows\\System32\\cmd.exe\0cmd.exe /c whoami\0C:\\Program Files\\Microsoft Office\\winword.exe"
    open(f"fuzz/corpus/pack_run/{name}", "wb").write(struct.pack("<H", len(pack)) + pack + fields.encode())
PY
done

# pack_struct input: base selector (2: the pack that follows), u16 length, pack, then mutations.
python3 - <<'PY'
import glob, os, random, struct
for path in sorted(glob.glob("fuzz/corpus/pack_verify/*.pack")):
    pack = open(path, "rb").read()
    name = os.path.basename(path)[:-5]
    if len(pack) < 65536:
        open(f"fuzz/corpus/pack_struct/{name}", "wb").write(b"\x02" + struct.pack("<H", len(pack)) + pack)
# The built-in bases (0: every instruction kind, 1: minimal) with a few mutation scripts, and
# byte strings for pack_differential (it reads everything through `arbitrary`).
rng = random.Random(11)
for i in range(8):
    open(f"fuzz/corpus/pack_struct/base-{i}", "wb").write(bytes([i % 2]) + rng.randbytes(64))
for i in range(16):
    open(f"fuzz/corpus/pack_differential/seed-{i}", "wb").write(rng.randbytes(48 + 16 * i))
# pack_cost also reads everything through `arbitrary`: longer byte strings, so packs get many
# rules and events get values at their fields' maximum sizes.
for i in range(32):
    open(f"fuzz/corpus/pack_cost/seed-{i}", "wb").write(rng.randbytes(256 + 128 * i))
PY

# control_request input: the store to boot from (0 empty, 1 last-known-good, 2 with a candidate,
# 3 damaged), then commands: command byte, u16 output length, then what the command reads (see
# the target). Its envelope is the example pack signed with the target's test key ([7; 32]).
mkdir -p fuzz/corpus/control_request
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'bulwark-ed25519-secret-key %s\n' "$(printf '07%.0s' $(seq 32))" >"$tmp/key"
cargo run -q -p bulwark-cli -- sign --key "$tmp/key" --channel 1 --version 7 \
  fuzz/corpus/pack_verify/suspicious-shells.pack -o "$tmp/envelope" >/dev/null
python3 - "$tmp/envelope" <<'PY'
import struct, sys
envelope = open(sys.argv[1], "rb").read()
assert len(envelope) < 65536
def req(op, body):
    return struct.pack("<IHHI", 0x51525742, 1, op, len(body)) + body
def framed(cmd, body, out=8192):
    # Commands 0-4: that operation, framed around a u16-length-prefixed body.
    return bytes([cmd]) + struct.pack("<HH", out, len(body)) + body
def raw(op_index, request, out=8192):
    # Commands 5-7: input bytes as they are (header included).
    return bytes([5, *struct.pack("<H", out), op_index]) + struct.pack("<H", len(request)) + request
status, confirm = framed(0, b""), framed(4, b"")
read_det = bytes([10]) + struct.pack("<H", 0) + bytes([16])
read_guard = bytes([11]) + struct.pack("<H", 0) + bytes([8])
tick = bytes([13]) + struct.pack("<H", 0)
reboot = bytes([14]) + struct.pack("<H", 0) + bytes([1])
crash = bytes([14]) + struct.pack("<H", 0) + bytes([0])
stage = framed(3, envelope)
cmd = b"cmd /c needle1 block-me"
seeds = {
    "stage-signed": b"\x00" + stage + read_det + read_guard + status + confirm + reboot + status,
    "stage-over-lkg": b"\x01" + stage + tick + tick + read_guard + crash + status,
    "stage-over-candidate": b"\x02" + status + stage + read_det + read_det + crash + read_guard,
    "stage-damaged-store": b"\x03" + stage + status + read_guard,
    "stage-raw": b"\x00" + raw(3, req(4, envelope)) + status,
    "stage-canned": b"\x01" + bytes([9, 0x00, 0x20, 1, 1, 0]) + read_det + bytes([15, 0, 0, 1, 5]) + confirm,
    "status": b"\x00" + raw(0, req(1, b"")),
    "detections": b"\x00" + raw(1, req(2, struct.pack("<II", 16, 0))) + raw(1, req(2, struct.pack("<II", 4, 0))),
    "guard-events": b"\x02" + raw(2, req(3, struct.pack("<II", 4, 0))),
    "confirm": b"\x02" + raw(4, req(5, b"")),
    "process": b"\x00" + bytes([12, 0, 0]) + struct.pack("<H", len(cmd)) + cmd + read_det,
}
for name, data in seeds.items():
    open(f"fuzz/corpus/control_request/{name}", "wb").write(data)
PY

# dfa_mutate input: pattern selector, mutation count (0: the DFA as compiled), then haystacks.
mkdir -p fuzz/corpus/dfa_mutate
python3 - <<'PY'
hay = "xxabc\0NET  USER x\0abbbx\0a12-x\0\u00e9\u00e9\0line\nword\0 -enc abcd1234\0".encode()
for i in range(10):
    open(f"fuzz/corpus/dfa_mutate/pattern-{i}", "wb").write(bytes([i, 0]) + hay)
PY
