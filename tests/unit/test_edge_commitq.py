"""Group commit: several fills share fsyncs, each keeps the guarantees of Writer.commit."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pytest

from cdnlab.edge import store as store_mod
from cdnlab.edge.commitq import STORE_NICE, GroupCommitter
from cdnlab.edge.config import TierConfig
from cdnlab.edge.placement import key_digest
from cdnlab.edge.store import (
    CommitArgs,
    PurgedDuringFillError,
    SizeMismatchError,
    Store,
    commit_group,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    tier = TierConfig(path=tmp_path / "flash", kind="flash", capacity=64 << 20)  # type: ignore[arg-type]
    s = Store([tier], tmp_path / "state")
    s.open(reconcile=True)
    yield s
    s.close()


def same_dir_keys(n: int) -> list[str]:
    """Keys whose objects land in one objects/ directory (named from the key digest)."""
    by_dir: dict[int, list[str]] = {}
    i = 0
    while True:
        key = f"/k/{i}.bin"
        group = by_dir.setdefault(key_digest(key)[0], [])
        group.append(key)
        if len(group) == n:
            return group
        i += 1


@pytest.mark.parametrize("threads", [0, 4], ids=["sequential", "pool"])
def test_a_group_commits_every_object_and_fsyncs_each_directory_once(
    store: Store, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    synced: list[str] = []
    real = store_mod._fsync_dir

    def counting(path: str) -> None:
        synced.append(path)
        real(path)

    monkeypatch.setattr(store_mod, "_fsync_dir", counting)
    keys = same_dir_keys(5)
    bodies = {k: os.urandom(1000 + i) for i, k in enumerate(keys)}
    batch = []
    for k in keys:
        w = store.begin(k, len(bodies[k]), "application/octet-stream")
        w.write(bodies[k])
        args = CommitArgs(etag=f'"{k}"', last_modified=1.0e9, headers={"cache-control": "max-age=60"})
        batch.append((w, args))
    if threads:
        with ThreadPoolExecutor(threads) as pool:
            results = commit_group(batch, pool)
    else:
        results = commit_group(batch)
    assert len(synced) == 1  # one directory, one fsync, for five renames into it
    for k, entry in zip(keys, results, strict=True):
        assert isinstance(entry, store_mod.Entry)
        found = store.lookup(k)
        assert found is not None and found.etag == f'"{k}"'
        assert found.sha256 == hashlib.sha256(bodies[k]).hexdigest()
        assert Path(found.path).read_bytes() == bodies[k]
        assert found.headers.get("cache-control") == "max-age=60"


def test_a_refused_object_does_not_stop_the_others(store: Store) -> None:
    good = store.begin("/good", 3, "text/plain")
    good.write(b"abc")
    short = store.begin("/short", 10, "text/plain")
    short.write(b"abc")  # truncated: 3 of 10 bytes
    purged = store.begin("/purged", 3, "text/plain")
    purged.write(b"xyz")
    store.purge("/purged")  # a purge between begin and commit refuses the fill
    temps = [short.temp_path, purged.temp_path]
    results = commit_group([(good, CommitArgs()), (short, CommitArgs()), (purged, CommitArgs())])
    assert isinstance(results[0], store_mod.Entry)
    assert isinstance(results[1], SizeMismatchError)
    assert isinstance(results[2], PurgedDuringFillError)
    assert store.lookup("/good") is not None
    assert store.lookup("/short") is None and store.lookup("/purged") is None
    assert not any(os.path.exists(t) for t in temps)
    assert short.state == "aborted" and purged.state == "aborted" and good.state == "committed"


def test_group_committer_answers_each_fill(store: Store) -> None:
    committer = GroupCommitter(max_batch=8)
    futures = {}
    for i in range(40):
        body = os.urandom(500)
        size = len(body) if i % 10 else len(body) + 1  # every tenth is truncated
        w = store.begin(f"/obj/{i}", size, "application/octet-stream")
        w.write(body)
        futures[i] = (committer.submit(w, CommitArgs(etag=f'"{i}"')), body)
    wait([f for f, _ in futures.values()], timeout=60)
    committer.close(timeout=10)
    for i, (fut, body) in futures.items():
        if i % 10 == 0:
            assert isinstance(fut.exception(), SizeMismatchError)
            assert store.lookup(f"/obj/{i}") is None
        else:
            entry = fut.result()
            assert entry.sha256 == hashlib.sha256(body).hexdigest()
            assert Path(entry.path).read_bytes() == body
    assert committer.objects == 40
    assert 1 <= committer.batches <= 40
    late = store.begin("/late", 1)
    with pytest.raises(RuntimeError):
        committer.submit(late, CommitArgs())
    late.abort()


def test_store_threads_yield_to_the_event_loop(store: Store) -> None:
    if os.getpriority(os.PRIO_PROCESS, 0) >= STORE_NICE:
        pytest.skip("this test process already runs at a nice value of 10 or more")
    committer = GroupCommitter(sync_threads=2)
    w = store.begin("/nice", 1)
    w.write(b"x")
    committer.submit(w, CommitArgs()).result(timeout=30)
    (thread,) = [t for t in threading.enumerate() if t.name == "store-commit" and t.is_alive()]
    assert thread.native_id is not None
    assert os.getpriority(os.PRIO_PROCESS, thread.native_id) >= STORE_NICE
    committer.close(timeout=10)


def test_backlog_counts_fills_until_their_commit_is_done(store: Store) -> None:
    committer = GroupCommitter(max_batch=4)
    futures = []
    with committer._cond:  # the commit thread waits for this lock: nothing is taken meanwhile
        for i in range(10):
            w = store.begin(f"/backlog/{i}", 1)
            w.write(b"x")
            futures.append(committer.submit(w, CommitArgs()))
        assert committer.backlog == 10
    wait(futures, timeout=60)
    assert all(f.exception() is None for f in futures)
    assert committer.backlog == 0
    committer.close(timeout=10)
