"""kill -9 a process while it stores objects, several times; reconcile must leave only whole objects.

The child stores objects of random sizes whose bytes are derived from (key, version), the version
being recorded as the ETag, so the test knows every indexed object's expected SHA-256. It also
replaces, purges and aborts, on disks small enough that eviction runs all the time.
"""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from cdnlab.edge.config import TierConfig
from cdnlab.edge.store import Store


def content(key: str, version: int) -> bytes:
    seed = hashlib.sha256(f"{key}|{version}".encode()).digest()
    size = int.from_bytes(seed[:4], "big") % 200_000
    return (seed * (size // 32 + 1))[:size]


def tiers(root: Path) -> list[TierConfig]:
    return [
        TierConfig(path=root / "ram0", kind="ram", capacity=300_000),
        TierConfig(path=root / "flash0", kind="flash", capacity=1_500_000),
        TierConfig(path=root / "flash1", kind="flash", capacity=1_500_000),
    ]


_CHILD = textwrap.dedent(
    """
    import random, sys
    from pathlib import Path
    sys.path[:0] = [sys.argv[3]]
    from test_store_crash import content, tiers
    from cdnlab.edge.store import Store, StoreError
    root, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    s = Store(tiers(root), root / "state", ram_object_max=64 * 1024)
    s.open(reconcile=False)
    print("ready", flush=True)
    while True:
        key = f"/t/{rng.randrange(40)}/seg"
        op = rng.random()
        if op < 0.05:
            s.purge(key)
            continue
        if op < 0.07:
            s.purge_prefix(f"/t/{rng.randrange(10)}")
            continue
        version = rng.randrange(1000)
        data = content(key, version)
        w = s.begin(key, len(data) if rng.random() < 0.8 else None)
        try:
            view = memoryview(data)
            while view:
                n = rng.randrange(1, 65536)
                w.write(view[:n])
                view = view[n:]
            if op < 0.1:
                w.abort()
            else:
                w.commit(etag=str(version), headers={"cache-control": "max-age=60"})
        except StoreError:
            pass
        finally:
            w.close()
    """
)


def test_kill_9_while_storing_leaves_only_whole_objects(tmp_path: Path) -> None:
    master = Store(tiers(tmp_path), tmp_path / "state")
    master.open(reconcile=True)
    master.close()
    rng = random.Random(1234)
    here = str(Path(__file__).parent)
    kills = 0
    deadline = time.monotonic() + 20
    for round_ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(tmp_path), str(round_), here],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.4))
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
        child.stdout.close()
        kills += 1
        assert time.monotonic() < deadline

    store = Store(tiers(tmp_path), tmp_path / "state", ram_object_max=64 * 1024)
    report = store.open(reconcile=True)
    try:
        rows = list(store.index.iter_all())
        assert kills == 6 and report.objects == len(rows) > 0
        indexed: set[Path] = set()
        for row in rows:
            entry = store.lookup(row.key)
            assert entry is not None
            expected = content(row.key, int(row.etag or -1))
            path = Path(entry.path)
            data = path.read_bytes()
            assert len(data) == entry.size == len(expected), row.key
            assert hashlib.sha256(data).hexdigest() == entry.sha256 == hashlib.sha256(expected).hexdigest()
            assert store.verify(entry)
            indexed.add(path)
        on_disk = {p for t in tiers(tmp_path) for p in (t.path / "objects").rglob("*") if p.is_file()}
        assert on_disk == indexed  # no orphans
        assert [p for t in tiers(tmp_path) for p in (t.path / "tmp").iterdir()] == []  # no temp files
        for u in store.usage():  # the trigger-kept totals agree with the rows, within capacity
            mine = [r for r in rows if r.disk == u.id]
            assert (u.used, u.objects) == (sum(r.size for r in mine), len(mine))
            assert u.used <= u.capacity
    finally:
        store.close()
    again = Store(tiers(tmp_path), tmp_path / "state")
    second = again.open(reconcile=True)
    again.close()
    assert (second.temp_removed, second.orphans_removed, second.missing_dropped) == (0, 0, 0)
    assert second.objects == report.objects
