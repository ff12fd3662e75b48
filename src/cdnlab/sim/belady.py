"""Belady's offline optimum (MIN), the bound every policy is measured against.

Both variants know the whole future and may bypass: an object never requested again is not
stored, and a new object whose next request is further away than every stored one's is dropped
instead of evicting anything.

* ``belady-bytes``: evict the object whose next request is furthest away. With equal sizes this
  is exactly optimal (Belady 1966); with variable sizes the exact byte optimum is NP-hard, and
  furthest-next-request is the standard approximation (Berger et al., "Practical Bounds on
  Optimal Caching with Variable Object Sizes", 2018, find it close to optimal for byte miss
  ratio). Exact heap, O(log n) per request.
* ``belady`` (object variant): evict the object with the largest ``distance to next request x
  size``, which favours many small hits over few large ones, as for object miss ratio. As in
  libCacheSim's ``BeladySize.c`` the largest is found among ``samples`` random stored objects
  (all of them when fewer are stored), seeded, so results repeat. Exact for equal sizes and
  small caches.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Hashable

from cdnlab.sim.replay import Progress, Result
from cdnlab.sim.trace import Trace, next_accesses

VARIANTS = ("belady", "belady-bytes")


def belady(
    trace: Trace, capacity: int, variant: str = "belady-bytes", progress: Progress | None = None
) -> Result:
    if variant == "belady-bytes":
        return _furthest(trace, capacity, progress)
    if variant == "belady":
        return _sampled_size(trace, capacity, progress)
    raise ValueError(f"unknown Belady variant {variant!r}: {', '.join(VARIANTS)}")


def _furthest(trace: Trace, capacity: int, progress: Progress | None) -> Result:
    keys, sizes = trace.keys, trace.sizes
    nxt = next_accesses(keys)
    cached: dict[Hashable, int] = {}  # key -> index of its next request
    csize: dict[Hashable, int] = {}
    heap: list[tuple[int, Hashable]] = []  # (-next, key); stale when cached[key] differs
    used = hits = hit_bytes = 0
    for i, (key, size, n) in enumerate(zip(keys, sizes, nxt, strict=True)):
        if progress is not None and not (i + 1) & 0xFFFF:
            progress(0x10000)
        if key in cached:
            hits += 1
            hit_bytes += size
            if n < 0:
                del cached[key]  # never needed again: free its space now
                used -= csize.pop(key)
                continue
            cached[key] = n
            heapq.heappush(heap, (-n, key))
            continue
        if n < 0 or size > capacity:
            continue
        cached[key] = n
        csize[key] = size
        heapq.heappush(heap, (-n, key))
        used += size
        while used > capacity:
            neg, victim = heapq.heappop(heap)
            if cached.get(victim) != -neg:
                continue
            del cached[victim]
            used -= csize.pop(victim)
        if len(heap) > 4 * len(cached) + 1024:
            heap = [(-v, k) for k, v in cached.items()]
            heapq.heapify(heap)
    if progress is not None:
        progress(len(keys) & 0xFFFF)
    return Result(len(keys), hits, sum(sizes), hit_bytes)


def _sampled_size(trace: Trace, capacity: int, progress: Progress | None, samples: int = 64) -> Result:
    keys, sizes = trace.keys, trace.sizes
    nxt = next_accesses(keys)
    rng = random.Random(0)
    slot: dict[Hashable, int] = {}  # key -> position in `stored`, for O(1) random picks
    stored: list[Hashable] = []
    nexts: dict[Hashable, int] = {}
    ssize: dict[Hashable, int] = {}
    used = hits = hit_bytes = 0

    def drop(k: Hashable) -> None:
        nonlocal used
        pos = slot.pop(k)
        last = stored.pop()
        if last != k:
            stored[pos] = last
            slot[last] = pos
        del nexts[k]
        used -= ssize.pop(k)

    for i, (key, size, n) in enumerate(zip(keys, sizes, nxt, strict=True)):
        if progress is not None and not (i + 1) & 0xFFFF:
            progress(0x10000)
        if key in slot:
            hits += 1
            hit_bytes += size
            if n < 0:
                drop(key)
            else:
                nexts[key] = n
            continue
        if n < 0 or size > capacity:
            continue
        slot[key] = len(stored)
        stored.append(key)
        nexts[key] = n
        ssize[key] = size
        used += size
        while used > capacity:
            if len(stored) <= samples:
                pool = stored
            else:
                pool = [stored[int(rng.random() * len(stored))] for _ in range(samples)]
                pool.append(key)  # the newcomer always competes, so bypass stays possible
            victim = max(pool, key=lambda k: (nexts[k] - i) * ssize[k])
            drop(victim)
    if progress is not None:
        progress(len(keys) & 0xFFFF)
    return Result(len(keys), hits, sum(sizes), hit_bytes)
