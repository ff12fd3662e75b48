"""W-TinyLFU (Einziger et al., 2017; Caffeine; libCacheSim ``WTinyLFU.c``), counted in bytes.

New objects enter a small LRU window (1% of the bytes). An object pushed out of the window
enters the main cache, a segmented LRU (probation, then protected: 80% of main), only if main
has room or it is requested more often, by the frequency counter, than main's next victim; the
loser of that duel is evicted. A large candidate meets as many victims as it needs room for,
one duel each, as Caffeine does for weighted entries. Frequency beats recency for the main
cache, the window gives bursts a chance: robust on skewed, changing CDN workloads.

With the event API the incoming object is not yet in the window when :meth:`evict` runs, so
``evict(bytes_needed)`` counts those bytes as already in the window: the window overflows, and
its oldest object duels, exactly as if the new object had been inserted first.
"""

from __future__ import annotations

from collections import OrderedDict

from cdnlab.eviction.base import EvictionPolicy, Key
from cdnlab.eviction.frequency import FrequencyCounter

_WINDOW, _PROBATION, _PROTECTED = 0, 1, 2


class WTinyLFU(EvictionPolicy):
    name = "wtinylfu"

    def __init__(
        self,
        capacity: int,
        window_ratio: float = 0.01,
        protected_ratio: float = 0.80,
        sample_factor: int = 10,
    ) -> None:
        super().__init__(capacity)
        self.window_cap = int(capacity * window_ratio)
        self.main_cap = capacity - self.window_cap
        self.protected_cap = int(self.main_cap * protected_ratio)
        self.freq = FrequencyCounter(sample_factor)
        self._where: dict[Key, int] = {}
        self._window: OrderedDict[Key, int] = OrderedDict()  # key -> size, LRU first
        self._probation: OrderedDict[Key, int] = OrderedDict()
        self._protected: OrderedDict[Key, int] = OrderedDict()
        self.window_used = 0
        self.protected_used = 0

    def contains(self, key: Key) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def segment(self, key: Key) -> str | None:
        where = self._where.get(key)
        return None if where is None else ("window", "probation", "protected")[where]

    def on_hit(self, key: Key, now: float) -> None:
        self.freq.record(key, len(self._where))
        where = self._where[key]
        if where == _WINDOW:
            self._window.move_to_end(key)
        elif where == _PROTECTED:
            self._protected.move_to_end(key)
        else:  # a second chance earned: probation -> protected, demoting its LRU if full
            size = self._probation.pop(key)
            self._protected[key] = size
            self._where[key] = _PROTECTED
            self.protected_used += size
            while self.protected_used > self.protected_cap:
                old, old_size = self._protected.popitem(last=False)
                self.protected_used -= old_size
                self._probation[old] = old_size
                self._where[old] = _PROBATION

    def admit(self, key: Key, size: int, now: float) -> bool:
        self.freq.record(key, len(self._where))
        return size <= self.capacity

    def on_insert(self, key: Key, size: int, now: float) -> None:
        if key in self._where:
            self.on_remove(key)
        self._window[key] = size
        self._where[key] = _WINDOW
        self.window_used += size
        self.used += size
        # Keep the window at its share while main still has room (no duel needed yet).
        window = self._window
        while self.window_used > self.window_cap and len(window) > 1:
            cand = next(iter(window))
            csize = window[cand]
            if self.used - self.window_used + csize > self.main_cap:
                break
            del window[cand]
            self.window_used -= csize
            self._probation[cand] = csize
            self._where[cand] = _PROBATION

    def on_remove(self, key: Key) -> None:
        where = self._where.pop(key, None)
        if where is None:
            return
        if where == _WINDOW:
            size = self._window.pop(key)
            self.window_used -= size
        elif where == _PROBATION:
            size = self._probation.pop(key)
        else:
            size = self._protected.pop(key)
            self.protected_used -= size
        self.used -= size

    def _main_victim(self) -> Key | None:
        if self._probation:
            return next(iter(self._probation))
        if self._protected:
            return next(iter(self._protected))
        return None

    def evict(self, bytes_needed: int, now: float) -> list[Key]:
        victims: list[Key] = []
        limit = self.capacity - bytes_needed
        window, where, estimate = self._window, self._where, self.freq.estimate
        while self.used > limit and where:
            if window and self.window_used + bytes_needed > self.window_cap:
                cand = next(iter(window))
                size = window[cand]
                main_used = self.used - self.window_used
                if main_used + size <= self.main_cap:
                    del window[cand]  # main has room: no duel
                    self.window_used -= size
                    self._probation[cand] = size
                    where[cand] = _PROBATION
                    continue
                victim = self._main_victim()
                if victim is None or estimate(cand) <= estimate(victim):
                    victim = cand  # TinyLFU: the candidate must be strictly more popular
            else:
                victim = self._main_victim()
                if victim is None:  # keys may be falsy (0, ""): test for None
                    victim = next(iter(window))
            self.on_remove(victim)
            victims.append(victim)
        return victims
