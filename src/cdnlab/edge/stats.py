"""Per-worker counters, kept as plain ints on the hot path and published once a second.

Each worker writes a JSON snapshot of its cumulative counters to the run directory; the master sums
the snapshots (plus what retired workers left behind) when Prometheus scrapes. This keeps locks,
mmaps and label lookups off the request path entirely.
"""

from __future__ import annotations

import bisect
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value

    def to_json(self) -> dict[str, Any]:
        return {"counts": self.counts, "sum": self.sum}


class WorkerStats:
    def __init__(self) -> None:
        self.requests: defaultdict[tuple[int, str], int] = defaultdict(int)
        self.bytes_by_tier: defaultdict[str, int] = defaultdict(int)
        self.upstream_fetches: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.request_seconds = Histogram()
        self.upstream_seconds = Histogram()
        self.connections = 0
        self.accepted = 0
        self.timeouts = 0
        self.signature_refused = 0
        # Requests refused by a DDoS cap, by reason: rate, conn, upstream.
        self.refused: defaultdict[str, int] = defaultdict(int)
        self.upstream_health: dict[str, bool] = {}
        # Bodies that failed their SHA-256, by where: upstream (the digest the upstream sent),
        # load (a stored object read back into RAM).
        self.integrity: defaultdict[str, int] = defaultdict(int)
        # Compression and rewrites (cdnlab.edge.compress): variants built, served, bytes saved.
        self.compress: defaultdict[str, int] = defaultdict(int)
        # TLS handshakes (tlsconn.py): handshakes (completed), resumed (of those), failed.
        self.tls: defaultdict[str, int] = defaultdict(int)

    def request(self, status: int, cache_status: str, tier: str, nbytes: int, seconds: float) -> None:
        self.requests[(status, cache_status)] += 1
        if tier != "-":  # local answers (errors, 304s of nothing) are not content from a tier
            self.bytes_by_tier[tier] += nbytes
        self.request_seconds.observe(seconds)

    def fast_hit(self, nbytes: int) -> None:
        """A whole RAM object answered inside the parser callback: well under the first bucket."""
        self.requests[(200, "hit")] += 1
        self.bytes_by_tier["ram"] += nbytes
        self.request_seconds.counts[0] += 1

    def rejected(self, status: int) -> None:
        self.requests[(status, "error")] += 1

    def upstream(self, url: str, result: str, seconds: float) -> None:
        self.upstream_fetches[(url, result)] += 1
        self.upstream_seconds.observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": [[s, c, n] for (s, c), n in self.requests.items()],
            "bytes_by_tier": dict(self.bytes_by_tier),
            "upstream_fetches": [[u, r, n] for (u, r), n in self.upstream_fetches.items()],
            "request_seconds": self.request_seconds.to_json(),
            "upstream_seconds": self.upstream_seconds.to_json(),
            "connections": self.connections,
            "accepted": self.accepted,
            "timeouts": self.timeouts,
            "signature_refused": self.signature_refused,
            "refused": dict(self.refused),
            "upstream_health": self.upstream_health,
            "integrity": dict(self.integrity),
            "compress": dict(self.compress),
            "tls": dict(self.tls),
        }

    def publish(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot()))
        os.replace(tmp, path)


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum worker snapshots (the master's view across workers)."""
    out: dict[str, Any] = {
        "requests": defaultdict(int),
        "bytes_by_tier": defaultdict(int),
        "upstream_fetches": defaultdict(int),
        "request_seconds": {"counts": [0] * (len(BUCKETS) + 1), "sum": 0.0},
        "upstream_seconds": {"counts": [0] * (len(BUCKETS) + 1), "sum": 0.0},
        "connections": 0,
        "accepted": 0,
        "timeouts": 0,
        "signature_refused": 0,
        "refused": defaultdict(int),
        "upstream_health": {},
        "integrity": defaultdict(int),
        "compress": defaultdict(int),
        "tls": defaultdict(int),
    }
    for snap in snapshots:
        # An upstream is healthy only if no live worker has it marked down.
        for url, ok in snap.get("upstream_health", {}).items():
            out["upstream_health"][url] = out["upstream_health"].get(url, True) and ok
        for s, c, n in snap.get("requests", []):
            out["requests"][(int(s), c)] += n
        for t, n in snap.get("bytes_by_tier", {}).items():
            out["bytes_by_tier"][t] += n
        for u, r, n in snap.get("upstream_fetches", []):
            out["upstream_fetches"][(u, r)] += n
        for h in ("request_seconds", "upstream_seconds"):
            src = snap.get(h) or {}
            for i, n in enumerate(src.get("counts", [])):
                out[h]["counts"][i] += n
            out[h]["sum"] += src.get("sum", 0.0)
        for reason, n in snap.get("refused", {}).items():
            out["refused"][reason] += n
        for where, n in snap.get("integrity", {}).items():
            out["integrity"][where] += n
        for what, n in snap.get("compress", {}).items():
            out["compress"][what] += n
        for what, n in snap.get("tls", {}).items():
            out["tls"][what] += n
        for k in ("connections", "accepted", "timeouts", "signature_refused"):
            out[k] += snap.get(k, 0)
    return out
