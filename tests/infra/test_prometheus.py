"""prometheus: running, config and rules valid, every appliance and control node scraped."""

from __future__ import annotations

from typing import Any

import pytest
from infra_lib import GROUPS, http_json, inventory_vars, require_group, system, wait_for


@pytest.fixture(autouse=True)
def _monitoring(host: Any) -> None:
    require_group(host, "monitoring")


def paths(host: Any) -> tuple[str, str, str]:
    if system(host) == "FreeBSD":
        return "/usr/local/bin/promtool", "/usr/local/etc/prometheus.yml", "/usr/local/etc/prometheus/rules"
    return "/usr/bin/promtool", "/etc/prometheus/prometheus.yml", "/etc/prometheus/rules"


def api(host: Any) -> str:
    listen = str(inventory_vars(host).get("prometheus_listen_address", "0.0.0.0:9090"))
    return "http://127.0.0.1:" + listen.rpartition(":")[2]


def test_running_and_ready(host: Any) -> None:
    svc = host.service("prometheus")
    assert svc.is_enabled and svc.is_running
    status, _ = http_json(host, f"{api(host)}/api/v1/status/buildinfo")
    assert status == 200


def test_config_and_rules_check(host: Any) -> None:
    promtool, config, rules = paths(host)
    assert host.run(f"{promtool} check config {config}").rc == 0
    assert host.file(f"{rules}/cdnlab-alerts.yml").exists
    assert host.run(f"{promtool} check rules {rules}/cdnlab-alerts.yml").rc == 0


def test_alerting_rules_loaded(host: Any) -> None:
    status, body = http_json(host, f"{api(host)}/api/v1/rules")
    assert status == 200
    names = {r["name"] for g in body["data"]["groups"] for r in g["rules"]}
    assert "CdnlabHitRatioLow" in names


def test_every_appliance_and_control_node_is_scraped_and_up(host: Any) -> None:
    groups = inventory_vars(host).get("groups") or {}
    appliances = set(groups.get(GROUPS["appliances"], []))
    controls = set(groups.get(GROUPS["control"], []))
    last: dict[str, Any] = {}

    def all_up() -> bool:
        status, body = http_json(host, f"{api(host)}/api/v1/targets")
        if status != 200:
            return False
        targets = body["data"]["activeTargets"]
        last["targets"] = [(t["labels"], t["health"], t.get("lastError")) for t in targets]
        edges = {
            t["labels"].get("appliance"): t["health"] for t in targets if t["labels"]["job"] == "cdnlab-edge"
        }
        ctl = {
            t["labels"].get("control_node"): t["health"]
            for t in targets
            if t["labels"]["job"] == "cdnlab-control"
        }
        return (
            appliances <= set(edges)
            and all(edges[a] == "up" for a in appliances)
            and controls <= set(ctl)
            and all(ctl[c] == "up" for c in controls)
        )

    assert wait_for(all_up, timeout=90, interval=3), last
