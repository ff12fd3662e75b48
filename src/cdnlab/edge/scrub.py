"""The scrubber: re-reads every stored object at a bounded rate and checks its SHA-256.

Runs as a thread of the master process (never in a worker), at ``[storage] scrub_rate`` bytes/s,
one full pass over the index in key order, then a pause of ``scrub_pause`` seconds. An object
whose bytes no longer match the SHA-256 recorded when it was stored (bit rot, a flipped byte, a
truncated file) is dropped: its row leaves the index first (workers are told at once), then its
file goes. It is not refetched eagerly: the next request for it is a miss and pulls it from
upstream, verified again on the way in. An I/O error marks the disk failed (see diskfail).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from cdnlab.edge.config import EdgeConfig
from cdnlab.edge.store import Store
from cdnlab.edge.tiers import Throttle

log = logging.getLogger("cdnlab.edge.scrub")


class Scrubber:
    def __init__(self, store: Store, rate: int, pause: float, stop: threading.Event | None = None) -> None:
        self.store = store
        self.rate = rate
        self.pause = pause
        self.stop = stop or threading.Event()
        self.throttle = Throttle(rate, self.stop)
        # checked objects and bytes, corrupt / missing objects dropped, full passes done
        self.counters: Counter[str] = Counter(
            dict.fromkeys(("objects", "bytes", "corrupt", "missing", "passes"), 0)  # all keys up front
        )

    def scrub_pass(self) -> None:
        """One pass over every object in the index (stops early when STOP is set)."""
        for row in self.store.index.iter_all():
            if self.stop.is_set():
                return
            result = self.store.check_row(row, self.throttle)
            if result == "skipped":
                continue
            self.counters["objects"] += 1
            if result == "ok":
                self.counters["bytes"] += row.size
            elif result in ("corrupt", "missing"):
                self.counters[result] += 1
        self.counters["passes"] += 1

    def run(self) -> None:
        if self.rate <= 0:
            return
        while not self.stop.is_set():
            try:
                self.scrub_pass()
            except Exception:
                log.exception("scrub pass failed")
            self.stop.wait(self.pause)


def scrub_once(config: EdgeConfig, rate: int) -> dict[str, int]:
    """``cdnlab edge scrub``: one pass over the store of CONFIG at RATE bytes/s (0: no limit),
    alongside a running daemon or not (it never reconciles; workers are told of every drop)."""
    from cdnlab.edge.shm import SharedState
    from cdnlab.edge.worker import run_dir

    shm_path = run_dir(config) / "shared"
    shm = SharedState(shm_path, create=False) if shm_path.exists() else None
    store = Store(
        list(config.tiers),
        config.state_dir,
        ram_object_max=config.limits.ram_object_max,
        on_invalidate=shm.invalidate if shm is not None else None,
    )
    store.open(reconcile=False)
    try:
        scrubber = Scrubber(store, rate, 0)
        scrubber.scrub_pass()
        return {k: scrubber.counters[k] for k in ("objects", "bytes", "corrupt", "missing")}
    finally:
        store.close()
        if shm is not None:
            shm.close()
