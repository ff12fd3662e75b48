"""JSON access log (issue 2, daemon point 9): one line per request with the documented fields."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from helpers import Edge, Nginx, RawConn, build_request, exchange, wait_until

FIELDS = {"time", "client", "method", "path", "range", "status", "bytes", "cache_status", "tier"}


def _lines(e: Edge, path: str) -> list[dict]:
    log: Path = e.extra["access_log"]
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        rec = json.loads(line)  # every line is one JSON object
        assert isinstance(rec, dict)
        if rec.get("path") == path:
            out.append(rec)
    return out


def test_one_json_line_per_request_with_documented_fields(main_edge: Edge, origin: Nginx) -> None:
    path = "/alog/obj.bin"
    data = origin.put(path, 100_000)
    small = "/alog/small.txt"
    origin.put(small, 1000)
    t0 = time.time()
    raws: list[bytes] = []
    with RawConn(main_edge.port) as c:
        r1 = c.get(path)
        main_edge.wait_stored(path)
        r2 = c.get(path, {"Range": "bytes=0-99"})
        r3 = c.get(path, method="HEAD")
        c.get(small)
        main_edge.wait_stored(small)
        r5 = c.get(small)
        raws = [r1.head + r1.body, r2.head + r2.body, r3.head, b"", r5.head + r5.body]
    raw405, _ = exchange(main_edge.port, build_request("DELETE", path, {"Connection": "close"}))
    recs = wait_until(lambda: (lambda x: x if len(x) >= 4 else None)(_lines(main_edge, path)), 5)
    assert isinstance(recs, list)
    time.sleep(1.2)  # nothing more may appear
    recs = _lines(main_edge, path)
    assert len(recs) == 4, recs
    for rec in recs:
        assert set(rec) >= FIELDS, set(rec)
        duration = [k for k in rec if k.startswith("duration")]
        assert len(duration) == 1 and isinstance(rec[duration[0]], int | float) and rec[duration[0]] >= 0
        assert rec["client"] == "127.0.0.1"
        ts = datetime.fromisoformat(rec["time"].replace("Z", "+00:00")).timestamp()
        assert t0 - 1 <= ts <= time.time() + 1, rec["time"]
    miss, rng, head, delete = recs[0], recs[1], recs[2], recs[3]
    assert (miss["method"], miss["status"], miss["cache_status"], miss["tier"]) == (
        "GET",
        200,
        "miss",
        "upstream",
    )
    assert miss["range"] in (None, "", "-")
    assert miss["bytes"] in (len(data), len(raws[0])), miss["bytes"]
    assert (rng["status"], rng["range"], rng["cache_status"], rng["tier"]) == (
        206,
        "bytes=0-99",
        "hit",
        "flash",
    )
    assert rng["bytes"] in (100, len(raws[1]))
    assert (head["method"], head["status"], head["cache_status"]) == ("HEAD", 200, "hit")
    assert head["bytes"] in (0, len(raws[2]))
    assert (delete["method"], delete["status"]) == ("DELETE", 405)
    assert delete["bytes"] in (len(raw405), len(raw405.split(b"\r\n\r\n", 1)[1]))
    smalls = _lines(main_edge, small)
    assert [(s["cache_status"], s["tier"]) for s in smalls] == [("miss", "upstream"), ("hit", "ram")]
