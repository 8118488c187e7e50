#!/usr/bin/env python3
"""Judges a Wine smoke run (scripts/windows/wine-smoke.sh wrote OUT/NAME.{out,err,rc}, wine.log).

usage: smoke-check.py OUT_DIR PACK RULES MAX_STAGE_BYTES REQUEST_HEADER_LEN
Prints one line per check; exit 1 if any fails.
"""
import hashlib
import json
import re
import sys

out_dir, pack_path, rules, max_stage, header_len = sys.argv[1:6]
rules, max_stage, header_len = int(rules), int(max_stage), int(header_len)
pack_hash = hashlib.sha256(open(pack_path, "rb").read()).hexdigest()
log = open(f"{out_dir}/wine.log", encoding="utf-8", errors="replace").read()
failures = []


def text(name, ext):
    try:
        return open(f"{out_dir}/{name}.{ext}", encoding="utf-8", errors="replace").read()
    except FileNotFoundError:
        return ""


def rc(name):
    t = text(name, "rc").strip()
    return int(t) if t.lstrip("-").isdigit() else None


def check(ok, what, detail=""):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}" + (f"   [{detail}]" if detail and not ok else ""))
    if not ok:
        failures.append(what)


def section(name):
    """The driver's trace between the marker of step NAME and the next marker."""
    m = re.search(rf"^== {re.escape(name)}\n(.*?)(?=^== |\Z)", log, re.M | re.S)
    return m.group(1) if m else ""


def status(name):
    try:
        return json.loads(text(name, "out"))
    except ValueError:
        return None


def events(name):
    evs = []
    for line in text(name, "out").splitlines():
        try:
            evs.append(json.loads(line))
        except ValueError:
            pass
    return evs


def has_event(evs, kind, **fields):
    return any(e.get("name") == kind and all(e.get(k) == v for k, v in fields.items()) for e in evs)


def content_is(name, source, version):
    s = status(name)
    c = (s or {}).get("content", {})
    ok = (rc(name) == 0 and c.get("source") == source and c.get("version") == version
          and (version == 0 or (c.get("hash") == pack_hash and c.get("rules") == rules
                                and c.get("channel") == 1)))
    check(ok, f"{name}: content {source} v{version}"
          + (f", {rules} rules, the pack's SHA-256, channel 1" if version else ""),
          f"rc {rc(name)}: {c}")
    return s or {}


def refused(name, code):
    ok = rc(name) == 1 and f"(code {code})" in text(name, "err")
    check(ok, f"{name}: refused by the driver with code {code} (exit 1)",
          f"rc {rc(name)}: {text(name, 'err').strip()[:300]}")


print("Wine smoke checks:")
check(rc("sc-start") == 0 and "RUNNING" in text("sc-start", "out"),
      "sc start: DriverEntry returned success, service RUNNING", text("sc-start", "out")[-300:])
s = status("status-fresh") or {}
check(rc("status-fresh") == 0 and s.get("driver_version") == "1.0.0"
      and s.get("schema_matches_this_tool") is True,
      "status over DeviceIoControl: driver 1.0.0, the schema this tool was built with",
      text("status-fresh", "out")[:300] + text("status-fresh", "err")[:300])
content_is("status-fresh", "none", 0)
check(has_event(events("guard-events-fresh"), "boot-no-content"),
      "guard-events: boot-no-content on a fresh install", text("guard-events-fresh", "out")[:300])

check(rc("stage-good") == 0 and "staged" in text("stage-good", "out"),
      "stage a signed pack (v1): accepted", text("stage-good", "err")[:300])
s = content_is("status-staged", "candidate", 1)
g = s.get("guard", {})
check(g.get("candidate_staged") is True and g.get("candidate_version") == 1,
      "status: guard has candidate v1 staged", str(g))
listing = [l for l in text("content-dir", "out").splitlines() if l and not l.startswith("total")
           and not l.rstrip().endswith((" .", " .."))]
check(len(listing) >= 1, "the driver created C:\\Bulwark\\Content itself and stored the envelope",
      text("content-dir", "out")[:300])

refused("stage-forged-signature", 111)
refused("stage-forged-payload", 111)
refused("stage-untrusted-key", 110)
refused("stage-truncated", 106)
refused("stage-replay-v1", 122)
refused("stage-max-size", 106)
check(f"in_size {max_stage + header_len} " in section("stage-max-size"),
      f"the max-size stage ({max_stage} bytes) reached the driver's dispatch_ioctl whole")
over = text("stage-over-size", "err")
check(rc("stage-over-size") == 2 and "os error 87" in over and "control request failed" in over,
      f"over-size stage ({max_stage + 1} bytes): the driver fails the IOCTL before copying it "
      "(STATUS_INVALID_PARAMETER, ERROR_INVALID_PARAMETER 87; exit 2), and the tool says the "
      "request failed, not that the device cannot be reached",
      f"rc {rc('stage-over-size')}: {over.strip()[:300]}")
check(f"in_size {max_stage + 1 + header_len} " in section("stage-over-size"),
      "the over-size request reached the driver's dispatch_ioctl (refused there, not by Wine)")
