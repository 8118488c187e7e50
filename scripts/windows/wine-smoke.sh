#!/bin/bash
# Runs inside the chroot (scripts/windows-smoke): loads the driver in Wine as a kernel service and
# drives it with the real bulwark.exe over DeviceIoControl. It only runs the steps and records each
# one's stdout, stderr and exit status in $B/smoke/out/NAME.{out,err,rc}; scripts/windows/
# smoke-check.py judges them on the host. The driver's own trace (WINEDEBUG +ntoskrnl, +seh,
# +debugstr) and "== NAME" markers between steps go to $B/smoke/out/wine.log.
#   usage: wine-smoke.sh     (inputs in $B/smoke/in: bulwark_driver.sys, bulwark.exe, *.envelope)
set -uo pipefail
B=/build/bulwark
IN=$B/smoke/in OUT=$B/smoke/out
export WINEPREFIX=$B/wineprefix WINEARCH=win64 WINEDLLOVERRIDES="winemenubuilder.exe,mscoree,mshtml=d" DISPLAY=
export PATH=/usr/lib/wine:$PATH
SERVICE='HKLM\System\CurrentControlSet\Services\bulwark'
rm -rf "$OUT"; mkdir -p "$OUT"
exec >"$OUT/wine.log" 2>&1   # one open file shared by every process below: nothing overwrites

mark() { echo "== $*"; }
# run NAME CMD...: a client-side command, its own output kept apart from the driver's trace.
run() {
  local name=$1; shift
  mark "$name"
  WINEDEBUG=-all timeout 120 "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
  echo $? >"$OUT/$name.rc"
  cat "$OUT/$name.out" "$OUT/$name.err"
}
bw() { local name=$1; shift; run "$name" wine64 'C:\bulwark.exe' driver "$@"; }

wineserver -k 2>/dev/null; wineserver -w 2>/dev/null
mkdir -p "$WINEPREFIX"
# The first wine command starts services.exe and winedevice.exe, which inherit its stdout/stderr
# (this log) and its WINEDEBUG: the driver's trace. Never pipe it (the pipe would never close).
# It creates the prefix on the first run.
mark wineboot
WINEDEBUG=${WINEDEBUG:-+ntoskrnl,+seh,+debugstr} timeout 300 wine64 wineboot
echo $? >"$OUT/wineboot.rc"
wineserver -p 60
# Wine shuts services.exe and its winedevice.exe processes (the loaded driver with them) down
# whenever no user process is left, as happens for an instant between two commands below. A
# cmd.exe waiting on a FIFO is the user process that keeps them alive until the end.
keep=$(mktemp -u /tmp/wine-keep.XXXXXX); mkfifo "$keep"
WINEDEBUG=-all wine64 cmd.exe <"$keep" >/dev/null 2>&1 &
keeper=$!
exec 3>"$keep"

# A clean slate from earlier runs: no endpoint service (a run cut short between its install and
# uninstall leaves it registered for automatic start: wineboot above started it), no driver
# service key (the guard's records live in its Parameters), no content directory. C:\Bulwark is
# NOT created here: the driver creates its content directory parent by parent.
run pre-svc-stop wine64 sc stop BulwarkService
run pre-svc-delete wine64 sc delete BulwarkService
run pre-sc-delete wine64 sc delete bulwark
run pre-reg-delete wine64 reg delete "$SERVICE" /f
rm -rf "$WINEPREFIX/drive_c/Bulwark"
cp "$IN/bulwark_driver.sys" "$WINEPREFIX/drive_c/windows/system32/drivers/bulwark_driver.sys"
cp "$IN/bulwark.exe" "$WINEPREFIX/drive_c/bulwark.exe"
rm -rf "$WINEPREFIX/drive_c/smoke"; mkdir -p "$WINEPREFIX/drive_c/smoke"
cp "$IN"/*.envelope "$WINEPREFIX/drive_c/smoke/"

run sc-create wine64 sc create bulwark type= kernel start= demand \
  binPath= 'C:\windows\system32\drivers\bulwark_driver.sys'
# Wine has no \SystemRoot object-manager link (the driver's default is \SystemRoot\Bulwark\Content).
run reg-content-dir wine64 reg add "$SERVICE\\Parameters" /v ContentDirectory /t REG_SZ \
  /d '\??\C:\Bulwark\Content' /f

run sc-start wine64 sc start bulwark
bw status-fresh status
bw guard-events-fresh guard-events
bw stage-good stage 'C:\smoke\good-v1.envelope'
bw status-staged status
ls -la "$WINEPREFIX/drive_c/Bulwark/Content" >"$OUT/content-dir.out" 2>&1
for bad in forged-signature forged-payload untrusted-key truncated replay-v1 max-size over-size; do
  bw "stage-$bad" stage "C:\\smoke\\$bad.envelope"
done
bw status-after-refusals status
bw guard-events-staged guard-events
bw detections detections
bw confirm confirm
bw status-confirmed status
bw guard-events-confirmed guard-events

run sc-stop wine64 sc stop bulwark
bw status-stopped status

# Loaded again: last-known-good comes back from the registry records and the content directory.
run sc-start-again wine64 sc start bulwark
bw status-reloaded status
bw guard-events-reloaded guard-events

# The endpoint service (scripts/windows-smoke set up a server on the host's loopback with release
# 2 and the default host group pinned to it): installed with the service control manager, it
# fetches, verifies, stages and confirms release 2 through the driver.
cp "$IN/bulwark-service.exe" "$WINEPREFIX/drive_c/bulwark-service.exe"
rm -rf "$WINEPREFIX/drive_c/svc"; cp -r "$IN/svc" "$WINEPREFIX/drive_c/svc"
svc() { local name=$1; shift; run "$name" wine64 'C:\bulwark-service.exe' "$@" --config 'C:\svc\service.toml'; }
svc svc-install install
run svc-registered wine64 reg query 'HKLM\System\CurrentControlSet\Services\BulwarkService'
svc svc-install-again install
svc svc-start start
# Until the driver runs release 2 as last-known-good, at most 90 s.
for i in $(seq 1 45); do
  WINEDEBUG=-all timeout 60 wine64 'C:\bulwark.exe' driver status 2>/dev/null | tr -d ' \n' \
    > "$OUT/svc-poll.out"
  grep -q '"source":"last-known-good","version":2}' "$OUT/svc-poll.out" && break
  sleep 2
done
bw status-after-service status
svc svc-status status
svc svc-stop stop
sleep 3
run svc-query-stopped wine64 sc query BulwarkService
svc svc-uninstall uninstall
run svc-query-uninstalled wine64 sc query BulwarkService
cat "$WINEPREFIX/drive_c/svc/logs/bulwark-service.log" > "$OUT/svc-log.out" 2>&1
run sc-stop-again wine64 sc stop bulwark
mark end
exec 3>&-            # EOF: the keeper's cmd.exe exits
wait "$keeper"
rm -f "$keep"
wineserver -k
wineserver -w
exit 0
