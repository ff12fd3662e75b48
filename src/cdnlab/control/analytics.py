"""Fleet analytics from the appliances' Prometheus metrics (seed 000 ``CDNAnalytics``).

The monitor scrapes each appliance's ``/metrics`` every interval and keeps the samples of the
last window (5 minutes by default). A window's *stats* are counter deltas between its oldest and
newest sample: requests by status class and cache status, bytes, and histogram bucket deltas.
Stats add up across appliances, so one function gives the figures per appliance, per site and
for the fleet: hit ratio, error rates, bandwidth, and p95/p99 the way PromQL's
``histogram_quantile`` interpolates them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

PREFIX = "cdnlab_"


@dataclass
class Sample:
    """Counters of one scrape; histograms as cumulative bucket counts keyed by upper bound."""

    at: float
    requests: float = 0.0
    by_class: dict[str, float] = field(default_factory=dict)  # "2xx" … "5xx"
    by_cache: dict[str, float] = field(default_factory=dict)  # hit | miss | stale | error | none
    bytes: float = 0.0
    request_buckets: dict[float, float] = field(default_factory=dict)
    request_sum: float = 0.0
    upstream_buckets: dict[float, float] = field(default_factory=dict)
    upstream_sum: float = 0.0
    upstream_count: float = 0.0
    connections: float | None = None
    failed_disks: float = 0.0


def parse_metrics(text: str, at: float) -> Sample:
    s = Sample(at=at)
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            name, labels, value = smp.name, smp.labels, float(smp.value)
            if not name.startswith(PREFIX):
                continue
            name = name[len(PREFIX) :]
            if name == "requests_total":
                s.requests += value
                cls = f"{str(labels.get('status', '0'))[:1]}xx"
                s.by_class[cls] = s.by_class.get(cls, 0.0) + value
                cache = labels.get("cache_status", "none")
                s.by_cache[cache] = s.by_cache.get(cache, 0.0) + value
            elif name == "response_bytes_total":
                s.bytes += value
            elif name == "request_duration_seconds_bucket":
                le = float(labels["le"])
                s.request_buckets[le] = s.request_buckets.get(le, 0.0) + value
            elif name == "request_duration_seconds_sum":
                s.request_sum += value
            elif name == "upstream_duration_seconds_bucket":
                le = float(labels["le"])
                s.upstream_buckets[le] = s.upstream_buckets.get(le, 0.0) + value
            elif name == "upstream_duration_seconds_sum":
                s.upstream_sum += value
            elif name == "upstream_duration_seconds_count":
                s.upstream_count += value
            elif name == "connections_active":
                s.connections = value
            elif name == "disk_failed":
                s.failed_disks += value
    return s


def _sub(a: dict, b: dict) -> dict:
    return {k: max(0.0, v - b.get(k, 0.0)) for k, v in a.items()}


def delta(new: Sample, old: Sample) -> dict:
    """Stats between two samples (JSON-friendly: bucket bounds become strings)."""
    return {
        "seconds": max(new.at - old.at, 1e-9),
        "requests": max(0.0, new.requests - old.requests),
        "by_class": _sub(new.by_class, old.by_class),
        "by_cache": _sub(new.by_cache, old.by_cache),
        "bytes": max(0.0, new.bytes - old.bytes),
        "request_buckets": {repr(k): v for k, v in _sub(new.request_buckets, old.request_buckets).items()},
        "request_sum": max(0.0, new.request_sum - old.request_sum),
        "upstream_buckets": {repr(k): v for k, v in _sub(new.upstream_buckets, old.upstream_buckets).items()},
        "upstream_sum": max(0.0, new.upstream_sum - old.upstream_sum),
        "upstream_count": max(0.0, new.upstream_count - old.upstream_count),
    }


def reset(new: Sample, old: Sample) -> bool:
    """Counters went down: the appliance restarted, so the history no longer applies."""
    return new.requests < old.requests or new.bytes < old.bytes


class Window:
    """The samples of one appliance over the analytics window."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.samples: deque[Sample] = deque()

    def add(self, s: Sample) -> None:
        if self.samples and reset(s, self.samples[-1]):
            self.samples.clear()
        self.samples.append(s)
        # Keep one sample at or before the window start so the window is fully covered.
        while len(self.samples) > 2 and self.samples[1].at <= s.at - self.seconds:
            self.samples.popleft()

    def last_interval(self) -> dict | None:
        if len(self.samples) < 2:
            return None
        return delta(self.samples[-1], self.samples[-2])

    def stats(self) -> dict | None:
        if len(self.samples) < 2:
            return None
        return delta(self.samples[-1], self.samples[0])


def merge(stats: Iterable[dict]) -> dict:
    """Add stats of several appliances (or several windows) together."""
    out: dict = {
        "seconds": 0.0,
        "requests": 0.0,
        "by_class": {},
        "by_cache": {},
        "bytes": 0.0,
        "bandwidth_bps": 0.0,
        "request_buckets": {},
        "request_sum": 0.0,
        "upstream_buckets": {},
        "upstream_sum": 0.0,
        "upstream_count": 0.0,
    }
    for st in stats:
        out["seconds"] = max(out["seconds"], st["seconds"])
        out["bandwidth_bps"] += st["bytes"] * 8 / st["seconds"]
        for k in ("requests", "bytes", "request_sum", "upstream_sum", "upstream_count"):
            out[k] += st[k]
        for k in ("by_class", "by_cache", "request_buckets", "upstream_buckets"):
            for kk, v in st[k].items():
                out[k][kk] = out[k].get(kk, 0.0) + v
    return out


def quantile(q: float, buckets: dict) -> float | None:
    """PromQL ``histogram_quantile`` over cumulative bucket counts {upper bound: count}."""
    pts = sorted((float(k), v) for k, v in buckets.items())
    if not pts or pts[-1][1] <= 0:
        return None
    if not math.isinf(pts[-1][0]):
        return None  # no +Inf bucket: not a complete histogram
    total = pts[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in pts:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound  # the answer lies past the highest finite bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def figures(st: dict, capacity_bps: float | None = None) -> dict:
    """The figures of seed 000's ``get_global_stats`` from (merged) stats."""
    req = st["requests"]
    hits = st["by_cache"].get("hit", 0.0)
    p95 = quantile(0.95, st["request_buckets"])
    p99 = quantile(0.99, st["request_buckets"])
    up95 = quantile(0.95, st["upstream_buckets"])
    bw = st.get("bandwidth_bps", st["bytes"] * 8 / st["seconds"]) if st["seconds"] else 0.0
    out = {
        "window_s": round(st["seconds"], 3),
        "requests": req,
        "requests_per_s": req / st["seconds"] if st["seconds"] else 0.0,
        "hit_ratio": hits / req if req else None,
        "error_rate": (st["by_class"].get("4xx", 0.0) + st["by_class"].get("5xx", 0.0)) / req
        if req
        else None,
        "error_rate_4xx": st["by_class"].get("4xx", 0.0) / req if req else None,
        "error_rate_5xx": st["by_class"].get("5xx", 0.0) / req if req else None,
        "bytes": st["bytes"],
        "bandwidth_bps": bw,
        "avg_response_time_ms": 1000 * st["request_sum"] / req if req else None,
        "p95_response_time_ms": None if p95 is None else 1000 * p95,
        "p99_response_time_ms": None if p99 is None else 1000 * p99,
        "p95_origin_latency_ms": None if up95 is None else 1000 * up95,
    }
    if capacity_bps:
        out["bandwidth_utilization"] = bw / capacity_bps
    return out
