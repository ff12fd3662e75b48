"""One worker process: accepts on its own SO_REUSEPORT socket and serves from the shared store.

Workers share the store and its SQLite index with each other and the master, as nginx workers
share a cache. Each keeps a small per-process view (open files, verified small bodies) that the
shared invalidation ring keeps honest.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import hashlib
import logging
import os
import shutil
import signal
import socket
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdnlab.edge.accesslog import AccessLog
from cdnlab.edge.commitq import GroupCommitter, lower_priority
from cdnlab.edge.config import ConfigError, EdgeConfig, load
from cdnlab.edge.conn import Conn
from cdnlab.edge.fetch import Fetch
from cdnlab.edge.fetchlock import FetchLocks
from cdnlab.edge.freshness import compute_freshness
from cdnlab.edge.handler import Handler
from cdnlab.edge.httpdate import DateCache
from cdnlab.edge.limits import Limiter, connection_cap
from cdnlab.edge.meta import ObjectMeta
from cdnlab.edge.output import FileHandle, Response
from cdnlab.edge.shm import SharedState, key_hash
from cdnlab.edge.stats import WorkerStats
from cdnlab.edge.store import Store
from cdnlab.policy import cache_key_query, classify

if TYPE_CHECKING:
    from cdnlab.edge.tls import TLSContexts

log = logging.getLogger("cdnlab.edge.worker")

_FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\nServer: cdnlab\r\nRetry-After: 1\r\n"
    b"Content-Length: 0\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
)

HotObject = tuple[ObjectMeta, FileHandle | None, bytes | None]


def run_dir(config: EdgeConfig) -> Path:
    """Where master and workers share run state (counters, locks, the invalidation ring).

    On tmpfs when there is one: renames and writes there never wait behind the object store's
    fsyncs in the filesystem journal (a stats rename on ext4 was seen taking 67 ms under fills).
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        tag = hashlib.sha256(str(config.state_dir.resolve()).encode()).hexdigest()[:16]
        return shm / f"cdnlab-{tag}"
    return config.state_dir / "run"


def clear_run_dir(config_path: Path) -> None:
    """Remove the run directory of a daemon that is gone. A master stopped by a signal removes its
    own; one killed with SIGKILL cannot, and its directory would outlive it on tmpfs (a restart
    with the same state_dir reuses it). For whoever killed it, once it is dead."""
    try:
        config = load(config_path)
    except ConfigError:
        return  # it never started: nothing of it to clear
    shutil.rmtree(run_dir(config), ignore_errors=True)


def bind(addr: str) -> socket.socket:
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, int(port)))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def entry_meta(entry: Any) -> ObjectMeta:
    headers = entry.headers
    fr = compute_freshness(
        headers, entry.stored_at, entry.stored_at, classify(entry.key.split("?", 1)[0]), status=200
    )
    return ObjectMeta(
        size=entry.size,
        etag=entry.etag,
        last_modified=entry.last_modified,
        content_type=entry.content_type or "application/octet-stream",
        stored_at=entry.stored_at,
        tier=entry.tier,
        headers=headers,
        sha256=entry.sha256,
        freshness=fr,
        fresh_until=fr.fresh_until(),
    )


