"""Byte-range requests (RFC 9110 §14): parse Range, build Content-Range and multipart/byteranges.

Pure functions: the server decides on the status from ``parse_range`` and sends file bytes itself
(sendfile) between the header blobs that ``multipart_layout`` returns.

Decisions, checked against nginx's ngx_http_range_filter_module.c:

- Only the ``bytes`` unit (case-insensitive, RFC 9110 §14.1). Another unit, or a syntactically
  invalid ranges-specifier, makes us ignore Range and send the full 200 (RFC 9110 §14.2 lets a
  server ignore or reject it; nginx rejects some garbage with 416, we never do).
- ``a-b`` with b < a is invalid (RFC 9110 §14.1.1) so the whole header is ignored. Numbers may be
  arbitrarily long: more than ``_MAX_DIGITS`` digits counts as "larger than any object" without
  parsing it as a big int, so ``0-<40 digits>`` means "to the end" and ``<40 digits>-`` is
  unsatisfiable.
- CVE-2011-3192 ("Apache Killer") defence, as nginx does it: more than ``max_ranges`` range-specs
  -> ignore Range (200); the summed lengths of the satisfiable ranges, after clipping, exceed the
  object size -> ignore Range (200); nginx's ``ngx_http_range_parse`` returns NGX_DECLINED in
  both cases. Unlike nginx, which counts only satisfiable ranges against max_ranges, we count
  every range-spec written, so a flood of unsatisfiable specs is refused just as early.
- After those checks, overlapping or adjacent ranges are coalesced (RFC 9110 §14.3 allows it,
  nginx does not bother), and parts keep the order the client asked for (RFC 9110 §14.6 SHOULD);
  a coalesced range takes the place of its earliest member.
- Empty object (size 0): nothing can be described by a 206 (``bytes 0--1/0`` does not exist). A
  set naming the first byte (first-pos 0, or a suffix-range of non-zero length, the one form
  RFC 9110 §14.1.1 calls satisfiable on a zero-length representation) gets the full 200 with an
  empty body, which is also what nginx sends; any other set is unsatisfiable (416 bytes */0).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ByteRange",
    "RangeDecision",
    "content_range",
    "multipart_content_type",
    "multipart_layout",
    "new_boundary",
    "parse_range",
    "unsatisfied_range",
]

RangeStatus = Literal["full", "partial", "unsatisfiable"]

# Longer numbers are never real offsets (2**63 has 19 digits); treat them as "huge" instead of
# building big ints, which costs quadratic time and fails past 4300 digits.
_MAX_DIGITS = 19
_HUGE = 10**_MAX_DIGITS


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range ``start``..``end`` of a representation, as in Content-Range."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True, slots=True)
class RangeDecision:
    """What to answer: ``full`` (200, ignore Range), ``partial`` (206 with ``ranges``, one part or
    multipart/byteranges) or ``unsatisfiable`` (416 with ``Content-Range: bytes */size``)."""

    status: RangeStatus
    ranges: tuple[ByteRange, ...] = ()


# Shared instances: the common outcomes allocate nothing.
FULL = RangeDecision("full")
UNSATISFIABLE = RangeDecision("unsatisfiable")


def _num(s: str) -> int:
    """Value of 1*DIGIT, ``_HUGE`` if it is absurdly long, -1 if not ASCII digits."""
    if not (s.isascii() and s.isdigit()):  # isdigit alone accepts e.g. '²' and Arabic digits
        return -1
    if len(s) > _MAX_DIGITS:
        s = s.lstrip("0") or "0"
        if len(s) > _MAX_DIGITS:
            return _HUGE
    return int(s)


def parse_range(header: str | None, size: int, max_ranges: int = 16) -> RangeDecision:
    """Decide how to answer ``Range: header`` for a representation of ``size`` bytes.

    ``max_ranges <= 0`` disables ranges (like nginx ``max_ranges 0``). The caller applies If-Range
    first (RFC 9110 §13.2.2 step 5) and only calls this for GET.
    """
    if header is None or max_ranges <= 0:
        return FULL
    h = header.strip(" \t")
    # ranges-specifier = range-unit "=" range-set; range units are case-insensitive (§14.1).
    if not h.startswith("bytes=") and (len(h) < 6 or h[5] != "=" or h[:5].lower() != "bytes"):
        return FULL

    sats: list[ByteRange] = []
    count = 0
    total = 0
    names_first_byte = False  # only matters for size 0, see the module docstring
    last_byte = size - 1
    # range-set = 1#range-spec: OWS around commas, empty elements ignored (§5.6.1.2).
    for item in h[6:].split(","):
        spec = item.strip(" \t")
        if not spec:
            continue
        count += 1
        if count > max_ranges:
            return FULL
        dash = spec.find("-")
        if dash < 0:
            return FULL
        first, last = spec[:dash], spec[dash + 1 :]
        if not first:
            # suffix-range = "-" suffix-length: the last n bytes, all of them if n > size.
            n = _num(last)
            if n < 0:
                return FULL
            if n == 0:
                continue  # valid but never satisfiable (§14.1.1)
            names_first_byte = True
            start = size - n if n < size else 0
            end = last_byte
        else:
            start = _num(first)
            if start < 0:
                return FULL
            if last:
                end = _num(last)
                if end < 0 or end < start:
                    return FULL  # int-range with last-pos < first-pos is invalid (§14.1.1)
                end = min(end, last_byte)
            else:
                end = last_byte
            if start == 0:
                names_first_byte = True
            if start >= size:
                continue  # unsatisfiable spec; the others may still be served (§14.1.1)
        sats.append(ByteRange(start, end))
        total += end - start + 1

    if count == 0:
        return FULL  # "bytes=" or "bytes=,": the range-set needs at least one range-spec
    if size <= 0:
        return FULL if names_first_byte else UNSATISFIABLE
    if not sats:
        return UNSATISFIABLE
    if total > size:
        return FULL  # CVE-2011-3192: more bytes asked for than the object has (nginx does this)
    if len(sats) == 1:
        return RangeDecision("partial", (sats[0],))
    return RangeDecision("partial", _coalesce(sats))


def _coalesce(ranges: list[ByteRange]) -> tuple[ByteRange, ...]:
    """Merge overlapping or adjacent ranges; keep request order by each group's first member."""
    order = sorted(range(len(ranges)), key=lambda i: ranges[i].start)
    groups: list[list[int]] = []  # [start, end, index of the earliest requested member]
    for i in order:
        r = ranges[i]
        if groups and r.start <= groups[-1][1] + 1:
            g = groups[-1]
            if r.end > g[1]:
                g[1] = r.end
            if i < g[2]:
                g[2] = i
        else:
            groups.append([r.start, r.end, i])
    if len(groups) == len(ranges):
        return tuple(ranges)
    groups.sort(key=lambda g: g[2])
    return tuple(ByteRange(g[0], g[1]) for g in groups)


