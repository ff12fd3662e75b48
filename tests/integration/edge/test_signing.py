"""Signed URLs (issue 2, daemon point 8; src/cdnlab/signing.py for the scheme)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from cdnlab.signing import sign_path
from helpers import Edge, Nginx, RawConn, build_request, edge, exchange, parse_all, sha256

from .edgecheck import assert_common, assert_hit, assert_miss_stored, config_toml

KEYS = {"k1": "first-secret", "k2": "second-secret"}


@pytest.fixture(scope="module")
def signed_edge(tmp_path_factory: pytest.TempPathFactory, origin: Nginx) -> Iterator[Edge]:
    cfg = config_toml(extra='[signing]\nkeys = {{ k1 = "first-secret", k2 = "second-secret" }}\n')
    with edge(tmp_path_factory.mktemp("signed"), [origin.url], config=cfg) as e:
        yield e


def _get(e: Edge, target: str, method: str = "GET"):  # type: ignore[no-untyped-def]
    raw, _ = exchange(e.port, build_request(method, target, {"Connection": "close"}))
    (r,) = parse_all(raw, [method])
    return r


def test_refused_requests_never_reach_the_origin(signed_edge: Edge, origin: Nginx) -> None:
    path = "/signed/refused.bin"
    origin.put(path, 5000)
    now = int(time.time())
    good = sign_path(path, "k1", KEYS["k1"], now + 600)
    sig = good.rsplit("sig=", 1)[1]
    bad_cases = {
        "unsigned": path,
        "expired": sign_path(path, "k1", KEYS["k1"], now - 10),
        "forged": good[:-4] + ("0000" if not good.endswith("0000") else "1111"),
        "wrong-key": sign_path(path, "k1", "not-the-secret", now + 600),
        "unknown-kid": sign_path(path, "k9", KEYS["k1"], now + 600),
        "other-path": sign_path("/signed/other.bin", "k1", KEYS["k1"], now + 600).replace(
            "/signed/other.bin", path
        ),
        "exp-tampered": good.replace(f"exp={now + 600}", f"exp={now + 6000}"),
        "kid-swapped": good.replace("kid=k1", "kid=k2"),
        "no-sig": good.split("&sig=")[0],
        "short-sig": good.replace(sig, sig[:20]),
    }
    for name, target in bad_cases.items():
        for method in ("GET", "HEAD"):
            r = _get(signed_edge, target, method)
            assert r.status == 403, (name, method, r.status, r.body[:200])
            assert_common(r, method)
    assert origin.fetches(path) == 0, "a refused request reached the origin"
    assert path not in signed_edge.inventory_keys()


def test_valid_signature_is_served(signed_edge: Edge, origin: Nginx) -> None:
    path = "/signed/ok.bin"
    data = origin.put(path, 40_000)
    target = sign_path(path, "k2", KEYS["k2"], int(time.time()) + 600)
    r = _get(signed_edge, target)
    assert r.status == 200 and r.body == data
    assert_miss_stored(r.headers)
    # The origin is asked for the path without the signature parameters.
    assert [t for _, t in origin.requests() if t.startswith(path)] == [path]


def test_two_valid_signatures_share_one_cache_entry(signed_edge: Edge, origin: Nginx) -> None:
    path = "/signed/shared.bin"
    data = origin.put(path, 80_000)
    now = int(time.time())
    a = sign_path(path, "k1", KEYS["k1"], now + 600)
    b = sign_path(path, "k2", KEYS["k2"], now + 1200)
    assert a != b
    with RawConn(signed_edge.port) as c:
        ra = c.get(a)
        assert ra.status == 200 and ra.body == data
        signed_edge.wait_stored(path)
        rb = c.get(b)
        assert rb.status == 200 and rb.body == data
        assert_hit(rb.headers)
        # a signed range request rides on the same entry
        rr = c.get(a, {"Range": "bytes=0-99"})
        assert rr.status == 206 and rr.body == data[:100]
    assert origin.fetches(path) == 1
    keys = signed_edge.inventory_keys()
    assert path in keys and keys[path]["sha256"] == sha256(data)
    assert not [k for k in keys if "sig=" in k or "exp=" in k or "kid=" in k]


def test_keyed_query_parameters_stay_with_a_signature(signed_edge: Edge, origin: Nginx) -> None:
    """Parameters other than exp/kid/sig are kept (src/cdnlab/signing.py) and reach the origin."""
    path = "/signed/q.bin"
    data = origin.put(path, 3000)
    target = sign_path(path, "k1", KEYS["k1"], int(time.time()) + 600, query="profile=hd")
    r = _get(signed_edge, target)
    assert r.status == 200 and r.body == data
    assert [t for _, t in origin.requests() if t.startswith(path)] == [f"{path}?profile=hd"]


def test_a_hit_still_needs_a_signature(signed_edge: Edge, origin: Nginx) -> None:
    path = "/signed/hot.bin"
    origin.put(path, 2000)
    assert _get(signed_edge, sign_path(path, "k1", KEYS["k1"], int(time.time()) + 60)).status == 200
    signed_edge.wait_stored(path)
    assert _get(signed_edge, path).status == 403
    assert _get(signed_edge, sign_path(path, "k1", KEYS["k1"], int(time.time()) - 1)).status == 403
    assert origin.fetches(path) == 1
