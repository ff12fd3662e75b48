"""SIEVE's hand: it walks from the oldest object toward the newest, clears visited bits, evicts
the first unvisited object and stays there; survivors never move."""

from __future__ import annotations

from cdnlab.eviction.sieve import Sieve


def _fill(s: Sieve, keys: str) -> None:
    for k in keys:
        s.request(k, 1, 0.0)


def test_hand_skips_visited_and_stays_put() -> None:
    s = Sieve(4)
    _fill(s, "abcd")  # a is the oldest (tail), d the newest (head)
    s.request("a", 1, 0.0)
    s.request("b", 1, 0.0)  # a and b visited
    s.request("e", 1, 0.0)  # hand: a (clear), b (clear), c evicted; hand now at d
    assert not s.contains("c")
    assert s.hand_key() == "d"
    s.request("f", 1, 0.0)  # d unvisited: evicted where the hand stood
    assert not s.contains("d")
    assert s.hand_key() == "e"
    s.request("g", 1, 0.0)  # e unvisited, evicted; f next
    assert not s.contains("e")
    assert sorted(k for k in "abcdefg" if s.contains(k)) == ["a", "b", "f", "g"]


def test_hand_wraps_to_the_tail() -> None:
    s = Sieve(3)
    _fill(s, "abc")
    for k in "abc":
        s.request(k, 1, 0.0)  # all visited
    s.request("d", 1, 0.0)  # full lap clears every bit, then evicts a (the tail)
    assert not s.contains("a")
    assert [k for k in "bcd" if s.contains(k)] == ["b", "c", "d"]


def test_removing_the_object_under_the_hand_moves_the_hand() -> None:
    s = Sieve(4)
    _fill(s, "abcd")
    s.request("e", 1, 0.0)  # a evicted, hand at b
    assert s.hand_key() == "b"
    s.on_remove("b")
    assert s.hand_key() == "c"
    s.request("f", 1, 0.0)  # fills the room b left
    s.request("g", 1, 0.0)  # the hand starts at c
    assert not s.contains("c")
