"""Objects on tiers of disks (RAM, flash, HDD), one directory per disk, found through the index.

Layout of each disk directory::

    cdnlab-disk-id      the disk's id (random, written once): rows name disks by it, so a disk
                        mounted at another path, or two disks swapped, keep their objects
    tmp/                objects being written (removed at start by reconcile)
    objects/00 … ff/    committed objects, named from the key's SHA-256 plus a random suffix

File names never come from URL text, so no request path ever reaches the filesystem.

Life of an object: ``begin`` picks a disk and opens a temp file; ``Writer.write`` appends (and
hashes); ``Writer.commit`` fsyncs it, renames it into objects/, fsyncs the directory, and only
then writes the index row (evicting least-recently-used rows of that disk in the same
transaction if the disk is over capacity); old and evicted files are unlinked after the row is
in. A crash at any point leaves at worst a temp file, an orphan file or a row without its file,
which ``open(reconcile=True)`` repairs. Purges remove rows first, then files.

Processes: the master calls ``open(reconcile=True)`` before forking workers (nothing else may use
the store while it reconciles); each worker builds its own ``Store`` and calls
``open(reconcile=False)``. Threads: ``lookup``, ``begin``, ``purge*``, ``verify``, ``usage`` and
``add_hits`` may be called from any thread. A ``Writer`` belongs to one task: call its methods one
at a time (``write`` on the event loop, ``commit``/``abort`` in an executor is fine), never
concurrently. ``commit``, ``abort``, ``purge*``, ``verify`` and ``open`` block (fsync, unlink,
SQLite write lock): run them off the event loop. ``lookup`` is one indexed SQLite read.

A disk that fails with an I/O error (EIO, EROFS, ENOSPC, ENOENT, …) is marked failed (in the index
too, so every process learns it on its next ``refresh``/``add_hits``): placement skips it and its
objects become misses. Nothing raises out of the store for a failed disk except the writer that
was using it (``DiskFailedError``), so the server can keep serving from elsewhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from cdnlab.edge.config import TierConfig
from cdnlab.edge.index import DiskState, Index, PurgedError, Row, headers_json
from cdnlab.edge.placement import choose, key_digest, tier_order

log = logging.getLogger(__name__)

MARKER = "cdnlab-disk-id"
INDEX_FILE = "index.sqlite3"
DEFAULT_RAM_OBJECT_MAX = 256 * 1024
_COPY_CHUNK = 1 << 20

# Errors that mean "this disk cannot be used", as opposed to a bug or a bad argument.
DISK_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.EROFS,
        errno.ENOSPC,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EACCES,
        errno.EPERM,
        errno.ENXIO,
        errno.ENODEV,
        errno.EDQUOT,
        errno.ESTALE,
    }
)

# Upstream response headers kept with an object (lower case). Those with their own column
# (content-type, etag, last-modified, content-length), hop-by-hop ones and set-cookie are never kept.
STORED_HEADERS = frozenset(
    {
        "cache-control",
        "expires",
        "date",
        "age",
        "etag",  # the origin's own validators, for revalidation (the row's etag may be ours)
        "last-modified",
        "vary",
        "content-encoding",
        "content-language",
        "content-disposition",
        "link",
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
        "timing-allow-origin",
        "x-content-type-options",
    }
)

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


class StoreError(Exception):
    """The object was not stored (the server still answers the client from upstream)."""


class SizeMismatchError(StoreError):
    """The body's length differs from the expected size: a truncated body is never committed."""


class IntegrityError(StoreError):
    """The body's SHA-256 differs from the digest the caller expected."""


class ObjectTooLargeError(StoreError):
    """No disk that could take this object is large enough."""


class NoDiskError(StoreError):
    """No healthy disk can take the object."""


class DiskFailedError(StoreError):
    """The disk failed while the object was being written; it is now marked failed."""


class PurgedDuringFillError(StoreError):
    """A purge covering the key ran while it was being fetched: the old bytes are not stored."""


@dataclass(frozen=True)
class Entry:
    """A stored object: the index row plus where it is (absolute path) and its tier kind."""

    key: str
    disk: str
    file: str
    size: int
    content_type: str
    etag: str | None
    last_modified: float | None
    sha256: str
    stored_at: float
    headers_json: str
    hits: int
    last_access: float
    path: str
    tier: str

    @cached_property
    def headers(self) -> dict[str, str]:
        """Kept upstream headers (lower-case names), decoded on first use only."""
        return json.loads(self.headers_json)


_ENTRY_FIELDS = tuple(f.name for f in fields(Entry))


def _entry(row: Row, path: str, tier: str) -> Entry:
    # Hot path: filling __dict__ directly is ~1 µs cheaper than the frozen dataclass __init__
    # (which goes through object.__setattr__ once per field); the result is the same object.
    entry = object.__new__(Entry)
    entry.__dict__.update(zip(_ENTRY_FIELDS, (*row, path, tier), strict=True))
    return entry


