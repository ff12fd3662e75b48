"""Metrics parsing, windows, PromQL-style quantiles, fleet figures, CloudWatch metric data."""

from __future__ import annotations

import math

import pytest

from cdnlab.control import analytics
from cdnlab.control.cloudwatch import metric_data


def _metrics(hits: int, misses: int, e5: int, e4: int, nbytes: int, fast: int, slow: int) -> str:
    total = fast + slow
    return f"""# TYPE cdnlab_requests_total counter
cdnlab_requests_total{{status="200",cache_status="hit"}} {hits}
cdnlab_requests_total{{status="200",cache_status="miss"}} {misses}
cdnlab_requests_total{{status="502",cache_status="error"}} {e5}
cdnlab_requests_total{{status="404",cache_status="miss"}} {e4}
# TYPE cdnlab_response_bytes_total counter
cdnlab_response_bytes_total{{tier="ram"}} {nbytes // 2}
cdnlab_response_bytes_total{{tier="upstream"}} {nbytes - nbytes // 2}
# TYPE cdnlab_request_duration_seconds histogram
cdnlab_request_duration_seconds_bucket{{le="0.01"}} {fast}
cdnlab_request_duration_seconds_bucket{{le="0.1"}} {total}
cdnlab_request_duration_seconds_bucket{{le="+Inf"}} {total}
cdnlab_request_duration_seconds_sum {fast * 0.005 + slow * 0.05}
cdnlab_request_duration_seconds_count {total}
# TYPE cdnlab_upstream_duration_seconds histogram
cdnlab_upstream_duration_seconds_bucket{{le="0.5"}} {misses}
cdnlab_upstream_duration_seconds_bucket{{le="1.0"}} {misses + 10}
cdnlab_upstream_duration_seconds_bucket{{le="+Inf"}} {misses + 10}
cdnlab_upstream_duration_seconds_sum 1
cdnlab_upstream_duration_seconds_count {misses + 10}
# TYPE cdnlab_connections_active gauge
cdnlab_connections_active 7
# TYPE cdnlab_disk_failed gauge
cdnlab_disk_failed{{disk="0",kind="flash"}} 1
"""


def test_parse_metrics() -> None:
    s = analytics.parse_metrics(_metrics(80, 15, 1, 4, 1000, 90, 10), at=1.0)
    assert s.requests == 100 and s.by_cache["hit"] == 80 and s.by_class["5xx"] == 1 and s.by_class["4xx"] == 4
    assert (
        s.bytes == 1000 and s.request_buckets[math.inf] == 100 and s.connections == 7 and s.failed_disks == 1
    )


def test_quantile_like_promql() -> None:
    b = {0.1: 50.0, 0.2: 100.0, math.inf: 100.0}
    assert analytics.quantile(0.5, b) == pytest.approx(0.1)
    assert analytics.quantile(0.75, b) == pytest.approx(0.15)
    assert analytics.quantile(0.99, {0.1: 0.0, math.inf: 10.0}) == 0.1  # beyond the last finite bound
    assert analytics.quantile(0.5, {}) is None
    assert analytics.quantile(0.5, {0.1: 3.0}) is None  # no +Inf bucket


def test_window_stats_and_figures() -> None:
    w = analytics.Window(seconds=300)
    w.add(analytics.parse_metrics(_metrics(0, 0, 0, 0, 0, 0, 0), at=0.0))
    assert w.stats() is None
    w.add(analytics.parse_metrics(_metrics(80, 15, 1, 4, 10_000, 90, 10), at=10.0))
    st = w.stats()
    assert st is not None and st["requests"] == 100 and st["seconds"] == 10.0
    f = analytics.figures(st, capacity_bps=80_000)
    assert f["hit_ratio"] == 0.8 and f["error_rate_5xx"] == 0.01 and f["error_rate_4xx"] == 0.04
    assert f["bandwidth_bps"] == 8000 and f["bandwidth_utilization"] == 0.1
    assert f["p95_response_time_ms"] == pytest.approx(55.0)  # 95th of 100: in the 10-100 ms bucket
    assert f["p95_origin_latency_ms"] == pytest.approx(475.0)  # both samples carry 10 slow fetches
    # A restart (counters go down) starts a new window instead of producing negative deltas.
    w.add(analytics.parse_metrics(_metrics(1, 0, 0, 0, 10, 1, 0), at=20.0))
    assert w.stats() is None


def test_window_keeps_only_the_window() -> None:
    w = analytics.Window(seconds=10)
    for t in range(0, 60, 2):
        w.add(analytics.parse_metrics(_metrics(t, 0, 0, 0, t, t, 0), at=float(t)))
    st = w.stats()
    assert st is not None and 10 <= st["seconds"] <= 12


def test_merge_across_appliances() -> None:
    a = analytics.delta(
        analytics.parse_metrics(_metrics(90, 10, 0, 0, 8000, 100, 0), 10), analytics.Sample(at=0)
    )
    b = analytics.delta(
        analytics.parse_metrics(_metrics(10, 90, 0, 0, 8000, 0, 100), 10), analytics.Sample(at=0)
    )
    merged = analytics.merge([a, b])
    f = analytics.figures(merged)
    assert f["requests"] == 200 and f["hit_ratio"] == 0.5 and f["bandwidth_bps"] == 2 * 6400


def test_cloudwatch_metric_data_follows_the_seed() -> None:
    st = analytics.delta(
        analytics.parse_metrics(_metrics(80, 15, 1, 4, 1000, 90, 10), 10), analytics.Sample(at=0)
    )
    fig = analytics.figures(st)
    data = metric_data({"global": fig, "sites": {"site-a": fig}}, "fleet-1")
    by = {(d["MetricName"], tuple(x["Value"] for x in d["Dimensions"])): d for d in data}
    assert by[("CacheHitRate", ("fleet-1", "global"))]["Unit"] == "Percent"
    assert by[("CacheHitRate", ("fleet-1", "site-a"))]["Value"] == 80.0
    assert by[("5xxErrorRate", ("fleet-1",))]["Value"] == 1.0
    assert by[("4xxErrorRate", ("fleet-1",))]["Value"] == 4.0
    assert by[("OriginLatency", ("fleet-1",))]["Unit"] == "Milliseconds"
    assert by[("BytesDownloaded", ("fleet-1",))]["Value"] == 1000.0
