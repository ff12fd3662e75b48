"""Storage across restarts (issue 2, daemon point 4): the index survives, and is reconciled with
the disks at start (orphans removed, missing files dropped)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from helpers import Edge, Nginx, RawConn, edge, sha256

from .edgecheck import assert_hit, assert_index_matches_disk, assert_miss_stored, config_toml, object_files

TIERS = """[[tiers]]
path = "{store}/ram0"
kind = "ram"
capacity = "16M"

[[tiers]]
path = "{store}/flash0"
kind = "flash"
capacity = "1G"
"""
CONFIG = config_toml(tiers=TIERS, limits='ram_object_max = "64K"')

OBJECTS = {
    "/restart/a.bin": 200_000,
    "/restart/b.bin": 300_000,
    "/restart/c.txt": 10_000,
    "/restart/d.bin": 500_000,
    "/restart/e.bin": 400_000,
}
DELETED = "/restart/b.bin"
TRUNCATED = "/restart/e.bin"
ORPHANS = [
    "flash0/objects/ab/orphan-object",
    "flash0/tmp/half-written",
    "ram0/objects/00/orphan-small",
    "flash0/objects/stray.txt",
]


@dataclass
class Restarted:
    edge: Edge
    data: dict[str, bytes]
    inventory_at_start: dict[str, dict]
    first_inventory: dict[str, dict]
    stored_at: float


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory, origin: Nginx) -> Iterator[Restarted]:
    base = tmp_path_factory.mktemp("restart")
    data = {p: origin.put(p, n) for p, n in OBJECTS.items()}
    with edge(base, [origin.url], config=CONFIG) as e:
        with RawConn(e.port) as c:
            for p in data:
                assert_miss_stored(c.get(p).headers)
        for p in data:
            e.wait_stored(p)
        first = e.inventory_keys()
        stored_at = time.time()
    assert e.proc.returncode is not None
    # While it is down: lose one object's file, and leave junk where objects live.
    victims = [k for k, v in object_files(e.store).items() if sha256(v) == sha256(data[DELETED])]
    assert len(victims) == 1
    os.unlink(e.store / victims[0])
    victims = [k for k, v in object_files(e.store).items() if sha256(v) == sha256(data[TRUNCATED])]
    assert len(victims) == 1
    os.truncate(e.store / victims[0], OBJECTS[TRUNCATED] // 2)
    for rel in ORPHANS:
        f = e.store / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(os.urandom(4096))
    with edge(base, [origin.url], config=CONFIG) as e2:
        yield Restarted(e2, data, e2.inventory_keys(), first, stored_at)


def test_first_run_stored_everything_in_the_right_tier(restarted: Restarted) -> None:
    inv = restarted.first_inventory
    for p, d in restarted.data.items():
        assert inv[p]["sha256"] == sha256(d) and inv[p]["size"] == len(d)
    assert inv["/restart/c.txt"]["tier"] == "ram"
    assert inv["/restart/a.bin"]["tier"] == "flash"


def test_restart_keeps_the_cache(restarted: Restarted, origin: Nginx) -> None:
    e = restarted.edge
    with RawConn(e.port) as c:
        for p in ("/restart/a.bin", "/restart/c.txt", "/restart/d.bin"):
            r = c.get(p)
            assert r.status == 200 and r.body == restarted.data[p]
            assert_hit(r.headers)
            assert int(r.headers["age"]) >= int(time.time() - restarted.stored_at) - 1
            assert origin.fetches(p) == 1, "a hit after restart went to the origin"
        r = c.get("/restart/d.bin", {"Range": "bytes=-100"})
        assert r.status == 206 and r.body == restarted.data["/restart/d.bin"][-100:]


def test_missing_file_is_dropped_at_start(restarted: Restarted, origin: Nginx) -> None:
    assert DELETED not in restarted.inventory_at_start
    assert set(restarted.inventory_at_start) == set(OBJECTS) - {DELETED, TRUNCATED}
    e = restarted.edge
    with RawConn(e.port) as c:
        r = c.get(DELETED)
        assert r.status == 200 and r.body == restarted.data[DELETED]
        assert_miss_stored(r.headers)
    assert e.wait_stored(DELETED)["sha256"] == sha256(restarted.data[DELETED])
    assert origin.fetches(DELETED) == 2


def test_orphans_are_removed_at_start(restarted: Restarted) -> None:
    left = [rel for rel in ORPHANS if (restarted.edge.store / rel).exists()]
    assert not left, left


def test_index_matches_disk_after_restart(restarted: Restarted) -> None:
    inv = assert_index_matches_disk(restarted.edge)
    for k, o in inv.items():
        assert o["sha256"] == sha256(restarted.data[k])
    disks = restarted.edge.health()["disks"]
    assert sum(d["objects"] for d in disks) == len(inv)
    assert sum(d["used_bytes"] for d in disks) == sum(o["size"] for o in inv.values())


def test_short_file_is_dropped_at_start(restarted: Restarted, origin: Nginx) -> None:
    assert TRUNCATED not in restarted.inventory_at_start
    with RawConn(restarted.edge.port) as c:
        r = c.get(TRUNCATED)
        assert r.status == 200 and sha256(r.body) == sha256(restarted.data[TRUNCATED])
        assert_miss_stored(r.headers)
    assert origin.fetches(TRUNCATED) == 2
