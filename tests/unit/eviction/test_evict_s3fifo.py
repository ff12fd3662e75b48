"""S3-FIFO: new objects enter the small queue; one not hit there goes to the ghost; a ghost hit
goes straight to main; enough hits in small promote to main; main is a 2-bit CLOCK. As in
libCacheSim, nothing moves until the cache is full."""

from __future__ import annotations

from cdnlab.eviction.s3fifo import S3FIFO


def _filled(hits: dict[str, int] | None = None, move_to_main: int = 2) -> S3FIFO:
    """1000 bytes filled with f0..f9 (100 bytes each, all still in the small queue)."""
    c = S3FIFO(1000, move_to_main=move_to_main)  # small queue 100 bytes, main 900
    for i in range(10):
        for _ in range(1 + (hits or {}).get(f"f{i}", 0)):
            c.request(f"f{i}", 100, 0.0)
    assert all(c.in_small(f"f{i}") for i in range(10))
    return c


def test_unhit_objects_leave_small_for_the_ghost_and_a_ghost_hit_goes_to_main() -> None:
    c = _filled()
    c.request("a", 100, 1.0)  # full: small's oldest (f0, never hit) is evicted, remembered
    assert not c.contains("f0") and c.in_ghost("f0")
    assert c.in_small("a")
    c.request("f0", 100, 2.0)  # a miss, but remembered: straight into main
    assert c.in_main("f0") and not c.in_ghost("f0")
    assert c.in_ghost("f1")  # room for it came from small


def test_hits_in_small_promote_to_main() -> None:
    c = _filled({"f0": 2})  # two hits while in small
    c.request("a", 100, 1.0)
    assert c.in_main("f0")  # promoted, not evicted
    assert c.in_ghost("f1")  # the next one, never hit, was evicted


def test_one_hit_is_not_enough_with_the_default_threshold() -> None:
    c = _filled({"f0": 1})
    c.request("a", 100, 1.0)
    assert c.in_ghost("f0")
    c1 = _filled({"f0": 1}, move_to_main=1)  # the paper's threshold
    c1.request("a", 100, 1.0)
    assert c1.in_main("f0")


def test_main_gives_hit_objects_another_pass() -> None:
    c = _filled({f"f{i}": 2 for i in range(10)})
    c.request("a", 100, 1.0)  # all promoted; main overflows and its oldest, f0, goes
    assert not c.contains("f0")
    assert all(c.in_main(f"f{i}") for i in range(1, 10)) and c.in_small("a")
    c.request("f1", 100, 2.0)  # f1 is main's oldest, but hit: its counter is 1
    victims = c.evict(200, 3.0)
    assert victims == ["a", "f2"]  # small's unhit a, then main skips f1 (counter back to 0)
    assert c.contains("f1")


def test_ghost_is_bounded_in_bytes() -> None:
    c = S3FIFO(1000, ghost_ratio=0.5)
    for i in range(100):
        c.request(i, 100, float(i))
    assert c.ghost_used <= 500
    assert c.in_ghost(89) and not c.in_ghost(84) and not c.in_ghost(0)
