"""Tells the control plane what this appliance holds: a full report at start, deltas after.

The format is ``cdnlab.inventory`` (shared with the control plane). A delta names the generation it
applies on top of (``?since=``); when the control plane answers 409 (a gap) or 404, or a report
fails, the next one is full again, so the two sides can never drift apart for long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp

from cdnlab.inventory import InventoryObject, InventoryReport

log = logging.getLogger("cdnlab.edge.reporter")

Snapshot = dict[str, tuple[int, str, str]]  # key -> (size, sha256, tier)


class InventoryReporter:
    def __init__(
        self,
        appliance_id: str,
        url: str,
        interval: float,
        snapshot: Callable[[], Snapshot],
        token: str | None = None,
    ) -> None:
        self.appliance_id = appliance_id
        self.endpoint = f"{url.rstrip('/')}/v1/appliances/{appliance_id}/inventory"
        self.interval = interval
        self.snapshot = snapshot
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Grows across restarts too, so a delta after a restart is never taken for an old one.
        self.generation = int(time.time() * 1000)
        self.reported: Snapshot | None = None  # what the control plane holds, as far as we know
        self.last_error: str | None = None

    @staticmethod
    def _obj(key: str, v: tuple[int, str, str]) -> InventoryObject:
        tier = v[2] if v[2] in ("ram", "flash", "hdd") else "flash"
        return InventoryObject(key=key, size=v[0], sha256=v[1], tier=tier)  # type: ignore[arg-type]

    def build(self, current: Snapshot) -> tuple[InventoryReport, int | None] | None:
        """The next report and the generation it builds on (None: full), or None if nothing changed."""
        if self.reported is None:
            objects = [self._obj(k, v) for k, v in current.items()]
            return InventoryReport(
                appliance_id=self.appliance_id, generation=self.generation + 1, full=True, objects=objects
            ), None
        added = [self._obj(k, v) for k, v in current.items() if self.reported.get(k) != v]
        removed = [k for k in self.reported if k not in current]
        if not added and not removed:
            return None
        report = InventoryReport(
            appliance_id=self.appliance_id,
            generation=self.generation + 1,
            full=False,
            added=added,
            removed=removed,
        )
        return report, self.generation

    async def report_once(self, session: aiohttp.ClientSession) -> bool:
        loop = asyncio.get_running_loop()
        current = await loop.run_in_executor(None, self.snapshot)
        built = self.build(current)
        if built is None:
            return True
        report, since = built
        params = {"since": str(since)} if since is not None else {}
        try:
            async with session.post(
                self.endpoint,
                data=report.model_dump_json(exclude_none=True),
                params=params,
                headers={"Content-Type": "application/json", **self.headers},
            ) as resp:
                if resp.status in (200, 201, 204):
                    self.generation = report.generation
                    self.reported = current
                    self.last_error = None
                    return True
                self.last_error = f"control plane answered {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.last_error = f"control plane unreachable: {exc or type(exc).__name__}"
        log.warning("inventory report failed (%s); the next one will be full", self.last_error)
        self.reported = None
        return False

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await self.report_once(session)
                await asyncio.sleep(self.interval)
