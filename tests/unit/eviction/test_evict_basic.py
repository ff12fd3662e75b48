"""LRU and FIFO on hand-made sequences."""

from __future__ import annotations

from cdnlab.eviction import get_policy


def test_lru_evicts_least_recently_used() -> None:
    lru = get_policy("lru", 300)
    for k in "abc":
        lru.request(k, 100, 0.0)
    assert lru.request("a", 100, 1.0)  # a is now the most recent
    assert not lru.request("d", 100, 2.0)  # evicts b
    assert [k for k in "abcd" if lru.contains(k)] == ["a", "c", "d"]


def test_lru_frees_enough_bytes_for_a_large_object() -> None:
    lru = get_policy("lru", 300)
    for k in "abc":
        lru.request(k, 100, 0.0)
    assert lru.evict(250, 1.0) == ["a", "b", "c"]
    assert lru.used == 0
    assert lru.evict(10, 1.0) == []


def test_fifo_ignores_hits() -> None:
    fifo = get_policy("fifo", 300)
    for k in "abc":
        fifo.request(k, 100, 0.0)
    fifo.request("a", 100, 1.0)
    fifo.request("d", 100, 2.0)
    assert not fifo.contains("a")
