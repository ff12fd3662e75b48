"""S3-FIFO (Yang et al., SOSP '23), after libCacheSim's ``S3FIFO.c``.

Three FIFO queues: a small one (10% of the bytes) that every new object enters, a main one
(the rest) and a ghost one that remembers only the keys recently evicted from the small queue
(as many as would fill 90% of the cache). An object leaving the small queue moves to main if it
was hit at least ``move_to_main`` times there (libCacheSim's default, 2), otherwise it is evicted
and remembered in the ghost; a miss on a ghost key inserts straight into main. Main is a
CLOCK with a 2-bit counter: a hit object is reinserted with its count lowered by one.

Deviation: libCacheSim cannot cache an object larger than the small queue; here it goes to main
instead, so every policy can store any object up to the full capacity.
"""

from __future__ import annotations

from collections import OrderedDict

from cdnlab.eviction.base import EvictionPolicy, Key


class S3FIFO(EvictionPolicy):
    name = "s3fifo"

    def __init__(
        self, capacity: int, small_ratio: float = 0.10, ghost_ratio: float = 0.90, move_to_main: int = 2
    ) -> None:
        super().__init__(capacity)
        self.small_cap = int(capacity * small_ratio)
        self.main_cap = capacity - self.small_cap
        self.ghost_cap = int(capacity * ghost_ratio)
        self.move_to_main = move_to_main
        self._small: OrderedDict[Key, int] = OrderedDict()  # key -> size, oldest first
        self._main: OrderedDict[Key, int] = OrderedDict()
        self._ghost: OrderedDict[Key, int] = OrderedDict()
        self._freq: dict[Key, int] = {}  # every stored key -> hits, capped at 3
        self.small_used = 0
        self.main_used = 0
        self.ghost_used = 0

    def contains(self, key: Key) -> bool:
        return key in self._freq

    def __len__(self) -> int:
        return len(self._freq)

    def in_small(self, key: Key) -> bool:
        return key in self._small

    def in_main(self, key: Key) -> bool:
        return key in self._main

    def in_ghost(self, key: Key) -> bool:
        return key in self._ghost

    def on_hit(self, key: Key, now: float) -> None:
        f = self._freq[key]
        if f < 3:
            self._freq[key] = f + 1

    def admit(self, key: Key, size: int, now: float) -> bool:
        return size <= self.capacity

    def on_insert(self, key: Key, size: int, now: float) -> None:
        if key in self._freq:
            self.on_remove(key)
        ghost_size = self._ghost.pop(key, None)
        if ghost_size is not None:
            self.ghost_used -= ghost_size
        self._freq[key] = 0
        self.used += size
        if ghost_size is not None or size > self.small_cap:
            self._main[key] = size
            self.main_used += size
        else:
            self._small[key] = size
            self.small_used += size

    def on_remove(self, key: Key) -> None:
        if self._freq.pop(key, None) is None:
            return
        size = self._small.pop(key, None)
        if size is not None:
            self.small_used -= size
        else:
            size = self._main.pop(key)
            self.main_used -= size
        self.used -= size

    def evict(self, bytes_needed: int, now: float) -> list[Key]:
        victims: list[Key] = []
        limit = self.capacity - bytes_needed
        while self.used > limit and self._freq:
            if self.main_used > self.main_cap or not self._small:
                victims.append(self._evict_main())
            else:
                key = self._evict_small()
                if key is not None:
                    victims.append(key)
        return victims

    def _evict_small(self) -> Key | None:
        # Promote hit objects to main until one is evicted; stop early if main overflows so
        # the caller evicts from main first (promotion frees no bytes overall).
        small, freq = self._small, self._freq
        while small:
            key, size = small.popitem(last=False)
            self.small_used -= size
            if freq[key] >= self.move_to_main:
                freq[key] = 0
                self._main[key] = size
                self.main_used += size
                if self.main_used > self.main_cap:
                    return None
                continue
            del freq[key]
            self.used -= size
            self._remember(key, size)
            return key
        return None

    def _evict_main(self) -> Key:
        main, freq = self._main, self._freq
        while True:
            key = next(iter(main))
            f = freq[key]
            if f > 0:
                freq[key] = f - 1
                main.move_to_end(key)
                continue
            size = main.pop(key)
            del freq[key]
            self.main_used -= size
            self.used -= size
            return key

    def _remember(self, key: Key, size: int) -> None:
        ghost = self._ghost
        ghost[key] = size
        self.ghost_used += size
        while self.ghost_used > self.ghost_cap and ghost:
            _, old = ghost.popitem(last=False)
            self.ghost_used -= old
