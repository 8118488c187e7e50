"""Schemathesis hooks for scripts/api-fuzz (loaded through SCHEMATHESIS_HOOKS).

* Authentication: each operation gets the token its security requirement in
  server/openapi.yaml names (an endpoint token, or an engineer token of the first role listed;
  none for public operations). Schemathesis's own checks then also send requests without it.
* Real data half the time, so that the fuzzing reaches past the lookups: the enrollment secret,
  the channel `stable` (in paths and bodies), release versions 1 and 2 (`start`), the envelope
  of release 1 (`/v1/envelopes/{sha256}`).
* The check `refusals_store_nothing`: for every 4xx, the whole database (every row of every
  table) is the same after the request as before it. Run with one worker: the snapshot is taken
  just before each call.

Environment: BULWARK_FUZZ_DB (the SQLite file), BULWARK_FUZZ_SECRET, BULWARK_FUZZ_TOKENS (JSON:
role or "endpoint" -> token), BULWARK_FUZZ_ENVELOPE (the SHA-256 of a published envelope).
"""

import json
import os
import sqlite3
import zlib

import schemathesis

DB = os.environ["BULWARK_FUZZ_DB"]
SECRET = os.environ["BULWARK_FUZZ_SECRET"]
TOKENS = json.loads(os.environ["BULWARK_FUZZ_TOKENS"])
ENVELOPE = os.environ["BULWARK_FUZZ_ENVELOPE"]


def half(value):
    """True for about half the generated values (a stable choice per value)."""
    return zlib.crc32(json.dumps(value, sort_keys=True, default=str).encode()) % 2 == 0


def token_for(operation):
    security = operation.definition.raw.get("security")
    if not security:
        return None
    (scheme, roles), = security[0].items()
    if scheme == "endpointToken":
        return TOKENS["endpoint"]
    return TOKENS[roles[0]]


@schemathesis.auth(refresh_interval=None)
class Tokens:
    def get(self, case, ctx):
        return token_for(ctx.operation) or ""

    def set(self, case, data, ctx):
        if data:
            case.headers = case.headers or {}
            case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.hook
def map_body(ctx, body):
    if not isinstance(body, dict) or not half(body):
        return body
    body = dict(body)
    if isinstance(body.get("secret"), str):
        body["secret"] = SECRET
    if isinstance(body.get("channel"), str):
        body["channel"] = "stable"
    if isinstance(body.get("version"), int) and not isinstance(body["version"], bool):
        body["version"] = 1 + body["version"] % 2
    return body


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    if not isinstance(path_parameters, dict) or not half(path_parameters):
        return path_parameters
    out = dict(path_parameters)
    if "channel" in out:
        out["channel"] = "stable"
    if "sha256" in out:
        out["sha256"] = ENVELOPE
    return out


def snapshot():
    """Every row of every table, in a canonical order."""
    conn = sqlite3.connect(f"file:{DB}?mode=ro", uri=True, timeout=10)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        out = []
        for t in tables:
            rows = conn.execute(f'SELECT * FROM "{t}"').fetchall()
            out.append((t, sorted(repr(r) for r in rows)))
        return out
    finally:
        conn.close()


_before = {}


@schemathesis.hook
def before_call(ctx, case, kwargs):
    _before["rows"] = snapshot()


@schemathesis.check
def refusals_store_nothing(ctx, response, case):
    """A refused request (4xx) leaves the database as it was."""
    if not 400 <= response.status_code < 500 or "rows" not in _before:
        return None
    before = _before["rows"]
    after = snapshot()
    if after != before:
        changed = [name for (name, rows), (_, old) in zip(after, before) if rows != old]
        if len(after) != len(before):
            changed.append("(the tables themselves)")
        raise AssertionError(f"refused with {response.status_code} but the database changed: {', '.join(changed)}")
    return True
