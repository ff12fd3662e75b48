"""W-TinyLFU's window and duel, and the TinyLFU-style admission filter."""

from __future__ import annotations

from cdnlab.eviction import get_policy
from cdnlab.eviction.frequency import MAX_COUNT, FrequencyCounter
from cdnlab.eviction.wtinylfu import WTinyLFU


def test_new_objects_enter_the_window_and_hits_promote() -> None:
    c = WTinyLFU(10_000, window_ratio=0.1)
    c.request("a", 500, 0.0)
    assert c.segment("a") == "window"
    c.request("b", 600, 1.0)  # window over 1000 bytes: a moves to probation (main has room)
    assert c.segment("a") == "probation"
    c.request("a", 500, 2.0)
    assert c.segment("a") == "protected"


def test_a_cold_candidate_loses_the_duel() -> None:
    c = WTinyLFU(1000, window_ratio=0.1)  # window 100 bytes, main 900
    for k in range(9):  # fill main with popular objects
        for _ in range(4):
            c.request(k, 100, 0.0)
    c.request("cold", 100, 1.0)
    c.request("cold2", 100, 2.0)  # pushes cold out of the window: it duels main's victim
    assert not c.contains("cold")
    assert all(c.contains(k) for k in range(9))


def test_a_popular_candidate_wins_the_duel() -> None:
    c = WTinyLFU(1000, window_ratio=0.1)
    for k in range(9):
        c.request(k, 100, 0.0)
    for _ in range(5):
        c.admit("hot", 100, 0.5)  # requested often while not stored (counted on each miss)
    c.request("hot", 100, 1.0)
    c.request("next", 100, 2.0)  # hot leaves the window and beats a once-seen victim
    assert c.contains("hot")
    assert c.used <= 1000


def test_frequency_counter_ages_by_halving() -> None:
    f = FrequencyCounter(sample_factor=1, min_sample=100)
    for _ in range(40):
        f.record("a", 0)
    assert f.estimate("a") == MAX_COUNT  # saturates
    for i in range(60):
        f.record(i, 0)  # the 100th request ends the sample
    assert f.resets == 1
    assert f.estimate("a") == MAX_COUNT // 2
    assert f.estimate(5) == 0  # a count of 1 halves away, and the key is forgotten


def test_admission_filter_wants_a_second_request_for_large_objects() -> None:
    c = get_policy("lru+tinylfu", 10_000_000)  # small_bytes = 100 bytes
    assert not c.request("big", 50_000, 0.0)
    assert not c.contains("big")  # first request: not stored
    assert not c.request("big", 50_000, 1.0)  # second request: a miss, but stored
    assert c.contains("big")
    assert c.request("big", 50_000, 2.0)
    c.request("tiny", 100, 3.0)  # small objects are stored at once
    assert c.contains("tiny")
    c.on_remove("tiny")
    assert not c.contains("tiny") and c.used == 50_000
