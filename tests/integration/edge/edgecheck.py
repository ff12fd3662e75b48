"""Assertions shared by the edge integration tests: RFC 9211 Cache-Status, HTTP-dates, headers."""

from __future__ import annotations

import email.utils
import os
import re
import time
from pathlib import Path

from helpers import Edge, Nginx, RawResponse, http_date, sha256, simultaneous

CACHE = "cdnlab"

_IMF_FIXDATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} GMT$"
)

ALL_METHODS = ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")


def cache_status_members(value: str) -> list[tuple[str, dict[str, str | bool]]]:
    """RFC 9211 Cache-Status as (cache name, parameters), upstream caches first.

    A small Structured Fields list parser: members separated by commas, parameters by ";",
    a bare parameter is True, quoted strings are unquoted.
    """
    members: list[tuple[str, dict[str, str | bool]]] = []
    for raw in _split_outside_quotes(value, ","):
        pieces = _split_outside_quotes(raw, ";")
        name = pieces[0].strip()
        params: dict[str, str | bool] = {}
        for p in pieces[1:]:
            k, eq, v = p.strip().partition("=")
            v = v.strip()
            if v.startswith('"') and v.endswith('"'):
                v = v[1:-1]
            params[k.strip()] = v if eq else True
        members.append((name, params))
    return members


def _split_outside_quotes(s: str, sep: str) -> list[str]:
    out, cur, quoted = [], [], False
    for c in s:
        if c == '"':
            quoted = not quoted
        if c == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    out.append("".join(cur))
    return out


def ours(headers: dict[str, str]) -> dict[str, str | bool]:
    """Parameters of this cache's member: the last one, named ``cdnlab`` (RFC 9211 §2)."""
    assert "cache-status" in headers, f"no Cache-Status in {headers}"
    members = cache_status_members(headers["cache-status"])
    name, params = members[-1]
    assert name == CACHE, f"last Cache-Status member is {name!r}: {headers['cache-status']!r}"
    return params


def assert_hit(headers: dict[str, str]) -> None:
    assert ours(headers) == {"hit": True}, headers.get("cache-status")


def assert_miss_stored(headers: dict[str, str]) -> None:
    assert ours(headers) == {"fwd": "miss", "stored": True}, headers.get("cache-status")


def assert_date(headers: dict[str, str], slack: float = 10.0) -> None:
    """Date is an IMF-fixdate (RFC 9110 §5.6.7) close to now."""
    d = headers.get("date")
    assert d is not None, "no Date header"
    assert _IMF_FIXDATE.match(d), f"Date is not an IMF-fixdate: {d!r}"
    ts = email.utils.parsedate_to_datetime(d).timestamp()
    assert abs(ts - time.time()) < slack, f"Date {d!r} is far from now"


def assert_common(resp: RawResponse, method: str = "GET") -> None:
    """What every response carries: one Date, one Cache-Status naming us, a true Content-Length."""
    h = resp.headers
    assert resp.version == "HTTP/1.1", resp.version
    assert_date(h)
    assert resp.count("date") == 1 and resp.count("cache-status") == 1, resp.head
    for name in ("content-type", "content-range", "etag", "last-modified", "age", "content-encoding"):
        assert resp.count(name) <= 1, f"{name} twice: {resp.head!r}"  # singletons (RFC 9110 §5.3)
    ours(h)
    if resp.status != 304 and not 100 <= resp.status < 200:
        assert resp.count("content-length") == 1, f"{resp.status} without one Content-Length: {resp.head!r}"
        if method != "HEAD":
            assert int(h["content-length"]) == len(resp.body), (h["content-length"], len(resp.body))


def assert_object_headers(resp: RawResponse, *, etag: str, mtime: float, ctype: str) -> None:
    """Representation metadata relayed from the origin and Accept-Ranges (RFC 9110 §8, §14.3)."""
    h = resp.headers
    assert h.get("etag") == etag, (h.get("etag"), etag)
    assert h.get("last-modified") == http_date(mtime), (h.get("last-modified"), http_date(mtime))
    assert h.get("content-type") == ctype, h.get("content-type")
    assert h.get("accept-ranges") == "bytes", h.get("accept-ranges")


