"""ALRFU: LRFU whose recency/frequency balance tunes itself with miniature simulations.

LRFU (Lee et al., IEEE ToC 2001) scores an object by the sum, over its past requests, of a
weight that halves with age: one number that is LRU when old requests fade fast and LFU when
they never fade. Here that sum is kept in time units, as an *effective access time*::

    priority = last_access + tau * b,   b = log(sum over requests i of exp((t_i - last) / tau))

An object requested once has ``b = 0`` (priority = last access: LRU); one requested n times
within ``tau`` has ``b ~ log n`` and stays ``tau * log n`` requests longer. The smallest priority
is evicted. Between requests the priority does not change, so a heap orders the cache; a hit only
updates the object's numbers, and its heap entry is refreshed lazily when it surfaces (like a
CLOCK's second chance), so hits cost no heap work. Time is counted in requests.

Three choices make it work on CDN traffic (see docs/eviction.md for the evidence):

* ``tau = k * objects cached``: the memory of the frequency boost scales with the cache, as
  TinyLFU's sample does (10x the entries).
* Evicted objects leave a ghost (their ``last, b``) for twice as many objects as are cached, so a
  returning object resumes its history instead of starting as a one-hit wonder.
* ``k`` adapts. Stationary popularity (a Zipf catalog, a scan-polluted web mix) wants a long
  memory (k ~ 32); release-driven churn, where yesterday's hit is today's tail, wants a short one
  (k ~ 4). Hill climbing on the live hit ratio proved too noisy, so ``k`` is chosen by miniature
  simulation (Waldspurger et al., ATC '17): a few shadow caches, the same class with fixed
  ``k`` values, replay a spatially sampled subset of the keys (1 in 2^s, sized so each shadow
  holds ~256 objects) at 1/2^s of the capacity; every 2048 sampled requests the main cache takes
  the ``k`` of the shadow with the best recent byte hit ratio. On a cache of millions of objects
  the shadows see one request in thousands and cost nothing; on tiny caches they cost more.

The policy is size-neutral on purpose: for the byte miss ratio, a byte of a large object is
worth a byte of a small one, so only the request rate matters.
"""

from __future__ import annotations

import heapq
import math
import zlib
from collections import OrderedDict

from cdnlab.eviction.base import EvictionPolicy, Key

GRID = (4.0, 8.0, 16.0, 32.0)  # the k values the shadows try
_GOLDEN = 0x9E3779B97F4A7C15
_exp, _log1p, _nextafter, _INF = math.exp, math.log1p, math.nextafter, math.inf


def stable_hash(key: Key) -> int:
    """A hash that is the same in every process (``hash(str)`` is salted), so sampling, and
    with it every simulation, repeats exactly."""
    if type(key) is int:
        return key
    if isinstance(key, str):
        return zlib.crc32(key.encode())
    if isinstance(key, bytes):
        return zlib.crc32(key)
    return hash(key)


def _tag(key: Key) -> int:
    # well-mixed bits of the key: a key is sampled when (tag & mask) == 0
    return (stable_hash(key) * _GOLDEN >> 29) & 0xFFFFFFFF


