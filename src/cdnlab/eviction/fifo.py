"""FIFO: evict in insertion order, hits change nothing. A floor for the comparison."""

from __future__ import annotations

from cdnlab.eviction.base import Key
from cdnlab.eviction.lru import LRU


class FIFO(LRU):
    name = "fifo"

    def on_hit(self, key: Key, now: float) -> None:
        pass
