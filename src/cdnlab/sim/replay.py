"""Replay a trace through a policy's :meth:`~cdnlab.eviction.base.EvictionPolicy.request`, the
composition of the daemon's own event calls, and count hits by objects and by bytes."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass

from cdnlab.eviction.base import EvictionPolicy
from cdnlab.sim.trace import Trace

CHUNK = 65536  # requests between progress callbacks: rare enough to cost nothing

Progress = Callable[[int], None]  # called with the number of requests just replayed


@dataclass(frozen=True)
class Result:
    requests: int
    hits: int
    bytes: int
    hit_bytes: int

    @property
    def object_miss_ratio(self) -> float:
        return 1.0 - self.hits / self.requests if self.requests else 0.0

    @property
    def byte_miss_ratio(self) -> float:
        return 1.0 - self.hit_bytes / self.bytes if self.bytes else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"object_miss_ratio": self.object_miss_ratio, "byte_miss_ratio": self.byte_miss_ratio}


def replay(policy: EvictionPolicy, trace: Trace, progress: Progress | None = None) -> Result:
    # The cyclic GC is paused for the replay: no policy leaves a reference cycle behind per
    # request (reference counting frees all they drop), so the collector would only re-walk the
    # records they keep, a fifth of ALRFU's replay time. The caller's setting comes back after.
    collecting = gc.isenabled()
    gc.disable()
    try:
        request = policy.request
        keys, sizes, times = trace.keys, trace.sizes, trace.times
        hits = hit_bytes = 0
        for start in range(0, len(keys), CHUNK):
            end = start + CHUNK
            for key, size, now in zip(keys[start:end], sizes[start:end], times[start:end], strict=True):
                if request(key, size, now):
                    hits += 1
                    hit_bytes += size
            if progress is not None:
                progress(min(end, len(keys)) - start)
    finally:
        if collecting:
            gc.enable()
    return Result(len(keys), hits, sum(sizes), hit_bytes)
