"""DDoS defences (issue 9 point 3): per-address connection and request-rate caps, the body timeout,
the cap on concurrent upstream fetches, the allow-list, refusals counted in /metrics.

Clients bind their own 127.x source address, so each test is a different "client" to the edge.
"""

from __future__ import annotations

import http.client
import re
import socket
import time
from collections.abc import Iterator

import pytest

from helpers import Edge, Nginx, build_request, edge, parse_all, wait_until

from .edgecheck import config_toml

CONN_CAP = 4
BURST = 10
LIMITS = f"""
conn_per_client = {CONN_CAP}
rate_per_client = 20
rate_burst = {BURST}
max_upstream_fetches = 2
retry_after = 2
allow = ["127.0.0.9/32", "10.0.0.0/8"]
header_timeout = 5.0
body_timeout = 1.0
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, origin: Nginx) -> Iterator[Edge]:
    with edge(tmp_path_factory.mktemp("limits"), [origin.url], config=config_toml(limits=LIMITS)) as e:
        yield e


def _sock(e: Edge, source: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", e.port), timeout=10, source_address=(source, 0))
    return s


def _get(e: Edge, source: str, path: str) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", e.port, timeout=10, source_address=(source, 0))
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def _flood(e: Edge, source: str, path: str, n: int) -> list[int]:
    """``n`` pipelined GETs on one connection, sent at once; the statuses in order."""
    with _sock(e, source) as s:
        reqs = [build_request("GET", path, {"Host": "a"}) for _ in range(n - 1)]
        reqs.append(build_request("GET", path, {"Host": "a", "Connection": "close"}))
        s.sendall(b"".join(reqs))
        chunks = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    rs = parse_all(b"".join(chunks), ["GET"] * n)
    for r in rs:
        if r.status == 429:
            assert r.headers.get("retry-after") == "2"
    return [r.status for r in rs]


def _refused(e: Edge, reason: str) -> int:
    m = re.search(rf'^cdnlab_refused_total\{{reason="{reason}"\}} (\S+)$', e.metrics(), re.M)
    return int(float(m.group(1))) if m else 0


def test_rate_flood_refused_while_a_polite_client_is_served(limited: Edge, origin: Nginx) -> None:
    origin.put("/limits/rate.bin", 2000)
    assert _get(limited, "127.0.0.9", "/limits/rate.bin")[0] == 200  # stored (allow-listed warm-up)
    statuses = _flood(limited, "127.0.0.2", "/limits/rate.bin", 100)
    assert len(statuses) == 100
    assert statuses[:BURST] == [200] * BURST, statuses[:BURST]  # the burst goes through
    assert statuses.count(429) >= 80, statuses
    # Another address, 10 requests at 10/s (under its 20/s): every one served, flood or not.
    for _ in range(10):
        assert _get(limited, "127.0.0.3", "/limits/rate.bin")[0] == 200
        time.sleep(0.1)
    # The flooder's bucket refills: after a pause it is served again.
    time.sleep(0.5)
    assert _get(limited, "127.0.0.2", "/limits/rate.bin")[0] == 200
    wait_until(lambda: _refused(limited, "rate") >= 80, timeout=5)


def test_connection_cap_per_address(limited: Edge, origin: Nginx) -> None:
    origin.put("/limits/conn.bin", 500)
    held = []
    try:
        for _ in range(CONN_CAP):
            c = http.client.HTTPConnection(
                "127.0.0.1", limited.port, timeout=10, source_address=("127.0.0.4", 0)
            )
            c.request("GET", "/limits/conn.bin")
            r = c.getresponse()
            assert r.status == 200
            r.read()
            held.append(c)  # kept open (keep-alive)
        status, headers, _ = _get(limited, "127.0.0.4", "/limits/conn.bin")
        assert status == 503 and headers.get("retry-after") == "2", (status, headers)
        assert _get(limited, "127.0.0.5", "/limits/conn.bin")[0] == 200  # another address is served
        held.pop().close()
        wait_until(lambda: _get(limited, "127.0.0.4", "/limits/conn.bin")[0] == 200, timeout=5)
    finally:
        for c in held:
            c.close()
    wait_until(lambda: _refused(limited, "conn") >= 1, timeout=5)


def test_allow_list_is_exempt(limited: Edge, origin: Nginx) -> None:
    origin.put("/limits/allow.bin", 500)
    statuses = _flood(limited, "127.0.0.9", "/limits/allow.bin", 100)
    assert statuses == [200] * 100
    socks = [_sock(limited, "127.0.0.9") for _ in range(CONN_CAP * 3)]
    try:
        for s in socks:
            s.sendall(build_request("GET", "/limits/allow.bin", {"Host": "a"}))
        for s in socks:
            assert s.recv(12) == b"HTTP/1.1 200"
    finally:
        for s in socks:
            s.close()


def test_upstream_fetch_cap(limited: Edge, origin: Nginx) -> None:
    """Two slow misses fill the cap: a third distinct miss is refused 503, a request joining a
    fetch under way and a hit are still served."""
    for i in range(3):
        origin.put(f"/slow/limits/{i}.bin", 1_500_000)  # ~3 s each at the origin's 512 KiB/s
    origin.put("/limits/hit.bin", 500)
    assert _get(limited, "127.0.0.9", "/limits/hit.bin")[0] == 200
    limited.wait_stored("/limits/hit.bin")  # its fetch must not still count against the cap
    time.sleep(0.5)
    slow = []
    try:
        for i in range(2):
            c = http.client.HTTPConnection(
                "127.0.0.1", limited.port, timeout=10, source_address=("127.0.0.9", 0)
            )
            c.request("GET", f"/slow/limits/{i}.bin")
            assert c.getresponse().status == 200  # headers in, body still trickling
            slow.append(c)
        status, headers, body = _get(limited, "127.0.0.9", "/slow/limits/2.bin")
        assert status == 503 and headers.get("retry-after") == "2", (status, body)
        assert _get(limited, "127.0.0.9", "/limits/hit.bin")[0] == 200
        c = http.client.HTTPConnection("127.0.0.1", limited.port, timeout=10, source_address=("127.0.0.9", 0))
        c.request("GET", "/slow/limits/0.bin")
        r = c.getresponse()
        assert r.status == 200 and "collapsed" in (r.getheader("Cache-Status") or "")
        slow.append(c)
    finally:
        for c in slow:
            c.close()
    wait_until(lambda: _refused(limited, "upstream") >= 1, timeout=5)
    assert origin.fetches("/slow/limits/2.bin") == 0


def test_slow_body_is_cut_by_the_body_timeout(limited: Edge) -> None:
    """Headers complete, then a body that never finishes: closed after body_timeout (1 s), well
    before header_timeout (5 s) would have fired."""
    with _sock(limited, "127.0.0.6") as s:
        s.sendall(b"GET /limits/body HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789")
        started = time.monotonic()
        s.settimeout(8)
        try:
            data = s.recv(1024)
        except ConnectionResetError:
            data = b""
        elapsed = time.monotonic() - started
    assert data == b"" and elapsed < 3.5, (data, elapsed)
