#!/usr/bin/env python3
"""Checks a built driver image (scripts/windows-build).

usage: pe-check.py IMAGE.sys OBJDUMP_P.txt PDB_PUBLICS.txt [DISASSEMBLY.txt]

- Subsystem 1 (native);
- AddressOfEntryPoint is DriverEntry: the RVA of the export named DriverEntry and of the PDB's
  public symbol DriverEntry (section:offset turned into an RVA with the image's section table);
- the only imported DLLs are ntoskrnl.exe and HAL.dll (and ntoskrnl.exe is one);
- CheckSum is non-zero and equals the PE checksum recomputed from the file;
- no instruction touches a ymm or zmm register (objdump -d's listing): x64 kernel code may use
  SSE freely, but AVX state is saved only around KeSaveExtendedProcessorState, which the driver
  does not call; a crate that picks AVX code by run-time CPU detection (sha2 did) would corrupt
  the state of the thread it interrupted.

The image is parsed here, and objdump -p's figures (Subsystem, AddressOfEntryPoint, CheckSum, DLL
Name lines) must agree with the parse. Exit 0 if every check passes, 1 otherwise.
"""
import re
import struct
import sys

ALLOWED_DLLS = {"ntoskrnl.exe", "hal.dll"}


def pe_checksum(data: bytes, checksum_offset: int) -> int:
    """The PE checksum (as imagehlp's CheckSumMappedFile): the one's-complement-style sum of the
    file's 16-bit little-endian words with carries folded back in, the CheckSum field itself
    counted as zero, then the file's length added."""
    total = 0
    n = len(data)
    padded = data + (b"\0" if n % 2 else b"")
    for (i,) in ((i,) for i in range(0, len(padded), 2)):
        if checksum_offset <= i < checksum_offset + 4:
            continue
        total += padded[i] | (padded[i + 1] << 8)
        total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return (total + n) & 0xFFFFFFFF


def cstr(data: bytes, off: int) -> str:
    end = data.index(b"\0", off)
    return data[off:end].decode("ascii", "replace")


def parse(data: bytes):
    if data[:2] != b"MZ":
        raise ValueError("no MZ header")
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe:pe + 4] != b"PE\0\0":
        raise ValueError("no PE signature")
    coff = pe + 4
    nsect, = struct.unpack_from("<H", data, coff + 2)
    opt_size, = struct.unpack_from("<H", data, coff + 16)
    opt = coff + 20
    magic, = struct.unpack_from("<H", data, opt)
    if magic != 0x20B:
        raise ValueError(f"not PE32+ (magic {magic:#x})")
    entry, = struct.unpack_from("<I", data, opt + 16)
    checksum_off = opt + 64
    checksum, = struct.unpack_from("<I", data, checksum_off)
    subsystem, = struct.unpack_from("<H", data, opt + 68)
    ndirs, = struct.unpack_from("<I", data, opt + 108)
    dirs = [struct.unpack_from("<II", data, opt + 112 + 8 * i) for i in range(min(ndirs, 16))]
    sections = []
    for i in range(nsect):
        s = opt + opt_size + 40 * i
        name = data[s:s + 8].rstrip(b"\0").decode("ascii", "replace")
        vsize, va, rawsize, rawptr = struct.unpack_from("<IIII", data, s + 8)
        sections.append((name, va, max(vsize, rawsize), rawptr, rawsize))

    def off(rva):
        for _, va, size, rawptr, rawsize in sections:
            if va <= rva < va + size and rva - va < rawsize:
                return rawptr + rva - va
        raise ValueError(f"RVA {rva:#x} is in no section")

    dlls = []
    imp_rva, imp_size = dirs[1] if len(dirs) > 1 else (0, 0)
    if imp_rva:
        d = off(imp_rva)
        while True:
            ilt, _, _, name_rva, iat = struct.unpack_from("<IIIII", data, d)
            if ilt == 0 and name_rva == 0 and iat == 0:
                break
            dlls.append(cstr(data, off(name_rva)))
            d += 20
    exports = {}
    exp_rva, _ = dirs[0] if dirs else (0, 0)
    if exp_rva:
        e = off(exp_rva)
        (nfuncs, nnames, funcs_rva, names_rva, ords_rva) = struct.unpack_from("<IIIII", data, e + 20)
        for i in range(nnames):
            name = cstr(data, off(struct.unpack_from("<I", data, off(names_rva) + 4 * i)[0]))
            ordinal, = struct.unpack_from("<H", data, off(ords_rva) + 2 * i)
            exports[name] = struct.unpack_from("<I", data, off(funcs_rva) + 4 * ordinal)[0]
    return dict(entry=entry, checksum=checksum, checksum_off=checksum_off, subsystem=subsystem,
                sections=sections, dlls=dlls, exports=exports)


