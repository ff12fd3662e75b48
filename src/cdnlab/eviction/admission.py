"""A size-aware, TinyLFU-style admission filter that wraps any eviction policy.

Most CDN objects are requested once ("one-hit wonders"); storing them pushes out objects that
would have been hit again. The filter counts requests with :class:`FrequencyCounter` (aged by
halving) and admits a missed object only once it has been requested ``min_count`` times in the
recent past (default 2: the second request stores it). Small objects (at most ``small_bytes``,
default 1/100000 of the capacity, so 64 KiB thumbnails and manifests on a 6 GiB tier) are admitted at
once: a wrong guess costs almost no space, while a miss on them costs a full round trip.

Compose by name: ``get_policy("lru+tinylfu", capacity)`` is LRU behind this filter.
"""

from __future__ import annotations

from cdnlab.eviction.base import EvictionPolicy, Key
from cdnlab.eviction.frequency import FrequencyCounter


class TinyLFUAdmission(EvictionPolicy):
    def __init__(
        self,
        inner: EvictionPolicy,
        min_count: int = 2,
        small_bytes: int | None = None,
        sample_factor: int = 10,
    ) -> None:
        # No super().__init__: capacity and used live in the inner policy, read through below.
        self.inner = inner
        self.name = f"{inner.name}+tinylfu"  # type: ignore[misc]  # the pair's own name
        self.min_count = min_count
        self.small_bytes = inner.capacity // 100_000 if small_bytes is None else small_bytes
        self.freq = FrequencyCounter(sample_factor)

    @property  # type: ignore[override]
    def capacity(self) -> int:
        return self.inner.capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        self.inner.capacity = value

    @property  # type: ignore[override]
    def used(self) -> int:
        return self.inner.used

    def contains(self, key: Key) -> bool:
        return self.inner.contains(key)

    def __len__(self) -> int:
        return len(self.inner)

    def on_hit(self, key: Key, now: float) -> None:
        self.freq.record(key, len(self.inner))
        self.inner.on_hit(key, now)

    def admit(self, key: Key, size: int, now: float) -> bool:
        count = self.freq.record(key, len(self.inner))
        if size > self.small_bytes and count < self.min_count:
            return False
        return self.inner.admit(key, size, now)

    def on_insert(self, key: Key, size: int, now: float) -> None:
        self.inner.on_insert(key, size, now)

    def on_remove(self, key: Key) -> None:
        self.inner.on_remove(key)

    def evict(self, bytes_needed: int, now: float) -> list[Key]:
        return self.inner.evict(bytes_needed, now)
