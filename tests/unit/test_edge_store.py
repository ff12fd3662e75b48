"""The object store: layout, placement, commit rules, eviction, purge, reconcile, failed disks."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdnlab.edge import store as store_mod
from cdnlab.edge.config import TierConfig
from cdnlab.edge.store import (
    MARKER,
    DiskFailedError,
    IntegrityError,
    NoDiskError,
    ObjectTooLargeError,
    PurgedDuringFillError,
    SizeMismatchError,
    Store,
    StoreError,
)

MiB = 1 << 20


def tier(root: Path, name: str, kind: str, capacity: int = 10 * MiB) -> TierConfig:
    return TierConfig(path=root / name, kind=kind, capacity=capacity)  # type: ignore[arg-type]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(store: Store, key: str, data: bytes, *, known: bool = True, **commit: object) -> store_mod.Entry:
    with store.begin(key, len(data) if known else None, "text/plain") as w:
        w.write(data)
        return w.commit(**commit)  # type: ignore[arg-type]


class Opened:
    """Stores opened in a test, closed at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stores: list[Store] = []

    def __call__(self, tiers: list[TierConfig], reconcile: bool = True, **kw: object) -> Store:
        s = Store(tiers, self.root / "state", **kw)  # type: ignore[arg-type]
        s.open(reconcile=reconcile)
        self.stores.append(s)
        return s


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Opened]:
    o = Opened(tmp_path)
    yield o
    for s in o.stores:
        s.close()


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


# -- layout, round trip ------------------------------------------------------------------------


def test_layout_of_each_disk(tmp_path: Path, opened: Opened) -> None:
    opened([tier(tmp_path, "f0", "flash"), tier(tmp_path, "h0", "hdd")])
    for name in ("f0", "h0"):
        root = tmp_path / name
        assert (root / "tmp").is_dir()
        assert sorted(p.name for p in (root / "objects").iterdir()) == [f"{i:02x}" for i in range(256)]
        assert (root / MARKER).read_text().strip().startswith("d")
    assert (tmp_path / "state" / "index.sqlite3").exists()


def test_commit_then_lookup(tmp_path: Path, opened: Opened) -> None:
    s = opened([tier(tmp_path, "f0", "flash")])
    data = b"hello world" * 1000
    e = put(
        s,
        "/a/b.txt?x=1",
        data,
        etag='"v1"',
        last_modified=1700000000.0,
        headers=[("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1"), ("Vary", "a"), ("vary", "b")],
    )
    got = s.lookup("/a/b.txt?x=1")
    assert got == e
    assert got.size == len(data) and got.sha256 == sha(data) and got.tier == "flash"
    assert got.etag == '"v1"' and got.last_modified == 1700000000.0 and got.content_type == "text/plain"
    assert got.headers == {"cache-control": "max-age=60", "vary": "a, b"}  # set-cookie never kept
    assert Path(got.path).read_bytes() == data
    assert Path(got.path).is_relative_to(tmp_path / "f0" / "objects")
    assert "b.txt" not in got.path  # names come from a hash of the key, never from the URL
    assert files_under(tmp_path / "f0" / "tmp") == []
    assert s.lookup("/nope") is None


def test_hostile_keys_never_reach_the_filesystem(tmp_path: Path, opened: Opened) -> None:
    s = opened([tier(tmp_path, "f0", "flash")])
    for key in ["../../etc/passwd", "/%2e%2e/x", "/a\x00b", "/" + "x" * 5000]:
        e = put(s, key, b"x")
        assert Path(e.path).parent.parent == tmp_path / "f0" / "objects"
        assert s.lookup(key) == e


def test_fileno_reads_the_growing_file(tmp_path: Path, opened: Opened) -> None:
    s = opened([tier(tmp_path, "f0", "flash")])
    with s.begin("/k", 8) as w:
        w.write(b"abcd")
        assert os.pread(w.fileno(), 100, 0) == b"abcd"
        assert w.bytes_written == 4 and w.hexdigest() == sha(b"abcd")
        reader = os.dup(w.fileno())  # how a reader keeps streaming past the commit
        w.write(memoryview(b"efgh"))
        e = w.commit()
        with pytest.raises(ValueError):
            w.fileno()  # commit released the writer's descriptor
        assert os.pread(reader, 100, 2) == b"cdefgh"
        os.close(reader)
    assert e.sha256 == sha(b"abcdefgh")


# -- placement ---------------------------------------------------------------------------------


