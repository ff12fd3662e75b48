"""The control node: the store, the health monitor and the steering snapshot wired together.

The HTTP layer (app.py) calls into this; nothing here knows about HTTP. Writes go to the database
first and then refresh the in-memory view; the steering snapshot is swapped whole, so a request
always sees one consistent fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from collections import defaultdict

from cdnlab.control import analytics
from cdnlab.control.catalog import Catalog, CatalogSource
from cdnlab.control.config import ControlConfig
from cdnlab.control.coverage import CoverageZones
from cdnlab.control.health import HealthMonitor, combine
from cdnlab.control.models import Appliance, ApplianceIn, AppliancePatch, ApplianceStatus, HealthView
from cdnlab.control.steering import (
    ClientPlace,
    FleetSnapshot,
    Signer,
    catalog_tracks,
    locate,
    manifest_json,
)
from cdnlab.control.store import GenerationGap, StaleReport, Store
from cdnlab.inventory import InventoryReport

log = logging.getLogger("cdnlab.control")


class NotFound(LookupError):
    pass


class ControlState:
    def __init__(self, cfg: ControlConfig, catalog: CatalogSource | None = None) -> None:
        self.cfg = cfg
        self.store = Store(cfg.database)
        self.zones = CoverageZones.load(cfg.coverage_zone_file) if cfg.coverage_zone_file else None
        if catalog is None:
            catalog = Catalog.load(cfg.catalog_file) if cfg.catalog_file else Catalog()
        self.catalog = catalog
        self.signer = Signer(cfg.signing)
        self.cloudfront_url = cfg.cloudfront_base()
        self.started_at = time.time()
        self.appliances: dict[str, Appliance] = {}
        self.title_index: dict[str, set[str]] = {}
        self.generations: dict[str, int] = {}
        self.remote_views: list[HealthView] = []
        self.snapshot = FleetSnapshot([], {}, {}, {}, self.zones, cfg.steering)
        self._revision = -1
        self._version = 0
        self._rebuilt_at = 0.0
        self._polled_last_round = False
        self._frozen_at = 0.0
        self._lock = threading.RLock()
        self.monitor = HealthMonitor(
            cfg.monitor_id,
            cfg.health,
            appliances=lambda: list(self.appliances.values()),
            on_round=self._on_round,
            needs_inventory=lambda a: a.id not in self.generations,
            on_inventory=self._on_pulled_inventory,
        )
        self.reload()

    # -- loading -------------------------------------------------------------------------------

    @property
    def stale_after(self) -> float:
        return self.cfg.health.interval * self.cfg.health.stale_intervals

    def reload(self, force: bool = True) -> bool:
        """Re-read registry and inventory if any node changed them; other monitors' views always."""
        with self._lock:
            return self._reload(force)

    def _reload(self, force: bool) -> bool:
        rev = self.store.revision()
        changed = force or rev != self._revision
        if changed:
            self.appliances = {a.id: a for a in self.store.list_appliances()}
            self.title_index = self.store.title_index()
            self.generations = self.store.inventory_generations()
            self._revision = rev
        self.remote_views = [
            v for v in self.store.load_health_views(self.stale_after) if v.monitor_id != self.cfg.monitor_id
        ]
        self.rebuild()
        return changed

    def views_for(self) -> dict[str, list[HealthView]]:
        views: dict[str, list[HealthView]] = defaultdict(list)
        for v in self.remote_views:
            views[v.appliance_id].append(v)
        for v in self.monitor.views.values():
            views[v.appliance_id].append(v)
        return views

    def rebuild(self) -> None:
        # API threads (registrations) and the event loop (health rounds) both rebuild: one at a
        # time, so an older snapshot can never replace a newer one.
        with self._lock:
            self._rebuild()

    def _rebuild(self) -> None:
        now = time.time()
        views = self.views_for()
        available: dict[str, bool] = {}
        measurements: dict[str, dict[str, float]] = {}
        for a in self.appliances.values():
            ok, _, fresh = combine(a, views.get(a.id, []), now, self.stale_after)
            # Drain state as the appliance reports it counts even for an "online" appliance.
            if a.drain_state != "serving" and a.admin_state == "online":
                ok = False
            available[a.id] = ok
            good = [v for v in fresh if v.available] or fresh
            if good:
                measurements[a.id] = max(good, key=lambda v: v.checked_at).measurements
        self._version += 1
        self._rebuilt_at = time.monotonic()
        # Move the fleet's long-lived objects (10,000 appliances, 500,000 prefixes) out of the
        # cyclic GC's reach: otherwise every full collection walks them and stalls requests.
        gc.freeze()
        ceiling = self.cfg.health.thresholds.get("query_time_ms")
        self.snapshot = FleetSnapshot(
            self.appliances.values(),
            available,
            measurements,
            self.title_index,
            self.zones,
            self.cfg.steering,
            perf_ceiling_ms=ceiling.value if ceiling and ceiling.op == "<" else 1000.0,
            version=self._version,
            distances=self.snapshot.distances if hasattr(self, "snapshot") else None,
            title_sites=self.snapshot.title_sites if hasattr(self, "snapshot") else None,
        )

    # -- health --------------------------------------------------------------------------------

    async def _on_round(self, views: list[HealthView]) -> None:
        for v in views:
            a = self.appliances.get(v.appliance_id)
            if a is not None and v.drain_state and v.drain_state != a.drain_state:
                self.appliances[a.id] = a.model_copy(update={"drain_state": v.drain_state})
                await asyncio.to_thread(self.store.set_drain_state, a.id, v.drain_state)
        # Steering sees this monitor's verdicts at once; a round that polled nothing (a fleet of
        # "online" appliances) changes nothing and keeps the snapshot and its ranking cache.
        if views or self._polled_last_round:
            self.rebuild()
        self._polled_last_round = bool(views)
        await asyncio.to_thread(
            self.store.put_health_views, self.cfg.monitor_id, self.cfg.health.interval, views
        )

    async def _on_pulled_inventory(self, report: InventoryReport) -> None:
        await asyncio.to_thread(self.apply_inventory, report, "pull")

    # -- registry ------------------------------------------------------------------------------

    def put_appliance(self, item: ApplianceIn) -> Appliance:
        current = self.store.get_appliance(item.id)
        drain = current.drain_state if current else "serving"
        a = self.store.put_appliance(Appliance(**item.model_dump(), drain_state=drain))
        self.reload()
        self.monitor.poke()
        return a

    def patch_appliance(self, appliance_id: str, patch: AppliancePatch) -> Appliance:
        a = self.store.patch_appliance(appliance_id, patch)
        if a is None:
            raise NotFound(appliance_id)
        self.reload()
        self.monitor.poke()
        return a

    def delete_appliance(self, appliance_id: str) -> None:
        if not self.store.delete_appliance(appliance_id):
            raise NotFound(appliance_id)
        self.reload()

    def status(self, appliance_id: str) -> ApplianceStatus:
        a = self.appliances.get(appliance_id)
        if a is None:
            raise NotFound(appliance_id)
        ok, reason, fresh = combine(a, self.views_for().get(a.id, []), time.time(), self.stale_after)
        if ok and a.drain_state != "serving" and a.admin_state == "online":
            ok, reason = False, f"drain state {a.drain_state}"
        titles = sum(1 for holders in self.title_index.values() if a.id in holders)
        return ApplianceStatus(
            appliance=a,
            available=ok,
            reason=reason,
            views=fresh,
            inventory_generation=self.generations.get(a.id),
            titles=titles,
        )

    def statuses(self) -> list[ApplianceStatus]:
        return [self.status(aid) for aid in sorted(self.appliances)]

    # -- inventory -----------------------------------------------------------------------------

    def apply_inventory(self, report: InventoryReport, source: str = "push", since: int | None = None) -> int:
        if (
            report.appliance_id not in self.appliances
            and self.store.get_appliance(report.appliance_id) is None
        ):
            raise NotFound(report.appliance_id)
        try:
            n = self.store.apply_inventory(report, source=source, since=since)
        except GenerationGap:
            # Forget what we hold so the monitor pulls a full inventory at its next poll.
            self.generations.pop(report.appliance_id, None)
            raise
        except StaleReport:
            raise
        self.reload()
        return n

    # -- steering ------------------------------------------------------------------------------

    def place(self, address: str) -> ClientPlace:
        return locate(self.zones, address, self.cfg.default_site)

    def steer(self, title: str, profile: str | None, address: str) -> str:
        """The steering manifest as JSON text."""
        tracks = catalog_tracks(self.catalog, title, profile)
        if tracks is None:
            raise NotFound(f"title {title!r} is not in the catalog")
        if not tracks:
            raise NotFound(f"title {title!r} has no profile {profile!r}")
        place = self.place(address)
        snap = self.snapshot
        ranked = snap.rank(title, place.site)
        return manifest_json(title, tracks, ranked, place, self.signer, self.cloudfront_url)

    # -- analytics -----------------------------------------------------------------------------

    def analytics(self) -> dict:
        """Hit ratio, p95/p99, error rate and bandwidth per appliance, per site and for the fleet,
        over the analytics window, from this monitor's scrapes (and other monitors' for
        appliances this one does not see)."""
        best: dict[str, HealthView] = {}
        for v in [*self.remote_views, *self.monitor.views.values()]:
            if v.stats and (v.appliance_id not in best or v.checked_at > best[v.appliance_id].checked_at):
                best[v.appliance_id] = v
        per_appliance = {}
        per_site_stats: dict[str, list[dict]] = defaultdict(list)
        site_capacity: dict[str, float] = defaultdict(float)
        for aid, v in sorted(best.items()):
            a = self.appliances.get(aid)
            if a is None:
                continue
            per_appliance[aid] = {"site": a.site, **analytics.figures(v.stats, a.capacity_bps)}
            per_site_stats[a.site].append(v.stats)
            site_capacity[a.site] += a.capacity_bps
        per_site = {
            s: analytics.figures(analytics.merge(sts), site_capacity[s])
            for s, sts in sorted(per_site_stats.items())
        }
        all_stats = [st for sts in per_site_stats.values() for st in sts]
        total_cap = sum(site_capacity.values())
        fleet = analytics.figures(analytics.merge(all_stats), total_cap) if all_stats else None
        return {
            "window_s": self.cfg.health.analytics_window,
            "generated_at": time.time(),
            "global": fleet,
            "sites": per_site,
            "appliances": per_appliance,
        }

    # -- background ----------------------------------------------------------------------------

    async def run_background(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self.monitor.run(stop), name="health-monitor"),
            asyncio.create_task(self._refresher(stop), name="refresher"),
        ]
        if self.cfg.cloudwatch.enabled:
            tasks.append(asyncio.create_task(self._cloudwatch(stop), name="cloudwatch"))
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await self.monitor.close()

    async def _refresher(self, stop: asyncio.Event) -> None:
        # Other nodes' writes and other monitors' views arrive through the database.
        period = max(0.2, min(2.0, self.cfg.health.interval / 2))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=period)
            try:
                rev = await asyncio.to_thread(self.store.revision)
                changed = rev != self._revision
                if changed:
                    await asyncio.to_thread(self._load_registry, rev)
                views = await asyncio.to_thread(self.store.load_health_views, self.stale_after)
                remote = [v for v in views if v.monitor_id != self.cfg.monitor_id]
                seen = {(v.monitor_id, v.appliance_id, v.checked_at) for v in remote}
                changed |= seen != {(v.monitor_id, v.appliance_id, v.checked_at) for v in self.remote_views}
                self.remote_views = remote
                # Views age out even when nothing new arrives, so rebuild at least every interval
                # while there are any; an unchanged fleet without views keeps its snapshot (and
                # its ranking cache).
                aging = bool(remote or self.monitor.views) and (
                    time.monotonic() - self._rebuilt_at >= self.cfg.health.interval
                )
                if changed or aging:
                    self.rebuild()
                elif time.monotonic() - self._frozen_at > 30:
                    # Steering's caches fill between rebuilds; keep them out of full collections.
                    gc.collect()
                    gc.freeze()
                    self._frozen_at = time.monotonic()
            except Exception:
                log.exception("refresh failed")

    def _load_registry(self, rev: int) -> None:
        with self._lock:
            self._load_registry_locked(rev)

    def _load_registry_locked(self, rev: int) -> None:
        self.appliances = {a.id: a for a in self.store.list_appliances()}
        self.title_index = self.store.title_index()
        self.generations = self.store.inventory_generations()
        self._revision = rev

    async def _cloudwatch(self, stop: asyncio.Event) -> None:
        from cdnlab.control.cloudwatch import CloudWatchPublisher

        pub = CloudWatchPublisher(self.cfg.cloudwatch)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.cfg.cloudwatch.interval)
            if stop.is_set():
                break
            try:
                await asyncio.to_thread(pub.publish, self.analytics())
            except Exception:
                log.exception("CloudWatch publish failed")

    def close(self) -> None:
        self.store.close()
