"""Tier moves (copy, fsync, verify, switch, unlink), watermarks, promotion and demotion, eviction
through the configured policy, and a process killed at every step of a move."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdnlab.edge.config import ConfigError, StorageConfig, TierConfig, from_mapping
from cdnlab.edge.store import Store
from cdnlab.edge.tiers import Throttle, TierMover
from cdnlab.eviction import DEFAULT_POLICY, get_policy

KiB = 1024


def tier(root: Path, name: str, kind: str, capacity: int) -> TierConfig:
    return TierConfig(path=root / name, kind=kind, capacity=capacity)  # type: ignore[arg-type]


def put(store: Store, key: str, data: bytes) -> None:
    with store.begin(key, len(data)) as w:
        w.write(data)
        w.commit()


def blob(key: str, size: int) -> bytes:
    seed = hashlib.sha256(key.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def object_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("objects/*/*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(
        [tier(tmp_path, "f0", "flash", 100 * KiB), tier(tmp_path, "h0", "hdd", 1000 * KiB)], tmp_path / "st"
    )
    s.open(reconcile=True)
    yield s
    s.close()


def test_move_copies_verifies_switches_and_leaves_one_copy(tmp_path: Path, store: Store) -> None:
    data = blob("/a", 30 * KiB)
    put(store, "/a", data)
    told: list[list[str]] = []
    store._on_invalidate = told.append
    before = store.lookup("/a")
    assert before is not None and before.tier == "flash"
    res = store.move("/a", "hdd")
    assert res.outcome == "moved" and res.size == len(data)
    after = store.lookup("/a")
    assert after is not None and after.tier == "hdd" and after.sha256 == before.sha256
    assert Path(after.path).read_bytes() == data
    assert told == [["/a"]]  # workers drop their view before the old file goes
    assert Path(res.old_path).exists()  # left for the caller's grace period
    store.unlink_old(res.old_disk, res.old_path)
    assert object_files(tmp_path / "f0") == [] and len(object_files(tmp_path / "h0")) == 1
    usage = {d.kind: d.used for d in store.usage()}
    assert usage == {"flash": 0, "hdd": len(data)}
    assert store.move("/a", "hdd").outcome == "same"
    assert store.move("/nope", "flash").outcome == "gone"


def test_move_of_a_corrupt_source_drops_it(tmp_path: Path, store: Store) -> None:
    put(store, "/c", blob("/c", 10 * KiB))
    entry = store.lookup("/c")
    assert entry is not None
    with open(entry.path, "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 1]))
    assert store.move("/c", "hdd").outcome == "corrupt"
    assert store.lookup("/c") is None
    assert object_files(tmp_path) == []


def test_move_refuses_a_full_tier(tmp_path: Path) -> None:
    s = Store(
        [tier(tmp_path, "f0", "flash", 100 * KiB), tier(tmp_path, "h0", "hdd", 20 * KiB)], tmp_path / "st"
    )
    s.open(reconcile=True)
    try:
        put(s, "/big", blob("/big", 30 * KiB))
        assert s.move("/big", "hdd").outcome == "full"
        assert s.lookup("/big") is not None and s.lookup("/big").tier == "flash"  # type: ignore[union-attr]
    finally:
        s.close()


def test_a_replaced_object_is_not_switched(tmp_path: Path, store: Store) -> None:
    put(store, "/r", blob("/r", 10 * KiB))
    stages: list[str] = []

    def replace_on_copy(stage: str) -> None:
        stages.append(stage)
        if stage == "copied":
            put(store, "/r", b"new version")

    assert store.move("/r", "hdd", hook=replace_on_copy).outcome == "gone"
    got = store.lookup("/r")
    assert got is not None and got.tier == "flash" and Path(got.path).read_bytes() == b"new version"
    assert object_files(tmp_path / "h0") == []  # the copy of the old version is gone


_CRASHER = """
import os, signal, sys
from pathlib import Path
from cdnlab.edge.config import TierConfig
from cdnlab.edge.store import Store
root, stage = Path(sys.argv[1]), sys.argv[2]
s = Store([TierConfig(path=root / "f0", kind="flash", capacity=1 << 20),
           TierConfig(path=root / "h0", kind="hdd", capacity=1 << 20)], root / "st")
s.open(reconcile=False)
def hook(at):
    if at == stage:
        print(at, flush=True)
        signal.pause()
