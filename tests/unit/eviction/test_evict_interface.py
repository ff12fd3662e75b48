"""Every policy keeps the interface's contract: exact byte accounting, victims forgotten before
they are returned, removals and replacements handled, and ``request`` composed of the very
primitives the daemon calls (no policy overrides it)."""

from __future__ import annotations

import random

import pytest

from cdnlab.eviction import DEFAULT_POLICY, EvictionPolicy, get_policy, policy_names
from cdnlab.eviction.registry import POLICIES

ALL = policy_names()


def _stored_bytes(policy: EvictionPolicy, sizes: dict[int, int]) -> int:
    return sum(size for key, size in sizes.items() if policy.contains(key))


@pytest.mark.parametrize("name", ALL)
def test_accounting_under_random_events(name: str) -> None:
    rng = random.Random(name)
    capacity = 50_000
    policy = get_policy(name, capacity)
    sizes: dict[int, int] = {}
    for step in range(4000):
        key = int(rng.paretovariate(1.0) * 10) % 400
        now = step * 10.0
        size = sizes.setdefault(key, rng.randint(1, 6000))
        op = rng.random()
        if op < 0.03:
            policy.on_remove(key)  # purge (also of keys never stored: ignored)
        elif policy.contains(key):
            policy.on_hit(key, now)
        elif policy.admit(key, size, now):
            before = {k for k in sizes if policy.contains(k)}
            victims = policy.evict(size, now)
            assert len(victims) == len(set(victims))
            assert set(victims) <= before
            assert not any(policy.contains(v) for v in victims)
            assert policy.used + size <= capacity
            policy.on_insert(key, size, now)
        assert policy.used == _stored_bytes(policy, sizes)
        assert policy.used <= capacity
        assert len(policy) == sum(1 for k in sizes if policy.contains(k))


@pytest.mark.parametrize("name", ALL)
def test_replacing_a_key_and_shrinking_capacity(name: str) -> None:
    policy = get_policy(name, 10_000)
    for k in range(5):
        policy.request(k, 1000, float(k))
    stored = [k for k in range(5) if policy.contains(k)]
    if stored:  # an admission filter may have kept them all out: nothing to replace then
        k = stored[0]
        policy.on_insert(k, 3000, 10.0)  # a new version of the object, another size
        assert policy.contains(k)
        assert policy.used == 3000 + 1000 * (len(stored) - 1)
    policy.capacity = 2500  # a tier watermark: evict(0) brings the cache under it
    victims = policy.evict(0, 11.0)
    assert policy.used <= 2500
    assert all(not policy.contains(v) for v in victims)


@pytest.mark.parametrize("name", ALL)
def test_objects_larger_than_the_cache_are_never_admitted(name: str) -> None:
    policy = get_policy(name, 1000)
    for _ in range(3):
        assert policy.admit("huge", 1001, 0.0) is False
        assert policy.request("huge", 1001, 0.0) is False
    assert policy.used == 0


def test_request_is_the_shared_composition() -> None:
    # The simulator must run the daemon's code: no policy may bring its own request().
    for name in ALL:
        assert type(get_policy(name, 1000)).request is EvictionPolicy.request, name


@pytest.mark.parametrize("name", list(POLICIES))
def test_request_equals_the_daemon_call_sequence(name: str) -> None:
    rng = random.Random(7)
    trace = [(rng.randrange(60), rng.choice((100, 700, 2500))) for _ in range(3000)]
    sizes: dict[int, int] = {}
    sim = get_policy(name, 20_000)
    daemon = get_policy(name, 20_000)
    for i, (key, size) in enumerate(trace):
        size = sizes.setdefault(key, size)
        hit = sim.request(key, size, float(i))
        # what the edge does, spelled out
        if daemon.contains(key):
            daemon.on_hit(key, float(i))
            assert hit
        else:
            assert not hit
            if daemon.admit(key, size, float(i)):
                daemon.evict(size, float(i))
                daemon.on_insert(key, size, float(i))
        assert sim.used == daemon.used


def test_registry() -> None:
    assert DEFAULT_POLICY in POLICIES
    assert get_policy("default", 100).name == DEFAULT_POLICY
    assert get_policy("LRU", 100).name == "lru"
    assert get_policy("sieve+tinylfu", 100).name == "sieve+tinylfu"
    assert get_policy("oca-lfu", 100, age_out=60.0).age_out == 60.0  # type: ignore[attr-defined]
    assert get_policy("lru+tinylfu", 100, admission_min_count=3).min_count == 3  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        get_policy("nope", 100)
    with pytest.raises(ValueError):
        get_policy("lru+nope", 100)


@pytest.mark.parametrize("name", list(POLICIES))
def test_restore_warm_starts_from_an_index(name: str) -> None:
    policy = get_policy(name, 3000)
    dropped = policy.restore(
        [("a", 1000, 1.0, 5), ("b", 1000, 2.0, 0), ("c", 1000, 3.0, 1), ("d", 9999, 4.0, 0)]
    )
    assert "d" in dropped  # larger than the cache
    assert policy.used == sum(1000 for k in "abc" if policy.contains(k))
    assert policy.used <= 3000