class Worker:
    def __init__(self, config: EdgeConfig, index: int) -> None:
        self.config = config
        self.index = index
        self.limits = config.limits
        self.loop = asyncio.get_running_loop()
        self.now = time.monotonic()
        self.draining = False
        self.conns: set[Conn] = set()
        self.fetches: dict[str, Fetch] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # fetches under way (held so none is collected)
        self.date = DateCache()
        # Blocking store work (create, fsync, rename, index writes) runs here, off the event loop.
        self.io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="store-io", initializer=lower_priority)
        # Commits wait on fsync; one thread commits them in groups (see commitq), so they never
        # hold up a new fetch's first bytes and share their journal commits.
        self.committer = GroupCommitter()
        # Hit counts go to the index once a second from a thread at the loop's own priority: a
        # niced store thread that is preempted while it holds the GIL (between its SQLite calls)
        # stalls the event loop until the scheduler runs it again, 10-40 ms on a busy machine.
        self.bookkeeping = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hit-counts")
        self.stats = WorkerStats()
        rd = run_dir(config)
        self.stats_path = rd / f"stats-{index}.json"
        self.shm = SharedState(rd / "shared", create=False)
        self.store = Store(
            list(config.tiers),
            config.state_dir,
            ram_object_max=config.limits.ram_object_max,
            on_invalidate=self.shm.invalidate,
        )
        self.store.open(reconcile=False)
        self.locks = FetchLocks(rd / "fetch.lock")
        from cdnlab.edge.upstream import UpstreamPool

        lim = config.limits
        self.upstreams = UpstreamPool(
            config.upstreams,
            lim.upstream_connect_timeout,
            lim.upstream_read_timeout,
            lim.upstream_probe_interval,
        )
        self.access = AccessLog(config.log.access_log) if config.log.access_log else None
        self.limiter = Limiter(config.limits)
        self.max_conns = connection_cap(config.limits)  # under the open-file limit, with room to spare
        self.handler = Handler(self)
        self.tls: TLSContexts | None = None
        if config.tls.certificates:
            from cdnlab.edge.tls import TLSContexts

            self.tls = TLSContexts(config.tls)
        self._hot: dict[str, HotObject] = {}
        self._hot_bytes = 0
        # Devices this worker met a read error on: their files are not opened again here, without
        # waiting for the master to mark the disk failed and the index to forget its objects.
        self._dead_devs: set[int] = set()
        self._seen_seq = self.shm.seq
        self._hits: defaultdict[str, int] = defaultdict(int)
        self._listeners: list[socket.socket] = []
        self._drain_started = asyncio.Event()
        self._stopped = asyncio.Event()

    # cache view ------------------------------------------------------------------------------

    def cache_key(self, path: str, query: str) -> str:
        """The path plus only the query parameters the policy catalog keys on (never signatures)."""
        if not query:
            return path
        keyed = cache_key_query(query)
        return f"{path}?{keyed}" if keyed else path

    def lookup(self, key: str) -> HotObject | None:
        seq = self.shm.seq
        if seq != self._seen_seq:
            self._invalidate(seq)
        obj = self._hot.get(key)
        if obj is None:
            obj = self._load(key)
            if obj is None:
                return None
        self._hits[key] += 1
        return obj

    def fast_hit(self, url: bytes) -> bytes | tuple[bytes, ObjectMeta, FileHandle] | None:
        """The answer to a plain GET of ``url`` for an object this worker holds: the whole response
        if it is in RAM (counted as served), or its head with the open file to sendfile from (counted
        when sent); None sends the request down the general path."""
        if self.access is not None:
            return None  # every request must reach the access log
        target = self.handler.targets.get(url)
        if target is None:
            return None
        if self.shm.seq != self._seen_seq:
            self._invalidate(self.shm.seq)
        obj = self._hot.get(target[1])
        if obj is None:
            return None
        meta, handle, body = obj
        if meta.fresh_until <= time.time() or "vary" in meta.headers:
            return None  # stale: the general path revalidates; Vary: it negotiates (compress.py)
        self._hits[target[1]] += 1
        if body is None:
            if handle is None or handle.fd < 0 or handle.retired:
                return None
            return meta.fast_head(self.date.get(), self.handler.hit_status), meta, handle
        data = meta.fast_head(self.date.get(), self.handler.hit_status) + body
        self.stats.fast_hit(len(data))
        return data

    def _load(self, key: str) -> HotObject | None:
        try:
            entry = self.store.lookup(key)
        except Exception:
            log.exception("index lookup failed for %s", key)
            return None
        if entry is None:
            return None
        meta = entry_meta(entry)
        body: bytes | None = None
        handle: FileHandle | None = None
        try:
            if (
                entry.size <= self.limits.ram_object_max
                and self._hot_bytes + entry.size <= self.limits.hot_cache_bytes
            ):
                with open(entry.path, "rb") as f:
                    body = f.read(entry.size + 1)
                if len(body) != entry.size or hashlib.sha256(body).hexdigest() != entry.sha256:
                    log.error("integrity: %s on %s does not match its SHA-256; dropping it", key, entry.path)
                    self.stats.integrity["load"] += 1
                    self._drop_corrupt(key)
                    return None
                meta.tier = "ram"
            else:
                handle = FileHandle(os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC))
                st = os.fstat(handle.fd)
                handle.dev = st.st_dev
                if st.st_dev in self._dead_devs:
                    handle.retire()
                    return None  # the disk died under another request: the caller goes upstream
                if st.st_size != entry.size:
                    handle.retire()
                    log.error("integrity: %s has the wrong size on disk; dropping it", key)
                    self._drop_corrupt(key)
                    return None
        except OSError as exc:
            log.warning("cannot open %s for %s: %s", entry.path, key, exc)
            # Off the loop: an error on a disk marks it failed (a vanished file alone does not).
            self.loop.run_in_executor(self.io, self.store.note_io_error, entry.disk, exc)
            return None
        obj: HotObject = (meta, handle, body)
        self._hot[key] = obj
        if body is not None:
            self._hot_bytes += len(body)
        while len(self._hot) > self.limits.open_files_cache:
            self._evict_hot(next(iter(self._hot)))
        return obj

    def _drop_corrupt(self, key: str) -> None:
        try:
            self.store.purge(key)  # tells every worker through on_invalidate
        except Exception:
            log.exception("could not drop corrupt %s", key)

    def disk_error(self, handle: FileHandle, exc: OSError) -> None:
        """A read error on the open object file ``handle`` (EIO in sendfile): what this worker
        holds open on that device is forgotten now, so the next requests go upstream rather than
        meet the dead drive one by one; the disk is marked failed off the loop."""
        dev = _device(handle)
        if dev < 0:
            return
        self._dead_devs.add(dev)
        for key, (_meta, held, _body) in list(self._hot.items()):
            if held is not None and held.dev == dev:  # _load records every held file's device
                self._evict_hot(key)
        self.loop.run_in_executor(self.io, self.store.note_dev_error, dev, exc)

    def _evict_hot(self, key: str) -> None:
        _meta, handle, body = self._hot.pop(key)
        if handle is not None:
            handle.retire()
        if body is not None:
            self._hot_bytes -= len(body)

    def _invalidate(self, seq: int) -> None:
        self._seen_seq, hashes = self.shm.changes_since(self._seen_seq)
        if hashes is None:
            for key in list(self._hot):
                self._evict_hot(key)
        else:
            for key in [k for k in self._hot if key_hash(k) in hashes]:
                self._evict_hot(key)

    def fetch(
        self, key: str, target: str, *, stale: ObjectMeta | None = None, authorization: str | None = None
    ) -> Fetch:
        """The fetch of ``key`` under way in this worker, or a new one. Requests with credentials
        get a fetch of their own: an answer for one user is never handed to another."""
        fetch = None if authorization is not None else self.fetches.get(key)
        if fetch is None:
            fetch = Fetch(self, key, target, stale=stale, authorization=authorization)
            if authorization is None:
                self.fetches[key] = fetch
            task = self.loop.create_task(fetch.run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return fetch

    @property
    def fetches_running(self) -> int:
        return len(self._tasks)

    # connections -----------------------------------------------------------------------------

    def finished(self, conn: Conn, resp: Response) -> None:
        if resp.cache_status == "fast":
            return  # the tail of a fast-path answer, counted when it was sent
        seconds = time.monotonic() - resp.started
        self.stats.request(resp.status, resp.cache_status, resp.tier, resp.sent, seconds)
        if self.access is not None:
            self.access.log(
                conn.client,
                resp.method,
                resp.path,
                resp.range,
                resp.status,
                resp.sent,
                resp.cache_status,
                resp.tier,
                seconds,
            )

    def forget(self, conn: Conn) -> None:
        self.conns.discard(conn)

    def _accept(self, lsock: socket.socket, tls: bool = False) -> None:
        for _ in range(64):
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept: %s; pausing accepts for 100 ms", exc.strerror)
                    self.loop.remove_reader(lsock.fileno())
                    self.loop.call_later(0.1, self._resume_accept, lsock, tls)
                return
            sock.setblocking(False)
            if len(self.conns) >= self.max_conns:
                if tls:  # no plaintext 503 into a TLS handshake
                    self.stats.refused["capacity"] += 1
                    sock.close()
                else:
                    self._over_capacity(sock)
                continue
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.stats.accepted += 1
            client = addr[0] if isinstance(addr, tuple) else str(addr)
            if tls:
                self._accept_tls(sock, client)
            else:
                self.conns.add(Conn(self, sock, client))

    def _accept_tls(self, sock: socket.socket, client: str) -> None:
        from cdnlab.edge.tlsconn import TLSConn

        assert self.tls is not None
        try:
            self.conns.add(TLSConn(self, sock, client, self.tls))
        except OSError:
            self.stats.tls["failed"] += 1
            sock.close()

    def reload(self) -> None:
        """SIGHUP (the master passes it on): new TLS certificates for new handshakes, and the
        access log reopened at its path (after rotation). Open connections carry on."""
        if self.tls is not None:
            self.tls.reload()
        if self.access is not None:
            self.access.reopen()

    def _over_capacity(self, sock: socket.socket) -> None:
        """Full (worker_connections): a best-effort 503 without reading the request, then close;
        better than running out of descriptors for object files."""
        self.stats.refused["capacity"] += 1
        with contextlib.suppress(OSError):
            sock.send(_FULL)
        sock.close()

    def _resume_accept(self, lsock: socket.socket, tls: bool = False) -> None:
        if not self.draining and lsock.fileno() >= 0:
            self.loop.add_reader(lsock.fileno(), self._accept, lsock, tls)

    # lifecycle -------------------------------------------------------------------------------

    def _tick(self) -> None:
        self.now = time.monotonic()
        for conn in list(self.conns):
            conn.check_timeouts(self.now)
        self.stats.connections = len(self.conns)
        self.limiter.prune(self.now)
        self.stats.upstream_health = {u.url: u.healthy for u in self.upstreams.upstreams}
        try:
            self.stats.publish(self.stats_path)
        except OSError as exc:
            log.warning("cannot publish stats: %s", exc)
        if self.access is not None:
            self.access.flush()
        if self._hits:
            hits, self._hits = self._hits, defaultdict(int)
            now = time.time()
            batch = {k: (n, now) for k, n in hits.items()}
            self.loop.run_in_executor(self.bookkeeping, self._record_hits, batch)
        if not self._stopped.is_set():
            self.loop.call_later(1.0, self._tick)

    def _record_hits(self, batch: dict[str, tuple[int, float]]) -> None:
        try:
            self.store.add_hits(batch)
        except Exception:
            log.exception("could not record hit counts")

    def drain(self) -> None:
        """Stop accepting; let open connections finish; keep-alive ends after each response."""
        if self.draining:
            return
        self.draining = True
        self._drain_started.set()
        for lsock in self._listeners:
            self.loop.remove_reader(lsock.fileno())
            lsock.close()
        self._listeners.clear()
        for conn in list(self.conns):
            if conn.idle:
                conn.close()

    async def serve(self) -> None:
        for addr in self.config.listen:
            lsock = bind(addr)
            self._listeners.append(lsock)
            self.loop.add_reader(lsock.fileno(), self._accept, lsock)
        for addr in self.config.tls.listen:
            lsock = bind(addr)
            self._listeners.append(lsock)
            self.loop.add_reader(lsock.fileno(), self._accept, lsock, True)
        self.loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.loop.add_signal_handler(signal.SIGTERM, self.drain)
        self.loop.add_signal_handler(signal.SIGUSR1, self.drain)
        self.loop.add_signal_handler(signal.SIGINT, self.drain)
        self._tick()
        await self._drain_started.wait()
        try:
            await asyncio.wait_for(self._drain_wait(), self.limits.drain_timeout)
        except TimeoutError:
            log.warning("drain timeout: closing %d connections", len(self.conns))
        self._stopped.set()
        for conn in list(self.conns):
            conn.abort()
        await self.upstreams.close()
        self.stats.publish(self.stats_path)
        if self.access is not None:
            self.access.close()

    async def _drain_wait(self) -> None:
        while self.conns or self.fetches:
            await asyncio.sleep(0.05)


def _device(handle: FileHandle) -> int:
    """The device ``handle``'s file lives on; -1 if unknown and its filesystem refuses fstat."""
    if handle.dev >= 0:
        return handle.dev
    try:
        return os.fstat(handle.fd).st_dev
    except OSError:
        return -1


def worker_main(config: EdgeConfig, index: int) -> None:
    import uvloop

    # A SIGHUP (reload) that arrives before serve() installs its handler must not kill the worker.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    async def main() -> None:
        worker = Worker(config, index)
        # What start-up made (modules, config, index caches) lives as long as the worker: keep it
        # out of every collection, and collect the young generation less often, so a full
        # collection over a large heap does not stall responses (p99).
        gc.collect()
        gc.freeze()
        gc.set_threshold(7000, 20, 20)
        await worker.serve()

    uvloop.run(main())
