"""The object index: schema, point reads, replace, purge ranges, hits, LRU, concurrency."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from cdnlab.edge import index as index_mod
from cdnlab.edge.index import DiskState, Index, IndexFileError, PurgedError, Row, prefix_end


def row(key: str, disk: str = "d1", size: int = 100, access: float = 1.0, **kw: object) -> Row:
    fields = {
        "key": key,
        "disk": disk,
        "file": f"{abs(hash((key, disk))) % 256:02x}/{key.encode().hex()}",
        "size": size,
        "content_type": "video/mp4",
        "etag": '"e1"',
        "last_modified": 1700000000.0,
        "sha256": "0" * 64,
        "stored_at": 1.0,
        "headers": '{"cache-control":"max-age=60"}',
        "hits": 0,
        "last_access": access,
    }
    fields.update(kw)
    return Row(**fields)  # type: ignore[arg-type]


@pytest.fixture
def ix(tmp_path: Path) -> Index:
    index = Index(tmp_path / "index.sqlite3")
    yield index
    index.close()


def test_schema_is_versioned_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "i.db"
    Index(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == index_mod.SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(f"PRAGMA user_version = {index_mod.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(IndexFileError, match="newer"):
        Index(path)


def test_reopen_keeps_rows(tmp_path: Path) -> None:
    a = Index(tmp_path / "i.db")
    a.put(row("/a"))
    a.close()
    b = Index(tmp_path / "i.db")
    assert b.get("/a") == row("/a")
    b.close()


def test_get_put_replace_delete(ix: Index) -> None:
    assert ix.get("/x") is None
    assert ix.put(row("/x", size=10)).replaced is None
    assert ix.get("/x") == row("/x", size=10)
    new = row("/x", disk="d2", size=30, file="cc/new")
    res = ix.put(new)
    assert res.replaced == row("/x", size=10)
    assert ix.get("/x") == new
    assert ix.usage_by_disk() == {"d2": (30, 1)}  # the replaced row moved disks: both sides updated
    assert ix.delete("/x") == new
    assert ix.delete("/x") is None
    assert ix.get("/x") is None
    assert ix.usage_by_disk() == {}


def test_usage_by_disk_tracks_every_change(ix: Index) -> None:
    for i in range(5):
        ix.put(row(f"/a{i}", disk="d1", size=10))
    for i in range(3):
        ix.put(row(f"/b{i}", disk="d2", size=7))
    ix.put(row("/a0", disk="d1", size=15))
    ix.delete("/b0")
    assert ix.usage_by_disk() == {"d1": (55, 5), "d2": (14, 2)}
    assert ix.delete_disk("d1") == 5
    assert ix.usage_by_disk() == {"d2": (14, 2)}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("/a%", ["/a%", "/a%/1", "/a%b"]),
        ("/a_", ["/a_", "/a_c"]),
        ("/a", ["/a", "/a%", "/a%/1", "/a%b", "/aXc", "/a_", "/a_c", "/a\U0010ffff"]),
        ("/a\U0010ffff", ["/a\U0010ffff"]),
        ("", None),  # everything
    ],
)
def test_delete_prefix_is_literal(ix: Index, prefix: str, expected: list[str] | None) -> None:
    keys = [
        "/a",
        "/a%",
        "/a%/1",
        "/a%b",
        "/aXc",
        "/a_",
        "/a_c",
        "/a\U0010ffff",
        "/b",
        "/A",
        "/a" + "\x00"[:0],
    ]
    for k in keys:
        ix.put(row(k))
    removed = sorted(r.key for r in ix.delete_prefix(prefix))
    want = sorted(set(keys)) if expected is None else sorted(expected)
    assert removed == want
    assert sorted(r.key for r in ix.iter_all()) == sorted(set(keys) - set(want))


def test_prefix_end() -> None:
    assert prefix_end("ab") == "ac"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff") is None
    assert prefix_end("") is None
    assert prefix_end("a\ud7ff") == "a\ue000"  # surrogates cannot be stored: skipped


def test_delete_prefix_in_batches(ix: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "_BATCH", 7)
    for i in range(50):
        ix.put(row(f"/p/{i:03d}"))
    ix.put(row("/q"))
    assert len(ix.delete_prefix("/p/")) == 50
    assert [r.key for r in ix.iter_all()] == ["/q"]


def test_iter_all_in_key_order_across_batches(ix: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "_BATCH", 4)
    keys = [f"/k{i}" for i in range(23)]
    for k in reversed(keys):
        ix.put(row(k))
    assert [r.key for r in ix.iter_all()] == sorted(keys)


def test_iter_disk_files_sorted_by_file(ix: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "_BATCH", 3)
    for i in range(10):
        ix.put(row(f"/k{i}", file=f"{(9 - i):02x}/f{i}"))
    ix.put(row("/other", disk="d2"))
    files = [f for f, _k, _s in ix.iter_disk_files("d1")]
    assert files == sorted(files) and len(files) == 10


def test_add_hits_in_one_transaction(ix: Index) -> None:
    ix.put(row("/a", access=10.0))
    ix.put(row("/b", access=10.0))
    ix.add_hits({"/a": (3, 20.0), "/b": (1, 5.0), "/gone": (9, 30.0)})
    ix.add_hits({"/a": (2, 15.0)})
    a, b = ix.get("/a"), ix.get("/b")
    assert a is not None and b is not None
    assert (a.hits, a.last_access) == (5, 20.0)  # last access never goes backwards
    assert (b.hits, b.last_access) == (1, 10.0)


def test_lru_candidates_per_disk(ix: Index) -> None:
    for i, t in enumerate([5.0, 1.0, 3.0, 2.0]):
        ix.put(row(f"/k{i}", access=t))
    ix.put(row("/other", disk="d2", access=0.0))
    assert [r.key for r in ix.lru_candidates("d1", 3)] == ["/k1", "/k3", "/k2"]


def test_put_with_capacity_evicts_lru_of_that_disk_only(ix: Index) -> None:
    for i in range(5):
        ix.put(row(f"/k{i}", size=100, access=float(i)))
    ix.put(row("/far", disk="d2", size=100, access=0.0))
    ix.add_hits({"/k0": (1, 99.0)})  # k0 is now the most recently used
    res = ix.put(row("/new", size=250, access=100.0), capacity=600)
    assert [r.key for r in res.evicted] == ["/k1", "/k2"]
    assert ix.usage_by_disk()["d1"] == (550, 4)
    assert ix.get("/far") is not None


def test_put_replacing_counts_the_old_size_as_free(ix: Index) -> None:
    ix.put(row("/a", size=400, access=1.0))
    ix.put(row("/b", size=100, access=2.0))
    res = ix.put(row("/a", size=500, access=3.0), capacity=600)
    assert res.evicted == [] and res.replaced is not None
    assert ix.usage_by_disk()["d1"] == (600, 2)


def test_purge_records_refuse_older_fills(ix: Index) -> None:
    seq = ix.purge_seq()
    ix.delete("/a/1", record_purge=True)
    with pytest.raises(PurgedError):
        ix.put(row("/a/1"), since_purge=seq)
    ix.put(row("/a/2"), since_purge=seq)  # not covered by an exact purge
    seq2 = ix.purge_seq()
    assert seq2 > seq
    ix.delete_prefix("/a/", record_purge=True)
    with pytest.raises(PurgedError):
        ix.put(row("/a/3"), since_purge=seq2)
    ix.put(row("/b"), since_purge=seq2)
    ix.put(row("/a/3"), since_purge=ix.purge_seq())  # a fill that began after the purge is fine
    assert ix.get("/a/3") is not None
    ix.delete("/x")  # plain deletes (eviction, reconcile) record nothing
    assert ix.purge_seq() == seq2 + 1


def test_disk_states(ix: Index) -> None:
    ix.set_disk_state(DiskState("d1", "/m/1", "flash", False, None))
    ix.set_disk_state(DiskState("d1", "/m/1", "flash", True, "EIO: boom"))
    assert ix.disk_states() == {"d1": DiskState("d1", "/m/1", "flash", True, "EIO: boom")}


def test_readers_do_not_block_on_a_writer(ix: Index) -> None:
    ix.put(row("/a"))
    other = sqlite3.connect(ix.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE objects SET size = 999 WHERE key = '/a'")
    try:
        t0 = time.monotonic()
        got = ix.get("/a")
        assert got is not None and got.size == 100  # the last committed version, at once
        assert time.monotonic() - t0 < 0.5
    finally:
        other.execute("COMMIT")
    got = ix.get("/a")
    assert got is not None and got.size == 999


def test_threads_each_get_their_own_reader(ix: Index) -> None:
    ix.put(row("/a"))
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(200):
                assert ix.get("/a") is not None
                ix.put(row(f"/t{n}/{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert ix.usage_by_disk()["d1"].objects == 801


def test_usable_in_a_forked_child(ix: Index) -> None:
    ix.put(row("/before"))
    assert ix.get("/before") is not None  # the parent has live connections now
    pid = os.fork()
    if pid == 0:  # child: inherited connections are parked, new ones opened
        code = 0
        try:
            assert ix.get("/before") is not None
            ix.put(row("/child"))
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert ix.get("/child") is not None
    ix.put(row("/after"))


def test_get_is_a_fast_point_query(ix: Index) -> None:
    ix._write(
        lambda c: c.executemany(
            "INSERT INTO objects VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [row(f"/video/{i}/seg.m4s", file=f"ab/{i}") for i in range(5000)],
        )
    )
    keys = [f"/video/{i}/seg.m4s" for i in range(0, 5000, 5)] * 5
    t0 = time.perf_counter()
    for k in keys:
        ix.get(k)
    per_call = (time.perf_counter() - t0) / len(keys)
    # Typically 6-8 µs here; a full scan of 5000 rows would take milliseconds.
    assert per_call < 200e-6
