"""HTTP/1.1 basics (issue 2, daemon point 2): keep-alive, pipelining, GET/HEAD, 405, headers."""

from __future__ import annotations

import socket

import pytest

from helpers import Edge, Nginx, RawConn, build_request, exchange, parse_all, sha256

from .edgecheck import (
    ALL_METHODS,
    assert_common,
    assert_hit,
    assert_miss_stored,
    assert_object_headers,
    ours,
)

MTIME = 1_700_000_000.0


def test_get_cold_object_has_exact_headers_and_body(main_edge: Edge, origin: Nginx) -> None:
    data = origin.put("/http/clip.mp4", 150_000)
    with RawConn(main_edge.port) as c:
        r = c.get("/http/clip.mp4")
    assert r.status == 200
    assert sha256(r.body) == sha256(data)
    assert_common(r)
    assert_miss_stored(r.headers)
    assert_object_headers(r, etag=origin.etag("/http/clip.mp4"), mtime=MTIME, ctype="video/mp4")
    assert r.count("content-type") == 1 and r.count("etag") == 1


def test_hit_has_same_representation_headers(main_edge: Edge, origin: Nginx) -> None:
    data = origin.put("/http/page.html", 3000)
    with RawConn(main_edge.port) as c:
        miss = c.get("/http/page.html")
        main_edge.wait_stored("/http/page.html")
        hit = c.get("/http/page.html")
    assert miss.status == hit.status == 200
    assert hit.body == data
    assert_hit(hit.headers)
    assert_common(hit)
    assert_object_headers(hit, etag=origin.etag("/http/page.html"), mtime=MTIME, ctype="text/html")
    for name in ("content-type", "etag", "last-modified", "accept-ranges", "content-length"):
        assert miss.headers[name] == hit.headers[name], name


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "hot"])
def test_head_has_get_headers_and_no_body(main_edge: Edge, origin: Nginx, warm: bool) -> None:
    path = f"/http/head-{'hot' if warm else 'cold'}.bin"
    data = origin.put(path, 70_000)
    if warm:
        with RawConn(main_edge.port) as c:
            c.get(path)
        main_edge.wait_stored(path)
    # HEAD then GET pipelined on one connection: a body after the HEAD would corrupt the GET's parse.
    raw, _ = exchange(
        main_edge.port,
        build_request("HEAD", path) + build_request("GET", path, {"Connection": "close"}),
    )
    head, get = parse_all(raw, ["HEAD", "GET"])
    assert head.status == 200 and get.status == 200
    assert head.body == b""
    assert get.body == data
    assert_common(head, "HEAD")
    assert int(head.headers["content-length"]) == len(data)
    for name in ("content-type", "etag", "last-modified", "accept-ranges", "content-length"):
        assert head.headers.get(name) == get.headers.get(name), name
    ours(head.headers)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_other_methods_get_405_with_allow(main_edge: Edge, origin: Nginx, method: str) -> None:
    path = f"/http/method-{method.lower()}.bin"
    data = origin.put(path, 1000)
    body = b"hello"
    req = f"{method} {path} HTTP/1.1\r\nHost: cdn.test\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    # The connection survives a 405: the next pipelined GET is answered.
    raw, _ = exchange(main_edge.port, req + build_request("GET", path, {"Connection": "close"}))
    r405, get = parse_all(raw, [method, "GET"])
    assert r405.status == 405
    allow = {m.strip() for m in r405.headers.get("allow", "").split(",")}
    assert allow == {"GET", "HEAD"}, r405.headers.get("allow")
    assert_common(r405, method)
    assert get.status == 200 and get.body == data
    # Only the GET went upstream.
    assert [m for m, t in origin.requests() if t == path] == ["GET"]


def test_keep_alive_serves_many_requests_on_one_connection(main_edge: Edge, origin: Nginx) -> None:
    objs = {f"/http/ka-{i}.bin": origin.put(f"/http/ka-{i}.bin", 5000 + i) for i in range(4)}
    with RawConn(main_edge.port) as c:
        for _ in range(2):
            for path, data in objs.items():
                r = c.get(path)
                assert r.status == 200 and r.body == data
                assert "close" not in r.headers.get("connection", "").lower()
        # Still open, and still answering.
        assert not c.closed_by_peer(0.3)
        r = c.get("/http/ka-0.bin")
        assert r.status == 200 and r.body == objs["/http/ka-0.bin"]


def test_connection_close_is_honoured(main_edge: Edge, origin: Nginx) -> None:
    data = origin.put("/http/close.bin", 2000)
    with RawConn(main_edge.port) as c:
        r = c.get("/http/close.bin", {"Connection": "close"})
        assert r.status == 200 and r.body == data
        assert r.headers.get("connection", "").lower() == "close"
        assert c.closed_by_peer(3.0)


