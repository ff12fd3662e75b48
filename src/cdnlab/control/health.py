"""The health monitor: polls each appliance's admin ``/healthz`` and ``/metrics`` on an interval
and judges it the way Apache Traffic Control's Traffic Monitor does.

* ``online`` / ``offline`` appliances are not polled and are taken as configured;
  ``reported`` and ``admin-down`` ones are polled (admin-down only for statistics).
* An appliance is unavailable when the poll fails or times out, when it reports draining or
  drained, or when a measurement breaks a threshold (thresholds.py).
* Several monitors (one per control node, sharing the database) each record a raw view;
  an appliance is down only when every live monitor says so (Traffic Monitor's optimistic
  health protocol) — see ``combine``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from cdnlab.control import analytics
from cdnlab.control.config import HealthConfig
from cdnlab.control.models import Appliance, HealthView
from cdnlab.control.thresholds import violations
from cdnlab.inventory import EdgeInventory, InventoryReport

log = logging.getLogger("cdnlab.control.health")

POLLED_STATES = ("reported", "admin-down")


def measurements_from(
    health: dict, query_ms: float, interval: dict | None, capacity_bps: int
) -> dict[str, float]:
    """What thresholds judge, from one /healthz body and the last interval's metric deltas."""
    load = health.get("load") or {}
    m: dict[str, float] = {"query_time_ms": query_ms}
    if "connections" in load:
        m["connections"] = float(load["connections"])
    disks = health.get("disks") or []
    m["failed_disks"] = float(sum(1 for d in disks if d.get("failed")))
    if interval is not None:
        secs = interval["seconds"]
        m["requests_per_s"] = interval["requests"] / secs
        m["bandwidth_bps"] = interval["bytes"] * 8 / secs
        if interval["requests"] > 0:
            m["error_rate"] = interval["by_class"].get("5xx", 0.0) / interval["requests"]
    else:
        # First poll: no previous sample yet; the appliance's own rates stand in.
        if "requests_per_s" in load:
            m["requests_per_s"] = float(load["requests_per_s"])
        if "bytes_per_s" in load:
            m["bandwidth_bps"] = float(load["bytes_per_s"]) * 8
    if "bandwidth_bps" in m:
        m["bandwidth_utilization"] = m["bandwidth_bps"] / capacity_bps
        m["available_bandwidth_kbps"] = max(0.0, capacity_bps - m["bandwidth_bps"]) / 1000
    return m


