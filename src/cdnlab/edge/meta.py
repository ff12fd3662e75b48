"""What the server needs to answer for one object, whether stored or still arriving."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from cdnlab.edge.freshness import Freshness
from cdnlab.edge.httpdate import format_http_date

# Upstream response headers worth keeping with the object and sending on hits. Everything else is
# either recomputed per response (Date, Age, Content-Length, Cache-Status), hop-by-hop, or would be
# wrong to replay to other clients (Set-Cookie).
STORED_HEADERS = (
    "cache-control",
    "expires",
    "content-encoding",
    "content-language",
    "content-disposition",
    "vary",
    "access-control-allow-origin",
    "timing-allow-origin",
    "x-content-type-options",
)


@dataclass(slots=True)
class ObjectMeta:
    size: int
    etag: str
    last_modified: float
    content_type: str
    stored_at: float
    tier: str = "upstream"
    headers: dict[str, str] = field(default_factory=dict)
    sha256: str = ""
    # RFC 9111 freshness of a stored object; None while it streams in from upstream.
    freshness: Freshness | None = None
    fresh_until: float = math.inf
    _static: bytes = b""
    _head_200: bytes = b""
    _age_at: int = -1
    _age: bytes = b""
    _fast_key: tuple[bytes, bytes] | None = None
    _fast_head: bytes = b""

    @property
    def static_headers(self) -> bytes:
        """Header lines that do not change between responses, built once per object."""
        if not self._static:
            lines = [
                f"Content-Type: {self.content_type}\r\n",
                f"ETag: {self.etag}\r\n",
                f"Last-Modified: {format_http_date(self.last_modified)}\r\n",
                "Accept-Ranges: bytes\r\n",
            ]
            for name in STORED_HEADERS:
                value = self.headers.get(name)
                if value is not None:
                    lines.append(f"{_canonical(name)}: {value}\r\n")
            self._static = "".join(lines).encode("latin-1", "replace")
        return self._static

    @property
    def head_200(self) -> bytes:
        """Everything after Date for a whole-object 200, minus Age, Cache-Status and the blank line."""
        if not self._head_200:
            self._head_200 = b"\r\n" + self.static_headers + b"Content-Length: %d\r\n" % self.size
        return self._head_200

    def whole_200(self, date: bytes, cache_status: bytes, close_hdr: bytes, body: bytes | None) -> bytes:
        """The complete answer for a whole object held in memory (``body`` None: HEAD)."""
        return b"".join(
            (
                _HEAD_200,
                date,
                self.head_200,
                self.age_line(),
                cache_status,
                close_hdr,
                b"\r\n" if body is None else b"\r\n" + body,
            )
        )

    def fast_head(self, date: bytes, cache_status: bytes) -> bytes:
        """The head of a whole-object 200 with no Connection header (the fast path), kept until
        the Date value changes (``date`` is DateCache's object, new once a second; Age moves with
        it)."""
        key = self._fast_key
        if key is None or key[0] is not date or key[1] is not cache_status:
            parts = (_HEAD_200, date, self.head_200, self.age_line(), cache_status, b"\r\n")
            self._fast_head = b"".join(parts)
            self._fast_key = (date, cache_status)
        return self._fast_head

    def age_line(self) -> bytes:
        """RFC 9111 §5.1 Age for stored objects (recomputed once a second); none for pass-through."""
        if self.tier == "upstream":
            return b""
        now = int(time.time())
        if now != self._age_at:
            self._age_at = now
            # RFC 9111 §4.2.3: the upstream's Age and the time since it answered.
            age = self.freshness.age(now) if self.freshness is not None else now - self.stored_at
            self._age = b"Age: %d\r\n" % max(0, int(age))
        return self._age


_HEAD_200 = b"HTTP/1.1 200 OK\r\nServer: cdnlab\r\nDate: "


def _canonical(name: str) -> str:
    return "-".join(p.capitalize() for p in name.split("-"))


def default_etag(size: int, last_modified: float) -> str:
    """nginx-style strong validator for upstreams that send none: known before the body arrives."""
    return f'"{int(last_modified):x}-{size:x}"'