res = s.move("/m", "hdd", hook=hook)
print("done", res.outcome, flush=True)
signal.pause()  # killed before unlinking the old file
"""


@pytest.mark.parametrize("stage", ["copied", "renamed", "switched", "done"])
def test_kill_mid_move_leaves_one_good_copy(tmp_path: Path, stage: str) -> None:
    tiers = [tier(tmp_path, "f0", "flash", 1 << 20), tier(tmp_path, "h0", "hdd", 1 << 20)]
    data = blob("/m", 200 * KiB)
    s = Store(tiers, tmp_path / "st")
    s.open(reconcile=True)
    put(s, "/m", data)
    s.close()
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(_CRASHER))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), stage], stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith(stage), line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    s = Store(tiers, tmp_path / "st")
    report = s.open(reconcile=True)
    try:
        got = s.lookup("/m")
        assert got is not None, report
        assert Path(got.path).read_bytes() == data and got.sha256 == hashlib.sha256(data).hexdigest()
        assert got.tier == ("flash" if stage in ("copied", "renamed") else "hdd")
        files = object_files(tmp_path)
        assert files == [Path(got.path)], (files, report)  # no second copy, no orphan
        assert not list((tmp_path / "h0" / "tmp").iterdir())
        assert {d.kind: d.used for d in s.usage()}[got.tier] == len(data)
    finally:
        s.close()


# -- the mover ---------------------------------------------------------------------------------


def mover(store: Store, **storage: object) -> TierMover:
    cfg = StorageConfig(**{"move_rate": 0, "scrub_rate": 0, **storage})  # type: ignore[arg-type]
    m = TierMover(store, cfg, ram_object_max=16 * KiB)
    m.rebuild()
    return m


def hit(store: Store, key: str, n: int = 1) -> None:
    store.add_hits({key: (n, time.time())})


def test_high_watermark_demotes_warm_and_evicts_cold(tmp_path: Path, store: Store) -> None:
    m = mover(store)
    for i in range(9):  # 90 KiB of 100: under the 95% high watermark
        put(store, f"/o{i}", blob(f"/o{i}", 10 * KiB))
    m.step()
    assert m.counters["evicted"] == m.counters["demoted"] == 0
    for i in range(1, 9, 2):  # odd keys are warm
        hit(store, f"/o{i}")
    m.step()
    put(store, "/o9", blob("/o9", 10 * KiB))  # 100 KiB: over 95%
    m.step()
    m.flush_unlinks(force=True)
    flash = {d.kind: d for d in store.usage()}["flash"]
    assert flash.used <= 0.90 * flash.capacity  # down to the low watermark
    tiers = {k: store.lookup(k).tier if store.lookup(k) else None for k in (f"/o{i}" for i in range(10))}  # type: ignore[union-attr]
    gone = [k for k, t in tiers.items() if t is None]
    down = [k for k, t in tiers.items() if t == "hdd"]
    assert gone and all(int(k[2:]) % 2 == 0 for k in gone), tiers  # never hit: evicted
    assert m.counters["evicted"] == len(gone) and m.counters["demoted"] == len(down)
    for k in down:  # demoted ones were warm, and read back whole
        assert int(k[2:]) % 2 == 1
        e = store.lookup(k)
        assert e is not None and Path(e.path).read_bytes() == blob(k, 10 * KiB)
    assert len(object_files(tmp_path)) == 10 - len(gone)


def test_hot_objects_on_hdd_are_promoted(tmp_path: Path, store: Store) -> None:
    m = mover(store, promote_hits=3)
    put(store, "/p", blob("/p", 10 * KiB))
    assert store.move("/p", "hdd").outcome == "moved"
    m.rebuild()
    hit(store, "/p", 2)
    m.step()
    assert store.lookup("/p").tier == "hdd"  # type: ignore[union-attr]
    hit(store, "/p", 2)
    m.step()
    e = store.lookup("/p")
    assert e is not None and e.tier == "flash" and m.counters["promoted"] == 1
    assert Path(e.path).read_bytes() == blob("/p", 10 * KiB)


def test_promotion_respects_the_upper_high_watermark(tmp_path: Path, store: Store) -> None:
    m = mover(store, promote_hits=1)
    put(store, "/q", blob("/q", 10 * KiB))
    store.move("/q", "hdd")
    for i in range(9):
        put(store, f"/f{i}", blob(f"/f{i}", 10 * KiB))  # flash at 90 KiB: +10 would pass 95%
    m.rebuild()
    hit(store, "/q", 5)
    m.step()
    assert store.lookup("/q").tier == "hdd"  # type: ignore[union-attr]
    assert m.counters["promoted"] == 0


def test_watermarks_come_from_the_config(tmp_path: Path, store: Store) -> None:
    m = mover(store, watermarks={"flash": {"high": 0.5, "low": 0.3}})
    for i in range(6):
        put(store, f"/w{i}", blob(f"/w{i}", 10 * KiB))
    m.step()
    flash = {d.kind: d for d in store.usage()}["flash"]
    assert flash.used <= 30 * KiB


def test_eviction_uses_the_configured_policy(tmp_path: Path, store: Store) -> None:
    """FIFO and LRU disagree once the oldest object is the most recently hit: the store must
    evict what the configured policy says."""
    survivors = {}
    for name in ("fifo", "lru"):
        for e in list(store.iter_entries()):
            store.purge(e.key)
        m = mover(store, eviction_policy=name, demote_min_hits=99)
        for i in range(9):
            put(store, f"/e{i}", blob(f"/e{i}", 10 * KiB))
            m.step()
        hit(store, "/e0")
        m.step()
        put(store, "/e9", blob("/e9", 10 * KiB))
        m.step()
        assert type(m.policies["flash"]).__name__.lower() == name
        survivors[name] = store.lookup("/e0") is not None
    assert survivors == {"fifo": False, "lru": True}


def test_default_policy_is_the_simulators() -> None:
    assert StorageConfig().eviction_policy == "default"
    assert type(get_policy("default", 1)) is type(get_policy(DEFAULT_POLICY, 1))


def test_wrong_policy_name_is_a_config_error(tmp_path: Path) -> None:
    base = {
        "upstreams": ["http://a"],
        "state_dir": str(tmp_path),
        "tiers": [{"path": str(tmp_path / "f"), "kind": "flash", "capacity": "1M"}],
    }
    with pytest.raises(ConfigError, match=r"storage\.eviction_policy.*unknown policy 'belady'"):
        from_mapping({**base, "storage": {"eviction_policy": "belady"}})
    with pytest.raises(ConfigError, match=r"storage\.watermarks\.flash"):
        from_mapping({**base, "storage": {"watermarks": {"flash": {"high": 0.5, "low": 0.9}}}})


def test_wrong_policy_name_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "e.toml"
    cfg.write_text(
        f'upstreams = ["http://127.0.0.1:9"]\nstate_dir = "{tmp_path}/st"\n'
        f'[[tiers]]\npath = "{tmp_path}/f"\nkind = "flash"\ncapacity = "1M"\n'
        '[storage]\neviction_policy = "nope"\n'
    )
    exe = Path(sys.executable).with_name("cdnlab")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cdnlab.cli"]
    r = subprocess.run([*cmd, "edge", "check", "--config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 2, r
    assert "eviction_policy" in r.stderr and "unknown policy" in r.stderr


def test_throttle_bounds_the_rate() -> None:
    t = Throttle(1_000_000, burst=0.01)
    start = time.monotonic()
    for _ in range(20):
        t(10_000)  # 200 kB at 1 MB/s: at least ~0.19 s
    assert time.monotonic() - start >= 0.15


def test_ram_tier_demotes_to_flash(tmp_path: Path) -> None:
    s = Store(
        [tier(tmp_path, "r0", "ram", 40 * KiB), tier(tmp_path, "f0", "flash", 1000 * KiB)],
        tmp_path / "st",
        ram_object_max=16 * KiB,
    )
    s.open(reconcile=True)
    try:
        m = mover(s)
        for i in range(4):
            put(s, f"/s{i}", blob(f"/s{i}", 10 * KiB))  # 40 KiB of 40: over 95%
            hit(s, f"/s{i}")
            m.step()
        m.flush_unlinks(force=True)
        tiers = {f"/s{i}": s.lookup(f"/s{i}").tier for i in range(4)}  # type: ignore[union-attr]
        assert list(tiers.values()).count("flash") >= 1 and "ram" in tiers.values(), tiers
        ram = {d.kind: d for d in s.usage()}["ram"]
        assert ram.used <= 0.90 * ram.capacity
        assert m.counters["demoted"] >= 1 and m.counters["evicted"] == 0
        for k in tiers:
            assert Path(s.lookup(k).path).read_bytes() == blob(k, 10 * KiB)  # type: ignore[union-attr]
    finally:
        s.close()


def test_low_watermark_defaults_under_high() -> None:
    cfg = StorageConfig(watermarks={"hdd": {"high": 0.7}})  # type: ignore[dict-item]
    assert cfg.watermarks["hdd"].low == 0.65
    assert cfg.watermarks["flash"].high == 0.95 and cfg.watermarks["flash"].low == 0.90
    assert StorageConfig().watermarks["hdd"].high == 0.85


def test_a_full_fast_tier_sends_new_objects_to_a_slower_one(tmp_path: Path, store: Store) -> None:
    for i in range(10):
        put(store, f"/full{i}", blob(f"/full{i}", 10 * KiB))  # flash: 100 KiB of 100
    put(store, "/next", blob("/next", 10 * KiB))
    assert store.lookup("/next").tier == "hdd"  # type: ignore[union-attr]
    assert all(store.lookup(f"/full{i}") is not None for i in range(10))  # nothing evicted at commit
