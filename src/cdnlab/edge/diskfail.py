"""Disk failure: probe every disk, and take a failed disk's objects out of the index.

A disk is marked failed by whoever meets its I/O error first (a worker opening a file, a commit,
the scrubber, the mover) or by this monitor's probe every ``[storage] disk_probe_interval``
seconds (its id marker must read back and a small file must be writable: an unmounted
filesystem, a read-only remount or a dead device all fail it). Then, in the master, the disk's
rows leave the index and every worker drops its cached view of them, so the next request for
one of those objects is an ordinary miss served from upstream and stored on a healthy disk.
Files on the failed disk are left alone (the device may hang); a disk that comes back is swept
at the next start.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from cdnlab.edge.store import Store

log = logging.getLogger("cdnlab.edge.diskfail")


class DiskMonitor:
    def __init__(self, store: Store, interval: float, stop: threading.Event | None = None) -> None:
        self.store = store
        self.interval = interval
        self.stop = stop or threading.Event()
        self.counters: Counter[str] = Counter(objects_dropped=0)  # keys up front: read by other threads

    def check(self) -> None:
        self.store.refresh()
        for disk in self.store.usage():
            if not disk.failed:
                self.store.probe(disk.id)
        self.counters["objects_dropped"] += self.store.drop_failed_disks()

    def run(self) -> None:
        while True:
            try:
                self.check()
            except Exception:
                log.exception("disk check failed")
            if self.stop.wait(self.interval):
                return
