"""LRU: evict the object used least recently. The baseline every other policy is measured
against; an OrderedDict keeps both the hit and the eviction O(1)."""

from __future__ import annotations

from collections import OrderedDict

from cdnlab.eviction.base import EvictionPolicy, Key


class LRU(EvictionPolicy):
    name = "lru"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._q: OrderedDict[Key, int] = OrderedDict()  # key -> size, least recent first

    def contains(self, key: Key) -> bool:
        return key in self._q

    def __len__(self) -> int:
        return len(self._q)

    def on_hit(self, key: Key, now: float) -> None:
        self._q.move_to_end(key)

    def admit(self, key: Key, size: int, now: float) -> bool:
        return size <= self.capacity

    def on_insert(self, key: Key, size: int, now: float) -> None:
        old = self._q.pop(key, None)
        if old is not None:
            self.used -= old
        self._q[key] = size
        self.used += size

    def on_remove(self, key: Key) -> None:
        size = self._q.pop(key, None)
        if size is not None:
            self.used -= size

    def evict(self, bytes_needed: int, now: float) -> list[Key]:
        victims: list[Key] = []
        limit = self.capacity - bytes_needed
        q = self._q
        while self.used > limit and q:
            key, size = q.popitem(last=False)
            self.used -= size
            victims.append(key)
        return victims
