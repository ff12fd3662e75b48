"""10,000 concurrent streaming clients on one worker (issue 9 point 2), loopback, bounded in time:
memory per idle and per streaming connection (the worker's RSS delta / connections), and
back-pressure: slow readers of an 8 MiB object never make the daemon hold the object in memory.
Also the start-up check of the open-file limit.
"""

from __future__ import annotations

import errno
import re
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import CDNLAB, Edge, Nginx, edge, wait_until

from .edgecheck import config_toml

N = 10_000
SIZE = 8 * 1024 * 1024
PATH = "/c10k/big.bin"
LIMITS = (
    f"worker_connections = {N + 200}\nkeepalive_timeout = 300.0\nsend_timeout = 300.0\nheader_timeout = 60.0"
)


def _rss(pid: int) -> int:
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert m
    return int(m.group(1)) * 1024


def _worker(e: Edge) -> int:
    pid = e.proc.pid
    return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])


def _active(e: Edge) -> int:
    m = re.search(r"^cdnlab_connections_active (\S+)$", e.metrics(), re.M)
    return int(float(m.group(1))) if m else 0


@pytest.fixture
def nofile() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = N + 1000
    assert hard == resource.RLIM_INFINITY or hard >= need, f"hard open-file limit {hard} < {need}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _open(port: int, n: int, deadline: float) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # slow readers: a small window
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        assert err in (0, errno.EINPROGRESS), err
        socks.append(s)
        if len(socks) % 500 == 0:
            time.sleep(0.05)  # let the worker accept: the listen backlog is 4096
        assert time.monotonic() < deadline, "opening connections took too long"
    return socks


def _recv_some(s: socket.socket, n: int, deadline: float) -> bytes:
    buf = b""
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except BlockingIOError:
            assert time.monotonic() < deadline, "no bytes in time"
            time.sleep(0.01)
            continue
        assert chunk, "closed by the edge"
        buf += chunk
    return buf


def test_10k_slow_readers_memory_and_back_pressure(
    tmp_path: Path, origin: Nginx, nofile: None, record_property
) -> None:  # type: ignore[no-untyped-def]
    data = origin.put(PATH, SIZE)
    cfg = config_toml(limits=LIMITS)
    with edge(tmp_path, [origin.url], config=cfg) as e:
        import urllib.request

        assert urllib.request.urlopen(e.url + PATH, timeout=30).read() == data
        e.wait_stored(PATH)
        assert urllib.request.urlopen(e.url + PATH, timeout=30).read() == data  # a hit, sendfile
        worker = _worker(e)
        rss0 = _rss(worker)
        deadline = time.monotonic() + 240
        socks = _open(e.port, N, deadline)
        try:
            wait_until(lambda: _active(e) >= N, timeout=60, interval=0.5)
            rss_idle = _rss(worker)
            req = f"GET {PATH} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
            for s in socks:
                assert s.send(req) == len(req)
            # Every client gets its status line and the first bytes of the body, then stops reading.
            head_len = None
            for i, s in enumerate(socks):
                head = _recv_some(s, 512, deadline)
                assert head.startswith(b"HTTP/1.1 200 "), head[:100]
                if head_len is None:
                    head_len = head.index(b"\r\n\r\n") + 4
                assert head[head_len:] == data[: 512 - head_len], i
            time.sleep(3)  # the worker fills every socket buffer, then waits for writability
            rss_streaming = _rss(worker)
            idle_per = (rss_idle - rss0) / N
            stream_per = (rss_streaming - rss0) / N
            record_property("rss_base_mib", round(rss0 / 2**20, 1))
            record_property("rss_idle_per_conn_bytes", round(idle_per))
            record_property("rss_streaming_per_conn_bytes", round(stream_per))
            print(
                f"\nworker RSS {rss0 / 2**20:.1f} MiB; {N} idle: +{idle_per:.0f} B/conn; "
                f"streaming: +{stream_per:.0f} B/conn"
            )
            # Back-pressure: an object per connection would be 80 GB; the daemon holds a few KiB.
            assert stream_per < 64 * 1024, stream_per
            assert idle_per < 32 * 1024, idle_per
            # The slow readers still get correct bytes: read one to the end, intact.
            s = socks[N // 2]
            s.setblocking(True)
            s.settimeout(30)
            got = bytearray()
            while len(got) < SIZE + head_len - 512:
                chunk = s.recv(1 << 20)
                assert chunk
                got += chunk
            assert bytes(got) == data[512 - head_len :]
        finally:
            for s in socks:
                s.close()
        wait_until(lambda: _active(e) < 10, timeout=30, interval=0.5)


def test_open_file_limit_checked_at_start(tmp_path: Path, origin: Nginx) -> None:
    """worker_connections beyond what the hard limit allows: exit 1 and one line naming it."""
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        config_toml(limits="worker_connections = 50000").format(
            port=1, admin=2, store=tmp_path / "store", base=tmp_path, upstreams=f'["{origin.url}"]'
        )
    )

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))

    p = subprocess.run(
        [*CDNLAB, "edge", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=low_limit,
    )
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    out = p.stdout + p.stderr
    assert "open-file limit is 4096 (hard limit 4096)" in out, out
    assert "limits.worker_connections 50000" in out and "LimitNOFILE" in out, out


def test_connections_beyond_worker_connections_get_503(tmp_path: Path, origin: Nginx) -> None:
    """Over worker_connections a new client gets a 503 with Retry-After at once (without a
    request read) rather than the worker running out of descriptors for object files."""
    cfg = config_toml(limits="open_files_cache = 16\nworker_connections = 20")
    with edge(tmp_path, [origin.url], config=cfg) as e:
        socks = []
        try:
            for _ in range(25):
                socks.append(socket.create_connection(("127.0.0.1", e.port), timeout=10))
                time.sleep(0.02)
            refused = []
            for s in socks:
                s.settimeout(0.3)
                try:
                    answer = s.recv(1024)
                except TimeoutError:
                    continue  # held open: served when it asks
                assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer, answer
                refused.append(s)
            assert len(refused) >= 5
            wait_until(lambda: _active(e) == 20, timeout=5)
        finally:
            for s in socks:
                s.close()