def test_small_objects_to_ram_large_to_flash(tmp_path: Path, opened: Opened) -> None:
    tiers = [tier(tmp_path, "r0", "ram"), tier(tmp_path, "f0", "flash"), tier(tmp_path, "h0", "hdd")]
    s = opened(tiers, ram_object_max=1000)
    assert put(s, "/small", b"x" * 1000).tier == "ram"
    assert put(s, "/large", b"x" * 1001).tier == "flash"
    assert put(s, "/unknown", b"x" * 10, known=False).tier == "flash"  # unknown size: not RAM


def test_tier_fallbacks(tmp_path: Path, opened: Opened) -> None:
    s = opened([tier(tmp_path, "h0", "hdd")], ram_object_max=1000)
    assert put(s, "/small", b"x").tier == "hdd"
    s.close()
    s = opened([tier(tmp_path, "r1", "ram")])
    assert put(s, "/large", b"x" * 300_000).tier == "ram"  # a RAM-only box takes everything


def test_placement_is_a_stable_hash_over_disks(tmp_path: Path, opened: Opened) -> None:
    tiers = [tier(tmp_path, f"f{i}", "flash") for i in range(3)]
    s = opened(tiers)
    chosen = {}
    for i in range(60):
        w = s.begin(f"/k{i}", 10)
        chosen[f"/k{i}"] = w.disk
        w.close()
    assert len(set(chosen.values())) == 3  # spread over every disk
    s.close()
    s2 = opened(tiers, reconcile=False)  # another process, another time: same choice
    for key, disk in chosen.items():
        w = s2.begin(key, 10)
        assert w.disk == disk
        w.close()


def test_placement_prefers_disks_with_room(tmp_path: Path, opened: Opened) -> None:
    tiers = [tier(tmp_path, "f0", "flash", 1000), tier(tmp_path, "f1", "flash", 1000)]
    s = opened(tiers)
    first = put(s, "/fill", b"x" * 900)
    for i in range(10):
        w = s.begin(f"/k{i}", 500)
        assert w.disk != first.disk
        w.close()


def test_too_large_for_every_disk(tmp_path: Path, opened: Opened) -> None:
    s = opened([tier(tmp_path, "f0", "flash", 1000)])
    with pytest.raises(ObjectTooLargeError):
        s.begin("/big", 1001)
    w = s.begin("/big")  # unknown size: refused once it outgrows the disk
    w.write(b"x" * 1000)
    with pytest.raises(ObjectTooLargeError):
        w.write(b"x")
    assert w.state == "aborted"
    w.close()
    assert files_under(tmp_path / "f0" / "tmp") == []


# -- commit rules --------------------------------------------------------------------------------


def test_truncated_body_is_never_committed(tmp_path: Path, opened: Opened) -> None:
    s = opened([tier(tmp_path, "f0", "flash")])
    w = s.begin("/k", 100)
    w.write(b"x" * 50)
    with pytest.raises(SizeMismatchError):
        w.commit()
    assert w.state == "aborted"
    w.close()
    assert s.lookup("/k") is None
    assert files_under(tmp_path / "f0") == [tmp_path / "f0" / MARKER]


def test_body_longer_than_expected_is_refused(tmp_path: Path, opened: Opened) -> None:
    s = opened([tier(tmp_path, "f0", "flash")])
    with s.begin("/k", 4) as w, pytest.raises(SizeMismatchError):
        w.write(b"12345")
    assert s.lookup("/k") is None


def test_expected_digest_is_checked(tmp_path: Path, opened: Opened) -> None:
    s = opened([tier(tmp_path, "f0", "flash")])
    with pytest.raises(IntegrityError):
        put(s, "/k", b"abc", expected_sha256=sha(b"abd"))
    assert s.lookup("/k") is None
    assert put(s, "/k", b"abc", expected_sha256=sha(b"abc").upper()).sha256 == sha(b"abc")


def test_abort_and_close_remove_the_temp_file(tmp_path: Path, opened: Opened) -> None:
    s = opened([tier(tmp_path, "f0", "flash")])
    w = s.begin("/k", 3)
    w.write(b"abc")
    assert Path(w.temp_path).exists()
    w.abort()
    w.abort()  # idempotent
    assert not Path(w.temp_path).exists()
    with pytest.raises(StoreError):
        w.write(b"x")
    w.close()
    with s.begin("/k2", 3) as w2:  # leaving the block without commit aborts
        w2.write(b"abc")
    assert files_under(tmp_path / "f0" / "tmp") == []
    assert s.lookup("/k") is None and s.lookup("/k2") is None


