"""A lean HTTP/1.1 client for upstream fetches: uvloop transports, httptools, kept-alive connections.

Misses spent more CPU in aiohttp than in anything else (request building, URL objects, timers,
stream readers). A cache asks its upstreams for one thing: ``GET path`` with a few headers, and it
reads the body in order. This client does just that:

- one pool of idle keep-alive connections per upstream (a connection goes back to it only after a
  response was read to its end and both sides allow keep-alive);
- a request on a reused connection that the upstream had meanwhile closed (no byte of an answer)
  is sent once more on a new connection, as browsers and nginx do for idempotent requests;
- connect timeout, and a read timeout between any two reads (as ``sock_read``), raising
  ``TimeoutError``;
- a body that ends before its ``Content-Length`` or its last chunk raises ``BodyError``: it is
  never mistaken for a whole object;
- back-pressure: reading from the upstream pauses while unread body bytes pile up.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict

_HIGH_WATER = 1 << 20  # unread body bytes before the upstream socket stops being read
_MAX_IDLE = 64  # idle connections kept per upstream
_MAX_HEADER_BYTES = 64 * 1024
# A read waits for this much body (or its end) before it returns: few disk writes per object, and
# a trickling upstream still reaches clients in steps of 64 KiB.
_MIN_READ = 64 * 1024


class BodyError(Exception):
    """The upstream's answer broke off or could not be parsed (connection lost, bad framing)."""


