"""ALRFU: LRFU whose recency/frequency balance tunes itself with miniature simulations.

LRFU (Lee et al., IEEE ToC 2001) scores an object by the sum, over its past requests, of a
weight that halves with age: one number that is LRU when old requests fade fast and LFU when
they never fade. Here that sum is kept in time units, as an *effective access time*::

    priority = last_access + tau * b,   b = log(sum over requests i of exp((t_i - last) / tau))

An object requested once has ``b = 0`` (priority = last access: LRU); one requested n times
within ``tau`` has ``b ~ log n`` and stays ``tau * log n`` requests longer. The smallest priority
is evicted. Between requests the priority does not change, so the cache is ordered once, at
insert: unboosted objects enter at the current time, the latest, so a FIFO keeps them; boosted
ones go to a heap. A hit only updates the object's numbers; its queue entry is refreshed lazily
when it surfaces (like a CLOCK's second chance), so hits cost no queue work. Time is counted in
requests (and inserts made without admit()).

Three choices make it work on CDN traffic (see docs/eviction.md for the evidence):

* ``tau = k * objects cached``: the memory of the frequency boost scales with the cache, as
  TinyLFU's sample does (10x the entries).
* Evicted objects leave a ghost (their ``last, b``), for the last 2-4x as many evictions as
  objects are cached, so a returning object resumes its history instead of starting over as a
  possible one-hit wonder.
* ``k`` adapts. Stationary popularity (a Zipf catalog, a scan-polluted web mix) wants a long
  memory (k ~ 32); release-driven churn, where yesterday's hit is today's tail, wants a short one
  (k ~ 4). Hill climbing on the live hit ratio proved too noisy, so ``k`` is chosen by miniature
  simulation (Waldspurger et al., ATC '17): a few shadow caches, the same class with fixed
  ``k`` values, replay a spatially sampled subset of the keys (1 in 2^s, sized so each shadow
  holds ~256 objects) at 1/2^s of the capacity; every 2048 sampled requests the main cache takes
  the ``k`` of the shadow with the most hit bytes, counted with a decay of 0.9 per period. On a
  cache of millions of objects the shadows see one request in thousands and cost nothing; on
  the simulator's small caches (1 key in 32 at most) they add up to an eighth to the work.

The policy is size-neutral on purpose: for the byte miss ratio, a byte of a large object is
worth a byte of a small one, so only the request rate matters.
"""

from __future__ import annotations

import heapq
import math
import zlib
from collections import deque

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
    return stable_hash(key) * _GOLDEN >> 29