def objdump_fields(text: str):
    def field(name):
        m = re.search(rf"^{name}\s+([0-9a-fA-F]+)", text, re.M)
        return int(m.group(1), 16) if m else None
    return dict(entry=field("AddressOfEntryPoint"), checksum=field("CheckSum"),
                subsystem=field("Subsystem"),
                dlls=re.findall(r"^\s*DLL Name:\s*(\S+)", text, re.M))


def pdb_driver_entry(text: str, sections):
    # llvm-pdbutil dump --publics: "... S_PUB32 [size = N] `DriverEntry`\n  flags = function, addr = 0001:85872"
    m = re.search(r"`DriverEntry`\s*\n\s*flags = [^\n]*addr = (\d+):(\d+)", text)
    if not m:
        return None
    sect, offset = int(m.group(1)), int(m.group(2))
    if not 1 <= sect <= len(sections):
        return None
    return sections[sect - 1][1] + offset


def main():
    image, objdump_path, publics_path = sys.argv[1:4]
    disassembly = sys.argv[4] if len(sys.argv) > 4 else None
    data = open(image, "rb").read()
    pe = parse(data)
    od = objdump_fields(open(objdump_path, encoding="utf-8", errors="replace").read())
    pdb_rva = pdb_driver_entry(open(publics_path, encoding="utf-8", errors="replace").read(),
                               pe["sections"])
    computed = pe_checksum(data, pe["checksum_off"])
    failures = []

    def check(ok, what):
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    print(f"PE checks of {image} ({len(data)} bytes):")
    check(pe["subsystem"] == 1 and od["subsystem"] == 1,
          f"Subsystem {pe['subsystem']} (objdump {od['subsystem']}): 1 = native")
    export = pe["exports"].get("DriverEntry")
    check(export is not None and pe["entry"] == export and od["entry"] == pe["entry"],
          f"AddressOfEntryPoint {pe['entry']:#x} (objdump {od['entry'] or 0:#x}) = export DriverEntry "
          f"{export or 0:#x}")
    check(pdb_rva is not None and pdb_rva == pe["entry"],
          f"AddressOfEntryPoint = the PDB's public DriverEntry at {pdb_rva or 0:#x}")
    names = {d.lower() for d in pe["dlls"]}
    check(bool(names) and names <= ALLOWED_DLLS and "ntoskrnl.exe" in names
          and sorted(d.lower() for d in od["dlls"]) == sorted(d.lower() for d in pe["dlls"]),
          f"imports only from ntoskrnl.exe and HAL.dll: {', '.join(pe['dlls']) or 'none'}")
    check(pe["checksum"] != 0 and pe["checksum"] == computed and od["checksum"] == pe["checksum"],
          f"CheckSum {pe['checksum']:#x} (objdump {od['checksum'] or 0:#x}) non-zero and = "
          f"recomputed {computed:#x}")
    if disassembly is not None:
        avx = []
        function = "?"
        with open(disassembly, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
                if m:
                    function = m.group(1)
                elif re.search(r"%[yz]mm[0-9]", line):
                    avx.append(f"{function}: {line.strip()}")
        check(not avx, f"no ymm/zmm register in the code ({len(avx)} instructions use one)")
        for line in avx[:10]:
            print(f"       {line}")
    others = sorted(set(pe["exports"]) - {"DriverEntry"})
    if others:
        print(f"  note: other exports: {', '.join(others)}")
    if failures:
        print(f"pe-check: {len(failures)} check(s) failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