@dataclass(frozen=True)
class MoveResult:
    """What ``Store.move`` did: moved, same (already there), full (no room), gone (evicted,
    purged or replaced meanwhile), corrupt (the source failed its SHA-256: dropped) or failed."""

    outcome: str
    size: int = 0
    old_disk: str = ""
    old_path: str = ""


@dataclass(frozen=True)
class DiskInfo:
    id: str
    path: str
    kind: str
    capacity: int
    used: int
    objects: int
    failed: bool
    reason: str | None


@dataclass
class ReconcileReport:
    temp_removed: int = 0
    orphans_removed: int = 0
    missing_dropped: int = 0  # rows whose file was gone
    size_mismatch_dropped: int = 0  # rows whose file had another size (row and file removed)
    unknown_disk_dropped: int = 0  # rows on disks not configured, failed, or failed last run
    failed_disks: list[str] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0
    seconds: float = 0.0


class _Disk:
    __slots__ = ("capacity", "dev", "failed", "id", "kind", "objects", "prefix", "reason", "root", "tmp")

    def __init__(self, tier: TierConfig) -> None:
        self.root = os.path.abspath(tier.path)
        self.kind: str = tier.kind
        self.capacity: int = tier.capacity
        self.objects = os.path.join(self.root, "objects")
        self.prefix = self.objects + os.sep  # + row.file = absolute path (no Path on the hot path)
        self.tmp = os.path.join(self.root, "tmp")
        self.id = "unavailable:" + self.root  # until the marker is read
        self.failed = False
        self.reason: str | None = None
        self.dev = -1  # st_dev of the directory: names the disk of an open file (fstat)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _libc_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


# Linux's sync_file_range (not in the os module): starts writeback without waiting for it.
_sync_file_range = _libc_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "OSError")
    return f"{name}: {exc.strerror or exc}"


def _keep_headers(headers: Headers | None) -> dict[str, str]:
    kept: dict[str, str] = {}
    if headers is None:
        return kept
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        low = name.lower()
        if low in STORED_HEADERS:
            kept[low] = f"{kept[low]}, {value}" if low in kept else value
    return kept


