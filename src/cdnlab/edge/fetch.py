"""Pull-through: one upstream fetch per key, streamed to every waiting client while it is stored.

Within a worker, concurrent misses for a key (ranges included) attach to the same ``Fetch`` and
read the growing temp file as it fills. Across workers, a per-key record lock lets one worker fetch
while the others wait for the committed object, as nginx's ``proxy_cache_lock`` does. A body that
ends short of its Content-Length, or breaks off, is aborted and never committed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from cdnlab.edge.httpdate import parse_http_date
from cdnlab.edge.meta import STORED_HEADERS, ObjectMeta, default_etag
from cdnlab.edge.output import FileHandle
from cdnlab.edge.store import StoreError
from cdnlab.edge.upstream import UpstreamError

if TYPE_CHECKING:
    from cdnlab.edge.conn import Conn
    from cdnlab.edge.worker import Worker

log = logging.getLogger("cdnlab.edge.fetch")

_CHUNK = 256 * 1024
_PASSTHROUGH_MAX = 1 << 20  # error bodies and uncacheable small answers are relayed from memory
_UPSTREAM_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "cdnlab"}


def _cacheable(resp: aiohttp.ClientResponse) -> bool:
    cc = resp.headers.get("Cache-Control", "").lower()
    directives = {d.strip().split("=", 1)[0] for d in cc.split(",")}
    if directives & {"no-store", "private"}:
        return False
    return "Set-Cookie" not in resp.headers and resp.headers.get("Vary", "").strip() != "*"


class Unstored:
    """A writer for objects we relay but cannot store: an unnamed file, gone when closed."""

    def __init__(self, directory: Any) -> None:
        self._fd = os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)

    def fileno(self) -> int:
        return self._fd

    def write(self, data: bytes) -> int:
        return os.write(self._fd, data)

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Fetch:
    """One key's trip upstream. ``outcome`` tells waiters what to do once it is ready:

    - ``stream``: serve ``meta`` from ``handle`` (growing while ``written`` < size);
    - ``stored``: another worker stored it meanwhile: look it up again;
    - ``relay``: answer ``relay`` (status, headers, body) as the upstream gave it;
    - ``error``: answer ``error`` (an UpstreamError).
    """

    def __init__(self, worker: Worker, key: str, target: str) -> None:
        self.worker = worker
        self.key = key
        self.target = target
        self.outcome = ""
        self.attached = 0  # requests served by this fetch
        self.meta: ObjectMeta | None = None
        self.handle: FileHandle = FileHandle(-1)
        self.written = 0
        self.failed: str | None = None
        self.stored = False
        self.upstream_status = ""  # the upstream's own Cache-Status, relayed (RFC 9211 §2)
        self.relay: tuple[int, list[tuple[str, str]], bytes] | None = None
        self.error: UpstreamError | None = None
        self._ready: list[Callable[[Fetch], None]] = []
        self._subscribers: list[Conn] = []

    # waiters ---------------------------------------------------------------------------------

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
            locked = await self._lock()
            if self.outcome:
                return
            await self._fetch(store_it=locked)
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
            worker.fetches.pop(self.key, None)
            self.handle.retire()

    async def _lock(self) -> bool:
        """True when we hold the key's lock; sets ``stored`` if another worker stored it meanwhile."""
        worker = self.worker
        deadline = time.monotonic() + worker.limits.cache_lock_timeout
        delay = 0.005
        while True:
            if worker.locks.try_acquire(self.key):
                if worker.store.lookup(self.key) is not None:  # committed while we waited
                    worker.locks.release(self.key)
                    self._set_ready("stored")
                    return False
                return True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            if worker.store.lookup(self.key) is not None:
                self._set_ready("stored")
                return False
            if time.monotonic() > deadline:
                return False  # fetch for ourselves, uncached, as nginx does after the lock timeout

    async def _fetch(self, store_it: bool) -> None:
        worker = self.worker
        started = time.monotonic()
        failures: list[tuple[str, str, float]] = []
        try:
            up, resp = await worker.upstreams.open(self.target, _UPSTREAM_HEADERS, failures)
        finally:
            # Upstreams that failed before one answered (or all of them) count as fetches too.
            for url, result, seconds in failures:
                worker.stats.upstream(url, result, seconds)
        try:
            self.upstream_status = resp.headers.get("Cache-Status", "")
            if resp.status != 200:
                await self._relay(resp)
                worker.stats.upstream(up.url, "ok", time.monotonic() - started)
                return
            await self._stream(resp, store_it and _cacheable(resp))
            worker.stats.upstream(
                up.url, "ok" if self.failed is None else "truncated", time.monotonic() - started
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
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

    async def _relay(self, resp: aiohttp.ClientResponse) -> None:
        body = await resp.content.read(_PASSTHROUGH_MAX + 1)
        if len(body) > _PASSTHROUGH_MAX:
            raise UpstreamError(502, f"upstream answered {resp.status} with an oversized body")
        keep = [(k, v) for k, v in resp.headers.items() if k.lower() in _RELAYED]
        self.relay = (resp.status, keep, body)
        self._set_ready("relay")

    async def _stream(self, resp: aiohttp.ClientResponse, store_it: bool) -> None:
        worker = self.worker
        size = resp.content_length
        now = time.time()
        lm = parse_http_date(resp.headers.get("Last-Modified", "")) or now
        headers = {k: resp.headers[k] for k in STORED_HEADERS if k in resp.headers}
        ctype = _safe_content_type(resp.headers.get("Content-Type"))
        try:
            # Creating a file can wait on the filesystem journal behind other objects' fsyncs:
            # never on the event loop.
            writer: Any = await asyncio.get_running_loop().run_in_executor(
                worker.io, worker.store.begin, self.key, size, ctype
            )
        except StoreError as exc:
            # No disk can take it (all failed, or too large): still serve it, through an unnamed
            # temp file that is never committed.
            log.warning("%s: %s; relaying without storing", self.key, exc)
            writer = Unstored(worker.config.state_dir)
            store_it = False
        try:
            self.handle = FileHandle(os.dup(writer.fileno()))
            self.meta = ObjectMeta(
                size=size if size is not None else -1,
                etag=resp.headers.get("ETag") or default_etag(size or 0, lm),
                last_modified=lm,
                content_type=ctype,
                stored_at=now,
                tier="upstream",
                headers=headers,
            )
            self.stored = store_it
            if size is not None:
                self._set_ready("stream")  # clients start now, reading as bytes land
            loop = asyncio.get_running_loop()
            async for chunk in resp.content.iter_chunked(_CHUNK):
                try:
                    # Writing (and hashing) in the I/O pool: a write can wait on the journal.
                    # One chunk at a time, so the file grows in order.
                    await loop.run_in_executor(worker.io, writer.write, chunk)
                except StoreError as exc:  # longer than promised, or the disk gave up
                    raise aiohttp.ClientPayloadError(str(exc)) from None
                self.written += len(chunk)
                if size is not None and self.written > size:
                    raise aiohttp.ClientPayloadError("upstream sent more than its Content-Length")
                self._progress()
            if size is not None and self.written != size:
                raise aiohttp.ClientPayloadError(f"upstream body ended at {self.written} of {size} bytes")
            if size is None:
                self.meta.size = self.written
                self.meta.etag = resp.headers.get("ETag") or default_etag(self.written, lm)
            if store_it:
                entry = await loop.run_in_executor(worker.io, _commit, writer, self.meta.etag, lm, headers)
                if entry is not None:
                    self.meta.sha256 = entry.sha256
                else:
                    self.stored = False
            else:
                writer.abort()
            if size is None:
                self._set_ready("stream")
            self._progress()
        except BaseException:
            writer.abort()
            raise


def _safe_content_type(value: str | None) -> str:
    """Upstream Content-Type as stored and replayed: printable Latin-1 only, else the default."""
    if not value or any(c < " " or c > "\xff" or c == "\x7f" for c in value):
        return "application/octet-stream"
    return value.strip()


def _commit(writer: Any, etag: str, last_modified: float, headers: dict[str, str]) -> Any:
    """Commit in a thread (fsync); a refusal (purged meanwhile, disk failed) only means not stored."""
    try:
        return writer.commit(etag=etag, last_modified=last_modified, headers=headers)
    except StoreError as exc:
        log.warning("not stored: %s", exc)
        return None


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
