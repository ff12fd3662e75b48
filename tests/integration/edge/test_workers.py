"""Several workers on one port (issue 2, daemon point 6): shared store, one fetch per key."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import Edge, Nginx, RawReader, build_request, edge, sha256, wait_until

from .edgecheck import assert_hit, assert_miss_stored, concurrent_one_object, config_toml, listeners

TOKEN = "workers-token"


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory, origin: Nginx) -> Iterator[Edge]:
    cfg = config_toml(workers=2, admin=f'purge_token = "{TOKEN}"')
    with edge(tmp_path_factory.mktemp("workers2"), [origin.url], config=cfg) as e:
        # Both workers must be accepting before the tests spread connections over them.
        wait_until(lambda: len(worker_pids(e)) == 2 and listeners(e.port) == 2, 15)
        yield e


def worker_pids(e: Edge) -> list[int]:
    """Processes whose parent is the daemon's master."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == e.proc.pid:
            pids.append(int(d.name))
    return sorted(pids)


def server_side_owner(e: Edge, client_ports: list[int]) -> dict[int, int]:
    """client port -> pid of the worker holding the server side of that connection."""
    inode_pid: dict[int, int] = {}
    for pid in worker_pids(e):
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inode_pid[int(link[8:-1])] = pid
    owners: dict[int, int] = {}
    wanted = set(client_ports)
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        local_port = int(f[1].split(":")[1], 16)
        remote_port = int(f[2].split(":")[1], 16)
        inode = int(f[9])
        if local_port == e.port and remote_port in wanted and inode in inode_pid:
            owners[remote_port] = inode_pid[inode]
    return owners


def test_two_workers_are_running(two_workers: Edge) -> None:
    assert len(worker_pids(two_workers)) == 2
    assert two_workers.health()["state"] == "serving"


def test_object_stored_by_one_worker_is_a_hit_on_every_worker(two_workers: Edge, origin: Nginx) -> None:
    path = "/workers/shared.bin"
    data = origin.put(path, 200_000)
    small_path = "/workers/shared-small.txt"
    small = origin.put(small_path, 2000)
    socks = [socket.create_connection(("127.0.0.1", two_workers.port), timeout=10) for _ in range(40)]
    try:
        # The first connection stores the objects; which worker it lands on does not matter.
        r = _ask(socks[0], path)
        assert r.body == data
        assert_miss_stored(r.headers)
        _ask(socks[0], small_path)
        two_workers.wait_stored(path)
        two_workers.wait_stored(small_path)
        for s in socks[1:]:
            for p, want in ((path, data), (small_path, small)):
                r = _ask(s, p)
                assert r.status == 200 and r.body == want
                assert_hit(r.headers)
        owners = server_side_owner(two_workers, [s.getsockname()[1] for s in socks[1:]])
        assert len(owners) == len(socks) - 1, "could not map every connection to a worker"
        assert len(set(owners.values())) == 2, f"all hits served by one worker: {set(owners.values())}"
    finally:
        for s in socks:
            s.close()
    assert origin.fetches(path) == 1 and origin.fetches(small_path) == 1


def _ask(s: socket.socket, path: str):  # type: ignore[no-untyped-def]
    s.sendall(build_request("GET", path))
    return RawReader(lambda: s.recv(262144)).read_response()


def test_purge_is_seen_by_every_worker(two_workers: Edge, origin: Nginx) -> None:
    """Both workers hold the object hot; the origin changes; after a purge every worker serves the
    new version (each worker's in-memory view is invalidated, not just the index)."""
    path = "/workers/replaced.txt"
    v1 = origin.put(path, b"version one\n" * 100)
    socks = [socket.create_connection(("127.0.0.1", two_workers.port), timeout=10) for _ in range(30)]
    try:
        _ask(socks[0], path)
        two_workers.wait_stored(path)
        for s in socks:
            assert _ask(s, path).body == v1
        owners = server_side_owner(two_workers, [s.getsockname()[1] for s in socks])
        assert len(set(owners.values())) == 2
        v2 = origin.put(path, b"version 2!!\n" * 100, mtime=1_700_000_500.0)
        status, body = two_workers.post(
            "/purge", json.dumps({"key": path}).encode(), {"Authorization": f"Bearer {TOKEN}"}
        )
        assert (status, body) == (200, {"purged": 1})
        for s in socks:
            r = _ask(s, path)
            assert r.body == v2, "a worker served the purged version"
    finally:
        for s in socks:
            s.close()
    assert origin.fetches(path) == 2


def test_500_simultaneous_requests_two_workers(two_workers: Edge, origin: Nginx) -> None:
    concurrent_one_object(two_workers, origin, "/slow/workers-500.bin")


def test_worker_killed_mid_fetch_harms_no_other_client(two_workers: Edge, origin: Nginx) -> None:
    """Worker A fetches a slow object, worker B's client waits on the same key; A is SIGKILLed.
    B's client still gets the whole object, the store keeps only a whole copy, and the master
    replaces A."""
    path = "/slow/workers-kill.bin"
    data = origin.put(path, 1024 * 1024)  # ~1 s at the origin
    e = two_workers
    before = worker_pids(e)
    socks = [socket.create_connection(("127.0.0.1", e.port), timeout=15) for _ in range(16)]
    try:
        owners = wait_until(
            lambda: (lambda o: o if len(o) == len(socks) else None)(
                server_side_owner(e, [s.getsockname()[1] for s in socks])
            ),
            5,
        )
        assert isinstance(owners, dict) and len(set(owners.values())) == 2
        by_pid: dict[int, socket.socket] = {}
        for s in socks:
            by_pid.setdefault(owners[s.getsockname()[1]], s)
        (pid_a, sa), (pid_b, sb) = sorted(by_pid.items())
        sa.sendall(build_request("GET", path))
        assert sa.recv(1, socket.MSG_PEEK)  # A is streaming its fetch
        sb.sendall(build_request("GET", path))
        time.sleep(0.2)
        os.kill(pid_a, signal.SIGKILL)
        rb = RawReader(lambda: sb.recv(262144)).read_response()
        assert rb.status == 200 and sha256(rb.body) == sha256(data)
    finally:
        for s in socks:
            s.close()
    entry = e.wait_stored(path)
    assert entry["sha256"] == sha256(data) and entry["size"] == len(data)
    assert 1 <= origin.fetches(path) <= 2
    # the master starts a new worker in A's place
    wait_until(
        lambda: len(worker_pids(e)) == 2 and pid_a not in worker_pids(e) and listeners(e.port) == 2, 15
    )
    assert pid_b in worker_pids(e) and set(worker_pids(e)) != set(before)
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", e.port), timeout=10) as s:
            r = _ask(s, path)
            assert sha256(r.body) == sha256(data)
            assert_hit(r.headers)