def test_http_1_0_closes_unless_keep_alive(main_edge: Edge, origin: Nginx) -> None:
    data = origin.put("/http/ten.bin", 2000)
    raw, closed = exchange(main_edge.port, build_request("GET", "/http/ten.bin", version="HTTP/1.0"))
    (r,) = parse_all(raw, ["GET"])
    assert r.status == 200 and r.body == data and closed
    with RawConn(main_edge.port) as c:
        c.send(build_request("GET", "/http/ten.bin", {"Connection": "keep-alive"}, version="HTTP/1.0"))
        r = c.reader.read_response()
        assert r.status == 200 and r.body == data
        assert r.headers.get("connection", "").lower() == "keep-alive"
        assert not c.closed_by_peer(0.3)


def test_pipelined_requests_are_answered_in_order(main_edge: Edge, origin: Nginx) -> None:
    slow = origin.put("/slow/http-pipe-cold.bin", 300_000)  # ~0.6 s from the origin
    hot = origin.put("/http/pipe-hot.bin", 20_000)
    small = origin.put("/http/pipe-small.txt", b"tiny\n")
    with RawConn(main_edge.port) as c:
        c.get("/http/pipe-hot.bin")
    main_edge.wait_stored("/http/pipe-hot.bin")
    reqs = [
        ("GET", "/slow/http-pipe-cold.bin", {}),
        ("GET", "/http/pipe-hot.bin", {}),
        ("HEAD", "/http/pipe-hot.bin", {}),
        ("GET", "/http/pipe-hot.bin", {"Range": "bytes=10-19"}),
        ("GET", "/http/pipe-missing.bin", {}),
        ("GET", "/http/pipe-small.txt", {}),
        ("GET", "/http/pipe-hot.bin", {"Connection": "close"}),
    ]
    payload = b"".join(build_request(m, p, h) for m, p, h in reqs)
    with socket.create_connection(("127.0.0.1", main_edge.port), timeout=10) as s:
        s.sendall(payload)  # all in one write
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    rs = parse_all(b"".join(chunks), [m for m, _, _ in reqs])
    assert [r.status for r in rs] == [200, 200, 200, 206, 404, 200, 200]
    assert rs[0].body == slow
    assert rs[1].body == hot
    assert rs[2].body == b"" and rs[2].headers["content-length"] == str(len(hot))
    assert rs[3].body == hot[10:20] and rs[3].headers["content-range"] == f"bytes 10-19/{len(hot)}"
    assert rs[5].body == small and rs[5].headers["content-type"] == "text/plain"
    assert rs[6].body == hot
    for r, (m, _, _) in zip(rs, reqs, strict=True):
        assert_common(r, m)


def test_every_kind_of_response_has_date_cache_status_and_length(main_edge: Edge, origin: Nginx) -> None:
    data = origin.put("/http/kinds.bin", 4000)
    etag = origin.etag("/http/kinds.bin")
    reqs: list[tuple[str, str, dict[str, str], int]] = [
        ("GET", "/http/kinds.bin", {}, 200),  # miss
        ("GET", "/http/kinds.bin", {"Range": "bytes=0-9"}, 206),
        ("GET", "/http/kinds.bin", {"If-None-Match": etag}, 304),
        ("GET", "/http/kinds.bin", {"If-Match": '"nope"'}, 412),
        ("GET", "/http/kinds.bin", {"Range": "bytes=9000-"}, 416),
        ("GET", "/http/kinds-missing.bin", {}, 404),
        ("DELETE", "/http/kinds.bin", {}, 405),
        ("HEAD", "/http/kinds.bin", {}, 200),
        ("GET", "/http/%00kinds.bin", {}, 400),
    ]
    for method, path, hdrs, want in reqs:
        raw, _ = exchange(main_edge.port, build_request(method, path, {**hdrs, "Connection": "close"}))
        (r,) = parse_all(raw, [method])
        assert r.status == want, (method, path, hdrs, r.status, r.body[:200])
        assert_common(r, method)
        if want in (200, 206, 304):
            assert r.headers.get("etag") == etag, (want, r.headers)
        if want in (200, 206):
            assert r.headers.get("accept-ranges") == "bytes"
            assert "last-modified" in r.headers
        if want == 200 and method == "GET":
            assert r.body == data