def content_range(r: ByteRange, size: int) -> str:
    """Content-Range value for one part, ``bytes a-b/size`` (RFC 9110 §14.4)."""
    return f"bytes {r.start}-{r.end}/{size}"


def unsatisfied_range(size: int) -> str:
    """Content-Range value for a 416, ``bytes */size`` (RFC 9110 §14.4, §15.5.17)."""
    return f"bytes */{size}"


# bchars of RFC 2046 §5.1.1 (a boundary may contain spaces but not end with one).
_BCHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? "


def new_boundary() -> str:
    """A fresh multipart boundary: 24 hex digits from the OS CSPRNG.

    Unpredictable so content stored from an upstream cannot be crafted to contain the delimiter.
    """
    return secrets.token_hex(12)


def multipart_content_type(boundary: str) -> str:
    """Content-Type of the whole 206 response for a multipart body with ``boundary``."""
    return f"multipart/byteranges; boundary={boundary}"


def multipart_layout(
    ranges: Iterable[ByteRange], size: int, content_type: str, boundary: str
) -> tuple[list[tuple[bytes, ByteRange]], bytes, int]:
    """Lay out a multipart/byteranges body (RFC 9110 §14.6) without touching the data.

    Returns ``(parts, closing, content_length)``: send each part's header bytes, then that
    range's bytes of the object, and finally ``closing``; ``content_length`` is the exact length
    of all of that together. Each part header is
    ``CRLF "--" boundary CRLF "Content-Type: " type CRLF "Content-Range: bytes a-b/size" CRLF CRLF``
    (the Content-Type line is left out when ``content_type`` is empty). Starting with CRLF makes
    an empty preamble, which RFC 2046 §5.1.1 allows; nginx lays parts out the same way.

    Raises ValueError for an invalid boundary, a content type that would break the part
    headers (CR, LF, NUL or non-Latin-1), or a range outside the object.
    """
    if not 0 < len(boundary) <= 70 or boundary.strip(_BCHARS) or boundary.endswith(" "):
        raise ValueError("invalid multipart boundary")
    if "\r" in content_type or "\n" in content_type or "\0" in content_type:
        raise ValueError("control character in content type")
    ct = f"\r\nContent-Type: {content_type}" if content_type else ""
    prefix = f"\r\n--{boundary}{ct}\r\nContent-Range: bytes ".encode("latin-1")
    suffix = f"/{size}\r\n\r\n".encode("ascii")
    parts: list[tuple[bytes, ByteRange]] = []
    total = 0
    for r in ranges:
        if r.start < 0 or r.end < r.start or r.end >= size:
            raise ValueError(f"range {r.start}-{r.end} outside an object of {size} bytes")
        head = b"%s%d-%d%s" % (prefix, r.start, r.end, suffix)
        parts.append((head, r))
        total += len(head) + r.end - r.start + 1
    closing = f"\r\n--{boundary}--\r\n".encode("ascii")
    return parts, closing, total + len(closing)