content_is("status-after-refusals", "candidate", 1)
evs = events("guard-events-staged")
check(has_event(evs, "staged", version=1), "guard-events: staged v1", text("guard-events-staged", "out")[:400])
for code in (111, 110, 106, 122):
    check(has_event(evs, "refused", detail=code), f"guard-events: a refusal with code {code}")
check(rc("detections") == 0, "detections: read (empty: Wine fires no process callbacks)",
      text("detections", "err")[:300])

check(rc("confirm") == 0 and "last-known-good" in text("confirm", "out"),
      "confirm a healthy boot: v1 becomes last-known-good", text("confirm", "err")[:300])
s = content_is("status-confirmed", "last-known-good", 1)
check(s.get("guard", {}).get("candidate_staged") is False, "status: no candidate left after confirm")
check(has_event(events("guard-events-confirmed"), "blessed", version=1), "guard-events: blessed v1",
      text("guard-events-confirmed", "out")[:300])

unload = section("sc-stop")
check(rc("sc-stop") == 0 and "STOPPED" in text("sc-stop", "out"), "sc stop: service STOPPED")
check("unload_driver" in unload and "IoDeleteDevice" in unload
      and "PsTerminateSystemThread" in unload and "IoDeleteDriver" in unload,
      "unload ran: worker thread ended, control device deleted, driver object freed")
check(rc("status-stopped") not in (0, None), "after stop the control device is gone (status fails)",
      f"rc {rc('status-stopped')}")

check(rc("sc-start-again") == 0 and "RUNNING" in text("sc-start-again", "out"), "loaded again: RUNNING")
content_is("status-reloaded", "last-known-good", 1)
evs = events("guard-events-reloaded")
check(has_event(evs, "boot-lkg", version=1) and has_event(evs, "clean-shutdown"),
      "guard-events after reload: clean-shutdown, then boot-lkg v1", text("guard-events-reloaded", "out")[:600])
check(not any(has_event(events(n), "crash-counted") for n in
              ("guard-events-staged", "guard-events-confirmed", "guard-events-reloaded")),
      "the driver never died under Wine (no crash-counted guard event)")
# The endpoint service, under Wine's service control manager, against a server on the host.
check(rc("svc-install") == 0 and "installed BulwarkService" in text("svc-install", "out"),
      "bulwark-service install: registered with the service control manager",
      (text("svc-install", "out") + text("svc-install", "err"))[:300])
check(rc("svc-install-again") not in (0, None)
      and "already installed" in text("svc-install-again", "err")
      and "1073" in text("svc-install-again", "err"),
      "bulwark-service install again: refused, naming the Windows error and the way out",
      text("svc-install-again", "err")[:300])
reg = text("svc-registered", "out")
check(rc("svc-registered") == 0 and re.search(r"Start\s+REG_DWORD\s+0x2\b", reg)
      and re.search(r"ObjectName\s+REG_SZ\s+LocalSystem", reg)
      and "service --config" in reg.replace('"', ""),
      "the service's key: automatic start, LocalSystem, `service --config FILE`", reg[:600])
check(rc("svc-start") == 0, "bulwark-service start", text("svc-start", "err")[:300])
# The pack is the same as v1's (signed again as version 2): its hash and rule count.
content_is("status-after-service", "last-known-good", 2)
s = status("status-after-service") or {}
check(s.get("guard", {}).get("candidate_staged") is False
      and s.get("guard", {}).get("last_known_good_version") == 2,
      "status: no candidate left, last-known-good is release 2 (the service's confirmation)",
      str(s.get("guard")))
st = status("svc-status") or {}
check(rc("svc-status") == 0 and st.get("confirmed") == 2 and st.get("enrolled")
      and st.get("rejections") == [],
      "bulwark-service status: enrolled, release 2 confirmed, nothing refused",
      text("svc-status", "out")[:400])
check(rc("svc-stop") == 0 and "STOPPED" in text("svc-query-stopped", "out"),
      "bulwark-service stop: the service stopped", text("svc-query-stopped", "out")[:300])
check(rc("svc-uninstall") == 0 and rc("svc-query-uninstalled") not in (0, None),
      "bulwark-service uninstall: the service is gone", text("svc-query-uninstalled", "out")[:300])
svc_log = text("svc-log", "out")
check(all(f" {w}" in svc_log for w in ("started", "enrolled as", "staged content version 2",
                                          "confirm 2:", "stopped")),
      "the service's log file: started, enrolled, staged 2, confirmed 2, stopped", svc_log[-800:])

check(rc("sc-stop-again") == 0 and "STOPPED" in text("sc-stop-again", "out"), "stopped again")

# From the service's creation on (Wine's own start-up is noisy); ntoskrnl errors about Wine's
# other drivers (winebth, ...) are not ours.
ours = log[log.find("== sc-create"):] if "== sc-create" in log else log
bad = [l for l in ours.splitlines()
       if re.search(r"Unhandled exception|unimplemented function|EXCEPTION_WINE_STUB|page fault|"
                    r"err:ntoskrnl", l)
       and not re.search(r"Services\\\\(?!bulwark)", l)]
check(not bad, "no unhandled exception, Wine stub or ntoskrnl error in the log", " | ".join(bad[:5]))

if failures:
    print(f"smoke-check: {len(failures)} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("smoke-check: all passed")