def test_a_hundred_pipelined_requests_in_one_write(main_edge: Edge, origin: Nginx) -> None:
    """More than any sane pipeline depth: all answered, in order, none lost or reordered."""
    objs = {f"/http/deep-{i}.bin": origin.put(f"/http/deep-{i}.bin", 1000 + 37 * i) for i in range(5)}
    paths = list(objs)
    reqs = []
    for i in range(100):
        p = paths[i % 5]
        hdrs = {"Range": f"bytes={i}-{i + 9}"} if i % 3 == 0 else {}
        reqs.append((p, hdrs))
    reqs[-1] = (reqs[-1][0], {**reqs[-1][1], "Connection": "close"})
    payload = b"".join(build_request("GET", p, h) for p, h in reqs)
    raw, closed = exchange(main_edge.port, payload, timeout=15)
    assert closed
    rs = parse_all(raw, ["GET"] * len(reqs))
    for i, (r, (p, h)) in enumerate(zip(rs, reqs, strict=True)):
        if "Range" in h:
            assert r.status == 206 and r.body == objs[p][i : i + 10], i
        else:
            assert r.status == 200 and r.body == objs[p], i


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_get_with_a_body_keeps_the_connection_in_sync(main_edge: Edge, origin: Nginx, chunked: bool) -> None:
    """A request body on GET has no meaning here, but it must be read past, never taken for the
    next request (RFC 9112 §6.3)."""
    data = origin.put("/http/with-body.bin", 1000)
    smuggled = b"GET /http/never-asked.bin HTTP/1.1\r\nHost: a\r\n\r\n"
    if chunked:
        head = b"GET /http/with-body.bin HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    else:
        head = b"GET /http/with-body.bin HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
        body = smuggled
    raw, _ = exchange(
        main_edge.port, head + body + build_request("GET", "/http/with-body.bin", {"Connection": "close"})
    )
    rs = parse_all(raw, ["GET", "GET"])
    assert [r.status for r in rs] == [200, 200]
    assert rs[0].body == rs[1].body == data
    assert raw.count(b"HTTP/1.1 ") == 2
    assert origin.fetches("/http/never-asked.bin") == 0


def test_a_bad_request_in_a_pipeline_ends_it_after_the_earlier_answers(
    main_edge: Edge, origin: Nginx
) -> None:
    data = origin.put("/http/pipe-bad.bin", 500)
    payload = (
        build_request("GET", "/http/pipe-bad.bin")
        + build_request("GET", "/http/%00bad")
        + build_request("GET", "/http/pipe-bad.bin")
    )
    raw, closed = exchange(main_edge.port, payload)
    assert closed
    first, bad = parse_all(raw, ["GET", "GET"])
    assert first.status == 200 and first.body == data
    assert bad.status == 400 and bad.headers.get("connection", "").lower() == "close"
    assert raw.count(b"HTTP/1.1 ") == 2, "answered a request after the 400 that closed the connection"


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /http/host.bin HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET /http/host.bin HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),  # two
        (b"GET /http/host.bin HTTP/1.1\r\nHost: a b\r\n\r\n", 400),  # not an authority
        (b"GET /http/host.bin HTTP/1.1\r\nHost: ../etc\r\n\r\n", 400),
        (b"GET /http/host.bin HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
        (b"GET /http/host.bin HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET /http/host.bin HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ],
)
def test_host_and_version_errors_close(main_edge: Edge, origin: Nginx, head: bytes, status: int) -> None:
    """RFC 9112 section 3.2 (Host) and 2.3 (version): refused, then the connection closes
    without answering what follows."""
    origin.put("/http/host.bin", 100)
    raw, closed = exchange(main_edge.port, head + build_request("GET", "/http/host.bin"))
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw[:80]
    assert raw.count(b"\r\nServer: cdnlab\r\n") == 1 and closed  # one answer, the refusal
    (r,) = parse_all(raw, ["GET"])
    assert r.headers.get("connection", "").lower() == "close"
    assert_common(r)


@pytest.mark.parametrize(
    "head",
    [
        b"GET /http/host-ok.bin HTTP/1.0\r\n\r\n",  # HTTP/1.0 may leave Host out
        b"GET /http/host-ok.bin HTTP/1.1\r\nHost:\r\n\r\n",  # empty: allowed (RFC 9112 3.2)
        b"GET /http/host-ok.bin HTTP/1.1\r\nHost: cdn.example:8080\r\n\r\n",
        b"GET /http/host-ok.bin HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
        b"GET /http/host-ok.bin HTTP/1.1\r\nHost: 192.0.2.7\r\n\r\n",
    ],
)
def test_valid_hosts_and_versions_are_served(main_edge: Edge, origin: Nginx, head: bytes) -> None:
    data = origin.put("/http/host-ok.bin", 300)
    raw, _ = exchange(main_edge.port, head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    (r,) = parse_all(raw, ["GET"])
    assert r.status == 200 and r.body == data
