"""Conditional requests (RFC 9110 §13; issue 2, daemon point 3): 304 and 412."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import Edge, Nginx, RawConn, build_request, exchange, http_date, parse_all

from .edgecheck import assert_common, assert_miss_stored, ours

PATH = "/cond/obj.bin"
MTIME = 1_700_000_000.0
SIZE = 6000


@pytest.fixture(scope="module")
def obj(main_edge: Edge, origin: Nginx) -> tuple[bytes, str]:
    data = origin.put(PATH, SIZE)
    with RawConn(main_edge.port) as c:
        assert c.get(PATH).status == 200
    main_edge.wait_stored(PATH)
    return data, origin.etag(PATH)


@pytest.fixture
def conn(main_edge: Edge) -> Iterator[RawConn]:
    with RawConn(main_edge.port) as c:
        yield c


def _cases(etag: str) -> list[tuple[dict[str, str], int]]:
    lm, before, after = http_date(MTIME), http_date(MTIME - 86400), http_date(MTIME + 86400)
    return [
        # If-None-Match: weak comparison (§13.1.2)
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": f"W/{etag}"}, 304),
        ({"If-None-Match": f'"a", {etag}, "b"'}, 304),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"other"'}, 200),
        # If-Modified-Since (§13.1.3)
        ({"If-Modified-Since": lm}, 304),
        ({"If-Modified-Since": after}, 304),
        ({"If-Modified-Since": before}, 200),
        ({"If-Modified-Since": "not a date"}, 200),
        # If-None-Match present: If-Modified-Since is ignored (§13.1.3)
        ({"If-None-Match": '"other"', "If-Modified-Since": after}, 200),
        # If-Match: strong comparison (§13.1.1)
        ({"If-Match": etag}, 200),
        ({"If-Match": "*"}, 200),
        ({"If-Match": '"other"'}, 412),
        ({"If-Match": f"W/{etag}"}, 412),
        # If-Unmodified-Since (§13.1.4)
        ({"If-Unmodified-Since": before}, 412),
        ({"If-Unmodified-Since": lm}, 200),
        ({"If-Unmodified-Since": after}, 200),
        # If-Match present: If-Unmodified-Since is ignored (§13.2.2 step 2)
        ({"If-Match": etag, "If-Unmodified-Since": before}, 200),
        # Order of evaluation (§13.2.2): a failing If-Match wins over a matching If-None-Match
        ({"If-Match": '"other"', "If-None-Match": etag}, 412),
        # A 304 condition does not turn a Range into a 206
        ({"If-None-Match": etag, "Range": "bytes=0-9"}, 304),
        ({"If-Match": etag, "Range": "bytes=0-9"}, 206),
    ]


def test_preconditions(obj: tuple[bytes, str], conn: RawConn) -> None:
    data, etag = obj
    failures = []
    for hdrs, want in _cases(etag):
        r = conn.get(PATH, hdrs)
        if r.status != want:
            failures.append((hdrs, want, r.status))
            continue
        assert_common(r)
        if want == 304:
            assert r.body == b""
            assert r.headers.get("etag") == etag  # §15.4.5: the 304 carries the ETag
            assert r.headers.get("last-modified") == http_date(MTIME)
            # a Content-Length on a 304 must be the one a 200 would carry (RFC 9110 §8.6)
            assert r.headers.get("content-length", str(SIZE)) == str(SIZE)
        elif want == 200:
            assert r.body == data
        elif want == 206:
            assert r.body == data[:10]
        elif want == 412:
            assert r.body == b"" or int(r.headers["content-length"]) == len(r.body)
            # an empty 412 is not the object: none of its representation headers describe it
            assert "content-type" not in r.headers and "content-encoding" not in r.headers
    assert not failures, failures


def test_head_conditionals(obj: tuple[bytes, str], main_edge: Edge) -> None:
    _, etag = obj
    reqs = [
        ("HEAD", {"If-None-Match": etag}, 304),
        ("HEAD", {"If-Match": '"other"'}, 412),
        ("HEAD", {"If-Modified-Since": http_date(MTIME)}, 304),
        ("GET", {"Connection": "close"}, 200),
    ]
    raw, _ = exchange(main_edge.port, b"".join(build_request(m, PATH, h) for m, h, _ in reqs))
    rs = parse_all(raw, [m for m, _, _ in reqs])
    assert [r.status for r in rs] == [w for _, _, w in reqs]
    assert rs[-1].body == obj[0]
    for r, (m, _, _) in zip(rs, reqs, strict=True):
        assert_common(r, m)


def test_304_keeps_the_connection_in_sync(obj: tuple[bytes, str], main_edge: Edge) -> None:
    """A 304 has no body (RFC 9110 §15.4.5): two of them pipelined, then a GET, all parse."""
    data, etag = obj
    reqs = [
        ("GET", {"If-None-Match": etag}),
        ("GET", {"If-None-Match": etag}),
        ("GET", {"Connection": "close"}),
    ]
    raw, closed = exchange(main_edge.port, b"".join(build_request(m, PATH, h) for m, h in reqs))
    rs = parse_all(raw, ["GET"] * 3)
    assert [r.status for r in rs] == [304, 304, 200]
    assert rs[2].body == data
    assert closed


def test_conditional_on_cold_object(main_edge: Edge, origin: Nginx) -> None:
    """The first request for an object, already conditional: answered from the fetched object,
    and the object is stored whole."""
    path = "/cond/cold.bin"
    data = origin.put(path, 50_000)
    etag = origin.etag(path)
    with RawConn(main_edge.port) as c:
        r = c.get(path, {"If-None-Match": etag})
        assert r.status == 304
        assert r.headers.get("etag") == etag
        assert_miss_stored(r.headers)
        entry = main_edge.wait_stored(path)
        assert entry["size"] == len(data)
        r = c.get(path, {"If-Match": '"other"'})
        assert r.status == 412
        assert ours(r.headers) == {"hit": True}
        full = c.get(path)
        assert full.status == 200 and full.body == data
    assert origin.fetches(path) == 1
