"""One client connection: httptools parsing, pipelined responses in order, zero-copy writes.

The socket is driven directly with ``add_reader``/``add_writer`` rather than through an asyncio
transport, because transports cannot ``sendfile``: file bodies go from the page cache to the socket
with ``os.sendfile`` as fast as the client takes them, and nothing but headers is ever buffered, so
a slow reader costs a few hundred bytes of memory, not a copy of the object.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import time
from collections import deque
from typing import TYPE_CHECKING

import httptools

from cdnlab.edge.output import FileSpan, GrowingSpan, Response

if TYPE_CHECKING:
    from cdnlab.edge.limits import Limiter
    from cdnlab.edge.meta import ObjectMeta
    from cdnlab.edge.output import FileHandle
    from cdnlab.edge.worker import Worker

_SENDFILE_CHUNK = 1 << 21
# uri-host [":" port] (RFC 3986 section 3.2.2): an IP literal in brackets, or a reg-name / IPv4
# address (unreserved, percent-encoded and sub-delims characters); may be empty.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.vV]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?")
_MSG_MORE = getattr(socket, "MSG_MORE", 0)
_MAX_PIPELINE = 32  # queued responses before we stop reading (back-pressure on pipelining)
log = logging.getLogger("cdnlab.edge.conn")
_FATAL = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
# Request heads, as exact bytes read in one piece, that httptools parsed as a plain keep-alive
# HTTP/1.1 GET answered by the fast path, mapped to their request-target. The same bytes always
# parse the same way, so when a client sends them again the parser is skipped (most clients repeat
# their headers byte for byte). Per worker process; bounded, cleared when full.
_PLAIN: dict[bytes, bytes] = {}
_PLAIN_MAX = 4096
_PLAIN_LEN = 1024


class _Reject(Exception):
    """A request we refuse while still parsing it (limits)."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


def _length(fd: int) -> int:
    try:
        return os.fstat(fd).st_size
    except OSError:
        return -1


