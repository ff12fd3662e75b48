"""The object index: one SQLite database shared by the master and every worker of an appliance.

It maps a cache key to where its bytes live (disk id + file name) and what the server needs to
answer without touching the disk (size, type, validators, SHA-256, kept upstream headers), plus
hit counts and last access for eviction.

Concurrency: WAL mode, so readers never block the writer and the writer never blocks readers;
writers (one per process at a time, serialised here by a lock) wait on each other through
``busy_timeout``. Every thread gets its own read connection; one write connection per process
sits behind a lock. Connections never cross ``fork``: a child forgets (never closes) inherited
ones and opens its own on first use.

Durability: ``synchronous=NORMAL``. With WAL that keeps the database consistent after a crash,
and may lose the last transactions only on power loss. That is safe here because an object's
file is fsynced and renamed into place *before* its row is written, and old files are unlinked
only *after* the new row is in: a lost row leaves an orphan file, a lost delete leaves a row whose
file is gone, and ``Store.open(reconcile=True)`` repairs both at start. So the index never needs
to fsync on every commit (FULL would add one fsync per stored object).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Concatenate, NamedTuple, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

SCHEMA_VERSION = 1
# Purge records let a fill that started before a purge be refused at commit; a day is far longer
# than any fill, so older records are pruned.
PURGE_MEMORY = 86400.0
_BATCH = 1000

_COLUMNS = (
    "key, disk, file, size, content_type, etag, last_modified, sha256, stored_at, headers, hits, last_access"
)

_SCHEMA = """
CREATE TABLE objects (
    key TEXT PRIMARY KEY NOT NULL,
    disk TEXT NOT NULL,
    file TEXT NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    etag TEXT,
    last_modified REAL,
    sha256 TEXT NOT NULL,
    stored_at REAL NOT NULL,
    headers TEXT NOT NULL DEFAULT '{}',
    hits INTEGER NOT NULL DEFAULT 0,
    last_access REAL NOT NULL
);
CREATE UNIQUE INDEX objects_disk_file ON objects(disk, file);
CREATE INDEX objects_disk_access ON objects(disk, last_access);