def test_replace_unlinks_the_old_file_after_the_new_row(tmp_path: Path, opened: Opened) -> None:
    told: list[list[str]] = []
    s = opened([tier(tmp_path, "f0", "flash"), tier(tmp_path, "f1", "flash")], on_invalidate=told.append)
    old = put(s, "/k", b"old")
    new = put(s, "/k", b"newer")
    assert new.path != old.path
    assert not Path(old.path).exists()
    assert Path(new.path).read_bytes() == b"newer"
    assert s.lookup("/k") == new
    assert told == [["/k"]]
    assert sum(u.objects for u in s.usage()) == 1


# -- eviction ------------------------------------------------------------------------------------


def test_eviction_keeps_each_disk_within_capacity(tmp_path: Path, opened: Opened) -> None:
    told: list[str] = []
    s = opened([tier(tmp_path, "f0", "flash", 10_000)], on_invalidate=told.extend)
    entries = {}
    for i in range(5):
        entries[i] = put(s, f"/k{i}", bytes([i]) * 2000)
        time.sleep(0.002)  # distinct stored_at / last_access
    s.add_hits({"/k0": (1, time.time())})  # k0 becomes the most recently used
    put(s, "/new", b"n" * 3000)
    # 10000 + 3000 > 10000: the two least recently used (k1, k2) go, k0 stays.
    assert s.lookup("/k1") is None and s.lookup("/k2") is None
    assert not Path(entries[1].path).exists() and not Path(entries[2].path).exists()
    assert all(s.lookup(k) is not None for k in ("/k0", "/k3", "/k4", "/new"))
    assert sorted(told) == ["/k1", "/k2"]
    (u,) = s.usage()
    assert u.used == 9000 <= u.capacity and u.objects == 4
    assert len(files_under(tmp_path / "f0" / "objects")) == 4


def test_eviction_ignores_objects_being_written(tmp_path: Path, opened: Opened) -> None:
    s = opened([tier(tmp_path, "f0", "flash", 3000)])
    w = s.begin("/inflight", 2000)
    w.write(b"i" * 2000)
    put(s, "/a", b"a" * 2000)
    put(s, "/b", b"b" * 2000)  # evicts /a; the temp file of /inflight is untouched
    assert Path(w.temp_path).exists()
    e = w.commit()  # now evicts /b
    w.close()
    assert s.lookup("/a") is None and s.lookup("/b") is None and s.lookup("/inflight") == e


def test_iter_entries(tmp_path: Path, opened: Opened) -> None:
    s = opened([tier(tmp_path, "f0", "flash")])
    entries = [put(s, f"/k{i}", b"x" * i) for i in range(5)]
    assert list(s.iter_entries()) == entries


# -- purge ---------------------------------------------------------------------------------------


def test_purge_exact_and_prefix_with_wildcard_characters(tmp_path: Path, opened: Opened) -> None:
    told: list[str] = []
    s = opened([tier(tmp_path, "f0", "flash")], on_invalidate=told.extend)
    keys = ["/v/a%b/1", "/v/a%b/2", "/v/aXb/1", "/v/a_b/1", "/v/aYb/1", "/v/a%", "/w/1"]
    paths = {k: put(s, k, k.encode()).path for k in keys}
    assert s.purge("/v/a%") == 1
    assert s.purge("/v/a%") == 0
    assert s.purge_prefix("/v/a%b/") == 2
    assert s.purge_prefix("/v/a_") == 1
    assert s.purge_prefix("/nothing") == 0
    left = {"/v/aXb/1", "/v/aYb/1", "/w/1"}
    for k in keys:
        assert (s.lookup(k) is not None) == (k in left)
        assert Path(paths[k]).exists() == (k in left)
    assert sorted(told) == sorted(set(keys) - left)
    assert s.purge_prefix("") == 3
    assert files_under(tmp_path / "f0" / "objects") == []


def test_purge_during_fill_refuses_the_commit(tmp_path: Path, opened: Opened) -> None:
    s = opened([tier(tmp_path, "f0", "flash")])
    w1, w2, w3 = s.begin("/a/1", 1), s.begin("/a/2", 1), s.begin("/b", 1)
    for w in (w1, w2, w3):
        w.write(b"x")
    s.purge("/a/1")
    with pytest.raises(PurgedDuringFillError):
        w1.commit()
    s.purge_prefix("/a/")
    with pytest.raises(PurgedDuringFillError):
        w2.commit()
    w3.commit()
    for w in (w1, w2, w3):
        w.close()
    assert s.lookup("/a/1") is None and s.lookup("/a/2") is None and s.lookup("/b") is not None
    assert len(files_under(tmp_path / "f0" / "objects")) == 1


