"""Recent request frequency, aged like TinyLFU (Einziger et al., 2017).

TinyLFU counts every request in an approximate sketch and halves all counters after a sample of
W requests, so counts describe the recent past and old popularity fades. Here the counts are an
exact dict instead of a count-min sketch: in Python one dict lookup is cheaper than four sketch
hashes, and halving drops every key whose count reaches zero, so the dict never holds more than
the distinct keys of one sample (W is ten times the objects cached, as in Caffeine). Counters
saturate at 15, like TinyLFU's 4-bit ones.
"""

from __future__ import annotations

from cdnlab.eviction.base import Key

MAX_COUNT = 15


class FrequencyCounter:
    def __init__(self, sample_factor: int = 10, min_sample: int = 1024) -> None:
        self.sample_factor = sample_factor
        self.min_sample = min_sample
        self._counts: dict[Key, int] = {}
        self._seen = 0
        self._period = min_sample
        self.resets = 0

    def estimate(self, key: Key) -> int:
        return self._counts.get(key, 0)

    def record(self, key: Key, cached_objects: int) -> int:
        """Count one request for KEY and return its new count. CACHED_OBJECTS sets the length
        of the next sample when this one ends (caches holding more objects remember longer)."""
        counts = self._counts
        c = counts.get(key, 0)
        if c < MAX_COUNT:
            c += 1
            counts[key] = c
        self._seen += 1
        if self._seen >= self._period:
            self._age(cached_objects)
        return c

    def _age(self, cached_objects: int) -> None:
        self._counts = {k: v >> 1 for k, v in self._counts.items() if v > 1}
        self._seen = 0
        self._period = max(self.min_sample, self.sample_factor * cached_objects)
        self.resets += 1

    def __len__(self) -> int:
        return len(self._counts)
