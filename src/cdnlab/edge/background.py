"""The master's background threads: tier mover, scrubber and disk monitor (never a worker's
event loop). They share the master's Store; each sleeps on one stop event."""

from __future__ import annotations

import threading
from typing import Any

from cdnlab.edge.config import EdgeConfig
from cdnlab.edge.diskfail import DiskMonitor
from cdnlab.edge.scrub import Scrubber
from cdnlab.edge.store import Store
from cdnlab.edge.tiers import TierMover


class Background:
    def __init__(self, store: Store, config: EdgeConfig) -> None:
        st = config.storage
        self.stop = threading.Event()
        self.disks = DiskMonitor(store, st.disk_probe_interval, self.stop)
        self.mover = TierMover(store, st, config.limits.ram_object_max, stop=self.stop)
        self.scrubber = Scrubber(store, st.scrub_rate, st.scrub_pause, self.stop)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for name, target in (
            ("disk-monitor", self.disks.run),
            ("tier-mover", self.mover.run),
            ("scrubber", self.scrubber.run),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def close(self, timeout: float = 10.0) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout)

    def counters(self) -> dict[str, Any]:
        """Cumulative counters for /metrics (plain ints: a torn read is off by one at worst)."""
        return {
            "tiers": dict(self.mover.counters),
            "policy": self.mover.cfg.eviction_policy,
            "scrub": dict(self.scrubber.counters),
            "disks": dict(self.disks.counters),
        }