class Conn:
    __slots__ = (
        "_body",
        "_chunk",
        "_hbytes",
        "_headers",
        "_in_request",
        "_mid",
        "_reading",
        "_special",
        "_url",
        "_writing",
        "client",
        "closed",
        "fd",
        "last_active",
        "limit",
        "parser",
        "queue",
        "read_eof",
        "refusal",
        "request_began",
        "sock",
        "worker",
        "write_stalled_since",
    )
    # TLS connections (tlsconn.py) replace this with read-and-encrypt.
    sendfile = staticmethod(os.sendfile)
    # With the kernel's sendfile a short count means the socket buffer is full; TLS sends one
    # record's worth per call whatever the room.
    short_send_means_full = True

    def __init__(self, worker: Worker, sock: socket.socket, client: str) -> None:
        self.worker = worker
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Response] = deque()
        self.closed = False
        self.read_eof = False
        self._reading = False
        self._writing = False
        self._in_request = False
        self._special = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._hbytes = 0
        self._chunk = b""  # what is being parsed, when it began a new request
        self._mid = False  # the parser holds part of a request (from its first byte to its end)
        self.last_active = worker.now
        self.request_began = 0.0
        self.write_stalled_since = 0.0
        self._body = False  # headers in, body still arriving: the body timeout applies
        # The per-client caps, or None when they do not apply (off, or an allow-listed client).
        self.limit: Limiter | None = None
        self.refusal: str | None = None
        lim = worker.limiter
        if lim.enabled:
            limited, self.refusal = lim.on_accept(client)
            if limited:
                self.limit = lim
        self._resume_reading()

    # -- reading -----------------------------------------------------------------------------

    def _resume_reading(self) -> None:
        if not self._reading and not self.closed and not self.read_eof:
            self._reading = True
            self.worker.loop.add_reader(self.fd, self._on_readable)

    def _pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self.worker.loop.remove_reader(self.fd)

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort()
            return
        self.last_active = now = self.worker.now
        if not data:
            self.read_eof = True
            self._pause_reading()
            if not self.queue:
                self.abort()
            return
        if not self._mid:
            url = _PLAIN.get(data)
            if url is not None and self.limit is None and not self.queue and not self.worker.draining:
                fast = self.worker.fast_hit(url)
                if fast is not None:
                    self._send_fast(fast)
                    return
            self._chunk = data
        if not self._in_request:  # the header timeout runs from a request's first byte
            self._in_request = True
            self.request_began = now
        try:
            self.parser.feed_data(data)
        except _Reject as rej:
            self._fail(rej.status, rej.reason)
        except httptools.HttpParserUpgrade:
            # Upgrade (h2c, websocket) is not offered: the request was answered as plain HTTP/1.1;
            # whatever follows is not HTTP/1.1, so stop reading and close after the answer.
            self._pause_reading()
            self.read_eof = True
            if self.queue:
                self.queue[-1].close = True
        except httptools.HttpParserInvalidMethodError:
            self._fail(400, "invalid method")
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._fail(cause.status, cause.reason)
            else:
                self._fail(400, f"malformed request: {exc}")
        self._chunk = b""
        if self.queue:  # the fast path may have answered everything already
            if len(self.queue) >= _MAX_PIPELINE:
                self._pause_reading()
            self.flush()

    def _send_fast(self, data: bytes | tuple[bytes, ObjectMeta, FileHandle]) -> None:
        """Send a fast-path answer (whole, counted already); what the socket cannot take now waits
        in the queue like any other response. A file-backed object goes out as its head and a
        sendfile span, counted when it is done."""
        if type(data) is tuple:
            head, meta, handle = data
            resp = Response("GET", "", time.monotonic())
            resp.status = 200
            resp.cache_status = "hit"
            resp.tier = meta.tier
            resp.body_bytes = meta.size
            resp.parts.append(head)
            resp.parts.append(FileSpan(handle, 0, meta.size))
            resp.complete = True
            self.queue.append(resp)
            self.flush()
            return
        try:
            n = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.abort()
            return
        if n < len(data):
            resp = Response("GET", "", time.monotonic())
            resp.parts.append(memoryview(data)[n:])
            resp.status = 200
            resp.complete = True
            resp.cache_status = "fast"  # already counted by fast_hit
            self.queue.append(resp)
            self._want_write()

    def _fail(self, status: int, reason: str) -> None:
        """Answer a request we could not parse, then close: the stream can no longer be trusted."""
        self._pause_reading()
        self.read_eof = True
        try:
            method = self.parser.get_method().decode("latin-1", "replace")
        except httptools.HttpParserError:
            method = "-"
        resp = self.worker.handler.error(status, reason, method, self._url.decode("latin-1", "replace"))
        resp.close = True
        self.queue.append(resp)
        self.worker.stats.rejected(status)

    # httptools callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._mid = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.worker.limits.max_header_bytes:
            raise _Reject(414, "request-target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Range and the If-* preconditions start with r/i: such requests skip the fast path.
        if name and name[0] | 0x20 in (0x72, 0x69):
            self._special = True
        self._headers.append((name, value))
        self._hbytes += len(name) + len(value) + 4
        if self._hbytes > self.worker.limits.max_header_bytes:
            raise _Reject(431, "request header fields too large")
        if len(self._headers) > self.worker.limits.max_headers:
            raise _Reject(431, "too many request header fields")

    def on_headers_complete(self) -> None:
        # From here a (GET/HEAD: ignored) body may follow; it gets body_timeout of its own.
        self._body = True
        self.request_began = self.worker.now
        version = self.parser.get_http_version()
        if version[:2] != "1.":  # HTTP/2 and later are other protocols (RFC 9112 section 2.3)
            raise _Reject(505, f"HTTP/{version} is not supported here; HTTP/1.1 is")
        # RFC 9112 section 3.2: an HTTP/1.1 request without Host, any request with two, or one
        # whose value is not an authority gets 400 (a cache must not guess which host was meant).
        hosts = [v for n, v in self._headers if len(n) == 4 and n.lower() == b"host"]
        if len(hosts) > 1:
            raise _Reject(400, "more than one Host header field")
        if hosts:
            if _HOST.fullmatch(hosts[0].strip(b" \t")) is None:
                raise _Reject(400, "invalid Host header field")
        elif version != "1.0":
            raise _Reject(400, "an HTTP/1.1 request needs a Host header field")

    def on_message_complete(self) -> None:
        self._mid = False
        self._in_request = False
        self._body = False
        if self.limit is not None:
            verdict = self.limit.admit(self, time.monotonic())
            if verdict is not None:
                self._refuse(*verdict)
                return
        parser = self.parser
        worker = self.worker
        if not self._special and not self.queue and parser.get_method() == b"GET" and not worker.draining:
            # Fast path: a plain GET for a small object the worker holds verified in RAM.
            data = (
                worker.fast_hit(self._url)
                if parser.get_http_version() == "1.1" and parser.should_keep_alive()
                else None
            )
            if data is not None:
                chunk = self._chunk
                # Exactly this one request head in one read: remember it (see _PLAIN).
                if 0 < len(chunk) <= _PLAIN_LEN and chunk.find(b"\r\n\r\n") == len(chunk) - 4:
                    if len(_PLAIN) >= _PLAIN_MAX:
                        _PLAIN.clear()
                    _PLAIN[chunk] = self._url
                self._chunk = b""
                self._url = b""
                self._headers = []
                self._hbytes = 0
                self._send_fast(data)
                return
        self._special = False
        keep_alive = parser.should_keep_alive() and not worker.draining
        resp = self.worker.handler.handle(
            self, parser.get_method(), self._url, self._headers, parser.get_http_version(), keep_alive
        )
        self._url = b""
        self._headers = []
        self._hbytes = 0
        if not keep_alive:
            resp.close = True
            self._pause_reading()
            self.read_eof = True
        self.queue.append(resp)

    def _refuse(self, status: int, reason: str) -> None:
        """A request over a per-client cap: 429 (rate) or 503 (connections), with Retry-After.
        Over the connection cap the connection is closed after the answer."""
        worker = self.worker
        worker.stats.refused[reason] += 1
        keep_alive = status == 429 and self.parser.should_keep_alive() and not worker.draining
        resp = worker.handler.error(
            status,
            "too many requests" if status == 429 else "too many connections from this address",
            self.parser.get_method().decode("latin-1", "replace"),
            self._url.decode("latin-1", "replace"),
            extra=self.limit.retry_after if self.limit is not None else b"",
        )
        self._url = b""
        self._headers = []
        self._hbytes = 0
        self._special = False
        if not keep_alive:
            resp.close = True
            self._pause_reading()
            self.read_eof = True
        self.queue.append(resp)

    # -- writing -----------------------------------------------------------------------------

    def kick(self) -> None:
        """Something this connection waits for (a fetch, a response) has progressed."""
        if not self.closed:
            self.flush()

    def flush(self) -> None:
        sock_send = self.sock.send
        queue = self.queue
        while queue:
            resp = queue[0]
            parts = resp.parts
            while parts:
                part = parts[0]
                kind = type(part)
                try:
                    if kind is bytes or kind is memoryview:
                        # Headers followed by a file span go out with MSG_MORE so the kernel packs
                        # them with the first file bytes (what nginx gets from TCP_NOPUSH).
                        n = sock_send(part, _MSG_MORE) if len(parts) > 1 else sock_send(part)
                        resp.sent += n
                        if n < len(part):
                            parts[0] = memoryview(part)[n:]
                            self._want_write()
                            return
                        parts.popleft()
                        continue
                    if kind is FileSpan:
                        fd = part.handle.fd
                        limit = part.end
                    else:
                        assert kind is GrowingSpan
                        src = part.source
                        limit = min(part.end, src.written)
                        if part.offset >= limit:
                            if src.failed is not None:
                                # The upstream died mid-body: the client must see a short body, never
                                # bytes we cannot vouch for; closing is the only honest signal.
                                self.abort()
                                return
                            src.subscribe(self)
                            self._stop_write()
                            return
                        head = src.head
                        if part.offset < len(head):
                            # Bytes a fetch also holds in memory (its file may not exist yet).
                            want = min(limit, len(head)) - part.offset
                            n = sock_send(memoryview(head)[part.offset : part.offset + want])
                            part.offset += n
                            resp.sent += n
                            if part.offset >= part.end:
                                part.release()
                                parts.popleft()
                            elif n < want:
                                self._want_write()
                                return
                            continue
                        fd = part.handle.fd
                        if fd < 0:  # past the bytes in memory, before the file: wait for it
                            src.subscribe(self)
                            self._stop_write()
                            return
                    want = min(limit - part.offset, _SENDFILE_CHUNK)
                    n = self.sendfile(self.fd, fd, part.offset, want)
                    if n == 0:
                        # No bytes where the object has some: never pad or guess, cut. If the file
                        # is still as long as its index says, or cannot even be stat'ed, the device
                        # failed (a shut-down XFS reads as end of file, not EIO).
                        log.warning("response cut: no bytes at offset %d of an object file", part.offset)
                        if kind is FileSpan and not 0 <= _length(fd) < limit:
                            err = OSError(errno.EIO, "sendfile read nothing inside the file")
                            self.worker.disk_error(part.handle, err)
                        self.abort()
                        return
                    part.offset += n
                    resp.sent += n
                    if part.offset >= part.end:
                        part.release()
                        parts.popleft()
                    elif n < want and kind is FileSpan and self.short_send_means_full:
                        # A short send means the socket buffer is full: wait for room rather than
                        # pay for a call that can only say EAGAIN (as nginx does).
                        self._want_write()
                        return
                except (BlockingIOError, InterruptedError):
                    self._want_write()
                    return
                except _FATAL:
                    self.abort()
                    return
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                        self._want_write()
                        return
                    if kind is not bytes and kind is not memoryview:
                        log.warning("response cut: sending from an object file failed: %s", exc)
                        if exc.errno == errno.EIO:
                            self.worker.disk_error(part.handle, exc)
                    self.abort()
                    return
            if not resp.complete:
                self._stop_write()
                return  # its handler is still working (a miss); it will kick us
            queue.popleft()
            self.worker.finished(self, resp)
            if resp.close:
                self.close()
                return
        self._stop_write()
        self.last_active = self.worker.now
        if self.read_eof:
            if not self.queue:
                self.close()
        elif not self._reading:
            self._resume_reading()

    def _want_write(self) -> None:
        if not self._writing:
            self._writing = True
            self.write_stalled_since = self.worker.now
            self.worker.loop.add_writer(self.fd, self._on_writable)

    def _stop_write(self) -> None:
        if self._writing:
            self._writing = False
            self.worker.loop.remove_writer(self.fd)

    def _on_writable(self) -> None:
        self.write_stalled_since = self.worker.now
        self.flush()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self.queue and not self._in_request

    def check_timeouts(self, now: float) -> None:
        """Called about once a second by the worker: slow or idle clients are let go."""
        limits = self.worker.limits
        allowed = limits.body_timeout if self._body else limits.header_timeout
        slow_request = self._in_request and now - self.request_began > allowed
        slow_reader = self._writing and now - self.write_stalled_since > limits.send_timeout
        if slow_request or slow_reader:
            self.worker.stats.timeouts += 1
            self.abort()
        elif self.idle and (self.worker.draining or now - self.last_active > limits.keepalive_timeout):
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.limit is not None and self.refusal is None:
            self.limit.on_close(self.client)
        loop = self.worker.loop
        if self._reading:
            loop.remove_reader(self.fd)
        if self._writing:
            loop.remove_writer(self.fd)
        self._reading = self._writing = False
        for resp in self.queue:
            resp.release()
        self.queue.clear()
        try:
            self.sock.close()
        except OSError:
            pass
        self.worker.forget(self)

    def abort(self) -> None:
        """Close without lingering (a reset peer, a dead upstream mid-body, a timeout)."""
        if not self.closed:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass
        self.close()


def monotonic() -> float:
    return time.monotonic()