def test_a_purge_after_since_purge_refuses_a_later_begin(tmp_path: Path, opened: Opened) -> None:
    """The fetch took purge_seq() before its request went upstream; the purge came before begin()."""
    s = opened([tier(tmp_path, "f0", "flash")])
    since = s.index.purge_seq()
    s.purge("/k")
    w = s.begin("/k", 1, since_purge=since)
    w.write(b"x")
    with pytest.raises(PurgedDuringFillError):
        w.commit()
    w.close()
    late = s.begin("/k", 1)  # a fill begun after the purge is stored
    late.write(b"x")
    late.commit()
    late.close()
    assert s.lookup("/k") is not None


# -- verify, usage ---------------------------------------------------------------------------------


def test_verify_detects_a_flipped_byte(tmp_path: Path, opened: Opened) -> None:
    s = opened([tier(tmp_path, "f0", "flash")])
    e = put(s, "/k", b"abcdef" * 1000)
    assert s.verify(e)
    with open(e.path, "r+b") as f:
        f.seek(100)
        f.write(b"Z")
    assert not s.verify(e)
    os.unlink(e.path)
    assert not s.verify(e)


def test_usage_per_disk(tmp_path: Path, opened: Opened) -> None:
    tiers = [tier(tmp_path, "r0", "ram", 1000), tier(tmp_path, "f0", "flash", 5000)]
    s = opened(tiers, ram_object_max=100)
    put(s, "/s", b"x" * 10)
    put(s, "/l", b"x" * 200)
    put(s, "/l2", b"x" * 300)
    ram, flash = s.usage()
    assert (ram.kind, ram.capacity, ram.used, ram.objects, ram.failed) == ("ram", 1000, 10, 1, False)
    assert (flash.path, flash.used, flash.objects) == (str(tmp_path / "f0"), 500, 2)


# -- reconcile -------------------------------------------------------------------------------------


def test_reconcile_repairs_every_case(tmp_path: Path, opened: Opened) -> None:
    tiers = [tier(tmp_path, "f0", "flash")]
    s = opened(tiers)
    good = put(s, "/good", b"good")
    missing = put(s, "/missing", b"gone soon")
    resized = put(s, "/resized", b"12345")
    w = s.begin("/inflight", 10)
    w.write(b"half")
    s.close()  # "crash": the temp file stays behind
    os.close(w.fileno())
    w._fd = -1
    objects = tmp_path / "f0" / "objects"
    os.unlink(missing.path)
    Path(resized.path).write_bytes(b"123")
    (objects / "ab" / "orphan-file").write_bytes(b"o")
    (objects / "stray").write_bytes(b"s")
    (objects / "ab" / "a-dir").mkdir()
    (tmp_path / "f0" / "tmp" / "left-over").write_bytes(b"t")

    first = Store(tiers, tmp_path / "state")
    assert first.open(reconcile=True).orphans_removed == 3
    first.close()
    second = Store(tiers, tmp_path / "state")  # nothing left to repair
    again = second.open(reconcile=True)
    second.close()
    assert (again.temp_removed, again.orphans_removed, again.missing_dropped) == (0, 0, 0)

    s = opened(tiers, reconcile=False)
    assert s.lookup("/good") == good
    assert s.lookup("/missing") is None and s.lookup("/resized") is None
    assert files_under(tmp_path / "f0" / "tmp") == []
    assert files_under(objects) == [Path(good.path)]
    assert [p.name for p in objects.iterdir() if len(p.name) != 2] == []


