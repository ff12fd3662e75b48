"""The per-client caps as pure logic: token bucket, connection counts, allow-list, config checks."""

from __future__ import annotations

import pytest

from cdnlab.edge.config import ConfigError, LimitsConfig, from_mapping
from cdnlab.edge.limits import Limiter


def _limiter(**kw: object) -> Limiter:
    return Limiter(LimitsConfig(**kw))  # type: ignore[arg-type]


def test_off_by_default() -> None:
    lim = _limiter()
    assert not lim.enabled
    assert lim.on_accept("192.0.2.1") == (False, None)


def test_token_bucket_burst_then_rate() -> None:
    lim = _limiter(rate_per_client=10, rate_burst=5)
    assert [lim.take("a", 100.0) for _ in range(6)] == [True] * 5 + [False]
    assert lim.take("b", 100.0)  # buckets are per address
    assert not lim.take("a", 100.05)  # half a token
    assert lim.take("a", 100.15)  # a whole one (and a half)
    assert not lim.take("a", 100.15)
    # Idle for long: refilled to the burst, never beyond.
    assert [lim.take("a", 200.0) for _ in range(6)] == [True] * 5 + [False]


def test_prune_forgets_refilled_buckets() -> None:
    lim = _limiter(rate_per_client=10, rate_burst=5)
    lim.take("a", 0.0)
    lim.take("b", 0.4)
    lim.prune(0.6)  # a refilled (0.5 s), b not yet
    assert set(lim.buckets) == {"b"}


def test_connection_cap_and_release() -> None:
    lim = _limiter(conn_per_client=2)
    assert lim.on_accept("a") == (True, None)
    assert lim.on_accept("a") == (True, None)
    assert lim.on_accept("a") == (True, "conn")
    assert lim.on_accept("b") == (True, None)
    lim.on_close("a")
    assert lim.on_accept("a") == (True, None)
    lim.on_close("a")
    lim.on_close("a")
    lim.on_close("b")
    assert lim.conns == {}


def test_allow_list() -> None:
    lim = _limiter(conn_per_client=1, allow=["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"])
    for addr in ("10.1.2.3", "2001:db8::1", "192.0.2.7", "10.0.0.1"):
        assert lim.on_accept(addr) == (False, None)
        assert lim.on_accept(addr) == (False, None)
    assert lim.on_accept("192.0.2.8") == (True, None)
    assert lim.on_accept("not-an-address") == (True, None)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"allow": ["10.0.0.0/33"]}, "limits.allow"),
        ({"rate_per_client": -1}, "limits.rate_per_client"),
        ({"rate_burst": 0}, "limits.rate_burst"),
        ({"body_timeout": 0}, "limits.body_timeout"),
    ],
)
def test_config_errors_name_the_key(limits: dict, message: str) -> None:
    base = {
        "upstreams": ["http://127.0.0.1:1"],
        "state_dir": "/tmp/x",
        "tiers": [{"path": "/tmp/x/f", "kind": "flash", "capacity": "1G"}],
        "limits": limits,
    }
    with pytest.raises(ConfigError, match=message):
        from_mapping(base)


def test_connection_cap_follows_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from cdnlab.edge import limits as mod

    monkeypatch.setattr(mod.resource, "getrlimit", lambda _which: (20000, 20000))
    assert mod.fd_reserve(LimitsConfig(open_files_cache=100)) == 1224
    assert mod.connection_cap(LimitsConfig(open_files_cache=100)) == 20000 - 1224
    assert mod.connection_cap(LimitsConfig(open_files_cache=100, worker_connections=500)) == 500
    assert mod.connection_cap(LimitsConfig(open_files_cache=100, worker_connections=50000)) == 20000 - 1224
