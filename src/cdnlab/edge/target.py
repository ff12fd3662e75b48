"""Request-target normalisation: one canonical (path, query) per URL, hostile input refused.

The path comes back in RFC 3986 §6.2.2 normal form, still percent-encoded: unreserved characters
decoded (``%7E`` -> ``~``, ``%2e`` -> ``.``), other escapes with upper-case hex (``%2f`` ->
``%2F``), bytes that may not appear raw (non-ASCII, space, ``"<>\\^`{|}``) percent-encoded, dot
segments removed (§5.2.4) and runs of slashes merged. So ``/a/./b``, ``/a//b``, ``/%61/b`` and
``/a/c/../b`` are one key, ``/a/b``.

Decisions:
- ``%2F`` stays encoded. It is data, not a separator: ``/a%2Fb`` and ``/a/b`` are two keys and an
  encoded slash can never split or climb a path. (nginx decodes it into a real slash.)
- A path that would climb above the root (``/..``, ``/a/../..``, ``/%2e%2e/x``) is refused, as
  nginx answers 400, rather than silently clamped at the root as §5.2.4 would.
- Control characters are refused raw and percent-encoded (``%00``..``%1F``, ``%7F``) in the path;
  the query is passed through, only raw control characters and ``#`` are refused there and raw
  non-ASCII or space bytes percent-encoded so the result is always printable ASCII.
- The decoded path must be valid UTF-8 (this also refuses overlong forms such as ``%C0%AE``).
- ``/a?`` and ``/a`` give the same result (empty query).
"""

from __future__ import annotations

__all__ = ["MAX_TARGET_LENGTH", "BadTarget", "normalize_target"]

MAX_TARGET_LENGTH = 8192

_ALPHA = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_UNRESERVED = _ALPHA + b"0123456789-._~"
# pchar = unreserved / pct-encoded / sub-delims / ":" / "@", plus the "/" separator (RFC 3986 §3.3).
# "%" is deliberately absent: any escape sends the path down the slow, checking path.
_PATH_SAFE = _UNRESERVED + b"!$&'()*+,;=:@/"
# The query keeps every visible ASCII character except "#" (fragments never reach a server).
_QUERY_SAFE = bytes(c for c in range(0x21, 0x7F) if c != 0x23)
_IS_UNRESERVED = tuple(c in _UNRESERVED for c in range(256))
_IS_PATH_SAFE = tuple(c in _PATH_SAFE for c in range(256))
_HEXVAL = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
_HEX_UPPER = b"0123456789ABCDEF"


class BadTarget(ValueError):
    """A request-target that must not be served; ``reason`` is short and safe to log.

    ``status`` is the HTTP status to answer with: 414 for an over-long target, else 400.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def _is_ctl(c: int) -> bool:
    return c < 0x20 or c == 0x7F


def _encode_path(p: bytes) -> str:
    """Percent-encoding normalisation (RFC 3986 §6.2.2.1-2) with the checks on decoded bytes."""
    out = bytearray()
    decoded = bytearray()  # every byte fully decoded, for the UTF-8 check
    high = False
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == 0x25:  # "%"
            if i + 2 >= n:
                raise BadTarget("invalid percent-encoding")
            hi = _HEXVAL.get(p[i + 1])
            lo = _HEXVAL.get(p[i + 2])
            if hi is None or lo is None:
                raise BadTarget("invalid percent-encoding")
            v = hi * 16 + lo
            if v == 0:
                raise BadTarget("NUL in path")
            if _is_ctl(v):
                raise BadTarget("control character in path")
            if _IS_UNRESERVED[v]:
                out.append(v)
            else:
                out += b"%" + _HEX_UPPER[hi : hi + 1] + _HEX_UPPER[lo : lo + 1]
            high = high or v >= 0x80
            decoded.append(v)
            i += 3
            continue
        if _IS_PATH_SAFE[c]:
            out.append(c)
        elif c == 0:
            raise BadTarget("NUL in path")
        elif _is_ctl(c):
            raise BadTarget("control character in path")
        elif c == 0x23:  # "#"
            raise BadTarget("fragment in request-target")
        else:
            # Allowed by clients in practice but not raw in a URI: encode, so that the raw and
            # the escaped spelling are one key.
            out += b"%%%02X" % c
            high = high or c >= 0x80
        decoded.append(c)
        i += 1
    if high:
        try:
            decoded.decode("utf-8")
        except UnicodeDecodeError:
            raise BadTarget("path is not valid UTF-8") from None
    return out.decode("ascii")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on an absolute path, merging empty segments; refuses climbing above "/"."""
    segments = path.split("/")
    stack: list[str] = []
    for seg in segments:
        if seg == "" or seg == ".":
            continue
        if seg == "..":
            if not stack:
                raise BadTarget("path climbs above the root")
            stack.pop()
            continue
        stack.append(seg)
    if not stack:
        return "/"
    # "/a/", "/a/." and "/a/b/.." all end in a directory: keep the trailing slash.
    trailing = segments[-1] in ("", ".", "..")
    return "/" + "/".join(stack) + ("/" if trailing else "")