-- Kept by triggers so usage per disk is one row read, whichever process wrote. (Not INSERT OR
-- IGNORE: inside a trigger the outer statement's conflict policy, e.g. an upsert's, overrides it.)
CREATE TABLE disk_usage (
    disk TEXT PRIMARY KEY NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    objects INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER objects_ai AFTER INSERT ON objects BEGIN
    INSERT INTO disk_usage(disk) SELECT NEW.disk
        WHERE NOT EXISTS (SELECT 1 FROM disk_usage WHERE disk = NEW.disk);
    UPDATE disk_usage SET bytes = bytes + NEW.size, objects = objects + 1 WHERE disk = NEW.disk;
END;
CREATE TRIGGER objects_ad AFTER DELETE ON objects BEGIN
    UPDATE disk_usage SET bytes = bytes - OLD.size, objects = objects - 1 WHERE disk = OLD.disk;
END;
CREATE TRIGGER objects_au AFTER UPDATE OF disk, size ON objects BEGIN
    UPDATE disk_usage SET bytes = bytes - OLD.size, objects = objects - 1 WHERE disk = OLD.disk;
    INSERT INTO disk_usage(disk) SELECT NEW.disk
        WHERE NOT EXISTS (SELECT 1 FROM disk_usage WHERE disk = NEW.disk);
    UPDATE disk_usage SET bytes = bytes + NEW.size, objects = objects + 1 WHERE disk = NEW.disk;
END;

-- Disk health as seen by any process (a worker that hits EIO tells the others).
CREATE TABLE disks (
    id TEXT PRIMARY KEY NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    failed INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    changed_at REAL NOT NULL
);

CREATE TABLE purges (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix TEXT NOT NULL,
    exact INTEGER NOT NULL,
    at REAL NOT NULL
);
"""

_GET = f"SELECT {_COLUMNS} FROM objects WHERE key = ?"


class IndexFileError(Exception):
    """The index file is unusable (newer schema, corrupt)."""


class PurgedError(Exception):
    """The key was purged after the fill began: storing it would resurrect purged content."""


class Row(NamedTuple):
    key: str
    disk: str
    file: str  # relative to the disk's objects/ directory, e.g. "ab/ab12…-9f3c"
    size: int
    content_type: str
    etag: str | None
    last_modified: float | None
    sha256: str  # hex
    stored_at: float
    headers: str  # JSON object of kept upstream headers
    hits: int
    last_access: float


class DiskUsage(NamedTuple):
    bytes: int
    objects: int


class DiskState(NamedTuple):
    id: str
    path: str
    kind: str
    failed: bool
    reason: str | None


class PutResult(NamedTuple):
    replaced: Row | None  # the key's previous version, its file still to be unlinked
    evicted: list[Row]  # rows removed to make room, files still to be unlinked


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with PREFIX (None: no bound).

    SQLite compares TEXT with memcmp on UTF-8, which orders like code points, so
    ``key >= p AND key < prefix_end(p)`` selects exactly the keys starting with p, using the
    primary key, with no LIKE wildcards (% and _ are ordinary characters in keys).
    """
    chars = list(prefix)
    while chars:
        cp = ord(chars[-1]) + 1
        if cp == 0xD800:  # surrogates cannot be encoded: skip over them
            cp = 0xE000
        if cp <= 0x10FFFF:
            chars[-1] = chr(cp)
            return "".join(chars)
        chars.pop()
    return None


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (executescript would commit the open transaction)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""


def headers_json(headers: Mapping[str, str]) -> str:
    return json.dumps(dict(headers), separators=(",", ":"), sort_keys=True)


# Connections inherited through fork must be neither used nor closed by the child (closing could
# disturb the parent's WAL locks), so they are parked here for the child's lifetime.
_instances: weakref.WeakSet[Index] = weakref.WeakSet()
_parked: list[sqlite3.Connection] = []


def _after_fork_in_child() -> None:
    for index in list(_instances):
        index._forget_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Index:
    """Thread-safe and multi-process-safe; see the module docstring."""

    def __init__(self, path: Path | str, *, busy_timeout: float = 10.0, mmap_size: int = 1 << 30) -> None:
        self.path = str(path)
        self._busy_ms = int(busy_timeout * 1000)
        self._mmap_size = int(mmap_size)
        self._tls = threading.local()
        self._lock = threading.Lock()  # guards the write connection and the reader list
        self._writer: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._closed = False
        _instances.add(self)
        self._migrate()

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise sqlite3.ProgrammingError("index is closed")
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) so a writer takes the
        # write lock up front instead of failing to upgrade a read transaction (SQLITE_BUSY).
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
        conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            conn.close()
            raise IndexFileError(f"{self.path}: cannot use WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")  # see the module docstring
        # Memory-mapped reads: point lookups skip a pread per page (9 µs instead of 14 µs on a
        # 200k-row index) and every process shares the OS page cache. The cost: an I/O error on
        # the state disk becomes SIGBUS instead of an exception; that disk holding the index is
        # fatal to the appliance either way.
        conn.execute(f"PRAGMA mmap_size = {self._mmap_size}")
        return conn

    def _reader(self) -> sqlite3.Cursor:
        conn = self._connect()
        cur = conn.cursor()
        with self._lock:
            self._readers.append(conn)
        self._tls.cur = cur
        return cur

    def _write_conn(self) -> sqlite3.Connection:
        if self._writer is None:
            self._writer = self._connect()
        return self._writer

    def _forget_connections(self) -> None:
        _parked.extend(self._readers)
        if self._writer is not None:
            _parked.append(self._writer)
        self._readers = []
        self._writer = None
        self._tls = threading.local()
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for conn in self._readers:
                conn.close()
            if self._writer is not None:
                self._writer.close()
            self._readers = []
            self._writer = None
            self._closed = True
        self._tls = threading.local()

    def _write(self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs) -> T:
        """Run fn(conn, *args) in one write transaction."""
        with self._lock:
            conn = self._write_conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args, **kw)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def _migrate(self) -> None:
        def run(conn: sqlite3.Connection) -> None:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise IndexFileError(
                    f"{self.path}: schema version {version} is newer than this software ({SCHEMA_VERSION})"
                )
            if version == 0:
                for stmt in _statements(_SCHEMA):
                    conn.execute(stmt)
            # Future migrations: `if version < 2: ...` here, then bump user_version.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

        try:
            self._write(run)
        except sqlite3.DatabaseError as exc:
            raise IndexFileError(f"{self.path}: {exc}") from exc

    # -- reads (any thread; the hot path) ----------------------------------------------------

    def get(self, key: str) -> Row | None:
        try:
            cur = self._tls.cur
        except AttributeError:
            cur = self._reader()
        # fetchall, not fetchone: stepping to the end resets the statement, which ends the read
        # transaction; a statement left open would pin the WAL and stop checkpoints.
        rows = cur.execute(_GET, (key,)).fetchall()
        return Row._make(rows[0]) if rows else None

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            cur = self._tls.cur
        except AttributeError:
            cur = self._reader()
        return cur.execute(sql, params).fetchall()

    def iter_all(self) -> Iterator[Row]:
        """Every row in key order, read in batches (no transaction is held between batches)."""
        rows = self._query(f"SELECT {_COLUMNS} FROM objects ORDER BY key LIMIT {_BATCH}")
        while rows:
            yield from map(Row._make, rows)
            last = rows[-1][0]
            rows = self._query(
                f"SELECT {_COLUMNS} FROM objects WHERE key > ? ORDER BY key LIMIT {_BATCH}", (last,)
            )

    def iter_disk_files(self, disk: str) -> Iterator[tuple[str, str, int]]:
        """(file, key, size) of one disk in file-name order, for merging with directory listings."""
        sql = "SELECT file, key, size FROM objects WHERE disk = ? AND file > ? ORDER BY file LIMIT ?"
        rows = self._query(sql, (disk, "", _BATCH))
        while rows:
            yield from rows
            rows = self._query(sql, (disk, rows[-1][0], _BATCH))

    def usage_by_disk(self) -> dict[str, DiskUsage]:
        rows = self._query("SELECT disk, bytes, objects FROM disk_usage WHERE objects > 0")
        return {disk: DiskUsage(b, n) for disk, b, n in rows}

    def lru_candidates(self, disk: str, n: int) -> list[Row]:
        return [
            Row._make(r)
            for r in self._query(
                f"SELECT {_COLUMNS} FROM objects WHERE disk = ? ORDER BY last_access LIMIT ?", (disk, n)
            )
        ]

    def accessed_since(self, disk: str, since: float) -> list[tuple[str, int, int, float, float]]:
        """(key, size, hits, last_access, stored_at) of DISK's rows accessed or stored at or
        after SINCE (uses the (disk, last_access) index), for the tier mover's hit batches."""
        return self._query(
            "SELECT key, size, hits, last_access, stored_at FROM objects WHERE disk = ? AND last_access >= ?",
            (disk, since),
        )

    def iter_brief(self) -> Iterator[tuple[str, str, int, int, float, float]]:
        """(key, disk, size, hits, last_access, stored_at) of every row, in key order, in batches."""
        sql = (
            "SELECT key, disk, size, hits, last_access, stored_at FROM objects "
            "WHERE key > ? ORDER BY key LIMIT ?"
        )
        rows = self._query(sql, ("", _BATCH))
        while rows:
            yield from rows
            rows = self._query(sql, (rows[-1][0], _BATCH))

    def purge_seq(self) -> int:
        """The latest purge's sequence number; pass it to put(since_purge=) when the fill began."""
        rows = self._query("SELECT seq FROM sqlite_sequence WHERE name = 'purges'")
        return rows[0][0] if rows else 0

    def disk_states(self) -> dict[str, DiskState]:
        rows = self._query("SELECT id, path, kind, failed, reason FROM disks")
        return {r[0]: DiskState(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows}

    # -- writes (serialised) -----------------------------------------------------------------

    def put(self, row: Row, *, capacity: int | None = None, since_purge: int | None = None) -> PutResult:
        """Insert or replace ROW in one transaction.

        With CAPACITY, least-recently-used rows of the same disk are removed first so the disk's
        indexed bytes stay within it. With SINCE_PURGE (purge_seq() when the fill began), raises
        PurgedError if a purge since then covers the key. Files are the caller's to unlink.
        """
        return self._write(self._put, row, capacity, since_purge)

    @staticmethod
    def _put(conn: sqlite3.Connection, row: Row, capacity: int | None, since_purge: int | None) -> PutResult:
        if since_purge is not None:
            for prefix, exact in conn.execute(
                "SELECT prefix, exact FROM purges WHERE seq > ?", (since_purge,)
            ).fetchall():
                if row.key == prefix if exact else row.key.startswith(prefix):
                    raise PurgedError(row.key)
        old = conn.execute(_GET, (row.key,)).fetchall()
        replaced = Row._make(old[0]) if old else None
        evicted: list[Row] = []
        if capacity is not None:
            got = conn.execute("SELECT bytes FROM disk_usage WHERE disk = ?", (row.disk,)).fetchall()
            used = got[0][0] if got else 0
            if replaced is not None and replaced.disk == row.disk:
                used -= replaced.size
            need = used + row.size - capacity
            while need > 0:
                victims = conn.execute(
                    f"SELECT {_COLUMNS} FROM objects WHERE disk = ? AND key != ? "
                    "ORDER BY last_access LIMIT 64",
                    (row.disk, row.key),
                ).fetchall()
                if not victims:
                    break
                for v in victims:
                    conn.execute("DELETE FROM objects WHERE key = ?", (v[0],))
                    evicted.append(Row._make(v))
                    need -= v[3]
                    if need <= 0:
                        break
        conn.execute(
            f"INSERT INTO objects ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET disk=excluded.disk, file=excluded.file, "
            "size=excluded.size, content_type=excluded.content_type, etag=excluded.etag, "
            "last_modified=excluded.last_modified, sha256=excluded.sha256, "
            "stored_at=excluded.stored_at, headers=excluded.headers, hits=excluded.hits, "
            "last_access=excluded.last_access",
            row,
        )
        return PutResult(replaced, evicted)

    def delete(self, key: str, *, record_purge: bool = False) -> Row | None:
        """Remove KEY's row and return it. RECORD_PURGE also refuses fills of KEY already under way."""

        def run(conn: sqlite3.Connection) -> Row | None:
            if record_purge:
                self._record_purge(conn, key, exact=True)
            got = conn.execute(f"DELETE FROM objects WHERE key = ? RETURNING {_COLUMNS}", (key,)).fetchall()
            return Row._make(got[0]) if got else None

        return self._write(run)

    def delete_prefix(self, prefix: str, *, record_purge: bool = False) -> list[Row]:
        """Remove every row whose key starts with PREFIX (literally) and return them.

        Runs in batches so other writers are not held up for the whole of a large purge.
        """
        end = prefix_end(prefix)
        where = "key >= ?" + (" AND key < ?" if end is not None else "")
        params: tuple = (prefix, end) if end is not None else (prefix,)
        sql = (
            f"DELETE FROM objects WHERE key IN (SELECT key FROM objects WHERE {where} LIMIT {_BATCH}) "
            f"RETURNING {_COLUMNS}"
        )
        removed: list[Row] = []

        def run(conn: sqlite3.Connection, first: bool) -> int:
            if first and record_purge:
                self._record_purge(conn, prefix, exact=False)
            got = conn.execute(sql, params).fetchall()
            removed.extend(map(Row._make, got))
            return len(got)

        n = self._write(run, True)
        while n == _BATCH:
            n = self._write(run, False)
        return removed

    def delete_disk(self, disk: str) -> int:
        """Remove every row of DISK (a failed or retired disk); returns the count."""
        sql = f"DELETE FROM objects WHERE key IN (SELECT key FROM objects WHERE disk = ? LIMIT {_BATCH})"
        total = n = self._write(lambda conn: conn.execute(sql, (disk,)).rowcount)
        while n == _BATCH:
            n = self._write(lambda conn: conn.execute(sql, (disk,)).rowcount)
            total += n
        return total

    def delete_keys(self, keys: list[str]) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return sum(conn.execute("DELETE FROM objects WHERE key = ?", (k,)).rowcount for k in keys)

        return self._write(run) if keys else 0

    def delete_exact(self, key: str, disk: str, file: str) -> Row | None:
        """Remove KEY's row only if it still names DISK/FILE (not a newer version); return it."""
        got = self._write(
            lambda conn: conn.execute(
                f"DELETE FROM objects WHERE key = ? AND disk = ? AND file = ? RETURNING {_COLUMNS}",
                (key, disk, file),
            ).fetchall()
        )
        return Row._make(got[0]) if got else None

    def delete_disk_keys(self, disk: str) -> list[Row]:
        """Remove every row of DISK in batches and return them (to tell caches and count)."""
        sql = (
            f"DELETE FROM objects WHERE key IN (SELECT key FROM objects WHERE disk = ? LIMIT {_BATCH}) "
            f"RETURNING {_COLUMNS}"
        )
        out: list[Row] = []
        while True:
            got = self._write(lambda conn: conn.execute(sql, (disk,)).fetchall())
            out.extend(map(Row._make, got))
            if len(got) < _BATCH:
                return out

    def move(self, key: str, old: tuple[str, str, str], new_disk: str, new_file: str) -> bool:
        """Point KEY at NEW_DISK/NEW_FILE if its row is still OLD (disk, file, sha256): one atomic
        switch, so the object is always in exactly one place. False if it changed meanwhile."""
        cur = self._write(
            lambda conn: conn.execute(
                "UPDATE objects SET disk = ?, file = ? "
                "WHERE key = ? AND disk = ? AND file = ? AND sha256 = ?",
                (new_disk, new_file, key, *old),
            )
        )
        return cur.rowcount == 1

    def update_meta(self, key: str, headers: str, stored_at: float) -> bool:
        """Replace a row's kept headers (JSON) and response time; False if the key is absent."""
        cur = self._write(
            lambda conn: conn.execute(
                "UPDATE objects SET headers = ?, stored_at = ? WHERE key = ?", (headers, stored_at, key)
            )
        )
        return cur.rowcount > 0

    def add_hits(self, batch: Mapping[str, tuple[int, float]]) -> None:
        """Add hit counts and move last access forward for many keys in one transaction."""
        if not batch:
            return
        params = [(count, when, key) for key, (count, when) in batch.items()]
        self._write(
            lambda conn: conn.executemany(
                "UPDATE objects SET hits = hits + ?, last_access = max(last_access, ?) WHERE key = ?",
                params,
            )
        )

    def set_disk_state(self, state: DiskState) -> None:
        self._write(
            lambda conn: conn.execute(
                "INSERT INTO disks (id, path, kind, failed, reason, changed_at) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET path=excluded.path, kind=excluded.kind, "
                "failed=excluded.failed, reason=excluded.reason, changed_at=excluded.changed_at",
                (*state[:3], int(state.failed), state.reason, time.time()),
            )
        )

    @staticmethod
    def _record_purge(conn: sqlite3.Connection, prefix: str, *, exact: bool) -> None:
        now = time.time()
        conn.execute("DELETE FROM purges WHERE at < ?", (now - PURGE_MEMORY,))
        conn.execute("INSERT INTO purges (prefix, exact, at) VALUES (?,?,?)", (prefix, int(exact), now))
