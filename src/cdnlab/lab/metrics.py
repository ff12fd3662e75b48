"""What Prometheus (on the control host, configured by site.yml's prometheus role) scraped: every
target up, then hit ratio and bytes per tier per appliance for the report, read from its HTTP
API as a dashboard would."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from cdnlab.lab.topology import PROMETHEUS_PORT

if TYPE_CHECKING:
    from cdnlab.lab.hostlab import HostLab


def _vector(lab: HostLab, expr: str) -> list[dict[str, Any]]:
    from cdnlab.lab.hostlab import query

    url = f"http://{lab.host('ctl1').address}:{PROMETHEUS_PORT}/api/v1/query"
    return list(query(url, {"query": expr})["data"]["result"])


def collect(lab: HostLab) -> None:
    g = lab.gate
    want = {n for n, h in lab.lab.hosts.items() if "appliances" in h.spec.groups} | {"ctl1"}
    up: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        by_addr = {h.address: n for n, h in lab.lab.hosts.items()}
        up = {
            by_addr.get(r["metric"]["instance"].rsplit(":", 1)[0], r["metric"]["instance"]): float(
                r["value"][1]
            )
            for r in _vector(lab, "up")
        }
        if want <= {n for n, v in up.items() if v == 1}:
            break
        time.sleep(2)
    g.check(
        "Prometheus scrapes every appliance's /metrics and the control plane, all up",
        want <= {n for n, v in up.items() if v == 1},
        ", ".join(f"{n}={'up' if v == 1 else 'DOWN'}" for n, v in sorted(up.items())),
    )
    by_addr = {h.address: n for n, h in lab.lab.hosts.items()}

    def per_host(expr: str, label: str | None = None) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for r in _vector(lab, expr):
            host = by_addr.get(
                r["metric"].get("instance", "").rsplit(":", 1)[0], r["metric"].get("instance", "?")
            )
            out.setdefault(host, {})[r["metric"].get(label, "") if label else ""] = float(r["value"][1])
        return out

    # max_over_time: a daemon restarted by a drill starts its counters again (and a labelled series
    # appears only with its first request), so take each series' peak over the lab's run.
    window = f"{int(g.elapsed()) + 60}s"
    requests = per_host(
        f"sum by (instance, cache_status) (max_over_time(cdnlab_requests_total[{window}]))", "cache_status"
    )
    tiers = per_host(
        f"sum by (instance, tier) (max_over_time(cdnlab_response_bytes_total[{window}]))", "tier"
    )
    hit_ratio = {
        h: sum(v for k, v in c.items() if k.endswith("hit")) / max(sum(c.values()), 1)
        for h, c in requests.items()
    }
    g.data["prometheus"] = {"requests": requests, "bytes_by_tier": tiers, "hit_ratio": hit_ratio, "up": up}
    g.check(
        "the report reads request counts and bytes per tier for every appliance from Prometheus",
        want - {"ctl1"} <= set(requests) and bool(tiers),
        ", ".join(f"{h} hit {r:.0%}" for h, r in sorted(hit_ratio.items())),
    )
