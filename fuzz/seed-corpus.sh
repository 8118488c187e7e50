#!/usr/bin/env bash
# Seeds the fuzz corpora with the example packs (valid and invalid), assembled by the bulwark tool.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p fuzz/corpus/pack_verify fuzz/corpus/pack_run
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

# control_request input: op selector, u16 output length, then the request bytes.
mkdir -p fuzz/corpus/control_request
python3 - <<'PY'
import struct
def req(op, body):
    return struct.pack("<IHHI", 0x51525742, 1, op, len(body)) + body
seeds = {
    "status": (0, req(1, b"")),
    "detections": (1, req(2, struct.pack("<II", 16, 0))),
    "guard-events": (2, req(3, struct.pack("<II", 4, 0))),
    "stage": (3, req(4, b"BWSG" + bytes(200))),
    "confirm": (4, req(5, b"")),
}
for name, (sel, body) in seeds.items():
    open(f"fuzz/corpus/control_request/{name}", "wb").write(bytes([sel]) + struct.pack("<H", 8192) + body)
PY