def _normalize_query(q: bytes) -> str:
    odd = q.translate(None, _QUERY_SAFE)
    if not odd:
        return q.decode("ascii")
    for c in odd:
        if _is_ctl(c):
            raise BadTarget("NUL in query" if c == 0 else "control character in query")
        if c == 0x23:
            raise BadTarget("fragment in request-target")
    out = bytearray()
    for c in q:
        if c == 0x20 or c >= 0x80:
            out += b"%%%02X" % c
        else:
            out.append(c)
    return out.decode("ascii")


def _absolute_form_rest(raw: bytes) -> bytes:
    """The path-and-query of an absolute-form target (RFC 9112 §3.2.2); the authority is
    dropped (the Host header already carries it) after a sanity check."""
    sep = raw.find(b"://")
    if sep <= 0:
        raise BadTarget("authority-form or malformed request-target")
    scheme = raw[:sep].lower()
    if scheme != b"http" and scheme != b"https":
        raise BadTarget("unsupported URI scheme")
    rest = raw[sep + 3 :]
    end = len(rest)
    for delim in (b"/", b"?", b"#"):
        k = rest.find(delim, 0, end)
        if k >= 0:
            end = k
    authority = rest[:end]
    if not authority:
        raise BadTarget("empty host")  # RFC 9110 §4.2.1: MUST reject
    if b"@" in authority:
        raise BadTarget("userinfo in URI")  # RFC 9110 §4.2.4: treat as an error
    if any(c <= 0x20 or c >= 0x7F for c in authority):
        raise BadTarget("invalid character in authority")
    rest = rest[end:]
    if not rest.startswith(b"/"):
        rest = b"/" + rest  # empty path means "/" (RFC 9112 §3.2.2)
    return rest


def normalize_target(raw: bytes, max_length: int = MAX_TARGET_LENGTH) -> tuple[str, str]:
    """Canonical ``(path, query)`` of a GET/HEAD request-target; the query has no leading "?".

    Accepts origin-form (``/path?query``) and absolute-form (``http://host/path?query``); raises
    BadTarget for asterisk-form, authority-form, anything else and every case listed in the
    module docstring.
    """
    if len(raw) > max_length:
        raise BadTarget("request-target too long", 414)
    if not raw.startswith(b"/"):
        if raw == b"*":
            raise BadTarget("asterisk-form")
        if not raw:
            raise BadTarget("empty request-target")
        raw = _absolute_form_rest(raw)

    q = raw.find(b"?")
    if q >= 0:
        path_b, query = raw[:q], _normalize_query(raw[q + 1 :])
    else:
        path_b, query = raw, ""

    # Fast path: nothing to decode, encode, check or collapse.
    if not path_b.translate(None, _PATH_SAFE) and b"//" not in path_b and b"/." not in path_b:
        return path_b.decode("ascii"), query
    path = _encode_path(path_b)
    # Dot segments are removed after decoding, so "%2e%2e" is caught as "..".
    if "//" in path or "/." in path:
        path = _remove_dot_segments(path)
    return path, query
