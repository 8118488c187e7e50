#!/bin/bash
# Runs inside the chroot (scripts/windows-build): a WDK-shaped tree for wdk-build and bindgen,
# made of mingw-w64's DDK headers and import libraries built with llvm-dlltool. It is the Wine
# flavour: good for linking a driver that Wine loads, never for the driver that ships (that one is
# built against the real WDK on Windows).
#   usage: mkfakewdk.sh ROOT
set -euo pipefail
root=$1; ver=10.0.26100.0; inc=$root/Include/$ver; lib=$root/Lib/$ver/km/x64
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
rm -rf "$root"; mkdir -p "$inc/km/crt" "$inc/shared" "$inc/um" "$lib" "$root/Lib/$ver/um/x64"
for f in /usr/share/mingw-w64/include/ddk/*; do ln -s "$f" "$inc/km/$(basename "$f")"; done
for f in /usr/share/mingw-w64/include/*; do [ "$(basename "$f")" = ddk ] || ln -s "$f" "$inc/shared/$(basename "$f")"; done
rm -f "$inc/km/ntstrsafe.h"
cat > "$inc/km/ntstrsafe.h" <<'H'
#include "/usr/share/mingw-w64/include/ddk/ntstrsafe.h"
typedef ULONG64 POOL_FLAGS;
NTKERNELAPI PVOID NTAPI ExAllocatePool2(POOL_FLAGS Flags, SIZE_T NumberOfBytes, ULONG Tag);
H
m=/usr/x86_64-w64-mingw32/lib
cp "$m/libhal.a" "$lib/hal.lib"
cp "$m/libwmilib.a" "$lib/wmilib.lib"

# ntoskrnl.lib: an LLVM import library from mingw's export names, plus exports the real (and
# Wine's) ntoskrnl.exe has and mingw's libntoskrnl.a lacks. Left out:
# - CmRegisterCallbackEx, CmCallbackGetKeyObjectID, KeQuerySystemTimePrecise: Wine 10 does not
#   export them (the shims below stand in);
# - IoCreateDeviceSecure: it is not an ntoskrnl.lib symbol in the real WDK either (see wdmsec.lib),
#   so a build.rs that forgets to link wdmsec fails here as it would on Windows.
llvm-nm "$m/libntoskrnl.a" 2>/dev/null \
  | awk '$2=="I" && $3 ~ /^__imp_/ {sub(/^__imp_/,"",$3); print $3}' | sort -u \
  | grep -vxE 'CmRegisterCallbackEx|CmCallbackGetKeyObjectID|KeQuerySystemTimePrecise|IoCreateDeviceSecure' \
  > "$work/ntoskrnl.names"
{ echo "LIBRARY ntoskrnl.exe"; echo "EXPORTS"; cat "$work/ntoskrnl.names"
  printf '%s\n' ExAllocatePool2 __chkstk KeQuerySystemTime; } > "$work/ntoskrnl.def"
llvm-dlltool -m i386:x86-64 -d "$work/ntoskrnl.def" -l "$lib/ntoskrnl.lib"

# wdmsec.lib: the real one is a static library (IoCreateDeviceSecure and friends are code linked
# into the driver). Wine exports IoCreateDeviceSecure from its ntoskrnl.exe instead, so the Wine
# flavour is an import library naming ntoskrnl.exe: the driver still links it only if build.rs
# asks for wdmsec (cargo::rustc-link-lib=static=wdmsec).
printf 'LIBRARY ntoskrnl.exe\nEXPORTS\nIoCreateDeviceSecure\n' > "$work/wdmsec.def"
llvm-dlltool -m i386:x86-64 -d "$work/wdmsec.def" -l "$lib/wdmsec.lib"

# Wine shims, placed in BufferOverflowFastFailK.lib (wdk-build links it before ntoskrnl.lib; it is
# otherwise empty here: Rust emits no /GS checks). A missing import in Wine becomes a stub that
# raises EXCEPTION_WINE_STUB when called.
cat > "$work/wine-shims.s" <<'S'
	.text
	.globl KeQuerySystemTimePrecise      # VOID (PLARGE_INTEGER): Wine has KeQuerySystemTime
KeQuerySystemTimePrecise:
	jmpq *__imp_KeQuerySystemTime(%rip)
	.globl CmRegisterCallbackEx          # NTSTATUS (fn, alt, drv, ctx, PLARGE_INTEGER cookie, rsv)
CmRegisterCallbackEx:
	movq 40(%rsp), %rax
	testq %rax, %rax
	je 1f
	movq $0x5eed, (%rax)
1:	xorl %eax, %eax                      # STATUS_SUCCESS: no registry notifications under Wine
	retq
	.globl CmCallbackGetKeyObjectID
CmCallbackGetKeyObjectID:
	movl $0xC0000002, %eax               # STATUS_NOT_IMPLEMENTED
	retq
S
llvm-mc -filetype=obj -triple=x86_64-pc-windows-msvc "$work/wine-shims.s" -o "$work/wine-shims.obj"
llvm-ar rcs "$lib/BufferOverflowFastFailK.lib" "$work/wine-shims.obj"
echo "fake WDK in $root: $(wc -l < "$work/ntoskrnl.names") ntoskrnl names, wdmsec.lib, Wine shims"
