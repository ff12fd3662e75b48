"""The control plane's HTTP+JSON API (FastAPI). The OpenAPI document is served at
``/openapi.json`` and checked into ``docs/openapi.json`` (``cdnlab control openapi``)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import PlainTextResponse

from cdnlab import __version__ as _pkg_version
from cdnlab.control.invalidation import InvalidationManager
from cdnlab.control.invalidation_api import router as invalidation_router
from cdnlab.control.models import (
    Appliance,
    ApplianceIn,
    AppliancePatch,
    ApplianceStatus,
    InventoryResult,
    InventorySummary,
)
from cdnlab.control.state import ControlState, NotFound
from cdnlab.control.store import GenerationGap, StaleReport
from cdnlab.inventory import InventoryReport
from cdnlab.manifest import SteeringManifest

API_DESCRIPTION = """\
cdnlab's control plane: the appliance registry, health monitoring (Traffic Monitor style),
inventory, client location by coverage zone file, steering (`GET /v1/steer`, the manifest of
seed 003 §2.4 with signed URLs) and fleet analytics.
"""


def client_address(request: Request, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """The peer's address; X-Forwarded-For only when the peer is a trusted proxy, read from the
    right, skipping trusted hops (the left of the header is whatever the client claimed)."""
    peer = request.client.host if request.client else "0.0.0.0"
    xff = request.headers.get("x-forwarded-for")
    if not xff or not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in xff.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _in(addr: str, nets: list) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in n for n in nets)


def _prom_escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def fleet_metrics(state: ControlState) -> str:
    """Prometheus text of the fleet as this control node sees it (alerting rules use it)."""
    lines = [
        "# HELP cdnlab_control_appliance_available 1 if steering offers the appliance",
        "# TYPE cdnlab_control_appliance_available gauge",
    ]
    snap = state.snapshot
    for aid, a in sorted(state.appliances.items()):
        labels = f'appliance="{_prom_escape(aid)}",site="{_prom_escape(a.site)}"'
        lines.append(f"cdnlab_control_appliance_available{{{labels}}} {int(aid in snap.available_ids)}")
    an = state.analytics()
    gauges = [
        ("bandwidth_utilization_ratio", "bandwidth_utilization", "bandwidth served / capacity"),
        ("hit_ratio", "hit_ratio", "cache hit ratio over the analytics window"),
        ("error_rate_5xx_ratio", "error_rate_5xx", "share of 5xx over the window"),
        ("error_rate_4xx_ratio", "error_rate_4xx", "share of 4xx over the window"),
        ("p95_response_seconds", "p95_response_time_ms", "p95 request duration"),
        ("p95_origin_latency_seconds", "p95_origin_latency_ms", "p95 upstream fetch duration"),
        ("bandwidth_bits_per_second", "bandwidth_bps", "bits per second served"),
    ]
    for scope, rows in (("appliance", an["appliances"]), ("site", an["sites"])):
        for name, key, help_text in gauges:
            metric = f"cdnlab_control_{scope}_{name}"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
            for ident, fig in rows.items():
                val = fig.get(key)
                if val is None:
                    continue
                if key.endswith("_ms"):
                    val = val / 1000
                if scope == "appliance":
                    labels = f'appliance="{_prom_escape(ident)}",site="{_prom_escape(fig["site"])}"'
                else:
                    labels = f'site="{_prom_escape(ident)}"'
                lines.append(f"{metric}{{{labels}}} {val}")
    lines += [
        "# HELP cdnlab_control_health_rounds_total health poll rounds completed by this monitor",
        "# TYPE cdnlab_control_health_rounds_total counter",
        f"cdnlab_control_health_rounds_total {state.monitor.rounds}",
    ]
    return "\n".join(lines) + "\n"


def invalidation_manager(state: ControlState) -> InvalidationManager:
    """Fan-out to the registered appliances, and to CloudFront when a distribution is known."""
    from cdnlab.control.cloudfront_invalidation import CloudFrontInvalidator

    inv = state.cfg.invalidation
    dist = state.cfg.cloudfront_distribution_id()
    cf = CloudFrontInvalidator(dist, inv.cloudfront_region) if dist else None
    return InvalidationManager(inv, appliances=lambda: list(state.appliances.values()), cloudfront=cf)


def create_app(state: ControlState, background: bool = True) -> FastAPI:
    trusted = [ipaddress.ip_network(n, strict=False) for n in state.cfg.trusted_proxies]
    token = state.cfg.admin_token
    invalidations = invalidation_manager(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(state.run_background(stop)) if background else None
        try:
            yield
        finally:
            stop.set()
            await invalidations.close()
            if task is not None:
                await task

    app = FastAPI(
        title="cdnlab control plane",
        version=_pkg_version,
        description=API_DESCRIPTION,
        lifespan=lifespan,
    )

    def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            return
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "admin token required (Authorization: Bearer …)")

    admin = [Depends(require_admin)]
    app.state.invalidations = invalidations
    app.include_router(invalidation_router(invalidations, admin))
    from cdnlab.control.fill_api import FillService
    from cdnlab.control.fill_api import router as fill_router

    app.state.fill = FillService(state)
    app.include_router(fill_router(app.state.fill, admin))

    def _get_or_404(appliance_id: str) -> ApplianceStatus:
        try:
            return state.status(appliance_id)
        except NotFound:
            raise HTTPException(404, f"no appliance {appliance_id!r}") from None

    @app.get("/healthz", tags=["service"], summary="the control node's own health")
    def healthz() -> dict:
        snap = state.snapshot
        return {
            "status": "ok",
            "monitor_id": state.cfg.monitor_id,
            "appliances": len(state.appliances),
            "available": snap.appliance_count,
            "health_rounds": state.monitor.rounds,
            "coverage_prefixes": state.zones.prefix_count if state.zones else 0,
            "snapshot_version": snap.version,
        }

    @app.get("/v1/version", tags=["service"], summary="static service description")
    async def version() -> dict:
        return {"service": "cdnlab-control", "version": _pkg_version, "api": "v1"}

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse, summary="Prometheus text")
    def metrics() -> str:
        return fleet_metrics(state)

    # -- registry ------------------------------------------------------------------------------

    @app.get("/v1/appliances", tags=["registry"], response_model=list[ApplianceStatus])
    def list_appliances() -> list[ApplianceStatus]:
        return state.statuses()

    @app.post(
        "/v1/appliances", tags=["registry"], status_code=201, response_model=Appliance, dependencies=admin
    )
    def register(item: ApplianceIn) -> Appliance:
        """Register an appliance or replace its registration (drain state is kept)."""
        return state.put_appliance(item)

    @app.get("/v1/appliances/{appliance_id}", tags=["registry"], response_model=ApplianceStatus)
    def get_appliance(appliance_id: str) -> ApplianceStatus:
        return _get_or_404(appliance_id)

    @app.patch(
        "/v1/appliances/{appliance_id}", tags=["registry"], response_model=Appliance, dependencies=admin
    )
    def patch_appliance(appliance_id: str, patch: AppliancePatch) -> Appliance:
        """Change fields, e.g. ``{"admin_state": "admin-down"}``."""
        try:
            return state.patch_appliance(appliance_id, patch)
        except NotFound:
            raise HTTPException(404, f"no appliance {appliance_id!r}") from None

    @app.delete("/v1/appliances/{appliance_id}", tags=["registry"], status_code=204, dependencies=admin)
    def delete_appliance(appliance_id: str) -> Response:
        try:
            state.delete_appliance(appliance_id)
        except NotFound:
            raise HTTPException(404, f"no appliance {appliance_id!r}") from None
        return Response(status_code=204)

    @app.post("/v1/appliances/{appliance_id}/drain", tags=["registry"], dependencies=admin)
    async def drain(appliance_id: str, cancel: bool = False) -> dict:
        """Ask the appliance (its admin API ``POST /drain``) to drain, or to resume serving."""
        import aiohttp

        a = state.appliances.get(appliance_id)
        if a is None:
            raise HTTPException(404, f"no appliance {appliance_id!r}")
        url = f"{a.admin_url}/drain" + ("?cancel=1" if cancel else "")
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s,
                s.post(url) as resp,
            ):
                body = await resp.text()
        except Exception as exc:
            raise HTTPException(502, f"appliance admin API unreachable: {exc}") from None
        state.monitor.poke()
        return {"appliance_id": appliance_id, "status": resp.status, "response": body[:2000]}

    # -- inventory -----------------------------------------------------------------------------

    @app.post(
        "/v1/appliances/{appliance_id}/inventory",
        tags=["inventory"],
        response_model=InventoryResult,
        dependencies=admin,
        responses={404: {"description": "unknown appliance"}, 409: {"description": "send a full report"}},
    )
    def post_inventory(
        appliance_id: str,
        report: InventoryReport,
        since: Annotated[int | None, Query(description="generation a delta applies on top of")] = None,
    ) -> InventoryResult:
        """A full report (at start) or a delta (after). A delta that does not follow what the
        control plane holds gets 409: the appliance should send a full report."""
        if report.appliance_id != appliance_id:
            raise HTTPException(400, "appliance_id in the body differs from the path")
        try:
            n = state.apply_inventory(report, "push", since)
        except NotFound:
            raise HTTPException(404, f"no appliance {appliance_id!r}") from None
        except GenerationGap as exc:
            raise HTTPException(409, f"generation gap ({exc}): send a full report") from None
        except StaleReport as exc:
            return InventoryResult(
                appliance_id=appliance_id,
                generation=report.generation,
                applied=False,
                objects=-1,
                detail=str(exc),
            )
        return InventoryResult(
            appliance_id=appliance_id, generation=report.generation, applied=True, objects=n
        )

    @app.get("/v1/appliances/{appliance_id}/inventory", tags=["inventory"], response_model=InventorySummary)
    def get_inventory(appliance_id: str) -> InventorySummary:
        _get_or_404(appliance_id)
        return InventorySummary.model_validate(state.store.inventory_summary(appliance_id))

    # -- steering ------------------------------------------------------------------------------

    @app.get("/v1/locate", tags=["steering"], summary="where the control plane places a client")
    def locate_client(request: Request, ip: str | None = None) -> dict:
        place = state.place(ip or client_address(request, trusted))
        return {
            "address": place.address,
            "site": place.site,
            "matched_by": place.matched_by,
            "prefix": place.prefix,
        }

    @app.get(
        "/v1/steer",
        tags=["steering"],
        summary="the playback manifest: ranked, signed CDN URLs per track",
        responses={200: {"model": SteeringManifest}, 404: {"description": "unknown title or profile"}},
    )
    async def steer(
        request: Request,
        title: Annotated[str, Query(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9._-]+$")],
        profile: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        try:
            manifest = state.steer(title, profile, client_address(request, trusted))
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(
            manifest,
            media_type="application/json",
            headers={"Cache-Control": "private, no-store"},
        )

    # -- health & analytics --------------------------------------------------------------------

    @app.get(
        "/v1/health", tags=["health"], summary="every appliance: combined verdict and each monitor's view"
    )
    def health() -> list[ApplianceStatus]:
        return state.statuses()

    @app.get("/v1/analytics", tags=["analytics"], summary="hit ratio, p95/p99, errors, bandwidth")
    def get_analytics() -> dict:
        return state.analytics()

    return app