class Store:
    def __init__(
        self,
        tiers: Sequence[TierConfig],
        state_dir: Path,
        *,
        ram_object_max: int = DEFAULT_RAM_OBJECT_MAX,
        on_invalidate: Callable[[list[str]], None] | None = None,
        busy_timeout: float = 10.0,
    ) -> None:
        """ON_INVALIDATE(keys) is called after rows are removed or replaced (purge, eviction,
        replacement, reconcile) and before their files are unlinked, e.g. to tell per-worker caches."""
        self.state_dir = Path(state_dir)
        self.ram_object_max = ram_object_max
        self._tiers = list(tiers)
        self._on_invalidate = on_invalidate
        self._busy_timeout = busy_timeout
        self._disks: list[_Disk] = []
        self._by_id: dict[str, _Disk] = {}
        self._index: Index | None = None
        self._lock = threading.Lock()
        self._dropped: set[str] = set()  # failed disks whose rows are already out of the index

    # -- opening -----------------------------------------------------------------------------

    @property
    def index(self) -> Index:
        if self._index is None:
            raise StoreError("store is not open")
        return self._index

    def open(self, reconcile: bool) -> ReconcileReport:
        """Open the index and the disks; with RECONCILE, repair them (see ReconcileReport)."""
        if self._index is not None:
            raise StoreError("store is already open")
        start = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._index = Index(self.state_dir / INDEX_FILE, busy_timeout=self._busy_timeout)
        self._disks = [self._init_disk(t) for t in self._tiers]
        self._by_id = {}
        for disk in self._disks:
            if disk.id in self._by_id and not disk.failed:
                disk.failed, disk.reason = True, f"same disk id as {self._by_id[disk.id].root}"
            self._by_id.setdefault(disk.id, disk)
        known = self.index.disk_states()
        report = ReconcileReport()
        if reconcile:
            self._reconcile(known, report)
        for disk in self._disks:
            state = known.get(disk.id)
            if not reconcile and state is not None and state.failed:
                disk.failed, disk.reason = True, state.reason
            if reconcile or (disk.failed and not (state and state.failed)):
                self._save_state(disk)
        report.failed_disks = [d.root for d in self._disks if d.failed]
        usage = self.index.usage_by_disk()
        for disk in self._disks:
            if not disk.failed and disk.id in usage:
                report.objects += usage[disk.id].objects
                report.bytes += usage[disk.id].bytes
        report.seconds = time.monotonic() - start
        return report

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def _init_disk(self, tier: TierConfig) -> _Disk:
        disk = _Disk(tier)
        try:
            os.makedirs(disk.tmp, exist_ok=True)
            os.makedirs(disk.objects, exist_ok=True)
            # All 256 fan-out directories exist up front, so a commit never creates one.
            for i in range(256):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(os.path.join(disk.objects, f"{i:02x}"))
            disk.id = self._disk_id(disk)
            disk.dev = os.stat(disk.root).st_dev
            probe = os.path.join(disk.tmp, f"probe.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"probe")
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as exc:
            disk.failed, disk.reason = True, _describe(exc)
            log.error("disk %s unusable: %s", disk.root, disk.reason)
        return disk

    @staticmethod
    def _disk_id(disk: _Disk) -> str:
        marker = os.path.join(disk.root, MARKER)
        try:
            with open(marker) as f:
                got = f.read().strip()
            if got:
                return got
        except FileNotFoundError:
            pass
        # Write then link: link fails if another process made the marker first, and a crash
        # never leaves an empty marker.
        new = "d" + secrets.token_hex(8)
        tmp = os.path.join(disk.tmp, f"marker.{new}")
        with open(tmp, "w") as f:
            f.write(new + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, marker)
            _fsync_dir(disk.root)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        with open(marker) as f:
            return f.read().strip()

    # -- reconcile (master only, before workers start) ------------------------------------------

    def _reconcile(self, known: Mapping[str, DiskState], report: ReconcileReport) -> None:
        index = self.index
        previously_failed = {d for d, s in known.items() if s.failed}
        healthy = {d.id for d in self._disks if not d.failed and d.id not in previously_failed}
        for disk_id in index.usage_by_disk():
            if disk_id not in healthy:
                report.unknown_disk_dropped += index.delete_disk(disk_id)
        for disk in self._disks:
            if disk.failed:
                continue
            try:
                self._sweep(disk, report)
            except OSError as exc:
                self._disk_error(disk, exc, force=True)

    def _sweep(self, disk: _Disk, report: ReconcileReport) -> None:
        for entry in os.scandir(disk.tmp):
            _remove_any(entry)
            report.temp_removed += 1
        drops: list[str] = []
        rows = self.index.iter_disk_files(disk.id)
        files = self._list_objects(disk, report)
        row, got = next(rows, None), next(files, None)
        while row is not None or got is not None:
            if got is None or (row is not None and row[0] < got[0]):
                assert row is not None
                drops.append(row[1])
                report.missing_dropped += 1
                row = next(rows, None)
            elif row is None or got[0] < row[0]:
                _unlink(disk.prefix + got[0])
                report.orphans_removed += 1
                got = next(files, None)
            else:
                if got[1] != row[2]:
                    # Row first, then the file: a crash in between leaves an orphan, never a
                    # row pointing at a wrong-sized file.
                    self.index.delete_keys([row[1]])
                    _unlink(disk.prefix + got[0])
                    report.size_mismatch_dropped += 1
                row, got = next(rows, None), next(files, None)
            if len(drops) >= 1000:
                self.index.delete_keys(drops)
                drops = []
        self.index.delete_keys(drops)

    @staticmethod
    def _list_objects(disk: _Disk, report: ReconcileReport) -> Iterator[tuple[str, int]]:
        """(relative name, size) of every object file, sorted; anything else in objects/ is removed."""
        for top in sorted(os.scandir(disk.objects), key=lambda e: e.name):
            name = top.name
            if not (len(name) == 2 and all(c in "0123456789abcdef" for c in name) and top.is_dir()):
                _remove_any(top)
                report.orphans_removed += 1
                continue
            for entry in sorted(os.scandir(top.path), key=lambda e: e.name):
                if entry.is_file(follow_symlinks=False):
                    yield f"{name}/{entry.name}", entry.stat(follow_symlinks=False).st_size
                else:
                    _remove_any(entry)
                    report.orphans_removed += 1

    # -- disk health ---------------------------------------------------------------------------

    def mark_failed(self, disk_id: str, reason: str) -> None:
        """Stop using DISK_ID (placement skips it, its objects are misses) and tell other processes."""
        disk = self._by_id.get(disk_id)
        if disk is None:
            return
        with self._lock:
            if disk.failed:
                return
            disk.failed, disk.reason = True, reason
        log.error("disk %s (%s) marked failed: %s", disk.root, disk.id, reason)
        self._save_state(disk)

    def note_io_error(self, disk_id: str, exc: OSError) -> bool:
        """For the server: an error reading an entry's file. True if the disk is now failed.

        ENOENT alone is normal (evicted or moved meanwhile): the disk fails only if its id
        marker is gone too (unmounted, replaced)."""
        disk = self._by_id.get(disk_id)
        if disk is None:
            return False
        if exc.errno == errno.ENOENT:
            return not self.probe(disk_id)
        return self._disk_error(disk, exc)

    def note_dev_error(self, dev: int, exc: OSError) -> bool:
        """For the server: an error reading an open file of device DEV (``os.fstat(fd).st_dev``),
        e.g. EIO during sendfile. Marks the disk on that device failed; True if it is now."""
        for disk in self._disks:
            if disk.dev == dev and not disk.failed:
                return self._disk_error(disk, exc)
        return False

    def probe(self, disk_id: str) -> bool:
        """Check that DISK_ID is still there and writable: its id marker reads back and a small
        file can be created in tmp/. A failing disk is marked failed. True when healthy."""
        disk = self._by_id.get(disk_id)
        if disk is None or disk.failed:
            return False
        try:
            with open(os.path.join(disk.root, MARKER)) as f:
                got = f.read().strip()
            if got != disk.id:
                self.mark_failed(disk.id, f"disk id marker reads {got!r}: replaced or remounted")
                return False
            probe = os.path.join(disk.tmp, f"probe.{os.getpid()}.{threading.get_ident()}")
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"probe")
            finally:
                os.close(fd)
                os.unlink(probe)
            os.stat(disk.objects)
        except FileNotFoundError:
            self.mark_failed(disk.id, "disk id marker or directories missing (unmounted?)")
            return False
        except OSError as exc:
            self._disk_error(disk, exc, force=True)
            return False
        return True

    def drop_failed_disks(self) -> int:
        """Take the objects of failed disks out of the index (their files are left alone: the
        disk may hang or error; a recovered disk is swept at the next start). Returns the count."""
        self.refresh()
        dropped = 0
        for disk in self._disks:
            if not disk.failed or disk.id in self._dropped:
                continue
            rows = self.index.delete_disk_keys(disk.id)
            self._dropped.add(disk.id)
            dropped += len(rows)
            if rows and self._on_invalidate is not None:
                try:
                    self._on_invalidate([r.key for r in rows])
                except Exception:
                    log.exception("invalidation callback failed")
            log.error("disk %s failed: %d objects left the index", disk.root, len(rows))
        return dropped

    def _disk_error(self, disk: _Disk, exc: OSError, *, force: bool = False) -> bool:
        if not force and exc.errno not in DISK_ERRNOS:
            return False
        self.mark_failed(disk.id, _describe(exc))
        return True

    def _save_state(self, disk: _Disk) -> None:
        try:
            self.index.set_disk_state(DiskState(disk.id, disk.root, disk.kind, disk.failed, disk.reason))
        except Exception:  # the flag still holds in this process; never fail the caller for it
            log.exception("cannot record the state of disk %s", disk.root)

    def refresh(self) -> None:
        """Pick up disks that other processes marked failed (cheap: one small query)."""
        for disk_id, state in self.index.disk_states().items():
            disk = self._by_id.get(disk_id)
            if disk is not None and state.failed and not disk.failed:
                disk.failed, disk.reason = True, state.reason

    # -- reads ---------------------------------------------------------------------------------

    def lookup(self, key: str) -> Entry | None:
        """The stored object for KEY, or None (absent, or on a failed disk). Never touches disks.

        The file may still vanish before it is opened (purge, eviction, replacement): treat
        FileNotFoundError on open as a miss.
        """
        row = self.index.get(key)
        if row is None:
            return None
        disk = self._by_id.get(row[1])
        if disk is None or disk.failed:
            return None
        return _entry(row, disk.prefix + row[2], disk.kind)

    def verify(self, entry: Entry) -> bool:
        """Re-hash ENTRY's file: True if its size and SHA-256 match the index. Blocking I/O."""
        disk = self._by_id.get(entry.disk)
        if disk is None or disk.failed:
            return False
        try:
            with open(entry.path, "rb", buffering=0) as f:
                if os.fstat(f.fileno()).st_size != entry.size:
                    return False
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except FileNotFoundError:
            return False
        except OSError as exc:
            self._disk_error(disk, exc)
            return False
        return digest == entry.sha256

    def iter_entries(self) -> Iterator[Entry]:
        """Every object on a usable disk, in key order (for inventories; reads in batches)."""
        for row in self.index.iter_all():
            disk = self._by_id.get(row.disk)
            if disk is not None and not disk.failed:
                yield _entry(row, disk.prefix + row.file, disk.kind)

    def usage(self) -> list[DiskInfo]:
        usage = self.index.usage_by_disk()
        out = []
        for d in self._disks:
            used, count = usage.get(d.id, (0, 0))
            out.append(DiskInfo(d.id, d.root, d.kind, d.capacity, used, count, d.failed, d.reason))
        return out

    def add_hits(self, batch: Mapping[str, tuple[int, float]]) -> None:
        """Record a second's worth of hits {key: (count, last access)}; also refresh disk health."""
        self.index.add_hits(batch)
        self.refresh()

    # -- background work: tiers, eviction, scrubbing (master process, off any event loop) ---------

    def disks_of(self, kind: str) -> list[tuple[str, int]]:
        """(id, capacity) of the healthy disks of tier KIND."""
        return [(d.id, d.capacity) for d in self._disks if d.kind == kind and not d.failed]

    def kind_of(self, disk_id: str) -> str | None:
        """The tier kind of a healthy disk (None: unknown or failed)."""
        disk = self._by_id.get(disk_id)
        return None if disk is None or disk.failed else disk.kind

    def kinds(self) -> list[str]:
        """Tier kinds configured, fastest first."""
        present = {d.kind for d in self._disks}
        return [k for k in ("ram", "flash", "hdd") if k in present]

    def evict(self, key: str) -> Row | None:
        """Remove KEY (row, then file) for the eviction policy; None if it is already gone."""
        row = self.index.get(key)
        if row is None:
            return None
        gone = self.index.delete_exact(key, row.disk, row.file)
        if gone is not None:
            self._removed([gone], [key])
        return gone

    def drop(self, row: Row) -> bool:
        """Remove ROW's object if the index still names that very file (scrubber, bad copy)."""
        gone = self.index.delete_exact(row.key, row.disk, row.file)
        if gone is None:
            return False
        self._removed([gone], [row.key])
        return True

    def check_row(self, row: Row, throttle: Callable[[int], None] | None = None) -> str:
        """Re-hash ROW's file at rest: ok, corrupt (dropped), missing (dropped), skipped (disk
        failed or row changed) or failed (I/O error: the disk is now failed). Blocking."""
        disk = self._by_id.get(row.disk)
        if disk is None or disk.failed:
            return "skipped"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(disk.prefix + row.file, "rb", buffering=0) as f:
                while chunk := f.read(_COPY_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    if throttle is not None:
                        throttle(len(chunk))
        except FileNotFoundError:
            if not self.probe(disk.id):
                return "failed"
            return "missing" if self.drop(row) else "skipped"
        except OSError as exc:
            self._disk_error(disk, exc, force=True)
            return "failed"
        if size == row.size and digest.hexdigest() == row.sha256:
            return "ok"
        log.error("integrity: %s on %s does not match its SHA-256 at rest; dropping it", row.key, disk.root)
        return "corrupt" if self.drop(row) else "skipped"

    def move(
        self,
        key: str,
        kind: str,
        *,
        throttle: Callable[[int], None] | None = None,
        hook: Callable[[str], None] | None = None,
    ) -> MoveResult:
        """Move KEY to a disk of tier KIND: copy, fsync, verify SHA-256, switch the index row,
        tell the workers. The old file is the caller's to unlink (``unlink_old``), after a grace
        period for readers that looked it up just before. A crash at any step leaves one good copy
        indexed and at worst a temp or orphan file, which reconcile removes. HOOK(stage) is called
        after "copied", "renamed" and "switched" (tests kill the process there). Blocking."""
        row = self.index.get(key)
        src = None if row is None else self._by_id.get(row.disk)
        if row is None or src is None or src.failed:
            return MoveResult("gone")
        if src.kind == kind:
            return MoveResult("same")
        usage = self.index.usage_by_disk()
        cands = [(d, c, usage[d].bytes if d in usage else 0) for d, c in self.disks_of(kind)]
        digest = key_digest(key)
        room = [d for d, c, u in cands if c - u >= row.size]
        ranked = [d for d in choose(digest, row.size, cands) if d in room]
        if not ranked:
            return MoveResult("full")
        dest = self._by_id[ranked[0]]
        name = f"{digest[:16].hex()}-{secrets.token_hex(6)}"
        temp = os.path.join(dest.tmp, name)
        result = self._copy(row, src, dest, temp, throttle)
        if result is not None:
            _unlink_quiet(temp)
            return result
        if hook is not None:
            hook("copied")
        rel = f"{name[:2]}/{name}"
        try:
            os.rename(temp, dest.prefix + rel)
            if dest.kind != "ram":
                _fsync_dir(os.path.dirname(dest.prefix + rel))
        except OSError as exc:
            _unlink_quiet(temp)
            self._disk_error(dest, exc)
            return MoveResult("failed")
        if hook is not None:
            hook("renamed")
        if not self.index.move(key, (row.disk, row.file, row.sha256), dest.id, rel):
            _unlink_quiet(dest.prefix + rel)  # replaced, purged or evicted meanwhile
            return MoveResult("gone")
        if hook is not None:
            hook("switched")
        if self._on_invalidate is not None:
            try:
                self._on_invalidate([key])
            except Exception:
                log.exception("invalidation callback failed")
        return MoveResult("moved", row.size, src.id, src.prefix + row.file)

    def _copy(
        self, row: Row, src: _Disk, dest: _Disk, temp: str, throttle: Callable[[int], None] | None
    ) -> MoveResult | None:
        """Copy ROW's file to TEMP on DEST, fsync, and check the SHA-256 of the source bytes and
        of the copy read back. None when the copy is good; else why not (temp left to the caller)."""
        digest = hashlib.sha256()
        try:
            fin = open(src.prefix + row.file, "rb", buffering=0)  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            return MoveResult("gone")
        except OSError as exc:
            self._disk_error(src, exc)
            return MoveResult("failed")
        try:
            try:
                fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                self._disk_error(dest, exc)
                return MoveResult("failed")
            try:
                size = 0
                while True:
                    try:
                        chunk = fin.read(_COPY_CHUNK)
                    except OSError as exc:
                        self._disk_error(src, exc, force=True)
                        return MoveResult("failed")
                    if not chunk:
                        break
                    digest.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.pwrite(fd, view, size + len(chunk) - len(view)) :]
                    size += len(chunk)
                    if throttle is not None:
                        throttle(len(chunk))
                if size != row.size or digest.hexdigest() != row.sha256:
                    log.error("integrity: %s on %s fails its SHA-256; dropping it", row.key, src.root)
                    self.drop(row)
                    return MoveResult("corrupt")
                if dest.kind != "ram":
                    os.fsync(fd)
                back = hashlib.sha256()
                offset = 0
                while chunk := os.pread(fd, _COPY_CHUNK, offset):
                    back.update(chunk)
                    offset += len(chunk)
                if offset != row.size or back.hexdigest() != row.sha256:
                    log.error("copy of %s to %s reads back wrong; not moved", row.key, dest.root)
                    return MoveResult("failed")
            except OSError as exc:
                self._disk_error(dest, exc)
                return MoveResult("failed")
            finally:
                os.close(fd)
        finally:
            fin.close()
        return None

    def unlink_old(self, disk_id: str, path: str) -> None:
        """Remove a moved object's old file (no row names it any more)."""
        disk = self._by_id.get(disk_id)
        if disk is None or disk.failed:
            return
        try:
            _unlink(path)
        except OSError as exc:
            self._disk_error(disk, exc)

    # -- writes --------------------------------------------------------------------------------

    def begin(
        self,
        key: str,
        expected_size: int | None = None,
        content_type: str = "application/octet-stream",
        since_purge: int | None = None,
    ) -> Writer:
        """Open a writer for KEY on the best disk (see placement). Raises StoreError if none fits.

        Purges after SINCE_PURGE (``purge_seq()`` taken before the request went upstream; default:
        now) refuse the commit: a purge that landed while the fetch was under way wins.
        """
        if expected_size is not None and expected_size < 0:
            raise ValueError("expected_size cannot be negative")
        index = self.index
        digest = key_digest(key)
        since = index.purge_seq() if since_purge is None else since_purge
        usage = index.usage_by_disk()
        size = expected_size or 0
        kinds = [d.kind for d in self._disks]
        considered: list[_Disk] = []
        roomy: list[str] = []
        full: list[str] = []
        for kind in tier_order(expected_size, self.ram_object_max, kinds):
            healthy = [d for d in self._disks if d.kind == kind and not d.failed]
            considered += healthy
            cands = [(d.id, d.capacity, usage[d.id].bytes if d.id in usage else 0) for d in healthy]
            room = {d for d, cap, used in cands if cap - used >= size}
            for disk_id in choose(digest, size, cands):
                (roomy if disk_id in room else full).append(disk_id)
        # A slower tier with room beats evicting from a full faster one at commit: the tier
        # mover, not the commit, decides what leaves a tier (and promotes what turns out hot).
        for disk_id in roomy + full:
            disk = self._by_id[disk_id]
            name = f"{digest[:16].hex()}-{secrets.token_hex(6)}"
            temp = os.path.join(disk.tmp, name)
            try:
                fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                if not self._disk_error(disk, exc):
                    raise
                continue
            return Writer(self, disk, key, name, fd, expected_size, content_type, since)
        if considered and all(d.capacity < size for d in considered):
            raise ObjectTooLargeError(f"{expected_size} bytes is more than any disk can hold")
        raise NoDiskError("no healthy disk can take the object")

    def revalidated(self, key: str, headers: Headers, stored_at: float) -> bool:
        """A 304 revalidated KEY: keep its bytes, take the merged headers and the new response time.

        Returns False if the key is gone (purged or evicted meanwhile). Workers reload its metadata.
        """
        done = self.index.update_meta(key, headers_json(_keep_headers(headers)), stored_at)
        if done and self._on_invalidate is not None:
            try:
                self._on_invalidate([key])
            except Exception:
                log.exception("invalidation callback failed")
        return done

    def purge(self, key: str) -> int:
        """Remove KEY (row, then file); fills of KEY under way are refused. Returns 0 or 1."""
        row = self.index.delete(key, record_purge=True)
        rows = [row] if row is not None else []
        self._removed(rows, [r.key for r in rows])
        return len(rows)

    def purge_prefix(self, prefix: str) -> int:
        """Remove every key starting with PREFIX (literally: % and _ are not wildcards)."""
        rows = self.index.delete_prefix(prefix, record_purge=True)
        self._removed(rows, [r.key for r in rows])
        return len(rows)

    def _removed(self, rows: Sequence[Row], keys: list[str]) -> None:
        """Rows are already out of the index: tell caches, then unlink the files."""
        if keys and self._on_invalidate is not None:
            try:
                self._on_invalidate(keys)
            except Exception:
                log.exception("invalidation callback failed")
        for row in rows:
            disk = self._by_id.get(row.disk)
            if disk is None or disk.failed:
                continue
            try:
                os.unlink(disk.prefix + row.file)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._disk_error(disk, exc)


