"""A client connection over TLS: the plain connection's parser, pipeline and handler, with the
socket wrapped in OpenSSL.

There is no ``sendfile`` under TLS (the bytes must pass through the cipher in user space), so file
bodies are read in chunks of at most ``[tls] buffer_size`` bytes and written through the SSL
socket. A chunk is read only when the previous one has gone to the kernel: a slow client holds one
chunk plus OpenSSL's record buffer, never a whole object. The SSL socket is non-blocking and driven by the
same ``add_reader``/``add_writer`` callbacks as a plain connection; ``TLSSock`` turns OpenSSL's
want-read/want-write into ``BlockingIOError`` so ``Conn`` needs no TLS branches.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from typing import TYPE_CHECKING

from cdnlab.edge.conn import Conn
from cdnlab.edge.output import Response

if TYPE_CHECKING:
    from cdnlab.edge.tls import TLSContexts
    from cdnlab.edge.worker import Worker

_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


class TLSSock:
    """The socket-like face ``Conn`` uses (recv, send, fileno, setsockopt, close)."""

    __slots__ = ("_wlen", "chunk", "ssl")

    def __init__(self, ssock: ssl.SSLSocket, chunk: int) -> None:
        self.ssl = ssock
        # The most one write hands OpenSSL, and so the most a stalled client makes us hold.
        self.chunk = chunk
        # Length of a write OpenSSL refused with want-write: it must be retried with the same
        # bytes (at least as many), so the retry is cut to this length.
        self._wlen = 0

    def fileno(self) -> int:
        return self.ssl.fileno()

    def pending(self) -> int:
        return self.ssl.pending()

    def recv(self, n: int) -> bytes:
        try:
            return self.ssl.recv(n)
        except _WANT:
            raise BlockingIOError from None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""
        except ssl.SSLError:
            raise ConnectionResetError from None

    def send(self, data: bytes | memoryview, _flags: int = 0) -> int:
        n = self._wlen or min(len(data), self.chunk)
        chunk = data if n == len(data) else memoryview(data)[:n]
        try:
            sent = self.ssl.send(chunk)
        except _WANT:
            self._wlen = n
            raise BlockingIOError from None
        except ssl.SSLError:
            raise ConnectionResetError from None
        self._wlen = 0
        return sent

    def setsockopt(self, level: int, opt: int, value: bytes | int) -> None:
        self.ssl.setsockopt(level, opt, value)

    def close(self) -> None:
        self.ssl.close()


class TLSConn(Conn):
    __slots__ = ("_fbuf", "_foff", "_shaken", "_ssl", "_started")
    short_send_means_full = False

    def __init__(self, worker: Worker, sock: socket.socket, client: str, tls: TLSContexts) -> None:
        self._ssl = tls.default.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        self._shaken = False
        self._started = worker.now
        self._fbuf: bytes | None = None  # a file chunk read but not yet taken by OpenSSL
        self._foff = -1
        super().__init__(worker, TLSSock(self._ssl, tls.cfg.buffer_size), client)  # type: ignore[arg-type]

    # handshake -----------------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._stop_write()
            return
        except ssl.SSLWantWriteError:
            self._want_write()
            return
        except (ssl.SSLError, OSError):
            # Wrong version, no shared cipher, a scanner, a reset: counted, never logged per client.
            self.worker.stats.tls["failed"] += 1
            self.abort()
            return
        self._shaken = True
        self._stop_write()
        stats = self.worker.stats.tls
        stats["handshakes"] += 1
        if self._ssl.session_reused:
            stats["resumed"] += 1
        self.last_active = self.worker.now

    def _on_readable(self) -> None:
        if not self._shaken:
            self._handshake()
            if not self._shaken:
                return
        Conn._on_readable(self)
        # Records OpenSSL already pulled off the socket would not wake the loop again.
        ssock = self._ssl
        while self._reading and not self.closed and ssock.pending():
            Conn._on_readable(self)

    def _on_writable(self) -> None:
        if not self._shaken:
            self._handshake()
            if self._shaken and not self.closed:
                self._on_readable()  # the request may already be in OpenSSL's buffer
            return
        Conn._on_writable(self)

    # writing -------------------------------------------------------------------------------

    def _send_fast(self, data: bytes) -> None:
        # Through the queue, so a partial OpenSSL write is retried with the same bytes.
        resp = Response("GET", "", time.monotonic())
        resp.parts.append(data)
        resp.status = 200
        resp.complete = True
        resp.cache_status = "fast"
        self.queue.append(resp)
        self.flush()

    def sendfile(self, _out: int, fd: int, offset: int, count: int) -> int:
        """``os.sendfile`` for ``Conn.flush``: one chunk read from the file and encrypted."""
        buf = self._fbuf
        if buf is None or self._foff != offset:
            buf = os.pread(fd, min(count, self.sock.chunk), offset)  # type: ignore[attr-defined]
            if not buf:
                return 0
            self._fbuf, self._foff = buf, offset
        n = self.sock.send(buf)  # BlockingIOError keeps the chunk for the retry
        self._fbuf = None
        return n

    # lifecycle -----------------------------------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        if not self._shaken:
            if self.worker.draining or now - self._started > self.worker.tls.cfg.handshake_timeout:
                self.worker.stats.tls["failed"] += 1
                self.worker.stats.timeouts += 1
                self.abort()
            return
        Conn.check_timeouts(self, now)
