"""Fleet figures published to CloudWatch custom metrics through boto3 and AWS_ENDPOINT_URL, against
moto server on loopback, and read back."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cdnlab.control.cloudwatch import CloudWatchPublisher
from cdnlab.control.config import CloudWatchConfig

FIGURES = {
    "global": {
        "hit_ratio": 0.9,
        "p95_origin_latency_ms": 120.0,
        "bytes": 123456.0,
        "error_rate_4xx": 0.02,
        "error_rate_5xx": 0.0005,
    },
    "sites": {"site-a": {"hit_ratio": 0.8, "bytes": 1.0}, "site-b": {"hit_ratio": 0.95, "bytes": 2.0}},
    "appliances": {},
}


@pytest.fixture
def aws_env(moto: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "AWS_ENDPOINT_URL": moto,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def _read_back(namespace: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    import boto3

    cw = boto3.client("cloudwatch", region_name="us-east-1")
    out = {}
    now = dt.datetime.now(dt.UTC)
    for m in cw.list_metrics(Namespace=namespace)["Metrics"]:
        dims = tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"]))
        stats = cw.get_metric_statistics(
            Namespace=namespace,
            MetricName=m["MetricName"],
            Dimensions=m["Dimensions"],
            StartTime=now - dt.timedelta(minutes=10),
            EndTime=now + dt.timedelta(minutes=10),
            Period=60,
            Statistics=["Maximum"],
        )["Datapoints"]
        out[(m["MetricName"], dims)] = max(d["Maximum"] for d in stats)
    return out


def test_publish_and_read_back(aws_env: dict[str, str]) -> None:
    cfg = CloudWatchConfig(enabled=True, namespace="cdnlab-test/CDN", distribution_id="oca-fleet")
    assert CloudWatchPublisher(cfg).publish(FIGURES) == 7
    got = _read_back("cdnlab-test/CDN")
    fleet = (("DistributionId", "oca-fleet"),)
    assert got[("CacheHitRate", (*fleet, ("Region", "global")))] == 90.0
    assert got[("CacheHitRate", (*fleet, ("Region", "site-a")))] == 80.0
    assert got[("CacheHitRate", (*fleet, ("Region", "site-b")))] == 95.0
    assert got[("OriginLatency", fleet)] == 120.0
    assert got[("BytesDownloaded", fleet)] == 123456.0
    assert got[("4xxErrorRate", fleet)] == 2.0
    assert got[("5xxErrorRate", fleet)] == pytest.approx(0.05)


def test_publish_cli_reads_the_control_plane(aws_env: dict[str, str]) -> None:
    class Analytics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(FIGURES).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Analytics)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        cli = str(Path(sys.executable).parent / "cdnlab")
        out = subprocess.run(
            [
                cli,
                "control",
                "publish-cloudwatch",
                "--control",
                f"http://127.0.0.1:{srv.server_port}",
                "--namespace",
                "cdnlab-cli/CDN",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **aws_env},
        )
        assert out.returncode == 0, out.stderr
        assert "published 7 metric data points" in out.stdout
        deadline = time.monotonic() + 5
        while not _read_back("cdnlab-cli/CDN") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_read_back("cdnlab-cli/CDN")) == 7
    finally:
        srv.shutdown()
