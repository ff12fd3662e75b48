"""ALRFU: the effective access time, its heap, the ghost and the self-tuning k."""

from __future__ import annotations

import math
import random

import pytest

from cdnlab.eviction.alrfu import ALRFU, GRID, stable_hash
from cdnlab.eviction.lru import LRU


def test_a_frequent_object_outlives_newer_one_hit_objects() -> None:
    c = ALRFU(400, k=16, adaptive=False)
    for _ in range(4):
        c.request("hot", 100, 0.0)
    for k in "abcdef":  # a stream of one-hit objects
        c.request(k, 100, 0.0)
    assert c.contains("hot")
    assert c.priority("hot") > max(c.priority(k) for k in "abcdef" if c.contains(k))


def test_with_a_tiny_k_it_is_lru() -> None:
    rng = random.Random(1)
    a, b = ALRFU(5000, k=1e-9, adaptive=False), LRU(5000)
    for i in range(3000):
        key = rng.randrange(80)
        assert a.request(key, 100, float(i)) == b.request(key, 100, float(i))


def test_priority_is_recency_plus_a_log_frequency_boost() -> None:
    c = ALRFU(10_000, k=1.0, adaptive=False)
    c.request("x", 1, 0.0)
    assert c.priority("x") == pytest.approx(1)  # requested once: its access time
    assert c.tau == 16  # k x max(16, objects cached)
    c.request("x", 1, 0.0)  # again, one request later: b = log(1 + e^(-1/tau))
    assert c.priority("x") == pytest.approx(2 + 16 * math.log1p(math.exp(-1 / 16)))
    for _ in range(50):
        c.request("x", 1, 0.0)  # many requests within tau: b grows like log(n)
    assert c.priority("x") - c._clock == pytest.approx(16 * math.log(16), rel=0.1)  # type: ignore[attr-defined]


def test_the_ghost_returns_history_to_an_evicted_object() -> None:
    c = ALRFU(300, k=16, adaptive=False)
    for _ in range(3):
        c.request("x", 100, 0.0)
    c.on_remove("x")  # removal is not eviction: no ghost
    c.request("x", 100, 0.0)
    fresh = c.priority("x") - c._clock  # type: ignore[attr-defined]
    assert fresh == 0.0
    c2 = ALRFU(200, k=16, adaptive=False)
    for _ in range(3):
        c2.request("x", 100, 0.0)
    victims = c2.evict(200, 0.0)
    assert victims == ["x"]
    c2.request("x", 100, 0.0)  # back from the ghost: its boost resumes
    assert c2.priority("x") - c2._clock > 0  # type: ignore[attr-defined]


def test_equal_priorities_stay_distinct_in_the_heap() -> None:
    c = ALRFU(1000, adaptive=False)
    for k in "abc":
        c.on_insert(k, 100, 0.0)
    for k in "abc":  # three objects last seen at the same instant, unboosted: one priority
        c._meta[k] = (6, 0.0, 100, False, c._meta[k][4])  # type: ignore[attr-defined]
    c.set_k(4.0)  # a shorter tau re-sorts everything into the heap
    assert len(c._heap) == 3 and len(set(c._at)) == 3  # type: ignore[attr-defined]
    assert sorted(c.evict(1000, 0.0)) == ["a", "b", "c"]


class _EagerALRFU(ALRFU):
    """Re-sorts its queues at every change of tau, as ALRFU once did: the reference for the
    lazily refreshed queues ALRFU keeps when tau grows."""

    def _retau(self) -> None:
        super()._retau()
        self._rebuild()


def test_queues_kept_across_a_growing_tau_evict_as_if_re_sorted() -> None:
    rng = random.Random(11)
    opts = {"shadow_objects": 16, "shadow_period": 64, "shadow_min_shift": 2}
    lazy, eager = ALRFU(300_000, **opts), _EagerALRFU(300_000, **opts)  # type: ignore[arg-type]
    hits: dict[int, list[bool]] = {id(lazy): [], id(eager): []}
    for i in range(40_000):
        hot = 4000 * (i // 10_000)  # the popular set moves every 10k requests
        key = hot + int(rng.paretovariate(0.7)) % 4000 if rng.random() < 0.8 else 100_000 + i
        size = rng.choice((50, 100, 400, 2000))
        for c in (lazy, eager):
            hits[id(c)].append(c.request(key, size, float(i)))
    assert lazy.k_history == eager.k_history and len(set(lazy.k_history)) > 1  # tau shrank too
    assert hits[id(lazy)] == hits[id(eager)]
    assert set(lazy._meta) == set(eager._meta)  # type: ignore[attr-defined]


def test_shadows_pick_k_from_the_grid_deterministically() -> None:
    def run() -> ALRFU:
        rng = random.Random(3)
        c = ALRFU(40_000, shadow_objects=16, shadow_period=256)
        for i in range(30_000):
            key = int(rng.paretovariate(0.8)) % 5000 if rng.random() < 0.7 else 10_000 + i
            c.request(key, 100, float(i))
        return c

    a, b = run(), run()
    assert a.shadows and len(a.shadows) == len(GRID)
    assert a.k_history and set(a.k_history) <= set(GRID)
    assert a.k_history == b.k_history
    assert all(s.capacity == a.capacity >> (a._mask.bit_length()) for s in a.shadows)  # type: ignore[attr-defined]


def test_stable_hash_is_the_same_in_every_process() -> None:
    assert stable_hash(12345) == 12345
    assert stable_hash("abc") == 891568578  # CRC-32, not the per-process salted hash()
    assert stable_hash(b"abc") == 891568578


def test_warm_start_of_many_rows_keeps_inserts_apart() -> None:
    # restore() inserts without admit(): each insert must be its own event, or every object
    # would share one priority and the tie-breaking would turn quadratic.
    c = ALRFU(20_000 * 100, adaptive=False)
    dropped = c.restore((i, 100, float(i), 0) for i in range(30_000))
    assert len(c) == 20_000 and len(dropped) == 10_000
    assert c.used == 20_000 * 100
    assert set(dropped) == set(range(10_000))  # the oldest accesses went first
    assert len(set(c._at)) == len(c._heap)  # type: ignore[attr-defined]