def _unlink_quiet(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _remove_any(entry: os.DirEntry[str]) -> None:
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        _unlink(entry.path)


class Writer:
    """One object being stored. Not thread-safe: one caller at a time.

    ``fileno()`` is the temp file's descriptor, open for reading too: the server may pread or
    sendfile the part already written while the rest downloads. ``commit``/``abort``/``close``
    release it, so a reader that outlives them must ``os.dup(fileno())`` first (safe: writes use
    pwrite at explicit offsets, so the shared file position is never relied on). The duplicate
    then refers to the committed file, or to the unlinked temp file after an abort.
    """

    def __init__(
        self,
        store: Store,
        disk: _Disk,
        key: str,
        name: str,
        fd: int,
        expected_size: int | None,
        content_type: str,
        since_purge: int,
    ) -> None:
        self.key = key
        self.expected_size = expected_size
        self.content_type = content_type
        self.disk = disk.id
        self.tier = disk.kind
        self.temp_path = os.path.join(disk.tmp, name)
        self._store = store
        self._disk = disk
        self._name = name
        self._fd = fd
        self._since = since_purge
        self._hash = hashlib.sha256()
        self._written = 0
        self._state = "open"
        self._final: str | None = None

    @property
    def bytes_written(self) -> int:
        return self._written

    @property
    def state(self) -> str:
        """open, committed or aborted."""
        return self._state

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("writer is closed")
        return self._fd

    def hexdigest(self) -> str:
        """SHA-256 of the bytes written so far."""
        return self._hash.hexdigest()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append DATA (blocking pwrite). Writing past expected_size (or the disk) aborts."""
        self._require_open()
        view = memoryview(data).cast("B")
        n = len(view)
        limit = self._disk.capacity if self.expected_size is None else self.expected_size
        if self._written + n > limit:
            self.abort()
            if self.expected_size is None:
                raise ObjectTooLargeError(f"{self.key}: larger than disk {self._disk.root}")
            raise SizeMismatchError(f"{self.key}: body longer than the expected {self.expected_size} bytes")
        done = 0
        try:
            while done < n:
                done += os.pwrite(self._fd, view[done:], self._written + done)
        except OSError as exc:
            self._fail(exc)
        self._hash.update(view)
        self._written += n
        return n

    def commit(
        self,
        etag: str | None = None,
        last_modified: float | None = None,
        headers: Headers | None = None,
        *,
        expected_sha256: str | None = None,
    ) -> Entry:
        """Make the object durable and visible; raises StoreError (object not stored) otherwise.

        Refused when the size differs from expected_size, the digest from EXPECTED_SHA256, or a
        purge covering the key ran since begin(). Blocking: fsync, rename, SQLite write.
        """
        self._check(expected_sha256)
        self._sync_and_rename()
        if self._disk.kind != "ram":
            try:
                _fsync_dir(os.path.dirname(self._final or ""))
            except OSError as exc:
                self._fail(exc)
        return self._publish(etag, last_modified, headers)

    # The phases of a commit, also run by commit_group() for several writers at once.

    def _check(self, expected_sha256: str | None) -> None:
        self._require_open()
        disk = self._disk
        if self.expected_size is not None and self._written != self.expected_size:
            self.abort()
            raise SizeMismatchError(
                f"{self.key}: got {self._written} bytes, expected {self.expected_size}: not stored"
            )
        if expected_sha256 is not None and expected_sha256.lower() != self._hash.hexdigest():
            self.abort()
            raise IntegrityError(
                f"{self.key}: SHA-256 {self._hash.hexdigest()} is not the expected {expected_sha256}"
            )
        if disk.failed:
            self.abort()
            raise DiskFailedError(f"{self.key}: disk {disk.root} failed: {disk.reason}")

    def _start_writeback(self) -> None:
        """Queue the dirty pages for writing without waiting: a group's fsyncs then share one
        journal commit instead of one each (best effort; fsync still makes it durable)."""
        if _sync_file_range is not None and self._disk.kind != "ram" and self._fd >= 0:
            _sync_file_range(self._fd, 0, 0, _SYNC_FILE_RANGE_WRITE)

    def _sync_and_rename(self) -> None:
        """fsync the file and rename it into objects/ (its directory is not fsynced yet)."""
        disk = self._disk
        final = disk.prefix + f"{self._name[:2]}/{self._name}"
        try:
            if disk.kind != "ram":  # fsync on tmpfs buys nothing
                os.fsync(self._fd)
            os.rename(self.temp_path, final)
            self._final = final
        except OSError as exc:
            self._fail(exc)

    def _publish(self, etag: str | None, last_modified: float | None, headers: Headers | None) -> Entry:
        """Write the index row (file and directory already durable) and retire what it replaced."""
        disk = self._disk
        rel = f"{self._name[:2]}/{self._name}"
        now = time.time()
        row = Row(
            self.key,
            disk.id,
            rel,
            self._written,
            self.content_type,
            etag,
            last_modified,
            self._hash.hexdigest(),
            now,
            headers_json(_keep_headers(headers)),
            0,
            now,
        )
        try:
            result = self._store.index.put(row, capacity=disk.capacity, since_purge=self._since)
        except PurgedError as exc:
            self.abort()
            raise PurgedDuringFillError(f"{self.key}: purged while it was being fetched") from exc
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        self._release()
        gone = list(result.evicted)
        if result.replaced is not None:
            gone.append(result.replaced)
        keys = [r.key for r in result.evicted]
        if result.replaced is not None:
            keys.append(self.key)
        self._store._removed(gone, keys)
        return _entry(row, disk.prefix + rel, disk.kind)

    def abort(self) -> None:
        """Drop the object and release the descriptor (idempotent; does nothing after a commit)."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._release()
        try:
            _unlink(self._final or self.temp_path)
        except OSError as exc:
            self._store._disk_error(self._disk, exc)

    def close(self) -> None:
        """Abort unless committed (for ``with`` blocks and finally clauses)."""
        self.abort()

    def _release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _require_open(self) -> None:
        if self._state != "open":
            raise StoreError(f"{self.key}: writer already {self._state}")

    def _fail(self, exc: OSError) -> NoReturn:
        failed = self._store._disk_error(self._disk, exc)
        self.abort()
        if failed:
            raise DiskFailedError(f"{self.key}: disk {self._disk.root}: {_describe(exc)}") from exc
        raise exc


def commit_group(
    batch: Sequence[tuple[Writer, CommitArgs]], pool: Executor | None = None
) -> list[Entry | BaseException]:
    """Commit several writers as ``Writer.commit`` would, each with the same guarantees, sharing
    the costly part: writeback starts for every file before the first fsync (so one journal
    commit carries them all), and each objects/ directory is fsynced once for the renames into
    it. With ``pool``, the fsyncs of a group run side by side (each waits on a device flush; in
    sequence they would add up). Every file is still fsynced and renamed, and its directory
    fsynced, before its index row is written. Returns, in order, each writer's Entry or the
    StoreError/OSError that refused it (the writer is then aborted, as ``commit`` would leave it).
    """
    results: list[Entry | BaseException | None] = [None] * len(batch)
    live: list[int] = []
    for i, (w, args) in enumerate(batch):
        try:
            w._check(args.expected_sha256)
            w._start_writeback()
            live.append(i)
        except Exception as exc:  # refuse this object, not the group
            results[i] = exc

    def sync(i: int) -> BaseException | None:
        try:
            batch[i][0]._sync_and_rename()
        except Exception as exc:  # refuse this object, not the group
            return exc
        return None

    renamed: list[int] = []
    for i, err in zip(live, _each(pool, sync, live), strict=True):
        if err is None:
            renamed.append(i)
        else:
            results[i] = err
    dirs: dict[str, list[int]] = {}
    for i in renamed:
        w = batch[i][0]
        if w._disk.kind != "ram":
            dirs.setdefault(os.path.dirname(w._final or ""), []).append(i)

    def sync_dir(path: str) -> OSError | None:
        try:
            _fsync_dir(path)
        except OSError as exc:
            return exc
        return None

    dir_failed: set[int] = set()
    paths = list(dirs)
    for path, err in zip(paths, _each(pool, sync_dir, paths), strict=True):
        if err is None:
            continue
        for i in dirs[path]:
            try:
                batch[i][0]._fail(err)
            except Exception as exc:  # what _fail raises: the reason this object is refused
                results[i] = exc
            dir_failed.add(i)
    for i in renamed:
        if i in dir_failed:
            continue
        w, args = batch[i]
        try:
            results[i] = w._publish(args.etag, args.last_modified, args.headers)
        except Exception as exc:  # refuse this object, not the group
            results[i] = exc
    return [r if r is not None else StoreError("not committed") for r in results]


def _each(pool: Executor | None, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    if pool is None or len(items) < 2:
        return [fn(x) for x in items]
    return list(pool.map(fn, items))


@dataclass(frozen=True, slots=True)
class CommitArgs:
    """What ``Writer.commit`` takes, for ``commit_group``."""

    etag: str | None = None
    last_modified: float | None = None
    headers: Headers | None = None
    expected_sha256: str | None = None
