"""kill -9 of the whole daemon while it stores many objects; restart; prove by SHA-256 that no
partial or wrong object is ever served and that the index matches the disk (issue 2, Tests)."""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from pathlib import Path

from helpers import Edge, IncompleteResponse, Nginx, RawConn, edge, sha256

from .edgecheck import assert_index_matches_disk, config_toml, ours

TIERS = """[[tiers]]
path = "{store}/ram0"
kind = "ram"
capacity = "4M"

[[tiers]]
path = "{store}/flash0"
kind = "flash"
capacity = "512M"

[[tiers]]
path = "{store}/flash1"
kind = "flash"
capacity = "512M"
"""
CONFIG = config_toml(workers=2, tiers=TIERS, limits='ram_object_max = "64K"')


def _objects(origin: Nginx, rng: random.Random) -> dict[str, bytes]:
    objs: dict[str, bytes] = {}
    for i in range(90):
        if i % 4 == 0:
            path, size = f"/slow/crash-{i}.bin", rng.randrange(200_000, 900_000)  # in flight for ~1 s
        elif i % 3 == 0:
            path, size = f"/crash/small-{i}.txt", rng.randrange(100, 60_000)  # RAM tier
        else:
            path, size = f"/crash/obj-{i}.bin", rng.randrange(60_000, 2_000_000)
        objs[path] = origin.put(path, size)
    return objs


def _fetch_all(
    e: Edge,
    paths: list[str],
    threads: int,
    stop: threading.Event | None = None,
    done: list[str] | None = None,
) -> tuple[dict[str, list], list[tuple[str, str]]]:
    """Fetch every path on ``threads`` keep-alive connections; complete answers by path, and the
    failures (cut-off connections) as (path, reason). ``done`` gets each completed path."""
    work: queue.Queue[str] = queue.Queue()
    for p in paths:
        work.put(p)
    got: dict[str, list] = {}
    failed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def run() -> None:
        conn: RawConn | None = None
        while not (stop and stop.is_set()):
            try:
                p = work.get_nowait()
            except queue.Empty:
                break
            try:
                conn = conn or RawConn(e.port, timeout=10)
                r = conn.get(p)
                with lock:
                    got.setdefault(p, []).append(r)
                    if done is not None:
                        done.append(p)
            except (OSError, IncompleteResponse) as exc:
                with lock:
                    failed.append((p, type(exc).__name__))
                if conn:
                    conn.close()
                conn = None
        if conn:
            conn.close()

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
        assert not t.is_alive(), "a client thread hung"
    return got, failed


def test_kill_9_while_storing_then_restart_serves_only_whole_objects(tmp_path: Path, origin: Nginx) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    why = f"(seed {seed})"
    objs = _objects(origin, rng)
    paths = list(objs)
    rng.shuffle(paths)
    base = tmp_path / "crash"

    # 1. Many distinct misses at once, then SIGKILL to the whole process group at a random moment.
    with edge(base, [origin.url], config=CONFIG) as e:
        stop = threading.Event()
        result: dict = {}
        done: list[str] = []
        clients = threading.Thread(
            target=lambda: result.update(
                zip(("got", "failed"), _fetch_all(e, paths, 24, stop, done), strict=True)
            )
        )
        # A random moment while transfers are surely in flight: after k of 90 objects completed,
        # with 24 clients busy on the rest.
        k = rng.randrange(0, 55)
        t0 = time.monotonic()
        clients.start()
        deadline = t0 + 20
        while len(done) < k and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
        delay = time.monotonic() - t0
        e.kill9()
        stop.set()
        clients.join(60)
        assert not clients.is_alive()
        assert e.proc.returncode == -9
    why = f"(seed {seed}, kill after {delay:.2f} s and {k} objects, {len(result['failed'])} transfers cut)"
    # Everything answered in full before the kill was the right object.
    for p, rs in result["got"].items():
        for r in rs:
            assert r.status == 200 and sha256(r.body) == sha256(objs[p]), f"{p} served wrong bytes {why}"
    assert result["failed"], f"the kill hit nothing in flight {why}"

    # 2. Restart on the same store: reconcile leaves only whole objects, and the index matches disk.
    with edge(base, [origin.url], config=CONFIG) as e:
        inv = assert_index_matches_disk(e)
        assert set(inv) <= set(objs), f"unknown keys {set(inv) - set(objs)} {why}"
        for k, o in inv.items():
            assert o["size"] == len(objs[k]) and o["sha256"] == sha256(objs[k]), f"{k} stored wrong {why}"
        origin_before = {p: origin.fetches(p) for p in paths}

        # 3. Fetch everything: right bytes every time; what the index had is a hit, the rest a miss.
        got, failed = _fetch_all(e, paths, 24)
        assert not failed, f"{failed[:5]} {why}"
        for p in paths:
            (r,) = got[p]
            assert r.status == 200 and sha256(r.body) == sha256(objs[p]), f"{p} wrong after restart {why}"
            params = ours(r.headers)
            if p in inv:
                assert params == {"hit": True}, (p, params, why)
                assert origin.fetches(p) == origin_before[p], f"{p} refetched though indexed {why}"
            else:
                assert params.get("fwd") == "miss", (p, params, why)
        for p in paths:
            e.wait_stored(p)
        final = assert_index_matches_disk(e)
        assert set(final) == set(objs)
        assert all(final[k]["sha256"] == sha256(objs[k]) for k in final)
