"""The Prometheus alerting rules and the Grafana dashboard under monitoring/: valid (promtool),
firing at the seeds' thresholds (promtool unit tests), and naming only metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "monitoring" / "prometheus" / "cdnlab-alerts.yml"
RULE_TESTS = ROOT / "monitoring" / "prometheus" / "cdnlab-alerts.test.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "cdnlab-fleet.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package 'prometheus')"
)

# docs/edge-admin-api.md: the names every appliance exports (all prefixed cdnlab_).
EDGE_METRICS = {
    "requests_total",
    "response_bytes_total",
    "upstream_fetches_total",
    "request_duration_seconds",
    "upstream_duration_seconds",
    "disk_used_bytes",
    "disk_capacity_bytes",
    "disk_objects",
    "disk_failed",
    "connections_active",
    "draining",
}


def _control_metrics(tmp_path: Path) -> set[str]:
    from cdnlab.control.app import fleet_metrics
    from cdnlab.control.config import from_mapping
    from cdnlab.control.state import ControlState

    state = ControlState(
        from_mapping({"database": f"sqlite:///{tmp_path}/m.db", "signing": {"key": "x" * 16}})
    )
    try:
        text = fleet_metrics(state)
    finally:
        state.close()
    return set(re.findall(r"^# HELP (cdnlab_\w+)", text, re.M))


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def _names(expr: str) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in re.findall(r"\b(cdnlab_\w+)", expr)}


@needs_promtool
def test_rules_pass_promtool_check_and_unit_tests() -> None:
    out = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=RULE_TESTS.parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_cover_the_seed_thresholds() -> None:
    rules = {
        r.get("alert") or r.get("record"): r
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
    }
    expected = {
        "CdnlabHitRatioLow": "< 0.80",
        "Cdnlab5xxRateHigh": "> 0.001",
        "Cdnlab4xxRateHigh": "> 0.01",
        "CdnlabOriginLatencyP95High": "> 0.5",
        "CdnlabBandwidthHigh": "> 0.8",
    }
    for name, cmp in expected.items():
        assert cmp in " ".join(rules[name]["expr"].split()), name
    assert rules["Cdnlab5xxRateHigh"]["labels"]["severity"] == "critical"


def test_only_existing_metrics_are_used(tmp_path: Path) -> None:
    known = {f"cdnlab_{n}" for n in EDGE_METRICS} | _control_metrics(tmp_path)
    rules = yaml.safe_load(RULES.read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    used: set[str] = set()
    for g in rules["groups"]:
        for r in g["rules"]:
            used |= _names(r["expr"])
    for e in _dashboard_exprs():
        used |= _names(e)
    unknown = used - known - {n.replace(":", "_") for n in recorded}
    assert not unknown, f"metrics nobody exports: {sorted(unknown)}"


@needs_promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "cdnlab-fleet" and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    # Each query becomes a recording rule, so promtool parses it ($instance → a regex).
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:q{i}", "expr": e.replace("$instance", ".*")}
                    for i, e in enumerate(_dashboard_exprs())
                ],
            }
        ]
    }
    f = tmp_path / "dash-rules.yml"
    f.write_text(yaml.safe_dump(rules))
    out = subprocess.run([PROMTOOL, "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
