"""The admin listener (never the client port): health, metrics, inventory, purge, drain.

The contract is docs/edge-admin-api.md; the control plane and Prometheus depend on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from cdnlab import __version__
from cdnlab.edge.compress import metrics as compression_metrics
from cdnlab.edge.stats import BUCKETS

if TYPE_CHECKING:
    from cdnlab.edge.master import Master


class _Collector:
    def __init__(self, master: Master) -> None:
        self.master = master

    def collect(self):  # type: ignore[no-untyped-def]
        m = self.master
        s = m.totals()
        req = CounterMetricFamily(
            "cdnlab_requests", "Client requests answered", labels=["status", "cache_status"]
        )
        for (status, cache), n in sorted(s["requests"].items()):
            req.add_metric([str(status), cache], n)
        yield req
        byt = CounterMetricFamily(
            "cdnlab_response_bytes", "Bytes sent to clients by source tier", labels=["tier"]
        )
        for tier, n in sorted(s["bytes_by_tier"].items()):
            byt.add_metric([tier], n)
        yield byt
        up = CounterMetricFamily(
            "cdnlab_upstream_fetches", "Upstream fetches by result", labels=["upstream", "result"]
        )
        for (url, result), n in sorted(s["upstream_fetches"].items()):
            up.add_metric([url, result], n)
        yield up
        for name, key, doc in (
            ("cdnlab_request_duration_seconds", "request_seconds", "Time from request to last byte"),
            ("cdnlab_upstream_duration_seconds", "upstream_seconds", "Time to complete an upstream fetch"),
        ):
            h = s[key]
            cum, buckets = 0, []
            for bound, n in zip((*BUCKETS, float("inf")), h["counts"], strict=True):
                cum += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cum))
            fam = HistogramMetricFamily(name, doc)
            fam.add_metric([], buckets, h["sum"])
            yield fam
        for name, doc in (
            ("disk_used_bytes", "Bytes stored per disk"),
            ("disk_capacity_bytes", "Configured capacity per disk"),
            ("disk_objects", "Objects stored per disk"),
            ("disk_failed", "1 when the disk failed and is skipped"),
        ):
            g = GaugeMetricFamily(f"cdnlab_{name}", doc, labels=["disk", "kind"])
            for d in m.disks():
                value = {
                    "disk_used_bytes": d["used_bytes"],
                    "disk_capacity_bytes": d["capacity_bytes"],
                    "disk_objects": d["objects"],
                    "disk_failed": int(d["failed"]),
                }[name]
                g.add_metric([d["path"], d["kind"]], value)
            yield g
        yield GaugeMetricFamily(
            "cdnlab_connections_active", "Open client connections", value=s["connections"]
        )
        yield GaugeMetricFamily(
            "cdnlab_draining", "1 while draining or drained", value=int(m.state != "serving")
        )
        yield CounterMetricFamily(
            "cdnlab_timeouts", "Client connections closed by a timeout", value=s["timeouts"]
        )
        yield CounterMetricFamily(
            "cdnlab_signature_refusals", "Requests refused for a bad signed URL", value=s["signature_refused"]
        )
        ref = CounterMetricFamily(
            "cdnlab_refused", "Requests refused by a DDoS cap (rate, conn, upstream)", labels=["reason"]
        )
        for reason, n in sorted(s["refused"].items()):
            ref.add_metric([reason], n)
        yield ref
        tls = s.get("tls", {})
        hs = CounterMetricFamily(
            "cdnlab_tls_handshakes", "TLS handshakes on the client port", labels=["result"]
        )
        hs.add_metric(["ok"], tls.get("handshakes", 0))
        hs.add_metric(["failed"], tls.get("failed", 0))
        yield hs
        yield CounterMetricFamily(
            "cdnlab_tls_resumed", "TLS handshakes that resumed a session", value=tls.get("resumed", 0)
        )
        yield GaugeMetricFamily("cdnlab_workers", "Worker processes alive", value=m.workers_alive())
        yield from _storage_metrics(m, s)
        yield from compression_metrics(s)


def _storage_metrics(m: Master, s: dict[str, Any]):  # type: ignore[no-untyped-def]
    """Tiers, eviction, integrity and disk failure (docs/edge.md, "Tiers, integrity and disk failure")."""
    bg = m.background.counters() if m.background is not None else {"tiers": {}, "scrub": {}, "disks": {}}
    tiers, scrub = bg["tiers"], bg["scrub"]
    moves = CounterMetricFamily("cdnlab_tier_moves", "Objects moved between tiers", labels=["direction"])
    moves.add_metric(["promote"], tiers.get("promoted", 0))
    moves.add_metric(["demote"], tiers.get("demoted", 0))
    yield moves
    yield CounterMetricFamily(
        "cdnlab_tier_moved_bytes", "Bytes copied by tier moves", value=tiers.get("moved_bytes", 0)
    )
    ev = CounterMetricFamily("cdnlab_evictions", "Objects evicted by the eviction policy", labels=["policy"])
    ev.add_metric([m.config.storage.eviction_policy], tiers.get("evicted", 0))
    yield ev
    bad = CounterMetricFamily(
        "cdnlab_integrity_failures", "Bodies that failed their SHA-256, by where found", labels=["where"]
    )
    for where, n in (
        ("upstream", s.get("integrity", {}).get("upstream", 0)),
        ("load", s.get("integrity", {}).get("load", 0)),
        ("scrub", scrub.get("corrupt", 0)),
        ("move", tiers.get("corrupt", 0)),
    ):
        bad.add_metric([where], n)
    yield bad
    for name, key, doc in (
        ("cdnlab_scrub_objects", "objects", "Objects re-verified at rest by the scrubber"),
        ("cdnlab_scrub_bytes", "bytes", "Bytes re-verified at rest by the scrubber"),
        ("cdnlab_scrub_missing", "missing", "Indexed objects whose file was gone (dropped)"),
        ("cdnlab_scrub_passes", "passes", "Full scrub passes over the index"),
    ):
        yield CounterMetricFamily(name, doc, value=scrub.get(key, 0))
    yield CounterMetricFamily(
        "cdnlab_disk_failed_objects_dropped",
        "Objects taken out of the index because their disk failed",
        value=bg["disks"].get("objects_dropped", 0),
    )


def _authorized(master: Master, request: web.Request, body: bytes) -> bool:
    admin = master.config.admin
    if admin.purge_token:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), admin.purge_token):
            return True
    if admin.purge_hmac_key:
        sig = request.headers.get("X-Cdnlab-Signature", "")
        want = hmac.new(admin.purge_hmac_key.encode(), body, hashlib.sha256).hexdigest()
        if sig and hmac.compare_digest(sig.lower(), want):
            return True
    return False


def build_app(master: Master) -> web.Application:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(master))  # type: ignore[arg-type]
    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(None, master.health)
        return web.json_response(body, status=200 if body["state"] == "serving" else 503)

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, generate_latest, registry)
        return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @routes.get("/inventory")
    async def inventory(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        return web.json_response(await loop.run_in_executor(None, master.inventory))

    @routes.post("/purge")
    async def purge(request: web.Request) -> web.Response:
        body = await request.content.read(65536)
        if not _authorized(master, request, body):
            return web.json_response({"error": "purge needs a valid token or signature"}, status=401)
        try:
            spec: Any = json.loads(body or b"{}")
        except ValueError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(spec, dict) or (
            not isinstance(spec.get("key"), str) and not isinstance(spec.get("prefix"), str)
        ):
            return web.json_response(
                {"error": 'expected {"key": "/path"} or {"prefix": "/dir/"}'}, status=400
            )
        if isinstance(spec.get("prefix"), str) and not spec["prefix"].startswith("/"):
            return web.json_response({"error": "prefix must start with /"}, status=400)
        loop = asyncio.get_running_loop()
        n = await loop.run_in_executor(None, master.purge, spec.get("key"), spec.get("prefix"))
        return web.json_response({"purged": n})

    @routes.post("/drain")
    async def drain(request: web.Request) -> web.Response:
        if request.query.get("cancel"):
            master.undrain()
            await master.wait_ready(10.0)
        else:
            master.drain()
        return web.json_response({"state": master.state})

    @routes.post("/undrain")
    async def undrain(request: web.Request) -> web.Response:
        master.undrain()
        await master.wait_ready(10.0)  # answer once the workers listen again
        return web.json_response({"state": master.state})

    @routes.get("/")
    async def index(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "service": "cdnlab edge admin",
                "version": __version__,
                "endpoints": [
                    "/healthz",
                    "/metrics",
                    "/inventory",
                    "POST /purge",
                    "POST /drain",
                    "POST /undrain",
                ],
            }
        )

    app = web.Application(client_max_size=65536)
    app.add_routes(routes)
    return app