class Origin:
    """Where to connect for one upstream URL, and its pool of idle connections."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream {url!r}: not an http:// or https:// URL")
        self.host = parts.hostname
        tls = parts.scheme == "https"
        std = 443 if tls else 80
        self.port = parts.port or std
        # https: the system's CA store and hostname check, as aiohttp (and curl) would.
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if tls else None
        default = parts.port is None or parts.port == std
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default else f"{host}:{self.port}"
        self.base_path = parts.path.rstrip("/")
        self.idle: deque[_Conn] = deque()

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


class _Conn(asyncio.Protocol):
    """One connection to an upstream and the response being read on it (httptools callbacks)."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.last_read = 0.0
        self.head_only = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: CIMultiDict[str] = CIMultiDict()
        self._hname = b""
        self._hbytes = 0
        self.got_bytes = False  # any byte of this response arrived
        self.headers_done = False
        self.done = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None

    # protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        self.got_bytes = True
        if self.done:
            self._fail(BodyError("upstream sent bytes after its response"))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BodyError(f"bad response from upstream: {exc}"))
        except BodyError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        self._lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.done or self.error is not None:
            self._wake()
            return
        if self.headers_done and not self.head_only and self._delimited_by_close():
            self.done = True  # a body without Content-Length or chunks ends when the connection does
            self._wake()
            return
        why = f": {exc}" if exc else ""
        self._fail(BodyError(f"upstream closed the connection{why}"))

    def _delimited_by_close(self) -> bool:
        h = self.headers
        return "Content-Length" not in h and "Transfer-Encoding" not in h

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.close()
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    # httptools callbacks ----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._hbytes += len(name) + len(value)
        if self._hbytes > _MAX_HEADER_BYTES:
            raise BodyError("upstream response headers too large")
        self.headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if 100 <= self.status < 200:  # interim answers (100 Continue, 103 Early Hints): skip
            self.headers = CIMultiDict()
            self._hbytes = 0
            return
        self.headers_done = True
        if self.head_only:
            self.done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done:
            return  # an interim (1xx) answer
        self.done = True
        self.keep_alive = self.parser.should_keep_alive()  # only valid in this callback
        self._wake()

    # use --------------------------------------------------------------------------------------

    async def wait(self, read_timeout: float) -> None:
        """Until the parser has news (headers, body bytes, the end, an error) or ``read_timeout``
        passes without a byte from the upstream."""
        fut = self.loop.create_future()
        self.waiter = fut
        timer = self.loop.call_later(read_timeout, self._check_timeout, fut, read_timeout)
        try:
            await fut
        finally:
            timer.cancel()
            self.waiter = None

    def _check_timeout(self, fut: asyncio.Future[None], read_timeout: float) -> None:
        if fut.done():
            return
        idle = time.monotonic() - self.last_read
        if idle >= read_timeout:
            fut.set_exception(TimeoutError(f"no answer from upstream in {read_timeout:g} s"))
            self.close()
        else:  # bytes arrived meanwhile: wait for the rest of the quiet period
            self.loop.call_later(read_timeout - idle, self._check_timeout, fut, read_timeout)

    def take(self, n: int) -> bytes:
        """Up to ``n`` buffered body bytes (b"" when none are buffered)."""
        body = self.body
        if not body:
            return b""
        first = body[0]
        if len(first) <= n and (len(body) == 1 or len(first) + len(body[1]) > n):
            body.popleft()
            out = first
        else:
            parts = []
            size = 0
            while body and size < n:
                chunk = body.popleft()
                room = n - size
                if len(chunk) > room:
                    body.appendleft(chunk[room:])
                    chunk = chunk[:room]
                parts.append(chunk)
                size += len(chunk)
            out = b"".join(parts)
        self.buffered -= len(out)
        if self.paused and self.buffered <= _HIGH_WATER // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return out

    def reusable(self) -> bool:
        return (
            self.done
            and self.error is None
            and not self.closed
            and not self.head_only  # the parser still waits for the body a HEAD answer announced
            and self.keep_alive
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """An upstream's answer: ``status``, ``headers`` (case-insensitive, repeatable), the body read
    with ``read_chunk``/``read``; ``release()`` when done with it (always)."""

    def __init__(self, conn: _Conn, read_timeout: float) -> None:
        self._conn = conn
        self._timeout = read_timeout
        self.status = conn.status
        self.headers = conn.headers
        cl = self.headers.get("Content-Length")
        te = self.headers.get("Transfer-Encoding")
        self.content_length: int | None = int(cl) if cl is not None and cl.isdigit() and te is None else None
        self._consumed = 0
        self._released = False

    async def read_chunk(self, n: int) -> bytes:
        """The next body bytes: at most ``n``, at least 64 KiB (or what is left of a body of known
        length, or less when the body ended); b"" after its end. Raises BodyError if the body broke off,
        TimeoutError if the upstream went quiet. Waiting for whole chunks rather than returning
        each TCP read keeps the number of disk writes (each a hop to an I/O thread) low."""
        conn = self._conn
        want = min(n, _MIN_READ)  # then take up to n: what has arrived meanwhile comes along
        if self.content_length is not None:
            want = min(want, max(1, self.content_length - self._consumed))
        while conn.buffered < want and not conn.done and conn.error is None:
            await conn.wait(self._timeout)
        if conn.body:
            out = conn.take(n)
            self._consumed += len(out)
            return out
        if conn.error is not None:
            raise conn.error
        return b""

    async def read(self, limit: int) -> bytes:
        """The body, or its first ``limit`` bytes."""
        parts = []
        size = 0
        while size < limit:
            chunk = await self.read_chunk(limit - size)
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Back to the pool if it was read to its end and may be kept alive, else closed."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        if conn.reusable() and not conn.body and len(conn.origin.idle) < _MAX_IDLE:
            conn._reset()
            conn.reused = True
            conn.origin.idle.append(conn)
        else:
            conn.close()


class Client:
    """Requests to upstream origins over pooled keep-alive connections."""

    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._origins: dict[str, Origin] = {}

    def origin(self, url: str) -> Origin:
        o = self._origins.get(url)
        if o is None:
            o = self._origins[url] = Origin(url)
        return o

    async def request(
        self, url: str, target: str, headers: dict[str, str], *, method: str = "GET"
    ) -> Response:
        """Send ``method target`` to the upstream at ``url`` and wait for its status and headers.

        Raises OSError (connect failed), TimeoutError, or BodyError (no valid answer)."""
        origin = self.origin(url)
        lines = [f"{method} {origin.base_path}{target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
        lines.extend(f"{k}: {v}\r\n" for k, v in headers.items())
        lines.append("\r\n")
        data = "".join(lines).encode("latin-1")
        while True:
            conn = await self._connection(origin)
            conn.head_only = method == "HEAD"
            conn.last_read = time.monotonic()
            assert conn.transport is not None
            conn.transport.write(data)
            try:
                while not conn.headers_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(self.read_timeout)
            except BodyError:
                if conn.reused and not conn.got_bytes:
                    continue  # the upstream had closed this idle connection: once more, anew
                raise
            except BaseException:
                conn.close()
                raise
            return Response(conn, self.read_timeout)

    async def _connection(self, origin: Origin) -> _Conn:
        while origin.idle:
            conn = origin.idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                lambda: _Conn(origin, loop),
                origin.host,
                origin.port,
                ssl=origin.ssl,
                server_hostname=origin.host if origin.ssl is not None else None,
            ),
            self.connect_timeout,
        )
        return conn

    def close(self) -> None:
        for o in self._origins.values():
            o.close()
