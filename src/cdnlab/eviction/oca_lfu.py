"""The seed's Open Connect policy (seed 003, "Eviction Policy"), made precise.

Eviction order, first rule that applies:

1. content not accessed for ``age_out`` seconds (30 days), least recently accessed first;
2. the lowest view count (LFU, counted while the object is stored); on equal counts the larger
   object first ("prefer evicting larger files if impact is same"), then the older access.

Content not licensed in the appliance's region (``licensed(key)`` is False) is never kept: it
is never admitted, and after a licensing change :meth:`relicense` drops what lost its rights.

The LFU order is a heap of (count, -size, tick, key) entries; a hit pushes a new entry and the
old one is skipped when it surfaces (lazy deletion), with a rebuild when stale entries pile up.
Age-out walks an access-ordered dict from its oldest end, so both are O(log n) per event.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable

from cdnlab.eviction.base import EvictionPolicy, Key

THIRTY_DAYS = 30 * 86400.0


def _always(key: Key) -> bool:
    return True


class OcaLFU(EvictionPolicy):
    name = "oca-lfu"

    def __init__(
        self,
        capacity: int,
        age_out: float = THIRTY_DAYS,
        licensed: Callable[[Key], bool] | None = None,
    ) -> None:
        super().__init__(capacity)
        self.age_out = float(age_out)
        self.licensed = licensed or _always
        # key -> [count, size, last_access, tick]; tick orders accesses and tags heap entries
        self._meta: dict[Key, list] = {}
        self._by_access: OrderedDict[Key, None] = OrderedDict()  # least recently accessed first
        self._heap: list[tuple[int, int, int, Key]] = []
        self._tick = 0

    def contains(self, key: Key) -> bool:
        return key in self._meta

    def __len__(self) -> int:
        return len(self._meta)

    def count(self, key: Key) -> int:
        return self._meta[key][0]

    def on_hit(self, key: Key, now: float) -> None:
        m = self._meta[key]
        self._tick += 1
        m[0] += 1
        m[2] = now
        m[3] = self._tick
        self._by_access.move_to_end(key)
        heapq.heappush(self._heap, (m[0], -m[1], self._tick, key))
        if len(self._heap) > 2 * len(self._meta) + 64:
            self._rebuild()

    def admit(self, key: Key, size: int, now: float) -> bool:
        return size <= self.capacity and self.licensed(key)

    def on_insert(self, key: Key, size: int, now: float) -> None:
        if key in self._meta:
            self.on_remove(key)
        self._tick += 1
        self._meta[key] = [1, size, now, self._tick]
        self._by_access[key] = None
        heapq.heappush(self._heap, (1, -size, self._tick, key))
        self.used += size

    def on_remove(self, key: Key) -> None:
        m = self._meta.pop(key, None)
        if m is not None:
            del self._by_access[key]
            self.used -= m[1]  # its heap entry is now stale and skipped

    def relicense(self) -> list[Key]:
        """Re-check every stored key against ``licensed`` (after a licensing change): forget the
        ones no longer licensed and return them, for the caller to delete now."""
        gone = [k for k in self._meta if not self.licensed(k)]
        for key in gone:
            self.on_remove(key)
        return gone

    def evict(self, bytes_needed: int, now: float) -> list[Key]:
        victims: list[Key] = []
        limit = self.capacity - bytes_needed
        meta = self._meta
        oldest = now - self.age_out
        by_access = self._by_access
        while self.used > limit and by_access:
            key = next(iter(by_access))
            if meta[key][2] >= oldest:
                break
            self.on_remove(key)
            victims.append(key)
        heap = self._heap
        while self.used > limit and heap:
            _, _, tick, key = heapq.heappop(heap)
            m = meta.get(key)
            if m is None or m[3] != tick:
                continue  # stale: the object was hit again, removed, or replaced
            self.on_remove(key)
            victims.append(key)
        return victims

    def _rebuild(self) -> None:
        self._heap = [(m[0], -m[1], m[3], k) for k, m in self._meta.items()]
        heapq.heapify(self._heap)