def test_reconcile_report_counts(tmp_path: Path) -> None:
    tiers = [tier(tmp_path, "f0", "flash"), tier(tmp_path, "f1", "hdd")]
    s = Store(tiers, tmp_path / "state")
    s.open(reconcile=True)
    keep = put(s, "/keep", b"keep")
    gone = put(s, "/gone", b"gone")
    resized = put(s, "/resized", b"12345")
    w = s.begin("/inflight", 10)
    w.write(b"half")
    os.close(w.fileno())
    w._fd = -1  # "crash": the temp file stays behind
    s.close()
    os.unlink(gone.path)
    Path(resized.path).write_bytes(b"123")
    objects = tmp_path / "f0" / "objects"
    (objects / "ab" / "orphan").write_bytes(b"o")
    (objects / "stray").write_bytes(b"s")
    (tmp_path / "f1" / "tmp" / "junk").write_bytes(b"j")

    s = Store(tiers, tmp_path / "state")
    r = s.open(reconcile=True)
    assert r.temp_removed == 2  # the writer's temp file and the junk
    assert r.orphans_removed == 2
    assert r.missing_dropped == 1
    assert r.size_mismatch_dropped == 1
    assert r.unknown_disk_dropped == 0
    assert (r.objects, r.bytes, r.failed_disks) == (1, 4, [])
    assert s.lookup("/keep") == keep
    assert not Path(resized.path).exists()
    s.close()


def test_reconcile_drops_rows_of_disks_no_longer_configured(tmp_path: Path) -> None:
    both = [tier(tmp_path, "f0", "flash"), tier(tmp_path, "f1", "flash")]
    s = Store(both, tmp_path / "state")
    s.open(reconcile=True)
    for i in range(20):
        put(s, f"/k{i}", b"x")
    on_f1 = [k for k in (f"/k{i}" for i in range(20)) if s.lookup(k).disk == s.usage()[1].id]  # type: ignore[union-attr]
    s.close()
    s = Store(both[:1], tmp_path / "state")
    r = s.open(reconcile=True)
    assert r.unknown_disk_dropped == len(on_f1) > 0
    assert r.objects == 20 - len(on_f1)
    s.close()


def test_disk_id_survives_a_new_mount_point(tmp_path: Path) -> None:
    s = Store([tier(tmp_path, "f0", "flash")], tmp_path / "state")
    s.open(reconcile=True)
    put(s, "/k", b"data")
    s.close()
    os.rename(tmp_path / "f0", tmp_path / "moved")
    s = Store([tier(tmp_path, "moved", "flash")], tmp_path / "state")
    r = s.open(reconcile=True)
    assert r.objects == 1
    e = s.lookup("/k")
    assert e is not None and Path(e.path).read_bytes() == b"data"
    s.close()


# -- failed disks ----------------------------------------------------------------------------------


def test_unusable_disk_at_open_is_skipped(tmp_path: Path, opened: Opened) -> None:
    (tmp_path / "f0").write_bytes(b"not a directory")
    s = opened([tier(tmp_path, "f0", "flash"), tier(tmp_path, "f1", "flash")])
    bad, ok = s.usage()
    assert bad.failed and bad.reason and not ok.failed
    for i in range(10):
        assert put(s, f"/k{i}", b"x").disk == ok.id
    s.close()
    only_bad = opened([tier(tmp_path, "f0", "flash")])
    with pytest.raises(NoDiskError):
        only_bad.begin("/k", 1)


def test_io_error_marks_the_disk_failed_everywhere(
    tmp_path: Path, opened: Opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiers = [tier(tmp_path, "f0", "flash"), tier(tmp_path, "f1", "flash")]
    s = opened(tiers)
    other = opened(tiers, reconcile=False)  # another worker
    entries = [put(s, f"/k{i}", b"x" * 10) for i in range(20)]
    w = s.begin("/victim", 10)
    bad_disk = w.disk

    def eio(*a: object) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store_mod.os, "pwrite", eio)
    with pytest.raises(DiskFailedError):
        w.write(b"x" * 10)
    monkeypatch.undo()
    w.close()
    assert not Path(w.temp_path).exists()
    failed = {u.id: u for u in s.usage()}[bad_disk]
    assert failed.failed and failed.reason and "EIO" in failed.reason
    for e in entries:  # its objects are misses now, the others still hit
        assert (s.lookup(e.key) is None) == (e.disk == bad_disk)
    for i in range(10):
        assert put(s, f"/new{i}", b"y").disk != bad_disk
    # The other process learns it on its next housekeeping tick.
    assert any(other.lookup(e.key) is not None for e in entries if e.disk == bad_disk)
    other.add_hits({})
    assert all(other.lookup(e.key) is None for e in entries if e.disk == bad_disk)
    assert {u.id: u.failed for u in other.usage()}[bad_disk]
    # Next start: rows of the disk that failed are dropped; the disk is probed afresh.
    for st in (s, other):
        st.close()
    r = Store(tiers, tmp_path / "state").open(reconcile=True)
    assert r.unknown_disk_dropped == sum(e.disk == bad_disk for e in entries) > 0
    assert r.failed_disks == []


