"""The scrubber (flipped byte, truncation, missing file), the disk monitor (probe, failed disk's
rows leave the index), read errors reported by the server, and upstream digest parsing."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdnlab.edge.config import TierConfig
from cdnlab.edge.digest import upstream_sha256
from cdnlab.edge.diskfail import DiskMonitor
from cdnlab.edge.scrub import Scrubber
from cdnlab.edge.store import MARKER, Store

KiB = 1024


def tier(root: Path, name: str, kind: str = "flash", capacity: int = 10 << 20) -> TierConfig:
    return TierConfig(path=root / name, kind=kind, capacity=capacity)  # type: ignore[arg-type]


def put(store: Store, key: str, data: bytes) -> str:
    with store.begin(key, len(data)) as w:
        w.write(data)
        return w.commit().path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    told: list[str] = []
    s = Store([tier(tmp_path, "f0"), tier(tmp_path, "f1")], tmp_path / "st", on_invalidate=told.extend)
    s.open(reconcile=True)
    s.told = told  # type: ignore[attr-defined]
    yield s
    s.close()


def test_scrubber_drops_flipped_truncated_and_missing_objects(store: Store) -> None:
    paths = {k: put(store, k, hashlib.sha256(k.encode()).digest() * 1000) for k in ("/a", "/b", "/c", "/d")}
    with open(paths["/a"], "r+b") as f:  # one flipped bit
        f.seek(12345)
        b = f.read(1)
        f.seek(12345)
        f.write(bytes([b[0] ^ 0x80]))
    os.truncate(paths["/b"], 100)
    os.unlink(paths["/c"])
    scrub = Scrubber(store, rate=0, pause=0)
    scrub.scrub_pass()
    assert scrub.counters["corrupt"] == 2 and scrub.counters["missing"] == 1
    assert (
        scrub.counters["objects"] == 4 and scrub.counters["bytes"] == 32000 and scrub.counters["passes"] == 1
    )
    assert [store.lookup(k) is not None for k in ("/a", "/b", "/c", "/d")] == [False, False, False, True]
    assert not os.path.exists(paths["/a"]) and not os.path.exists(paths["/b"])
    assert sorted(store.told) == ["/a", "/b", "/c"]  # workers told before the files went
    assert all(not d.failed for d in store.usage())  # a missing file is not a failed disk
    scrub.scrub_pass()
    assert scrub.counters["corrupt"] == 2 and scrub.counters["objects"] == 5


def test_scrubber_never_drops_a_newer_version(store: Store) -> None:
    put(store, "/v", b"old" * 1000)
    row = store.index.get("/v")
    assert row is not None
    put(store, "/v", b"new" * 1000)  # replaced after the scrubber read the row
    assert store.check_row(row) in ("skipped", "missing")
    got = store.lookup("/v")
    assert got is not None and Path(got.path).read_bytes() == b"new" * 1000


def test_scrub_rate_is_bounded(store: Store) -> None:
    for i in range(4):
        put(store, f"/r{i}", bytes(100 * KiB))
    scrub = Scrubber(store, rate=800 * KiB, pause=0)
    start = time.monotonic()
    scrub.scrub_pass()
    # 400 KiB at 800 KiB/s with a quarter-second burst: at least ~0.25 s
    assert time.monotonic() - start >= 0.2
    assert scrub.counters["bytes"] == 400 * KiB


def test_disk_monitor_fails_a_vanished_disk_and_drops_its_rows(tmp_path: Path, store: Store) -> None:
    keys = [f"/k{i}" for i in range(40)]
    for k in keys:
        put(store, k, k.encode() * 100)
    on_f1 = [k for k in keys if store.lookup(k).path.startswith(str(tmp_path / "f1"))]  # type: ignore[union-attr]
    assert on_f1 and len(on_f1) < len(keys)
    mon = DiskMonitor(store, interval=0.1)
    mon.check()
    assert not any(d.failed for d in store.usage()) and mon.counters["objects_dropped"] == 0
    shutil.rmtree(tmp_path / "f1")  # as an unmounted filesystem looks: nothing there
    mon.check()
    disks = {Path(d.path).name: d for d in store.usage()}
    assert disks["f1"].failed and "missing" in (disks["f1"].reason or "")
    assert disks["f1"].objects == 0 and disks["f0"].objects == len(keys) - len(on_f1)
    assert mon.counters["objects_dropped"] == len(on_f1)
    assert set(on_f1) <= set(store.told)
    assert all(store.lookup(k) is None for k in on_f1)
    mon.check()  # dropped once only
    assert mon.counters["objects_dropped"] == len(on_f1)
    # every other process learns it from the index
    states = store.index.disk_states()
    assert states[disks["f1"].id].failed and not states[disks["f0"].id].failed


def test_replaced_disk_marker_fails_the_disk(tmp_path: Path, store: Store) -> None:
    (tmp_path / "f0" / MARKER).write_text("dsomeotherdisk\n")
    assert not store.probe(store.usage()[0].id)
    assert store.usage()[0].failed


def test_read_errors_reported_by_the_server(tmp_path: Path, store: Store) -> None:
    path = put(store, "/x", b"x" * 1000)
    entry = store.lookup("/x")
    assert entry is not None
    enoent = OSError(errno.ENOENT, "No such file or directory")
    assert store.note_io_error(entry.disk, enoent) is False  # evicted meanwhile: not a disk failure
    assert not any(d.failed for d in store.usage())
    dev = os.stat(path).st_dev
    assert store.note_dev_error(dev, OSError(errno.EIO, "Input/output error")) is True
    assert sum(d.failed for d in store.usage()) == 1  # the first disk on that device
    other = next(d for d in store.usage() if not d.failed)
    assert store.note_io_error(other.id, OSError(errno.EACCES, "Permission denied")) is True
    assert all(d.failed for d in store.usage())
    assert "EACCES" in (store.usage()[0].reason or "") + (store.usage()[1].reason or "")


def _b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_upstream_digest_headers() -> None:
    body = b"hello"
    hx = hashlib.sha256(body).hexdigest()
    assert upstream_sha256({}) == []
    assert upstream_sha256({"Content-Digest": f"sha-256=:{_b64(body)}:"}) == [("Content-Digest", hx)]
    got = upstream_sha256({"Repr-Digest": f"sha-512=:AAAA:, sha-256=:{_b64(body)}:;x=1"})
    assert got == [("Repr-Digest", hx)]
    assert upstream_sha256({"Content-Digest": "sha-512=:AAAA:"}) == []  # not one we check
    assert upstream_sha256({"Content-Digest": "sha-256=:not base64!:"}) == []  # unreadable: ignored
    assert upstream_sha256({"Content-Digest": "sha-256=:AAAA:"}) == []  # not 32 bytes
    assert upstream_sha256({"x-amz-checksum-sha256": _b64(body)}) == [("x-amz-checksum-sha256", hx)]
    assert upstream_sha256({"x-amz-checksum-sha256": _b64(body) + "-3"}) == []  # multipart composite
    assert upstream_sha256({"x-amz-meta-sha256": hx.upper()}) == [("x-amz-meta-sha256", hx)]
    assert upstream_sha256({"x-amz-meta-sha256": _b64(body)}) == [("x-amz-meta-sha256", hx)]
    both = upstream_sha256({"Content-Digest": f"sha-256=:{_b64(body)}:", "x-amz-meta-sha256": "0" * 64})
    assert both == [("Content-Digest", hx), ("x-amz-meta-sha256", "0" * 64)]


def test_cli_scrub_pass(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'upstreams = ["http://127.0.0.1:9"]\nstate_dir = "{tmp_path}/st"\n'
        f'[[tiers]]\npath = "{tmp_path}/f0"\nkind = "flash"\ncapacity = "10M"\n'
    )
    s = Store([tier(tmp_path, "f0")], tmp_path / "st")
    s.open(reconcile=True)
    bad = put(s, "/bad", b"b" * 5000)
    put(s, "/good", b"g" * 5000)
    s.close()
    with open(bad, "r+b") as f:
        f.write(b"X")
    exe = Path(sys.executable).with_name("cdnlab")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cdnlab.cli"]
    run = [*cmd, "edge", "scrub", "--config", str(cfg), "--rate", "0"]
    r = subprocess.run(run, capture_output=True, text=True)
    assert r.returncode == 1, r
    assert json.loads(r.stdout) == {"objects": 2, "bytes": 5000, "corrupt": 1, "missing": 0}
    r = subprocess.run(run, capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["corrupt"] == 0, r
    r = subprocess.run([*run[:-1], "lots"], capture_output=True, text=True)
    assert r.returncode == 2 and "config error" in r.stderr, r
