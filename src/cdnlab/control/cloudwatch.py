"""Fleet figures to CloudWatch custom metrics, named as seed 003 §5.1 ``CDNMonitoring`` names them,
so the cloud tier's alarms and the appliances' figures sit side by side.

Metrics (namespace from config, ``cdnlab/CDN`` by default; the seed uses ``Netflix/CDN``):
``CacheHitRate`` (Percent; dimensions DistributionId + Region), ``OriginLatency`` (Milliseconds,
p95), ``BytesDownloaded`` (Bytes), ``4xxErrorRate`` and ``5xxErrorRate`` (Percent), each with
DistributionId only, as in the seed. DistributionId is the fleet's name (config), Region is the
site, plus ``Region=global`` for the fleet. boto3 honours ``AWS_ENDPOINT_URL``, so moto,
LocalStack or real AWS are chosen by the environment.
"""

from __future__ import annotations

from typing import Any

from cdnlab.control.config import CloudWatchConfig


def metric_data(analytics: dict, distribution_id: str) -> list[dict[str, Any]]:
    """PutMetricData entries for the fleet (Region=global) and every site."""
    dist = {"Name": "DistributionId", "Value": distribution_id}
    out: list[dict[str, Any]] = []
    scopes: list[tuple[str, dict | None]] = [("global", analytics.get("global"))]
    scopes += sorted(analytics.get("sites", {}).items())
    for region, fig in scopes:
        if not fig:
            continue
        if fig.get("hit_ratio") is not None:
            out.append(
                {
                    "MetricName": "CacheHitRate",
                    "Value": 100.0 * fig["hit_ratio"],
                    "Unit": "Percent",
                    "Dimensions": [dist, {"Name": "Region", "Value": region}],
                }
            )
        if region != "global":
            continue  # the seed gives the other metrics the DistributionId dimension only
        if fig.get("p95_origin_latency_ms") is not None:
            out.append(
                {
                    "MetricName": "OriginLatency",
                    "Value": fig["p95_origin_latency_ms"],
                    "Unit": "Milliseconds",
                    "Dimensions": [dist],
                }
            )
        out.append(
            {
                "MetricName": "BytesDownloaded",
                "Value": float(fig["bytes"]),
                "Unit": "Bytes",
                "Dimensions": [dist],
            }
        )
        for name, key in (("4xxErrorRate", "error_rate_4xx"), ("5xxErrorRate", "error_rate_5xx")):
            if fig.get(key) is not None:
                out.append(
                    {"MetricName": name, "Value": 100.0 * fig[key], "Unit": "Percent", "Dimensions": [dist]}
                )
    return out


class CloudWatchPublisher:
    def __init__(self, cfg: CloudWatchConfig, client: Any = None) -> None:
        self.cfg = cfg
        if client is None:
            import boto3

            client = boto3.client("cloudwatch", region_name=cfg.region)
        self.client = client

    def publish(self, analytics: dict) -> int:
        data = metric_data(analytics, self.cfg.distribution_id)
        # PutMetricData takes at most 1000 entries per call.
        for i in range(0, len(data), 1000):
            self.client.put_metric_data(Namespace=self.cfg.namespace, MetricData=data[i : i + 1000])
        return len(data)