class ALRFU(EvictionPolicy):
    name = "alrfu"

    def __init__(
        self,
        capacity: int,
        k: float = 16.0,
        adaptive: bool = True,
        ghost_ratio: float = 4.0,
        grid: tuple[float, ...] = GRID,
        shadow_objects: int = 256,
        shadow_period: int = 2048,
        shadow_min_shift: int = 5,
        score_decay: float = 0.9,
        switch_margin: float = 0.0,
    ) -> None:
        super().__init__(capacity)
        self.k = float(k)
        self.ghost_ratio = ghost_ratio
        # key -> (last, b, size, sampled?, live queue entry). A tuple, replaced on every change,
        # not a list: a tuple of numbers leaves the cyclic GC's lists at its first young
        # collection, while a list per cached and per ghost object made every full collection
        # walk them all (a quarter of the simulator's time; pauses in the daemon).
        self._meta: dict[Key, tuple] = {}
        # Objects wait for eviction in one of two queues, both lazily refreshed. Most objects
        # enter with no boost, at the current time: always the latest, so a FIFO keeps them in
        # order at O(1). Boosted ones (back from the ghost, or found hit when they surface)
        # go to a heap of bare floats (much cheaper to compare than tuples); `_at` maps each
        # float back to its key, equal priorities nudged apart to stay distinct.
        self._fifo: deque[tuple[float, Key]] = deque()
        self._heap: list[float] = []
        self._at: dict[float, Key] = {}
        # The ghost in two generations of plain dicts (key -> the evicted object's record):
        # when the young one holds ghost_ratio/2 x the cached objects it becomes the old one and
        # the old one is dropped, so between 1x and 2x that many evictions are remembered at
        # the cost of dict operations only (an OrderedDict FIFO costs twice as much).
        self._ghost: dict[Key, tuple] = {}
        self._ghost_old: dict[Key, tuple] = {}
        self._ghost_max = 16
        self._clock = 0.0  # a float, as the priorities are (exact: whole numbers below 2^53)
        self.tau = self.k * 256
        self._inv_tau = 1.0 / self.tau
        self._retau_above = 0  # object count past which tau is recomputed
        # miniature simulations (None until the cache first fills and its object count is known)
        self.adaptive = adaptive
        self.grid = grid
        self.shadow_objects = shadow_objects
        self.shadow_period = shadow_period
        self.shadow_min_shift = shadow_min_shift
        self.score_decay = score_decay
        self.switch_margin = switch_margin
        self.shadows: list[ALRFU] = []
        self._mask = -1  # -1: shadows not started
        self._shadow_bytes = [0] * len(grid)
        self._scores = [0.0] * len(grid)
        self._sampled = 0
        self._tag_key: Key = None  # the key admit() last looked at, and whether it is sampled
        self._tag_sampled = False
        # the hottest call of all, bound straight to the dict (no Python frame per request)
        self.contains = self._meta.__contains__  # type: ignore[method-assign]
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
        meta = self._meta
        last, b, size, sampled, p = meta[key]
        if sampled:
            self._shadow(key, size, now)
            # a change of k rebuilt the queues, and the record's entry with them
            last, b, size, sampled, p = meta[key]
        t = self._clock = self._clock + 1.0
        x = b - (t - last) * self._inv_tau
        meta[key] = (t, _log1p(_exp(x)) if x > -40.0 else 0.0, size, sampled, p)

    def admit(self, key: Key, size: int, now: float) -> bool:
        self._clock += 1.0
        self._tag_key = key  # on_insert(key) next belongs to this request
        mask = self._mask
        if mask >= 0:
            # sampled for the shadows? (inlined for int keys, the hot case; on_insert reuses it)
            tag = key * _GOLDEN >> 29 if type(key) is int else _tag(key)
            if not tag & mask:
                self._tag_sampled = True
                self._shadow(key, size, now)
            else:
                self._tag_sampled = False
        else:
            self._tag_sampled = False
            if self.adaptive and self.used + size > self.capacity and self._meta:
                self._start_shadows()
        return size <= self.capacity

    def on_insert(self, key: Key, size: int, now: float) -> None:
        meta = self._meta
        if key in meta:
            self.on_remove(key)
        if key == self._tag_key:
            self._tag_key = None
            t = self._clock
            sampled = self._tag_sampled
        else:
            # stored without admit() (a warm start, a prefetch): an event of its own, so
            # inserts never share a time (nor a heap priority)
            t = self._clock = self._clock + 1.0
            sampled = self._mask >= 0 and not _tag(key) & self._mask
        g = self._ghost.pop(key, None)
        if g is None and self._ghost_old:
            g = self._ghost_old.pop(key, None)
        if g is None:
            b = 0.0
        else:
            x = g[1] - (t - g[0]) * self._inv_tau
            b = _log1p(_exp(x)) if x > -40.0 else 0.0
        if b:
            p = t + self.tau * b
            at = self._at
            while p in at:
                p = _nextafter(p, _INF)
            at[p] = key
            heapq.heappush(self._heap, p)
        else:
            p = t
            self._fifo.append((p, key))
        meta[key] = (t, b, size, sampled, p)  # p: the live queue entry; others are stale
        self.used += size
        if len(meta) > self._retau_above:
            self._retau()  # tau follows the object count while the cache fills

    def on_remove(self, key: Key) -> None:
        m = self._meta.pop(key, None)
        if m is not None:
            self.used -= m[2]  # its heap entry is skipped when it surfaces
            if len(self._heap) + len(self._fifo) > 2 * len(self._meta) + 1024:
                self._rebuild()  # purges left too many stale entries

    def evict(self, bytes_needed: int, now: float) -> list[Key]:
        victims: list[Key] = []
        limit = self.capacity - bytes_needed
        used = self.used
        if used <= limit:
            return victims
        meta, heap, at, ghost, tau = self._meta, self._heap, self._at, self._ghost, self.tau
        fifo = self._fifo
        ghost_max = self._ghost_max
        pop, push, popleft = heapq.heappop, heapq.heappush, fifo.popleft
        while used > limit and meta:
            if fifo and (not heap or fifo[0][0] <= heap[0]):
                p, key = popleft()
            else:
                p = pop(heap)
                key = at.pop(p)
            m = meta.get(key)
            if m is None or m[4] != p:
                continue  # removed or replaced since this entry was pushed
            cur = m[0] + tau * m[1]
            if cur > p:  # hit since it was pushed: requeue at its current priority
                while cur in at:
                    cur = _nextafter(cur, _INF)
                at[cur] = key
                meta[key] = (m[0], m[1], m[2], m[3], cur)
                push(heap, cur)
                continue
            del meta[key]
            used -= m[2]
            victims.append(key)
            ghost[key] = m
            if len(ghost) > ghost_max:
                self._ghost_old = ghost
                ghost = self._ghost = {}
        self.used = used
        return victims

    # ---- tau, k and the shadows ----

    def set_k(self, k: float) -> None:
        self.k = float(k)
        self._retau()

    def _retau(self) -> None:
        n = len(self._meta)
        self._retau_above = int(n * 1.25)
        self._ghost_max = int(self.ghost_ratio * n / 2) + 16  # per generation
        tau = self.k * max(16, n)
        shorter = tau < self.tau
        self.tau = tau
        self._inv_tau = 1.0 / tau
        # A longer tau only raises priorities (b >= 0): every queue entry stays a lower bound of
        # its object's priority, which is all the lazy requeue in evict() needs, so the queues
        # are kept (re-sorting them at each growth step cost the filling cache 5 passes over it).
        if shorter:
            self._rebuild()

    def _rebuild(self) -> None:
        # everything into the heap, at its current priority (tau may have changed)
        self._fifo.clear()
        heap: list[float] = []
        at: dict[float, Key] = {}
        tau = self.tau
        meta = self._meta
        for key, m in meta.items():
            p = m[0] + tau * m[1]
            while p in at:
                p = _nextafter(p, _INF)
            at[p] = key
            meta[key] = (m[0], m[1], m[2], m[3], p)
            heap.append(p)
        heapq.heapify(heap)
        self._heap, self._at = heap, at

    def _start_shadows(self) -> None:
        # 1 key in 2^shift: enough for ~shadow_objects objects per shadow, but never more than 1
        # in 32 (4 shadows then add at most an eighth to the work)
        shift = max(self.shadow_min_shift, (len(self._meta) // self.shadow_objects).bit_length() - 1)
        mask = self._mask = (1 << shift) - 1
        meta = self._meta
        for key, m in meta.items():
            meta[key] = (m[0], m[1], m[2], not _tag(key) & mask, m[4])
        cap = self.capacity >> shift
        self.shadows = [ALRFU(cap, k=g, adaptive=False, ghost_ratio=self.ghost_ratio) for g in self.grid]

    def _shadow(self, key: Key, size: int, now: float) -> None:
        sb = self._shadow_bytes
        for i, shadow in enumerate(self.shadows):
            if shadow.request(key, size, now):
                sb[i] += size
        self._sampled += 1
        if self._sampled >= self.shadow_period:
            # halve the past each period: recent periods decide, one odd period does not
            d = self.score_decay
            scores = self._scores = [d * s + b for s, b in zip(self._scores, sb, strict=True)]
            best = max(range(len(self.grid)), key=scores.__getitem__)
            cur = self.grid.index(self.k) if self.k in self.grid else None
            if cur is None or (best != cur and scores[best] > scores[cur] * (1 + self.switch_margin)):
                self.set_k(self.grid[best])
            self.k_history.append(self.k)
            self._shadow_bytes = [0] * len(self.grid)
            self._sampled = 0