def test_disk_vanishing_under_a_writer(tmp_path: Path, opened: Opened) -> None:
    s = opened([tier(tmp_path, "f0", "flash"), tier(tmp_path, "f1", "flash")])
    w = s.begin("/k", 1)
    w.write(b"x")
    root = Path(w.temp_path).parent.parent
    os.rename(root / "objects", root / "objects.gone")  # commit's rename now fails with ENOENT
    with pytest.raises(DiskFailedError):
        w.commit()
    w.close()
    assert {u.id: u.failed for u in s.usage()}[w.disk]
    assert put(s, "/k", b"x").disk != w.disk
    os.rename(root / "objects.gone", root / "objects")


def test_failed_disk_never_crashes_begin(tmp_path: Path, opened: Opened) -> None:
    s = opened([tier(tmp_path, "f0", "flash"), tier(tmp_path, "f1", "flash")])
    w = s.begin("/probe", 1)
    dead = Path(w.temp_path).parent
    w.close()
    for p in dead.iterdir():
        p.unlink()
    dead.rmdir()
    dead.write_bytes(b"")  # tmp/ is now a file: creating temp files fails with ENOTDIR
    for i in range(20):  # every key lands on the healthy disk, whatever its hash says
        assert put(s, f"/k{i}", b"x").path.startswith(str(tmp_path))
    assert sum(u.failed for u in s.usage()) == 1


# -- several processes -------------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import hashlib, sys
    from pathlib import Path
    from cdnlab.edge.config import TierConfig
    from cdnlab.edge.store import Store
    root = Path(sys.argv[1])
    tiers = [TierConfig(path=root / n, kind="flash", capacity=10 << 20) for n in ("f0", "f1")]
    s = Store(tiers, root / "state")
    s.open(reconcile=False)
    for i in range(int(sys.argv[2])):
        data = hashlib.sha256(str(i).encode()).digest() * (i + 1)
        with s.begin(f"/obj/{i}", len(data)) as w:
            w.write(data)
            w.commit(etag=str(i))
    s.close()
    """
)


def test_one_process_writes_while_another_reads(tmp_path: Path, opened: Opened) -> None:
    tiers = [tier(tmp_path, n, "flash") for n in ("f0", "f1")]
    reader = opened(tiers)  # the master reconciles, then the worker starts
    n = 60
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(n)])
    seen: dict[int, str] = {}
    deadline = time.monotonic() + 30
    try:
        while len(seen) < n and time.monotonic() < deadline:
            for i in range(n):
                if i in seen:
                    continue
                e = reader.lookup(f"/obj/{i}")
                if e is not None:
                    data = hashlib.sha256(str(i).encode()).digest() * (i + 1)
                    assert Path(e.path).read_bytes() == data and e.sha256 == sha(data)
                    seen[i] = e.disk
    finally:
        assert child.wait(timeout=30) == 0
    assert len(seen) == n
    assert len(set(seen.values())) == 2


def test_stores_in_one_process_share_the_index(tmp_path: Path, opened: Opened) -> None:
    tiers = [tier(tmp_path, "f0", "flash")]
    a = opened(tiers)
    b = opened(tiers, reconcile=False)
    put(a, "/k", b"one")
    e = b.lookup("/k")
    assert e is not None and b.verify(e)
    assert b.purge("/k") == 1
    assert a.lookup("/k") is None


def test_placement_functions() -> None:
    from cdnlab.edge.placement import choose, key_digest, rank, tier_order

    kinds = ["ram", "flash", "hdd"]
    assert tier_order(10, 100, kinds) == ["ram", "flash", "hdd"]
    assert tier_order(101, 100, kinds) == ["flash", "hdd"]
    assert tier_order(None, 100, kinds) == ["flash", "hdd"]
    assert tier_order(10, 100, ["hdd"]) == ["hdd"]
    assert tier_order(10**9, 100, ["ram"]) == ["ram"]
    digest = key_digest("/k")
    disks = ["a", "b", "c", "d"]
    best = rank(digest, disks)
    assert rank(digest, list(reversed(disks))) == best  # order of the config does not matter
    assert rank(digest, [d for d in disks if d != best[1]]) == [d for d in best if d != best[1]]
    full = [(d, 100, 100 if d == best[0] else 0) for d in disks]
    assert choose(digest, 10, full)[-1] == best[0]  # the full disk comes last (it would evict)
    assert choose(digest, 200, full) == []  # too large for every disk
