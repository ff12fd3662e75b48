"""Hostile input (issue 2, daemon point 10): paths, header limits, smuggling, slow and vanishing
clients. Limits of the main edge: max_header_bytes 8192, max_headers 40, header_timeout 1 s,
keepalive_timeout 3 s."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from helpers import Edge, Nginx, RawConn, build_request, exchange, parse_all, sha256

from .edgecheck import assert_common, object_files, ours, store_files


def _one(e: Edge, raw: bytes, method: str = "GET", timeout: float = 5.0):  # type: ignore[no-untyped-def]
    data, closed = exchange(e.port, raw, timeout)
    (r,) = parse_all(data, [method])
    return r, closed


@pytest.mark.parametrize(
    "target",
    [
        "/../etc/passwd",
        "/hostile/../../etc/passwd",
        "/%2e%2e/etc/passwd",
        "/%2E%2E/%2e%2E/etc/passwd",
        "/hostile/%2e%2e/%2e%2e/etc/passwd",
        "/.%2e/etc/passwd",
        "/hostile/a%00.bin",
        "/%00",
        "/hostile/%c0%ae%c0%ae/etc/passwd",
    ],
)
def test_traversal_and_nul_are_refused(main_edge: Edge, origin: Nginx, target: str) -> None:
    before = len(origin.requests())
    r, _ = _one(main_edge, build_request("GET", target, {"Connection": "close"}))
    assert r.status == 400, (target, r.status, r.body[:200])
    assert_common(r)
    assert b"root:" not in r.body
    assert len(origin.requests()) == before, "a refused target reached the origin"


def test_encoded_slash_never_climbs(main_edge: Edge, origin: Nginx) -> None:
    """``%2F`` is data, not a separator: it can neither climb out of the root nor reach a file by
    its URL; whatever the origin says, /etc/passwd is never served."""
    for target in ("/..%2f..%2f..%2fetc%2fpasswd", "/hostile%2f..%2f..%2fetc%2fpasswd", "/%2fetc%2fpasswd"):
        r, _ = _one(main_edge, build_request("GET", target, {"Connection": "close"}))
        assert r.status in (400, 404), (target, r.status)
        assert b"root:" not in r.body
        assert_common(r)


def test_encoded_slash_is_never_decoded_by_the_edge(main_edge: Edge, origin: Nginx) -> None:
    """``/dir%2Ff.bin`` is not ``/dir/f.bin``: the edge keeps the escape in its key and in what it
    asks the origin (what the origin then makes of it is the origin's business)."""
    data = origin.put("/hostile/dir/f.bin", 1000)
    with RawConn(main_edge.port) as c:
        assert c.get("/hostile/dir/f.bin").body == data
        main_edge.wait_stored("/hostile/dir/f.bin")
        r = c.get("/hostile/dir%2ff.bin")
        assert ours(r.headers).get("fwd") == "miss", "served the /dir/f.bin entry for /dir%2ff.bin"
    assert ("GET", "/hostile/dir%2Ff.bin") in origin.requests()
    assert origin.fetches("/hostile/dir/f.bin") == 1


def test_nothing_from_urls_reaches_the_store_tree(main_edge: Edge) -> None:
    """After every hostile test: the store holds only its own layout and hash-named objects."""
    files = store_files(main_edge.store)
    for rel in files:
        parts = rel.split("/")
        assert parts[0] in ("ram0", "flash0"), rel
        assert parts[1] in ("objects", "tmp", "cdnlab-disk-id"), rel
        assert "passwd" not in rel and ".." not in parts and "%" not in rel, rel
    assert not any(b"root:x:0:0" in v for v in object_files(main_edge.store).values())


def test_absolute_form_target_is_served_as_its_path(main_edge: Edge, origin: Nginx) -> None:
    """RFC 9112 §3.2.2: a server MUST accept absolute-form; the key is the path."""
    data = origin.put("/hostile/abs.bin", 3000)
    r, _ = _one(main_edge, build_request("GET", "http://cdn.test/hostile/abs.bin", {"Connection": "close"}))
    assert r.status == 200 and r.body == data
    main_edge.wait_stored("/hostile/abs.bin")
    with RawConn(main_edge.port) as c:
        r = c.get("/hostile/abs.bin")
        assert r.body == data and ours(r.headers) == {"hit": True}
    for bad in ("http://user@cdn.test/hostile/abs.bin", "ftp://cdn.test/hostile/abs.bin", "http:///x"):
        r, _ = _one(main_edge, build_request("GET", bad, {"Connection": "close"}))
        assert r.status == 400, (bad, r.status)


def test_oversize_header_gives_431_and_closes(main_edge: Edge) -> None:
    r, closed = _one(main_edge, build_request("GET", "/hostile/x.bin", {"X-Big": "a" * 20_000}))
    assert r.status == 431
    assert_common(r)
    assert closed


def test_too_many_headers_gives_431_and_closes(main_edge: Edge) -> None:
    hdrs = {f"X-H{i}": "v" for i in range(60)}
    r, closed = _one(main_edge, build_request("GET", "/hostile/x.bin", hdrs))
    assert r.status == 431
    assert_common(r)
    assert closed


def test_headers_just_under_the_limits_are_fine(main_edge: Edge, origin: Nginx) -> None:
    data = origin.put("/hostile/limits.bin", 100)
    hdrs = {f"X-H{i}": "v" for i in range(30)}
    hdrs["X-Big"] = "a" * 4000
    r, _ = _one(main_edge, build_request("GET", "/hostile/limits.bin", {**hdrs, "Connection": "close"}))
    assert r.status == 200 and r.body == data


@pytest.mark.parametrize(
    "smuggle",
    [
        b"GET /hostile/s.bin HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /hostile/smuggled.bin HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /hostile/s.bin HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        b"0\r\n\r\nGET /hostile/smuggled.bin HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /hostile/s.bin HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n"
        b"GET /hostile/smuggled.bin HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /hostile/s.bin HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"
        b"GET /hostile/smuggled.bin HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
    ids=["cl-then-te", "te-then-cl", "two-cl-differ", "two-cl-same"],
)
def test_ambiguous_framing_gives_400_and_closes(main_edge: Edge, origin: Nginx, smuggle: bytes) -> None:
    origin.put("/hostile/s.bin", 10)
    origin.put("/hostile/smuggled.bin", 10)
    data, closed = exchange(main_edge.port, smuggle)
    assert closed, "connection left open after ambiguous framing"
    assert data.startswith(b"HTTP/1.1 400 "), data[:100]
    (r,) = parse_all(data, ["GET"])
    assert_common(r)
    assert r.headers.get("connection", "").lower() == "close"
    assert data.count(b"HTTP/1.1 ") == 1, "answered more than the one 400"
    assert origin.fetches("/hostile/smuggled.bin") == 0


def test_slow_clients_are_disconnected(main_edge: Edge, origin: Nginx) -> None:
    """A client dripping its header (header_timeout 1 s) and one sending nothing at all
    (keepalive_timeout 3 s) are both let go; everyone else is served meanwhile."""
    data = origin.put("/hostile/slowloris.bin", 100)
    t0 = time.monotonic()
    silent = socket.create_connection(("127.0.0.1", main_edge.port), timeout=8)
    try:
        with socket.create_connection(("127.0.0.1", main_edge.port), timeout=10) as s:
            s.sendall(b"GET /hostile/slowloris.bin HTTP/1.1\r\nHost: a\r\n")
            closed_at = None
            for i in range(20):  # a header line every 0.25 s: the head is never finished in time
                try:
                    s.sendall(b"X-Drip-%d: y\r\n" % i)
                except OSError:
                    closed_at = time.monotonic()
                    break
                s.settimeout(0.25)
                try:
                    got = s.recv(4096)
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    closed_at = time.monotonic()
                    break
                if not got or got.startswith(b"HTTP/1.1 408"):
                    closed_at = time.monotonic()
                    break
            assert closed_at is not None, "slow client never disconnected"
            assert closed_at - t0 < 3.5, closed_at - t0
        with RawConn(main_edge.port) as c:
            assert c.get("/hostile/slowloris.bin").body == data
        try:
            got = silent.recv(1)
        except ConnectionResetError:
            got = b""
        assert got == b"" and time.monotonic() - t0 < 6.5, "a silent connection was kept open"
    finally:
        silent.close()


def test_client_that_stops_reading_is_disconnected(scripted_edge: Edge) -> None:
    """send_timeout (1.5 s on this edge): a client that never reads is let go; others are served."""
    path = "/ok/10000000/stall.bin"
    with RawConn(scripted_edge.port) as c:
        full = c.get(path).body
    scripted_edge.wait_stored(path)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.connect(("127.0.0.1", scripted_edge.port))
    try:
        s.sendall(build_request("GET", path))
        time.sleep(3.0)  # not reading: the daemon's writes stall
        s.settimeout(5)
        n = 0
        try:
            while n < len(full) + 1000:
                chunk = s.recv(262144)
                if not chunk:
                    break
                n += len(chunk)
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail(f"connection neither finished nor closed ({n} bytes)")
        assert n < len(full), "the stalled client still got the whole object"
    finally:
        s.close()
    with RawConn(scripted_edge.port) as c:
        assert sha256(c.get(path).body) == sha256(full)


def test_overlong_request_target_is_refused(main_edge: Edge) -> None:
    r, closed = _one(main_edge, build_request("GET", "/hostile/" + "a" * 9000))
    assert r.status in (414, 431), r.status
    assert_common(r)
    assert closed


def test_client_leaving_mid_response_harms_nothing(main_edge: Edge, origin: Nginx) -> None:
    big = origin.put("/hostile/big.bin", 8 * 1024 * 1024)
    cold = origin.put("/slow/hostile-cold.bin", 700_000)
    with RawConn(main_edge.port) as c:
        assert c.get("/hostile/big.bin").body == big
    main_edge.wait_stored("/hostile/big.bin")
    for path, rst in (
        ("/hostile/big.bin", False),
        ("/hostile/big.bin", True),
        ("/slow/hostile-cold.bin", True),
    ):
        s = socket.create_connection(("127.0.0.1", main_edge.port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(build_request("GET", path))
        assert s.recv(4096)
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    # the daemon still serves, every byte right, and the abandoned miss was stored whole
    with RawConn(main_edge.port) as c:
        assert sha256(c.get("/hostile/big.bin").body) == sha256(big)
        r = c.get("/hostile/big.bin", {"Range": "bytes=4000000-4000999"})
        assert r.body == big[4000000:4001000]
    entry = main_edge.wait_stored("/slow/hostile-cold.bin")
    assert entry["sha256"] == sha256(cold)
    with RawConn(main_edge.port) as c:
        assert sha256(c.get("/slow/hostile-cold.bin").body) == sha256(cold)
    assert main_edge.health()["state"] == "serving"
    assert main_edge.proc.poll() is None
