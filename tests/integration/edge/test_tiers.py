"""Tiers (issue 6 item 4) on a running daemon: a flash tier past its high watermark is brought
down to the low one by the configured policy (warm objects demoted to HDD, cold ones evicted),
objects hot on HDD are promoted back, every answer is the right bytes throughout, and a daemon
killed in the middle of moves restarts with exactly one good copy of everything."""

from __future__ import annotations

import re
import time
from pathlib import Path

from helpers import Edge, Nginx, edge, request, sha256, wait_until

from .edgecheck import assert_index_matches_disk, config_toml

KB = 1000
FLASH = 4_000_000

TIERS = f"""[[tiers]]
path = "{{store}}/flash0"
kind = "flash"
capacity = {FLASH}

[[tiers]]
path = "{{store}}/hdd0"
kind = "hdd"
capacity = "64M"
"""


def cfg(move_rate: str = "32M", extra: str = "") -> str:
    storage = (
        f'[storage]\neviction_policy = "lru"\nmover_interval = 0.2\npromote_hits = 3\n'
        f'move_rate = "{move_rate}"\nscrub_rate = 0\n{extra}'
        # 30% headroom on a 4 MB tier: room for the fills that land between two mover passes.
        "[storage.watermarks.flash]\nhigh = 0.7\nlow = 0.5\n"
    )
    return config_toml(workers=2, tiers=TIERS, extra=storage)


def metric(e: Edge, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", e.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def get_ok(e: Edge, path: str, data: bytes) -> None:
    status, _, body = request(e.port, "GET", path)
    assert status == 200 and sha256(body) == sha256(data), (path, status, len(body))


def flash_used(e: Edge) -> int:
    return next(d["used_bytes"] for d in e.health()["disks"] if d["kind"] == "flash")


def test_watermarks_demote_warm_evict_cold_and_promote_hot(tmp_path: Path, origin: Nginx) -> None:
    objs = {f"/tiers/w-{i}.bin": origin.put(f"/tiers/w-{i}.bin", 300 * KB) for i in range(20)}
    with edge(tmp_path, [origin.url], config=cfg()) as e:
        for i, (path, data) in enumerate(objs.items()):
            get_ok(e, path, data)
            time.sleep(0.1)  # the fill is committed: what follows are hits
            if i % 2 == 0:
                get_ok(e, path, data)  # even ones are warm
                get_ok(e, path, data)
            time.sleep(0.1)
        # 6 MB went through a 4 MB flash tier: the mover keeps it under its high watermark.
        wait_until(lambda: flash_used(e) <= 0.7 * FLASH, timeout=15)
        wait_until(lambda: metric(e, "cdnlab_tier_moves_total", '{direction="demote"}') > 0, timeout=15)
        wait_until(lambda: metric(e, "cdnlab_evictions_total", '{policy="lru"}') > 0, timeout=15)
        inv = e.inventory_keys()
        on_hdd = [k for k, o in inv.items() if o["tier"] == "hdd"]
        assert on_hdd, inv
        assert all(int(k.split("-")[-1].split(".")[0]) % 2 == 0 for k in on_hdd), on_hdd  # only warm ones
        gone = [k for k in objs if k not in inv]
        assert gone and all(int(k.split("-")[-1].split(".")[0]) % 2 == 1 for k in gone), gone  # cold ones
        for path, data in objs.items():  # every answer right, wherever it lives
            get_ok(e, path, data)
        # Promotion: an HDD object hit often goes back up to flash.
        hot = on_hdd[0]
        fetches = origin.fetches(hot)
        for _ in range(6):
            get_ok(e, hot, objs[hot])
            time.sleep(0.1)
        wait_until(lambda: e.inventory_keys()[hot]["tier"] == "flash", timeout=15)
        assert metric(e, "cdnlab_tier_moves_total", '{direction="promote"}') >= 1
        get_ok(e, hot, objs[hot])
        assert origin.fetches(hot) == fetches  # moved, never refetched
        wait_until(lambda: flash_used(e) <= 0.7 * FLASH, timeout=15)
        time.sleep(2.5)  # moved objects' old files outlive the switch by 2 s (readers in flight)
        assert_index_matches_disk(e)


def test_kill_during_moves_leaves_one_good_copy(tmp_path: Path, origin: Nginx) -> None:
    objs = {f"/tiers/k-{i}.bin": origin.put(f"/tiers/k-{i}.bin", 400 * KB) for i in range(16)}
    config = cfg(move_rate="1M")  # slow moves: the kill lands in the middle of one
    with edge(tmp_path, [origin.url], config=config) as e:
        for path, data in objs.items():
            get_ok(e, path, data)
            time.sleep(0.1)
            get_ok(e, path, data)  # a hit: warm, so demoted rather than evicted
        time.sleep(0.5)  # fills are committed: from now on a temp file on hdd0 is a move's copy
        hdd_tmp = e.store / "hdd0" / "tmp"
        wait_until(lambda: any(p.name[0] != "p" for p in hdd_tmp.iterdir()), timeout=20, interval=0.01)
        e.kill9()
    with edge(tmp_path, [origin.url], config=config) as e:
        inv = assert_index_matches_disk(e)  # no temp file, no orphan, no row without its file
        assert inv
        for key, o in inv.items():
            assert o["sha256"] == sha256(objs[key])
        before = {k: origin.fetches(k) for k in inv}
        # What the index kept is served from the store. Those first: filling the rest could
        # legitimately evict a kept object whose hit count the kill lost.
        for key in inv:
            get_ok(e, key, objs[key])
        assert all(origin.fetches(k) == before[k] for k in inv)
        for path, data in objs.items():
            get_ok(e, path, data)
