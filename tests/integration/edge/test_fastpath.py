"""The fast path's memory of request heads (conn._PLAIN): a client repeating a plain GET byte for
byte skips the parser, and gets exactly what the parser would have given it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from helpers import Edge, Nginx, RawConn, build_request, edge

from .edgecheck import assert_common, assert_hit, config_toml, ours

TOKEN = "fast-token"


@pytest.fixture(scope="module")
def fast_edge(tmp_path_factory: pytest.TempPathFactory, origin: Nginx) -> Iterator[Edge]:
    """No access log (it turns the fast path off: every request must reach the log)."""
    base = tmp_path_factory.mktemp("fast-edge")
    config = config_toml(admin=f'purge_token = "{TOKEN}"')
    with edge(base, [origin.url], config=config) as e:
        yield e


def warm(e: Edge, path: str) -> None:
    with RawConn(e.port) as c:
        c.get(path)
        e.wait_stored(path)
        for _ in range(2):
            assert c.get(path).status == 200  # now a RAM hit on the fast path


def test_repeated_request_bytes_get_the_same_answer(fast_edge: Edge, origin: Nginx) -> None:
    data = origin.put("/fast/a.bin", 3000)
    warm(fast_edge, "/fast/a.bin")
    with RawConn(fast_edge.port) as c:
        for _ in range(5):
            r = c.get("/fast/a.bin")
            assert r.status == 200 and r.body == data
            assert_hit(r.headers)
            assert_common(r)
            assert "connection" not in r.headers


def test_pipelined_and_split_copies_are_all_answered_in_order(fast_edge: Edge, origin: Nginx) -> None:
    a = origin.put("/fast/p1.bin", 2000)
    b = origin.put("/fast/p2.bin", 2100)
    warm(fast_edge, "/fast/p1.bin")
    warm(fast_edge, "/fast/p2.bin")
    ra, rb = build_request("GET", "/fast/p1.bin"), build_request("GET", "/fast/p2.bin")
    with RawConn(fast_edge.port) as c:
        c.send(ra + rb + ra)  # remembered heads, pipelined in one write
        assert [c.reader.read_response().body for _ in range(3)] == [a, b, a]
        c.send(ra + rb[:5])  # a remembered head followed by the start of the next request
        assert c.reader.read_response().body == a
        c.send(rb[5:])
        assert c.reader.read_response().body == b
        for _ in range(2):  # the same pipelined pair again: two answers each time
            c.send(ra + rb)
            assert [c.reader.read_response().body for _ in range(2)] == [a, b]


def test_a_remembered_head_after_a_partial_request_is_not_a_new_request(
    fast_edge: Edge, origin: Nginx
) -> None:
    """The parser holds "GET " when the bytes of a remembered head arrive: together they are one
    malformed request line ("GET GET /… HTTP/1.1"), answered 400, never a hit."""
    a = origin.put("/fast/m.bin", 1900)
    warm(fast_edge, "/fast/m.bin")
    ra = build_request("GET", "/fast/m.bin")
    with RawConn(fast_edge.port) as c:
        c.send(ra + b"GET ")
        assert c.reader.read_response().body == a
        c.send(ra)
        r = c.reader.read_response()
        assert r.status == 400
        assert c.closed_by_peer()


def test_remembered_request_still_sees_a_purge(fast_edge: Edge, origin: Nginx) -> None:
    path = "/fast/purged.bin"
    data = origin.put(path, 1500)
    warm(fast_edge, path)
    before = origin.fetches(path)
    status, _ = fast_edge.post(
        "/purge", json.dumps({"key": path}).encode(), {"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200
    with RawConn(fast_edge.port) as c:
        r = c.get(path)
    assert r.status == 200 and r.body == data
    assert ours(r.headers).get("fwd") == "miss"
    assert origin.fetches(path) == before + 1


def test_other_headers_are_parsed_not_remembered(fast_edge: Edge, origin: Nginx) -> None:
    data = origin.put("/fast/c.bin", 1800)
    warm(fast_edge, "/fast/c.bin")
    with RawConn(fast_edge.port) as c:
        r = c.get("/fast/c.bin", {"Range": "bytes=0-9"})
        assert r.status == 206 and r.body == data[:10]
        etag = r.headers["etag"]
        assert c.get("/fast/c.bin", {"If-None-Match": etag}).status == 304
        r = c.get("/fast/c.bin", {"Connection": "close"})
        assert r.status == 200 and r.body == data
        assert r.headers.get("connection") == "close"
        assert c.closed_by_peer()
