"""Pull-through: one upstream fetch per key, streamed to every waiting client while it is stored.

Within a worker, concurrent misses for a key (ranges included) attach to the same ``Fetch`` and
read the growing temp file as it fills. Across workers, a per-key record lock lets one worker fetch
while the others wait for the committed object, as nginx's ``proxy_cache_lock`` does. A body that
ends short of its Content-Length, or breaks off, is aborted and never committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cdnlab.edge.commitq import MAX_BACKLOG
from cdnlab.edge.digest import upstream_sha256
from cdnlab.edge.freshness import conditional_headers, merge_304, parse_cache_control, storable
from cdnlab.edge.httpdate import parse_http_date
from cdnlab.edge.meta import STORED_HEADERS, ObjectMeta, default_etag
from cdnlab.edge.output import FileHandle
from cdnlab.edge.store import CommitArgs, StoreError
from cdnlab.edge.upclient import BodyError, Response
from cdnlab.edge.upstream import UpstreamError
from cdnlab.edge.vary import parse_vary
from cdnlab.policy import classify

if TYPE_CHECKING:
    from cdnlab.edge.conn import Conn
    from cdnlab.edge.worker import Worker

log = logging.getLogger("cdnlab.edge.fetch")

_CHUNK = 256 * 1024
_PASSTHROUGH_MAX = 1 << 20  # error bodies and uncacheable small answers are relayed from memory
_UPSTREAM_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "cdnlab"}


class Unstored:
    """A writer for objects we relay but cannot store: an unnamed file, gone when closed."""

    def __init__(self, directory: Any) -> None:
        self._fd = os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)
        self._hash = hashlib.sha256()

    def fileno(self) -> int:
        return self._fd

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        return os.write(self._fd, data)

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Fetch:
    """One key's trip upstream. ``outcome`` tells waiters what to do once it is ready:

    - ``stream``: serve ``meta`` from ``handle`` (growing while ``written`` < size);
    - ``stored``: it is in the store now (another worker stored it, or a 304 refreshed it: then
      ``revalidated``): look it up again;
    - ``relay``: answer ``relay`` (status, headers, body) as the upstream gave it;
    - ``error``: answer ``error`` (an UpstreamError).
    """

    def __init__(
        self,
        worker: Worker,
        key: str,
        target: str,
        *,
        stale: ObjectMeta | None = None,
        authorization: str | None = None,
    ) -> None:
        self.worker = worker
        self.key = key
        self.target = target
        # Revalidating a stored response (RFC 9111 §4.3): ask conditionally, a 304 refreshes it.
        self.stale = stale
        self.revalidated = False
        # A request with credentials gets its own fetch (never collapsed with others'), and the
        # answer is stored only if the origin allows it (§3.5).
        self.authorization = authorization
        self.outcome = ""
        self.attached = 0  # requests served by this fetch
        self.meta: ObjectMeta | None = None
        self.handle: FileHandle = FileHandle(-1)
        self.written = 0
        self.head = b""  # the first bytes, also kept in memory (served before the file exists)
        self.failed: str | None = None
        self.stored = False
        self.upstream_status = ""  # the upstream's own Cache-Status, relayed (RFC 9211 §2)
        self.relay: tuple[int, list[tuple[str, str]], bytes] | None = None
        self.error: UpstreamError | None = None
        self._ready: list[Callable[[Fetch], None]] = []
        self._subscribers: list[Conn] = []

    # waiters ---------------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Every byte of the body is in the temp file (the commit may still be running)."""
        return (
            self.outcome == "stream"
            and self.meta is not None
            and self.failed is None
            and self.meta.size >= 0
            and self.written == self.meta.size
        )

    def when_ready(self, callback: Callable[[Fetch], None]) -> None:
        if self.outcome:
            callback(self)
        else:
            self._ready.append(callback)

    def subscribe(self, waiter: object) -> None:
        self._subscribers.append(waiter)  # type: ignore[arg-type]

    def _set_ready(self, outcome: str) -> None:
        self.outcome = outcome
        ready, self._ready = self._ready, []
        for cb in ready:
            try:
                cb(self)
            except Exception:  # one broken waiter must not starve the others
                log.exception("waiter failed on %s", self.key)

    def _progress(self) -> None:
        subs, self._subscribers = self._subscribers, []
        for conn in subs:
            conn.kick()

    # the fetch -------------------------------------------------------------------------------

    async def run(self) -> None:
        worker = self.worker
        locked = False
        try:
            if self.authorization is None:
                locked = await self._lock()
                if self.outcome:
                    return
            await self._fetch(store_it=locked or self.authorization is not None)
        except UpstreamError as exc:
            self.error = exc
            if not self.outcome:
                self._set_ready("error")
        except Exception as exc:  # never leave waiters hanging, whatever broke
            log.exception("fetch of %s failed", self.key)
            self.error = UpstreamError(502, f"fetch failed: {type(exc).__name__}")
            if not self.outcome:
                self._set_ready("error")
            elif self.failed is None:
                self.failed = "internal error"
                self._progress()
        finally:
            if locked:
                worker.locks.release(self.key)
            if worker.fetches.get(self.key) is self:
                del worker.fetches[self.key]
            self.handle.retire()

    def _stored_meanwhile(self) -> bool:
        """Another worker stored the key (or, when revalidating, refreshed or replaced it)."""
        entry = self.worker.store.lookup(self.key)
        if entry is None:
            return False
        return self.stale is None or entry.stored_at > self.stale.stored_at

    async def _lock(self) -> bool:
        """True when we hold the key's lock; sets ``stored`` if another worker stored it meanwhile."""
        worker = self.worker
        deadline = time.monotonic() + worker.limits.cache_lock_timeout
        delay = 0.005
        while True:
            if worker.locks.try_acquire(self.key):
                if self._stored_meanwhile():  # committed while we waited
                    worker.locks.release(self.key)
                    self._set_ready("stored")
                    return False
                return True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            if self._stored_meanwhile():
                self._set_ready("stored")
                return False
            if time.monotonic() > deadline:
                return False  # fetch for ourselves, uncached, as nginx does after the lock timeout

    async def _fetch(self, store_it: bool) -> None:
        worker = self.worker
        started = time.monotonic()
        failures: list[tuple[str, str, float]] = []
        # Taken before the request leaves: a purge from here on may be about the very bytes that
        # come back, so it must refuse their commit (begin() runs later, in an I/O thread).
        since_purge = worker.store.index.purge_seq()
        try:
            up, resp = await worker.upstreams.open(self.target, self._request_headers(), failures)
        finally:
            # Upstreams that failed before one answered (or all of them) count as fetches too.
            for url, result, seconds in failures:
                worker.stats.upstream(url, result, seconds)
        try:
            self.upstream_status = resp.headers.get("Cache-Status", "")
            if resp.status == 304 and self.stale is not None:
                await self._refresh(resp)
                worker.stats.upstream(up.url, "ok", time.monotonic() - started)
                return
            if resp.status in (404, 410) and self.stale is not None:
                # Gone upstream: the stale copy must not outlive it (RFC 9111 §4.4 spirit).
                await asyncio.get_running_loop().run_in_executor(worker.io, worker.store.purge, self.key)
            if resp.status != 200:
                await self._relay(resp)
                worker.stats.upstream(up.url, "ok", time.monotonic() - started)
                return
            await self._stream(resp, store_it and self._storable(resp), since_purge)
            worker.stats.upstream(
                up.url, "ok" if self.failed is None else "truncated", time.monotonic() - started
            )
        except (TimeoutError, BodyError, OSError) as exc:
            # A body that had begun and broke off (short of its Content-Length, or a chunked body
            # cut before its last chunk) is "truncated"; a stall is "timeout".
            if isinstance(exc, TimeoutError):
                result = "timeout"
            elif self.meta is not None:
                result = "truncated"
            else:
                result = "error"
            worker.stats.upstream(up.url, result, time.monotonic() - started)
            if not self.outcome:
                raise UpstreamError(
                    504 if isinstance(exc, TimeoutError) else 502,
                    f"upstream {up.url} failed: {exc or type(exc).__name__}",
                ) from None
            self.failed = f"upstream body broke off: {exc or type(exc).__name__}"
            log.warning("%s: %s", self.key, self.failed)
            self._progress()
        finally:
            resp.release()

    def _request_headers(self) -> dict[str, str]:
        headers = dict(_UPSTREAM_HEADERS)
        if self.stale is not None:
            h = self.stale.headers
            headers.update(conditional_headers(h.get("etag"), h.get("last-modified")))
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        return headers

    def _storable(self, resp: Response) -> bool:
        cc = parse_cache_control(", ".join(resp.headers.getall("Cache-Control", [])) or None)
        ok, why = storable(
            "GET",
            resp.status,
            {},
            cc,
            resp.headers,
            self.authorization is not None,
            ttl_class=classify(self.key.split("?", 1)[0]),
        )
        if ok:
            vary = parse_vary(resp.headers.get("Vary"))
            # Only Accept-Encoding variation is understood (we always fetch identity); any other
            # Vary field would need request fields we do not key on: relay, never store.
            ok = vary is not None and set(vary) <= {"accept-encoding"}
            why = why if ok else "vary"
        if not ok:
            log.debug("%s not stored: %s", self.key, why)
        return ok

    async def _refresh(self, resp: Response) -> None:
        """A 304: keep the stored bytes, take the merged headers and the new response time."""
        assert self.stale is not None
        merged = merge_304(self.stale.headers, resp.headers)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self.worker.io, self.worker.store.revalidated, self.key, merged, time.time()
        )
        self.revalidated = True
        self._set_ready("stored")

    async def _relay(self, resp: Response) -> None:
        body = await resp.read(_PASSTHROUGH_MAX + 1)
        if len(body) > _PASSTHROUGH_MAX:
            raise UpstreamError(502, f"upstream answered {resp.status} with an oversized body")
        keep = [(k, v) for k, v in resp.headers.items() if k.lower() in _RELAYED]
        self.relay = (resp.status, keep, body)
        self._set_ready("relay")

    async def _stream(self, resp: Response, store_it: bool, since_purge: int) -> None:
        worker = self.worker
        size = resp.content_length
        now = time.time()
        lm = parse_http_date(resp.headers.get("Last-Modified", "")) or now
        headers = {k: resp.headers[k] for k in STORED_HEADERS if k in resp.headers}
        kept = {k.lower(): v for k, v in resp.headers.items()}  # the store keeps what it needs
        ctype = _safe_content_type(resp.headers.get("Content-Type"))
        first = await resp.read_chunk(_CHUNK)
        if size is not None and len(first) > size:
            raise BodyError("upstream sent more than its Content-Length")
        self.meta = ObjectMeta(
            size=size if size is not None else -1,
            etag=resp.headers.get("ETag") or default_etag(size or 0, lm),
            last_modified=lm,
            content_type=ctype,
            stored_at=now,
            tier="upstream",
            headers=headers,
        )
        if store_it and size is not None and not _fits(worker.store, size):
            store_it = False  # no healthy disk could hold it: begin() would refuse it
        if store_it and worker.committer.backlog >= MAX_BACKLOG:
            store_it = False  # the disk is behind on commits: serve it, do not queue another
        self.stored = store_it
        # The first bytes usually come with the headers (a small object: all of them). Clients get
        # them from memory at once, while an I/O thread creates the temp file and writes them:
        # creating a file can wait on the filesystem journal behind other objects' fsyncs, which
        # must hold up neither the event loop nor the first clients.
        self.head = first
        self.written = len(first)
        # With a digest from upstream, nothing is served until the whole body matches it.
        digests = upstream_sha256(resp.headers)
        if size is not None and not digests:
            self._set_ready("stream")  # clients start now, reading as bytes land
        try:
            writer: Any = await asyncio.get_running_loop().run_in_executor(
                worker.io, _begin, worker.store, self.key, size, ctype, first, since_purge
            )
        except StoreError as exc:
            # No disk can take it (all failed, or too large): still serve it, through an unnamed
            # temp file that is never committed.
            log.warning("%s: %s; relaying without storing", self.key, exc)
            writer = Unstored(worker.config.state_dir)
            store_it = False
            self.stored = False
            if first:
                writer.write(first)
        try:
            # The spans already handed out hold this handle: it gets its descriptor now.
            self.handle.fd = os.dup(writer.fileno())
            loop = asyncio.get_running_loop()
            while chunk := await resp.read_chunk(_CHUNK):
                try:
                    # Writing (and hashing) in the I/O pool: a write can wait on the journal.
                    # One chunk at a time, so the file grows in order.
                    await loop.run_in_executor(worker.io, writer.write, chunk)
                except StoreError as exc:  # longer than promised, or the disk gave up
                    raise BodyError(str(exc)) from None
                self.written += len(chunk)
                if size is not None and self.written > size:
                    raise BodyError("upstream sent more than its Content-Length")
                self._progress()
            if size is not None and self.written != size:
                raise BodyError(f"upstream body ended at {self.written} of {size} bytes")
            resp.release()  # read to its end: the connection can serve other fetches during the commit
            if size is None:
                self.meta.size = self.written
                self.meta.etag = resp.headers.get("ETag") or default_etag(self.written, lm)
            got = writer.hexdigest()
            for name, want in digests:
                if got != want:
                    worker.stats.integrity["upstream"] += 1
                    raise UpstreamError(502, f"upstream body does not match its {name} (sha-256 {got})")
            if store_it:
                try:
                    entry = await asyncio.wrap_future(
                        worker.committer.submit(writer, CommitArgs(self.meta.etag, lm, kept))
                    )
                    self.meta.sha256 = entry.sha256
                except StoreError as exc:  # purged meanwhile, disk failed: only means not stored
                    log.warning("not stored: %s", exc)
                    self.stored = False
            else:
                writer.abort()
            if size is None or digests:
                self._set_ready("stream")
            self._progress()
        except BaseException:
            writer.abort()
            raise


def _fits(store: Any, size: int) -> bool:
    return any(cap >= size for kind in ("ram", "flash", "hdd") for _, cap in store.disks_of(kind))


def _safe_content_type(value: str | None) -> str:
    """Upstream Content-Type as stored and replayed: printable Latin-1 only, else the default."""
    if not value or any(c < " " or c > "\xff" or c == "\x7f" for c in value):
        return "application/octet-stream"
    return value.strip()


def _begin(store: Any, key: str, size: int | None, ctype: str, first: bytes, since_purge: int) -> Any:
    """Open the object's temp file and write its first bytes (in an I/O thread)."""
    writer = store.begin(key, size, ctype, since_purge)
    if first:
        try:
            writer.write(first)
        except StoreError as exc:  # longer than promised, or the disk gave up
            writer.abort()
            raise BodyError(str(exc)) from None
        except BaseException:
            writer.abort()
            raise
    return writer


_RELAYED = frozenset(
    {
        "content-type",
        "cache-control",
        "expires",
        "location",
        "www-authenticate",
        "retry-after",
        "vary",
        "last-modified",
        "etag",
    }
)