class HealthMonitor:
    def __init__(
        self,
        monitor_id: str,
        cfg: HealthConfig,
        appliances: Callable[[], Iterable[Appliance]],
        on_round: Callable[[list[HealthView]], Awaitable[None] | None],
        needs_inventory: Callable[[Appliance], bool] = lambda a: False,
        on_inventory: Callable[[InventoryReport], Awaitable[None] | None] | None = None,
    ) -> None:
        self.monitor_id = monitor_id
        self.cfg = cfg
        self._appliances = appliances
        self._on_round = on_round
        self._needs_inventory = needs_inventory
        self._on_inventory = on_inventory
        self.windows: dict[str, analytics.Window] = {}
        self.views: dict[str, HealthView] = {}
        self.rounds = 0
        self._wake = asyncio.Event()
        self._session = None  # aiohttp.ClientSession, created in the running loop

    def poke(self) -> None:
        """Poll now rather than at the next tick (a new appliance was registered)."""
        self._wake.set()

    async def _get(self, url: str) -> tuple[int, bytes, float]:
        t0 = time.perf_counter()
        async with self._session.get(url) as resp:  # type: ignore[union-attr]
            body = await resp.read()
            return resp.status, body, (time.perf_counter() - t0) * 1000

    async def poll(self, a: Appliance) -> HealthView:
        now = time.time()
        base = a.admin_url
        try:
            status, body, query_ms = await self._get(f"{base}/healthz")
            health = json.loads(body)
            if not isinstance(health, dict):
                raise ValueError("healthz body is not a JSON object")
        except Exception as exc:  # any failure to answer is "down"
            reason = "timeout" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            return HealthView(
                monitor_id=self.monitor_id,
                appliance_id=a.id,
                available=False,
                reasons=[f"poll failed: {reason}"[:300]],
                checked_at=now,
            )
        reasons: list[str] = []
        state = str(health.get("state", "serving"))
        drain_state = state if state in ("serving", "draining", "drained") else None
        if state != "serving":
            reasons.append(f"state {state}")
        elif status != 200:
            reasons.append(f"healthz answered {status}")
        window = self.windows.setdefault(a.id, analytics.Window(self.cfg.analytics_window))
        try:
            _, mbody, _ = await self._get(f"{base}/metrics")
            window.add(analytics.parse_metrics(mbody.decode("utf-8", "replace"), time.time()))
        except Exception as exc:  # metrics are optional for health, not for analytics
            reasons.append(f"metrics unavailable: {type(exc).__name__}")
        m = measurements_from(health, query_ms, window.last_interval(), a.capacity_bps)
        reasons += violations(self.cfg.thresholds, m)
        if a.id and health.get("id") not in (None, a.id):
            reasons.append(f"answers as {health.get('id')!r}, registered as {a.id!r}")
        view = HealthView(
            monitor_id=self.monitor_id,
            appliance_id=a.id,
            available=not reasons,
            reasons=reasons,
            checked_at=now,
            drain_state=drain_state,  # type: ignore[arg-type]
            measurements=m,
            stats=window.stats() or {},
        )
        if self._on_inventory is not None and self._needs_inventory(a):
            await self._pull_inventory(a)
        return view

    async def _pull_inventory(self, a: Appliance) -> None:
        """An appliance that has not pushed its inventory is asked for it."""
        try:
            status, body, _ = await self._get(f"{a.admin_url}/inventory")
            if status != 200:
                return
            inv = EdgeInventory.model_validate_json(body)
            report = inv.as_report().model_copy(update={"appliance_id": a.id})
            res = self._on_inventory(report)  # type: ignore[misc]
            if asyncio.iscoroutine(res):
                await res
        except Exception as exc:  # pulled again at the next poll
            log.info("inventory pull from %s failed: %s", a.id, exc)

    async def round(self) -> list[HealthView]:
        import aiohttp

        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.cfg.timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
        sem = asyncio.Semaphore(self.cfg.concurrency)
        targets = [a for a in self._appliances() if a.admin_state in POLLED_STATES]

        async def one(a: Appliance) -> HealthView:
            async with sem:
                return await self.poll(a)

        views = list(await asyncio.gather(*(one(a) for a in targets)))
        polled = {a.id for a in targets}
        for gone in set(self.views) - polled:
            self.views.pop(gone, None)
            self.windows.pop(gone, None)
        for v in views:
            self.views[v.appliance_id] = v
        self.rounds += 1
        res = self._on_round(views)
        if asyncio.iscoroutine(res):
            await res
        return views

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every interval (start to start) until ``stop`` is set."""
        try:
            while not stop.is_set():
                started = time.monotonic()
                self._wake.clear()
                try:
                    await self.round()
                except Exception:  # a bad round must not end monitoring
                    log.exception("health round failed")
                delay = max(0.0, self.cfg.interval - (time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    waiter = asyncio.ensure_future(self._wake.wait())
                    stopper = asyncio.ensure_future(stop.wait())
                    try:
                        await asyncio.wait(
                            {waiter, stopper}, timeout=delay, return_when=asyncio.FIRST_COMPLETED
                        )
                    finally:
                        waiter.cancel()
                        stopper.cancel()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def combine(
    a: Appliance, views: list[HealthView], now: float, stale_after: float
) -> tuple[bool, str, list[HealthView]]:
    """Steering's verdict for one appliance: admin state first, then the optimistic protocol —
    available if any fresh view says so; down only when every fresh view says down."""
    if a.admin_state == "offline":
        return False, "admin state offline", []
    if a.admin_state == "online":
        return True, "admin state online (not polled)", []
    fresh = [v for v in views if now - v.checked_at <= stale_after]
    if a.admin_state == "admin-down":
        return False, "admin state admin-down", fresh
    if not fresh:
        return False, "no fresh health view yet", fresh
    good = [v for v in fresh if v.available]
    if good:
        return True, f"available per {', '.join(sorted(v.monitor_id for v in good))}", fresh
    reasons = "; ".join(f"{v.monitor_id}: {', '.join(v.reasons) or 'down'}" for v in fresh)
    return False, f"down per every monitor ({reasons})", fresh
