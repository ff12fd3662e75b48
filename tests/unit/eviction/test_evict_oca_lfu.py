"""The seed's policy: lowest view count first, larger file first on a tie, anything not accessed
for 30 days before that, and unlicensed content never kept."""

from __future__ import annotations

from cdnlab.eviction.oca_lfu import THIRTY_DAYS, OcaLFU

DAY = 86400.0


def test_lowest_count_goes_first() -> None:
    c = OcaLFU(300)
    for k in "abc":
        c.request(k, 100, 0.0)
    c.request("a", 100, 1.0)
    c.request("c", 100, 1.0)
    c.request("c", 100, 2.0)
    assert c.count("c") == 3
    assert c.evict(100, 3.0) == ["b"]


def test_equal_counts_evict_the_larger_file_first() -> None:
    c = OcaLFU(1000)
    c.request("small", 100, 0.0)
    c.request("large", 500, 1.0)
    c.request("mid", 300, 2.0)
    assert c.evict(300, 3.0) == ["large"]


def test_thirty_day_age_out_beats_popularity() -> None:
    c = OcaLFU(300)
    c.request("old-hit", 100, 0.0)
    for i in range(50):
        c.request("old-hit", 100, float(i))  # very popular, then forgotten
    c.request("b", 100, 20 * DAY)
    c.request("c", 100, 20 * DAY)
    now = 49 + THIRTY_DAYS + 1
    assert c.evict(100, now) == ["old-hit"]
    # within 30 days, LFU order rules again
    c2 = OcaLFU(300)
    for i in range(5):
        c2.request("hot", 100, float(i))
    c2.request("b", 100, 20 * DAY)
    c2.request("c", 100, 20 * DAY)
    assert c2.evict(100, 29 * DAY) == ["b"]


def test_unlicensed_content_is_never_kept() -> None:
    licensed = {"a", "b"}
    c = OcaLFU(1000, licensed=lambda k: k in licensed)
    assert c.admit("a", 100, 0.0)
    assert not c.admit("x", 100, 0.0)
    for k in ("a", "b", "x"):
        c.request(k, 100, 0.0)
    assert not c.contains("x")
    assert c.request("a", 100, 1.0)
    for _ in range(10):
        c.request("a", 100, 2.0)  # popular, but about to lose its license
    licensed.discard("a")
    used = c.used
    assert c.relicense() == ["a"]  # dropped at once, however popular, for the caller to delete
    assert not c.contains("a") and c.used == used - 100
    assert c.relicense() == []


def test_hit_refreshes_heap_entries() -> None:
    c = OcaLFU(200)
    c.request("a", 100, 0.0)
    c.request("b", 100, 0.0)
    for i in range(500):  # many hits: stale heap entries must be rebuilt away
        c.request("a", 100, float(i))
    assert len(c._heap) <= 2 * len(c) + 64 + 1
    assert c.evict(100, 600.0) == ["b"]
