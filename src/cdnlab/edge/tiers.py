"""Tiers and eviction in the background: one mover thread in the master process.

The mover owns one eviction policy per tier kind (RAM, flash, HDD), built with
``cdnlab.eviction.get_policy`` from ``[storage] eviction_policy``: the very code ``cdnlab sim``
replays. It learns what happened from the shared index (workers record hit batches there once a
second; commits write rows), so no worker ever talks to it and the hit path gains nothing.

Each pass (``[storage] mover_interval``):

1. sync: rows of every disk accessed or stored since the last pass (with a few seconds of
   overlap; hit counts are cumulative, so replays are harmless) become ``on_insert``/``on_hit``
   events of their tier's policy. Every ``FULL_SYNC_EVERY`` passes, keys that left the index
   (purged, dropped by the scrubber, evicted by a commit at 100%) are removed from the policies.
2. watermarks: a tier above its high watermark asks its policy for victims down to the low one.
   A victim with at least ``demote_min_hits`` hits goes down a tier if that tier stays under
   its own high watermark (demotion); otherwise it is deleted (eviction).
3. promotion: objects on a slower tier that collected ``promote_hits`` hits recently go up one
   tier while that tier is under its high watermark (RAM only takes objects up to
   ``ram_object_max``).

Moves are ``Store.move`` (copy, fsync, verify SHA-256, switch the row, unlink the old file after
``GRACE`` seconds) at ``move_rate`` bytes/s, so they never starve serving of disk bandwidth. The
commit path's own least-recently-used eviction stays as the backstop for a disk at 100%.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from cdnlab.edge.config import StorageConfig
from cdnlab.edge.store import Store
from cdnlab.eviction import EvictionPolicy, get_policy

log = logging.getLogger("cdnlab.edge.tiers")

ORDER = ("ram", "flash", "hdd")  # fastest first
FULL_SYNC_EVERY = 30
OVERLAP = 5.0  # seconds re-read each sync: a worker's hit batch carries its tick's time
GRACE = 2.0  # seconds a moved object's old file outlives the switch (readers that just looked it up)
MAX_HITS_REPLAYED = 8  # per key per pass: a hot key must not cost the mover thousands of calls


class Throttle:
    """A token bucket of RATE bytes/s: ``throttle(n)`` sleeps until N more bytes are allowed.
    Sleeping waits on STOP, so a stopping thread never lingers. RATE 0: no limit."""

    def __init__(self, rate: int, stop: threading.Event | None = None, burst: float = 0.25) -> None:
        self.rate = rate
        self.stop = stop or threading.Event()
        self._burst = max(1.0, rate * burst)
        self._tokens = self._burst
        self._at = time.monotonic()

    def __call__(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self.rate) - n
        self._at = now
        if self._tokens < 0:
            self.stop.wait(-self._tokens / self.rate)


class TierMover:
    def __init__(
        self,
        store: Store,
        storage: StorageConfig,
        ram_object_max: int,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.cfg = storage
        self.ram_object_max = ram_object_max
        self.stop = stop or threading.Event()
        self.clock = clock
        self.throttle = Throttle(storage.move_rate, self.stop)
        self.policies: dict[str, EvictionPolicy] = {}
        self.known: dict[str, list] = {}  # key -> [kind, size, hits, stored_at]
        self.heat: Counter[str] = Counter()  # hits on slower tiers since the last decay
        self.pending: set[str] = set()  # victims waiting for their demotion
        self.queue: deque[tuple[str, str]] = deque()  # (key, kind to move it to)
        self.unlinks: deque[tuple[float, str, str]] = deque()  # (due, disk, old path)
        # Every key present from the start: other threads copy it (a dict that grows while
        # being copied raises).
        self.counters: Counter[str] = Counter(
            dict.fromkeys(("promoted", "demoted", "evicted", "moved_bytes", "move_failed", "corrupt"), 0)
        )
        self._since = 0.0
        self._passes = 0
        self._failed: frozenset[str] = frozenset()

    # -- policies --------------------------------------------------------------------------------

    def capacity(self, kind: str) -> int:
        return sum(c for _, c in self.store.disks_of(kind))

    def rebuild(self) -> None:
        """Build the policies afresh from the index (start, or a disk failed): a warm start,
        oldest access first, as ``EvictionPolicy.restore`` expects."""
        start = self.clock()
        kinds = self.store.kinds()
        self.policies = {k: get_policy(self.cfg.eviction_policy, self.capacity(k)) for k in kinds}
        by_kind: dict[str, list[tuple[str, int, float, int]]] = {k: [] for k in kinds}
        self.known = {}
        for key, disk, size, hits, last_access, stored_at in self.store.index.iter_brief():
            kind = self.store.kind_of(disk)
            if kind is None:
                continue
            by_kind[kind].append((key, size, last_access, hits))
            self.known[key] = [kind, size, hits, stored_at]
        for kind, entries in by_kind.items():
            entries.sort(key=lambda e: e[2])
            for key in self.policies[kind].restore(entries):
                self._delete(key)  # cannot happen with the commit's backstop; never leave it untracked
        self.pending.clear()
        self.queue.clear()
        self._since = start - OVERLAP
        self._failed = self._failed_disks()

    def _failed_disks(self) -> frozenset[str]:
        return frozenset(d.id for d in self.store.usage() if d.failed)

    # -- one pass --------------------------------------------------------------------------------

    def run(self) -> None:
        """The thread's body: passes until STOP is set."""
        try:
            self.rebuild()
        except Exception:
            log.exception("tier mover could not start; tiers are not managed")
            return
        while not self.stop.wait(self.cfg.mover_interval):
            try:
                self.step()
            except Exception:  # a bad pass must not end tier management
                log.exception("tier pass failed")
        self.flush_unlinks(force=True)

    def step(self) -> None:
        self.flush_unlinks()
        self.store.refresh()
        if self._failed_disks() != self._failed:
            self.rebuild()
        self._passes += 1
        self.sync(full=self._passes % FULL_SYNC_EVERY == 0)
        self.enforce()
        self.drain_queue()
        self.promote()

    def sync(self, full: bool = False) -> None:
        start = self.clock()
        for kind, policy in self.policies.items():
            policy.capacity = self.capacity(kind)
            for disk_id, _cap in self.store.disks_of(kind):
                for key, size, hits, last_access, stored_at in self.store.index.accessed_since(
                    disk_id, self._since
                ):
                    self._saw(key, kind, size, hits, last_access, stored_at)
        self._since = start - OVERLAP
        if full:
            present = {row[0] for row in self.store.index.iter_brief()}
            for key in [k for k in self.known if k not in present]:
                self._forget(key)
            for key in list(self.heat):  # recent means recent: halve every full sync
                self.heat[key] //= 2
                if self.heat[key] <= 0:
                    del self.heat[key]

    def _saw(self, key: str, kind: str, size: int, hits: int, last_access: float, stored_at: float) -> None:
        policy = self.policies[kind]
        k = self.known.get(key)
        if k is None or k[3] != stored_at or k[0] != kind:
            if k is not None and k[0] != kind and k[0] in self.policies:
                self.policies[k[0]].on_remove(key)
            self.pending.discard(key)
            policy.on_insert(key, size, last_access)
            self.known[key] = [kind, size, hits, stored_at]
            return
        delta = hits - k[2]
        if delta <= 0:
            return
        k[2] = hits
        if key in self.pending:
            return
        if not policy.contains(key):  # never lose track of a stored object
            policy.on_insert(key, size, last_access)
        for _ in range(min(delta, MAX_HITS_REPLAYED)):
            policy.on_hit(key, last_access)
        if kind != self.store.kinds()[0]:
            self.heat[key] += delta

    def _forget(self, key: str) -> None:
        k = self.known.pop(key, None)
        if k is not None and k[0] in self.policies:
            self.policies[k[0]].on_remove(key)
        self.heat.pop(key, None)
        self.pending.discard(key)

    def _usage(self) -> dict[str, int]:
        per_disk = self.store.index.usage_by_disk()
        used: dict[str, int] = {}
        for kind in self.policies:
            used[kind] = sum(per_disk[d].bytes for d, _ in self.store.disks_of(kind) if d in per_disk)
        return used

    def _slower(self, kind: str) -> str | None:
        kinds = self.store.kinds()
        i = kinds.index(kind)
        return kinds[i + 1] if i + 1 < len(kinds) else None

    def _faster(self, kind: str, size: int) -> str | None:
        kinds = self.store.kinds()
        i = kinds.index(kind)
        if i == 0:
            return None
        up = kinds[i - 1]
        if up == "ram" and size > self.ram_object_max:
            return kinds[i - 2] if i >= 2 else None
        return up

    def enforce(self) -> None:
        """Tiers above their high watermark: victims down to the low one, demoted or deleted."""
        used = self._usage()
        now = self.clock()
        for kind, policy in self.policies.items():
            cap = self.capacity(kind)
            marks = self.cfg.watermarks[kind]
            if cap <= 0 or used[kind] <= marks.high * cap:
                continue
            low = marks.low if marks.low is not None else marks.high
            need = (
                used[kind]
                - int(low * cap)
                - sum(
                    self.known[k][1] for k, to in self.queue if k in self.known and self.known[k][0] == kind
                )
            )
            if need <= 0:
                continue
            policy.capacity = max(0, policy.used - need)
            try:
                victims = policy.evict(0, now)
            finally:
                policy.capacity = cap
            lower = self._slower(kind)
            for key in victims:
                k = self.known.get(key)
                if k is None:
                    self._delete(key)
                    continue
                if lower is not None and k[2] >= self.cfg.demote_min_hits and self._room(lower, k[1], used):
                    used[lower] += k[1]
                    self.pending.add(key)
                    self.queue.append((key, lower))
                else:
                    self._delete(key)
                    used[kind] -= k[1]

    def _room(self, kind: str, size: int, used: dict[str, int]) -> bool:
        return used[kind] + size <= self.cfg.watermarks[kind].high * self.capacity(kind)

    def _delete(self, key: str) -> None:
        self.known.pop(key, None)
        self.pending.discard(key)
        self.heat.pop(key, None)
        if self.store.evict(key) is not None:
            self.counters["evicted"] += 1

    def _budget(self) -> float:
        """Bytes the mover may copy in one pass (the rest waits): keeps each pass short."""
        rate = self.cfg.move_rate or (1 << 62)
        return rate * self.cfg.mover_interval * 4

    def drain_queue(self) -> None:
        budget = self._budget()
        while self.queue and budget > 0 and not self.stop.is_set():
            key, to = self.queue.popleft()
            if key not in self.pending:
                continue  # replaced, purged or hit its way back meanwhile
            self.pending.discard(key)
            res = self.store.move(key, to, throttle=self.throttle)
            budget -= res.size
            if res.outcome == "moved":
                self._moved(key, to, res.size, res.old_disk, res.old_path, "demoted")
            elif res.outcome in ("full", "failed", "same"):
                self._delete(key)  # it was chosen as a victim: out it goes
            else:
                self._after_failed_move(key, res.outcome)

    def promote(self) -> None:
        hot = [(n, k) for k, n in self.heat.items() if n >= self.cfg.promote_hits and k in self.known]
        if not hot:
            return
        hot.sort(reverse=True)
        used = self._usage()
        budget = self._budget()
        for n, key in hot:
            if budget <= 0 or self.stop.is_set():
                break
            kind, size = self.known[key][0], self.known[key][1]
            up = self._faster(kind, size)
            if up is None or key in self.pending or not self._room(up, size, used):
                continue
            res = self.store.move(key, up, throttle=self.throttle)
            budget -= res.size
            if res.outcome == "moved":
                used[up] += size
                used[kind] -= size
                self._moved(key, up, size, res.old_disk, res.old_path, "promoted", hits=n)
            elif res.outcome in ("gone", "corrupt"):
                self._after_failed_move(key, res.outcome)
            else:
                self.counters["move_failed"] += 1
                self.heat.pop(key, None)

    def _moved(
        self, key: str, to: str, size: int, old_disk: str, old_path: str, what: str, hits: int = 0
    ) -> None:
        now = self.clock()
        k = self.known.get(key)
        if k is not None and k[0] in self.policies and k[0] != to:
            self.policies[k[0]].on_remove(key)
        policy = self.policies[to]
        policy.on_insert(key, size, now)
        for _ in range(min(hits, MAX_HITS_REPLAYED)):
            policy.on_hit(key, now)
        if k is not None:
            k[0] = to
        self.heat.pop(key, None)
        self.counters[what] += 1
        self.counters["moved_bytes"] += size
        self.unlinks.append((time.monotonic() + GRACE, old_disk, old_path))

    def _after_failed_move(self, key: str, outcome: str) -> None:
        if outcome == "corrupt":
            self.counters["corrupt"] += 1
        self._forget(key)

    def flush_unlinks(self, force: bool = False) -> None:
        now = time.monotonic()
        while self.unlinks and (force or self.unlinks[0][0] <= now):
            _due, disk, path = self.unlinks.popleft()
            self.store.unlink_old(disk, path)
