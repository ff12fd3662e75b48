"""Disk failure (issue 6 item 7) while serving under load: a disk's filesystem is unmounted (or
remounted read-only) under the daemon. That disk is marked failed (metric and /healthz), its
objects leave the index, and every request still gets the right bytes from the other disk or
the upstream: no crash, no 5xx.

Needs root (mount); as root, chmod 000 would not stop the daemon, so the failures are real
mount changes on a tmpfs the test mounts itself."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import Edge, Nginx, edge, request, sha256, wait_until

from .edgecheck import config_toml

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root and mount(8) to fail a disk"
)

TIERS = """[[tiers]]
path = "{store}/flash0"
kind = "flash"
capacity = "256M"

[[tiers]]
path = "{store}/flash1"
kind = "flash"
capacity = "256M"
"""
CONFIG = config_toml(
    workers=2,
    tiers=TIERS,
    limits="open_files_cache = 8",  # few cached descriptors: most hits open the file anew
    extra="[storage]\ndisk_probe_interval = 0.2\nscrub_rate = 0\n",
)


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """store/flash1 as a tmpfs of its own (unmounted at teardown if still mounted)."""
    mnt = tmp_path / "store" / "flash1"
    mnt.mkdir(parents=True)
    try:
        _run("mount", "-t", "tmpfs", "-o", "size=300m", "tmpfs", str(mnt))
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    yield mnt
    while os.path.ismount(mnt):
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _metric(e: Edge, disk: Path) -> float | None:
    m = re.search(
        rf'^cdnlab_disk_failed{{disk="{re.escape(str(disk))}",kind="flash"}} (\S+)$', e.metrics(), re.M
    )
    return float(m.group(1)) if m else None


def _disk(e: Edge, path: Path) -> dict:
    return next(d for d in e.health()["disks"] if d["path"] == str(path))


def _load(e: Edge, objs: dict[str, bytes], stop: threading.Event, bad: list, counts: list) -> None:
    """Request every object in turn until STOP (bounded by the caller's deadline)."""
    paths = list(objs)
    i = 0
    while not stop.is_set():
        path = paths[i % len(paths)]
        i += 1
        try:
            status, _, body = request(e.port, "GET", path, timeout=10)
        except Exception as exc:  # a cut connection would be a failure too
            bad.append((path, repr(exc)))
            continue
        if status != 200 or sha256(body) != sha256(objs[path]):
            bad.append((path, status, len(body)))
        counts.append(1)


def _fail_under_load(e: Edge, objs: dict[str, bytes], fail: callable, seconds: float = 4.0) -> list:  # type: ignore[valid-type]
    stop = threading.Event()
    bad: list = []
    counts: list = []
    threads = [threading.Thread(target=_load, args=(e, objs, stop, bad, counts)) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        before = len(counts)
        fail()
        time.sleep(seconds)
        assert len(counts) > before + 20, "load stalled after the failure"
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    return bad


def _serve_and_store(e: Edge, objs: dict[str, bytes]) -> None:
    """Every object through the daemon once (right bytes), then committed to the store."""
    for p, data in objs.items():
        assert request(e.port, "GET", p)[2] == data
    for p in objs:
        e.wait_stored(p)


def _objects(origin: Nginx, tag: str) -> dict[str, bytes]:
    out = {}
    for i in range(30):
        size = 2_000 + i * 9_000
        out[f"/diskfail/{tag}-{i}.bin"] = origin.put(f"/diskfail/{tag}-{i}.bin", size)
    return out


def test_unmounted_disk_fails_while_serving(tmp_path: Path, origin: Nginx, tmpfs: Path) -> None:
    objs = _objects(origin, "umount")
    with edge(tmp_path, [origin.url], config=CONFIG) as e:
        _serve_and_store(e, objs)
        on_failing = _disk(e, tmpfs)["objects"]
        assert on_failing > 0  # some objects live on the disk about to fail
        assert _metric(e, tmpfs) == 0
        bad = _fail_under_load(e, objs, lambda: _run("umount", "-l", str(tmpfs)))
        assert not bad, bad[:5]  # no 5xx, no wrong bytes, no cut connection
        d = wait_until(lambda: (lambda d: d if d["failed"] else None)(_disk(e, tmpfs)), timeout=10)
        assert d["reason"], d
        assert d["objects"] == 0  # its objects left the index
        assert _metric(e, tmpfs) == 1
        assert e.health()["state"] == "serving" and e.health()["workers"] == 2
        assert not _disk(e, tmp_path / "store" / "flash0")["failed"]
        # Everything is still served right, refetched onto the healthy disk where needed.
        for p, data in objs.items():
            status, _, body = request(e.port, "GET", p)
            assert status == 200 and body == data
        inv = wait_until(lambda: len(e.inventory_keys()) == len(objs) and e.inventory_keys(), timeout=10)
        assert {k: o["sha256"] for k, o in inv.items()} == {k: sha256(v) for k, v in objs.items()}
        assert _disk(e, tmp_path / "store" / "flash0")["objects"] == len(objs)
        assert e.proc.poll() is None


def test_read_only_remount_fails_the_disk(tmp_path: Path, origin: Nginx, tmpfs: Path) -> None:
    objs = _objects(origin, "ro")
    with edge(tmp_path, [origin.url], config=CONFIG) as e:
        _serve_and_store(e, objs)
        assert _disk(e, tmpfs)["objects"] > 0
        bad = _fail_under_load(e, objs, lambda: _run("mount", "-o", "remount,ro", str(tmpfs)), seconds=2.0)
        assert not bad, bad[:5]
        d = wait_until(lambda: (lambda d: d if d["failed"] else None)(_disk(e, tmpfs)), timeout=10)
        assert "EROFS" in (d["reason"] or ""), d
        assert d["objects"] == 0 and _metric(e, tmpfs) == 1
        # New fills go to the healthy disk only.
        extra = origin.put("/diskfail/ro-new.bin", 50_000)
        assert request(e.port, "GET", "/diskfail/ro-new.bin")[2] == extra
        e.wait_stored("/diskfail/ro-new.bin")
        assert not any((tmpfs / "objects").rglob("*.bin"))
        assert e.proc.poll() is None


@pytest.fixture(params=["ext4", "xfs"])
def dying_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """store/flash1 on a loop device of its own, as ext4 or XFS (a dead drive under XFS can read
    as end of file rather than EIO): (mount point, backing file, device)."""
    fs = request.param
    if shutil.which("losetup") is None or shutil.which(f"mkfs.{fs}") is None:
        pytest.skip(f"needs losetup and mkfs.{fs}")
    mnt = tmp_path / "store" / "flash1"
    mnt.mkdir(parents=True)
    image = tmp_path / "flash1.img"
    with open(image, "wb") as f:
        f.truncate(320 << 20)  # XFS's smallest
    _run(f"mkfs.{fs}", "-q", "-f" if fs == "xfs" else "-F", str(image))
    try:
        dev = subprocess.run(
            ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
        ).stdout.strip()
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"no loop device here: {exc}")
    try:
        _run("mount", dev, str(mnt))
        yield mnt, image, dev
    finally:
        # A shut-down XFS fails stat(), so os.path.ismount says no: ask the mount table instead.
        for _ in range(3):
            if str(mnt) not in Path("/proc/self/mounts").read_text():
                break
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def test_drive_dying_under_open_files(
    tmp_path: Path, origin: Nginx, dying_disk: tuple[Path, Path, str]
) -> None:
    """The drive dies while the workers hold its files open (every hit a sendfile from a cached
    descriptor) and its pages are gone from memory: each read is EIO. A request whose head already
    went out can only be cut; after that the worker leaves the drive alone at once, so the cuts
    are at most the requests in flight, and every other answer is the right bytes."""
    mnt, image, dev = dying_disk
    objs = _objects(origin, "die")
    config = config_toml(
        workers=2,
        tiers=TIERS,
        limits="ram_object_max = 1000",  # every hit from an open file, none from RAM
        extra="[storage]\ndisk_probe_interval = 60\nscrub_rate = 0\n",
    )
    with edge(tmp_path, [origin.url], config=config) as e:
        _serve_and_store(e, objs)
        assert _disk(e, mnt)["objects"] > 0
        for _ in range(3):  # both workers hold every object open
            for p in objs:
                request(e.port, "GET", p)

        def die() -> None:
            with open(image, "r+b") as f:
                f.truncate(0)
            _run("losetup", "-c", dev)
            Path("/proc/sys/vm/drop_caches").write_text("3\n")

        bad = _fail_under_load(e, objs, die, seconds=3.0)
        cut = [b for b in bad if len(b) == 2]  # (path, exception): a connection cut mid-answer
        assert len(bad) == len(cut), bad[:5]  # never a wrong status or wrong bytes
        assert len(cut) <= 4, cut  # at most one per load thread: the requests in flight
        d = wait_until(lambda: (lambda d: d if d["failed"] else None)(_disk(e, mnt)), timeout=10)
        assert "EIO" in (d["reason"] or ""), d
        for p, data in objs.items():
            status, _, body = request(e.port, "GET", p)
            assert status == 200 and body == data
        assert e.proc.poll() is None