class ALRFU(EvictionPolicy):
    name = "alrfu"

    def __init__(
        self,
        capacity: int,
        k: float = 16.0,
        adaptive: bool = True,
        ghost_ratio: float = 2.0,
        grid: tuple[float, ...] = GRID,
        shadow_objects: int = 256,
        shadow_period: int = 2048,
    ) -> None:
        super().__init__(capacity)
        self.k = float(k)
        self.ghost_ratio = ghost_ratio
        self._meta: dict[Key, list] = {}  # key -> [last, b, size, sample tag, live heap entry]
        self._heap: list[float] = []  # priorities when pushed; lazily refreshed
        self._at: dict[float, Key] = {}  # heap entry -> key
        self._ghost: OrderedDict[Key, tuple[int, float]] = OrderedDict()  # key -> (last, b)
        self._clock = 0
        self.tau = self.k * 256
        self._inv_tau = 1.0 / self.tau
        self._retau_above = 0  # object count past which tau is recomputed
        # miniature simulations (None until the cache first fills and its object count is known)
        self.adaptive = adaptive
        self.grid = grid
        self.shadow_objects = shadow_objects
        self.shadow_period = shadow_period
        self.shadows: list[ALRFU] = []
        self._mask = -1  # -1: shadows not started
        self._shadow_bytes = [0] * len(grid)
        self._scores = [0.0] * len(grid)
        self._sampled = 0
        self._tag_key: Key = None
        self._tag = 0
        self.k_history: list[float] = []  # k after each shadow period (for docs and tests)

    def contains(self, key: Key) -> bool:
        return key in self._meta

    def __len__(self) -> int:
        return len(self._meta)

    def priority(self, key: Key) -> float:
        m = self._meta[key]
        return m[0] + self.tau * m[1]

    # ---- events ----

    def on_hit(self, key: Key, now: float) -> None:
        m = self._meta[key]
        if self._mask >= 0 and not m[3] & self._mask:
            self._shadow(key, m[2], now)
        t = self._clock = self._clock + 1
        x = m[1] - (t - m[0]) * self._inv_tau
        m[1] = _log1p(_exp(x)) if x > -40.0 else 0.0
        m[0] = t

    def admit(self, key: Key, size: int, now: float) -> bool:
        self._clock += 1
        if self._mask >= 0:
            # the sampling tag, inlined for int keys (the hot case); on_insert reuses it
            tag = (key * _GOLDEN >> 29) & 0xFFFFFFFF if type(key) is int else _tag(key)
            self._tag_key, self._tag = key, tag
            if not self._tag & self._mask:
                self._shadow(key, size, now)
        elif self.adaptive and self.used + size > self.capacity and self._meta:
            self._start_shadows()
        return size <= self.capacity

    def on_insert(self, key: Key, size: int, now: float) -> None:
        if key in self._meta:
            self.on_remove(key)
        t = self._clock
        g = self._ghost.pop(key, None)
        if g is None:
            b = 0.0
        else:
            x = g[1] - (t - g[0]) * self._inv_tau
            b = _log1p(_exp(x)) if x > -40.0 else 0.0
        tag = self._tag if key is self._tag_key else _tag(key)
        m = self._meta[key] = [t, b, size, tag, 0.0]
        self._push(key, m, t + self.tau * b)
        self.used += size
        if len(self._meta) > self._retau_above:
            self._retau()  # tau follows the object count while the cache fills

    def _push(self, key: Key, m: list, p: float) -> None:
        # The heap holds bare floats (much cheaper to compare than tuples); `_at` maps each
        # one back to its key, so equal priorities are nudged apart to stay distinct.
        at = self._at
        while p in at:
            p = _nextafter(p, _INF)
        at[p] = key
        m[4] = p  # the object's live entry; any other entry for it is stale
        heapq.heappush(self._heap, p)

    def on_remove(self, key: Key) -> None:
        m = self._meta.pop(key, None)
        if m is not None:
            self.used -= m[2]  # its heap entry is skipped when it surfaces

    def evict(self, bytes_needed: int, now: float) -> list[Key]:
        victims: list[Key] = []
        limit = self.capacity - bytes_needed
        used = self.used
        if used <= limit:
            return victims
        meta, heap, at, ghost, tau = self._meta, self._heap, self._at, self._ghost, self.tau
        ghost_max = int(self.ghost_ratio * len(meta)) + 16
        pop = heapq.heappop
        while used > limit and meta:
            p = pop(heap)
            key = at.pop(p)
            m = meta.get(key)
            if m is None or m[4] != p:
                continue  # removed or replaced since this entry was pushed
            cur = m[0] + tau * m[1]
            if cur > p:
                self._push(key, m, cur)  # hit since: requeue at its current priority
                continue
            del meta[key]
            used -= m[2]
            victims.append(key)
            ghost[key] = (m[0], m[1])
            if len(ghost) > ghost_max:
                ghost.popitem(last=False)
        self.used = used
        if len(heap) > 2 * len(meta) + 1024:
            self._rebuild()
        return victims

    # ---- tau, k and the shadows ----

    def set_k(self, k: float) -> None:
        self.k = float(k)
        self._retau()

    def _retau(self) -> None:
        n = len(self._meta)
        self._retau_above = int(n * 1.25)
        self.tau = self.k * max(256, n)
        self._inv_tau = 1.0 / self.tau
        self._rebuild()

    def _rebuild(self) -> None:
        self._heap = []
        self._at = {}
        tau = self.tau
        for key, m in self._meta.items():
            p = m[0] + tau * m[1]
            while p in self._at:
                p = _nextafter(p, _INF)
            self._at[p] = key
            m[4] = p
            self._heap.append(p)
        heapq.heapify(self._heap)

    def _start_shadows(self) -> None:
        shift = max(0, (len(self._meta) // self.shadow_objects).bit_length() - 1)
        self._mask = (1 << shift) - 1
        self.shadows = [ALRFU(self.capacity >> shift, k=g, adaptive=False) for g in self.grid]

    def _shadow(self, key: Key, size: int, now: float) -> None:
        sb = self._shadow_bytes
        for i, shadow in enumerate(self.shadows):
            if shadow.request(key, size, now):
                sb[i] += size
        self._sampled += 1
        if self._sampled >= self.shadow_period:
            # halve the past each period: recent periods decide, one odd period does not
            self._scores = [0.5 * s + b for s, b in zip(self._scores, sb, strict=True)]
            best = max(range(len(self.grid)), key=self._scores.__getitem__)
            if self.grid[best] != self.k:
                self.set_k(self.grid[best])
            self.k_history.append(self.k)
            self._shadow_bytes = [0] * len(self.grid)
            self._sampled = 0