def store_files(store: Path) -> dict[str, bytes]:
    """Every file under the edge's tier directories (not the state dir): relative path -> bytes."""
    out: dict[str, bytes] = {}
    for root, _dirs, files in os.walk(store):
        rel_root = Path(root).relative_to(store)
        if rel_root.parts[:1] == ("state",):
            continue
        for f in files:
            p = Path(root) / f
            out[str(rel_root / f)] = p.read_bytes()
    return out


def object_files(store: Path) -> dict[str, bytes]:
    """Committed object files only: ``<tier>/objects/…``."""
    return {k: v for k, v in store_files(store).items() if "/objects/" in k}


def config_toml(
    *, workers: int = 1, limits: str = "", extra: str = "", tiers: str = "", admin: str = ""
) -> str:
    """A daemon config with the helpers' {port}/{admin}/{store}/{base}/{upstreams} holes.

    ``limits`` is the body of the [limits] table, ``admin`` more [admin] keys, ``extra`` more tables
    at the end, ``tiers`` the
    [[tiers]] tables (default: one flash disk in {store}/flash0). Literal braces must be doubled.
    """
    tiers = tiers or '[[tiers]]\npath = "{store}/flash0"\nkind = "flash"\ncapacity = "1G"\n'
    return (
        f'listen = ["127.0.0.1:{{port}}"]\nworkers = {workers}\nupstreams = {{upstreams}}\n'
        f'state_dir = "{{store}}/state"\n\n{tiers}\n[admin]\nlisten = "127.0.0.1:{{admin}}"\n{admin}\n'
        f"[limits]\n{limits}\n\n{extra}\n"
    )


def listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:``port`` (one per SO_REUSEPORT worker)."""
    n = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A" and int(f[1].split(":")[1], 16) == port:
            n += 1
    return n


def _check_all(
    results: list[RawResponse | Exception], data: bytes, ranges: dict[int, tuple[int, int]]
) -> None:
    errors = [(i, r) for i, r in enumerate(results) if isinstance(r, Exception)]
    assert not errors, f"{len(errors)} clients failed, first: {errors[:3]}"
    want = sha256(data)
    bad = []
    for i, r in enumerate(results):
        assert isinstance(r, RawResponse)
        if i in ranges:
            a, b = ranges[i]
            ok = r.status == 206 and r.body == data[a : b + 1]
        else:
            ok = r.status == 200 and sha256(r.body) == want
        if not ok:
            bad.append((i, r.status, len(r.body)))
    assert not bad, f"{len(bad)} wrong answers, first: {bad[:5]}"


def concurrent_one_object(e: Edge, origin: Nginx, path: str, n: int = 500) -> None:
    """``n`` clients ask at the same moment for one uncached object (every tenth for a range):
    exactly one origin fetch, every client gets the right bytes."""
    data = origin.put(path, 512 * 1024)  # ~1 s from the origin at 512 KiB/s
    ranges = {i: (i * 1000, i * 1000 + 4095) for i in range(0, n, 10)}
    reqs = [
        (path, {"Range": f"bytes={ranges[i][0]}-{ranges[i][1]}"} if i in ranges else {}) for i in range(n)
    ]
    results = simultaneous(e.port, reqs, timeout=40)
    _check_all(results, data, ranges)
    assert origin.fetches(path) == 1, origin.fetches(path)
    entry = e.wait_stored(path)
    assert entry["sha256"] == sha256(data)


def assert_index_matches_disk(e: Edge) -> dict[str, dict]:
    """/inventory and the object files agree one to one: every listed object has a file with its
    size and SHA-256, every object file is listed, and no temp file is left over."""
    inv = {o["key"]: o for o in e.inventory()["objects"]}
    files = object_files(e.store)
    listed = sorted((o["size"], o["sha256"]) for o in inv.values())
    on_disk = sorted((len(b), sha256(b)) for b in files.values())
    assert listed == on_disk, f"index {len(listed)} objects vs disk {len(on_disk)} files"
    temps = [k for k in store_files(e.store) if "/tmp/" in k]
    assert not temps, temps
    return inv
