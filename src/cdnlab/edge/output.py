"""What a response is made of on the wire: header bytes, then body spans sent with sendfile.

A response is a queue of parts. ``bytes`` go out with ``send``; a ``FileSpan`` goes out with
``os.sendfile`` straight from the page cache (zero copy); a ``GrowingSpan`` is a span of an object
still arriving from upstream, sent as far as it has been written. Connections answer pipelined
requests strictly in order, so each response also carries what the access log and metrics need.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Protocol


class FileHandle:
    """An open object file shared by the spans that send from it; closed when the last lets go."""

    __slots__ = ("dev", "fd", "refs", "retired")

    def __init__(self, fd: int, dev: int = -1) -> None:
        self.fd = fd
        self.dev = dev  # st_dev at open (-1: unknown); a dead filesystem may refuse fstat later
        self.refs = 0
        self.retired = False

    def acquire(self) -> FileHandle:
        self.refs += 1
        return self

    def release(self) -> None:
        self.refs -= 1
        if self.refs <= 0 and self.retired:
            self._close()

    def retire(self) -> None:
        """No new users; close once the current ones finish."""
        self.retired = True
        if self.refs <= 0:
            self._close()

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FileSpan:
    __slots__ = ("end", "handle", "offset")

    def __init__(self, handle: FileHandle, offset: int, end: int) -> None:
        self.handle = handle.acquire()
        self.offset = offset
        self.end = end  # exclusive

    def release(self) -> None:
        if self.handle is not None:
            self.handle.release()
            self.handle = None  # type: ignore[assignment]


class Source(Protocol):
    """An object being written while it is served (an upstream fetch in progress)."""

    written: int
    failed: str | None
    handle: FileHandle
    head: bytes  # the first ``len(head)`` bytes, also in memory

    def subscribe(self, waiter: object) -> None: ...


class GrowingSpan:
    __slots__ = ("end", "handle", "offset", "source")

    def __init__(self, source: Source, offset: int, end: int) -> None:
        self.source = source
        self.handle = source.handle.acquire()
        self.offset = offset
        self.end = end

    def release(self) -> None:
        if self.handle is not None:
            self.handle.release()
            self.handle = None  # type: ignore[assignment]


Part = bytes | memoryview | FileSpan | GrowingSpan


class Response:
    """One response in a connection's pipeline. ``complete`` is False until every part is queued."""

    __slots__ = (
        "body_bytes",
        "cache_status",
        "close",
        "complete",
        "method",
        "parts",
        "path",
        "range",
        "sent",
        "started",
        "status",
        "tier",
    )

    def __init__(self, method: str, path: str, started: float) -> None:
        self.parts: deque[Part] = deque()
        self.complete = False
        self.close = False
        self.status = 0
        self.cache_status = "none"
        self.tier = "-"
        self.method = method
        self.path = path
        self.range = ""
        self.started = started
        self.sent = 0
        self.body_bytes = 0

    def release(self) -> None:
        for part in self.parts:
            if type(part) is FileSpan or type(part) is GrowingSpan:
                part.release()
        self.parts.clear()
