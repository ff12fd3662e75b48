"""Vary (RFC 9110 §12.5.5, RFC 9111 §4.1): secondary cache keys, and Accept-Encoding negotiation.

A stored response with ``Vary`` may only answer requests whose nominated fields match those of the
request that fetched it (§4.1). Rather than compare fields at lookup time, the daemon stores each
variant under ``variant_key(base_key, fields, request_headers)``: two requests get the same key
exactly when their nominated fields match after the normalisations §4.1 allows (whitespace, list
joining, and Accept-Encoding reduced to the coding we would actually serve).

Pure functions over strings; request headers are a mapping whose keys are lower-case on the fast
path (the daemon's convention), any case otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Literal

__all__ = ["normalise_accept_encoding", "normalise_field_value", "parse_vary", "variant_key"]

Coding = Literal["br", "gzip", "identity"]

# RFC 9110 §5.6.2 tchar: a Vary member must be a field name (a token).
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Our codings in order of preference when the client weighs them equally (smallest first).
_OFFERED: tuple[Coding, ...] = ("br", "gzip", "identity")


def parse_vary(value: str | None) -> tuple[str, ...] | None:
    """Field names of a Vary value: lower-cased, deduplicated, sorted; None for ``*``.

    ``()`` when the field is absent or lists nothing (empty members are skipped, RFC 9110
    §5.6.1.2). A member that is not a field name (``User Agent``, ``a/b;c``) makes the value
    unusable: we cannot know what the response varies on, so it is read as ``*`` (None): never
    stored, never served to the wrong client.
    """
    if not value:
        return ()
    names: set[str] = set()
    for part in value.split(","):
        name = part.strip(" \t")
        if not name:
            continue
        if name == "*":
            return None  # §12.5.5: "*" signals unlimited variance
        if not _TCHAR.issuperset(name):
            return None
        names.add(name.lower())
    return tuple(sorted(names))


def _qvalue(s: str) -> int | None:
    """A qvalue (RFC 9110 §12.4.2) in thousandths, None if malformed:
    ``"0" ["." 0*3DIGIT]`` or ``"1" ["." 0*3"0"]``."""
    head, _, frac = s.partition(".")  # "1." is tolerated as "1"
    if head not in ("0", "1") or len(frac) > 3 or (frac and not (frac.isascii() and frac.isdigit())):
        return None
    q = int(head) * 1000 + (int(frac.ljust(3, "0")) if frac else 0)
    return q if q <= 1000 else None


def normalise_accept_encoding(value: str | None) -> Coding:
    """The coding to serve: the best the client accepts among br, gzip and identity.

    RFC 9110 §12.5.3: codings compare case-insensitively and ``x-gzip`` is gzip (§8.4.1.3); a
    coding not listed takes the weight of ``*`` if present, else is not acceptable; ``identity``
    is acceptable unless excluded by ``identity;q=0``, or by ``*;q=0`` without an ``identity``
    entry; q=0 means "not acceptable". The highest weight wins and equal weights prefer
    br > gzip > identity (smaller first). An unlisted identity is acceptable but ranks below any
    listed coding (``gzip;q=0.1`` still gets gzip). A member with a malformed qvalue is ignored.

    An absent field gets identity: "any coding" is allowed then, but clients that send no
    Accept-Encoding are rarely able to decode. An empty value means identity only (§12.5.3).
    When nothing we offer is acceptable we still answer identity, as §12.5.3 lets a server
    disregard the field rather than send 415.
    """
    if not value:
        return "identity"
    return _negotiate(value)


# Browsers send a handful of distinct values, so memoising makes the per-request cost one dict
# lookup; the bound keeps hostile clients sending random values from growing it.
@lru_cache(maxsize=1024)
def _negotiate(value: str) -> Coding:
    weights: dict[str, int] = {}
    for member in value.split(","):
        coding, _, params = member.partition(";")
        coding = coding.strip(" \t").lower()
        if not coding:
            continue
        if coding == "x-gzip":
            coding = "gzip"
        q = 1000
        if params:
            q_found: int | None = 1000
            for param in params.split(";"):
                k, eq, v = param.partition("=")
                if eq and k.strip(" \t").lower() == "q":
                    q_found = _qvalue(v.strip(" \t"))
                    break
            if q_found is None:
                continue
            q = q_found
        weights.setdefault(coding, q)  # a repeated coding keeps its first weight
    star = weights.get("*")
    best: Coding = "identity"
    best_q = 0
    for offer in _OFFERED:
        w = weights.get(offer)
        if w is None:
            w = star if star is not None else (1 if offer == "identity" else 0)
        if w > best_q:
            best, best_q = offer, w
    return best


def normalise_field_value(value: str) -> str:
    """A field value with insignificant whitespace removed (§4.1 "adding or removing whitespace",
    "combining multiple field lines"): list members stripped and joined by ``,``, runs of spaces
    and tabs inside a member collapsed to one space. Quoted strings are left exactly as sent.
    Only SP and HTAB count as whitespace (RFC 9110 §5.6.3 OWS); every other byte is significant."""
    if '"' in value:
        return _normalise_quoted(value)
    return ",".join(_member(p) for p in value.split(","))


def _member(p: str) -> str:
    # Only SP and HTAB are whitespace here: str.split() would also fold NBSP, \x1c-\x1f and
    # friends, letting "a\x1fb" share a key with "a b" while the origin sees them differ.
    p = p.strip(" \t")
    if "\t" in p:
        p = p.replace("\t", " ")
    if "  " in p:
        p = " ".join(w for w in p.split(" ") if w)
    return p


def _normalise_quoted(value: str) -> str:
    out: list[str] = []
    space = False
    quoted = False
    escaped = False
    for c in value:
        if quoted:
            out.append(c)
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                quoted = False
            continue
        if c == " " or c == "\t":
            space = True
            continue
        if c == ",":
            space = False
            out.append(",")
            continue
        if space and out and out[-1] != ",":
            out.append(" ")
        space = False
        out.append(c)
        if c == '"':
            quoted = True
    return "".join(out)


def _get(headers: Mapping[str, str], name: str) -> str | None:
    v = headers.get(name)
    if v is not None:
        return v
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


def variant_key(base_key: str, vary_fields: Iterable[str], request_headers: Mapping[str, str]) -> str:
    """The key of the variant a request selects: ``base_key`` plus its nominated fields' values.

    ``vary_fields`` is ``parse_vary``'s output (lower-case, sorted, never None: a ``Vary: *``
    response is never stored). No fields: ``base_key`` itself, so responses without Vary keep
    their plain key.

    Layout: ``base_key NUL`` then, per field, ``name US length US value`` or ``name US -`` when
    the request lacks the field (absent matches only absent, §4.1). Field names cannot contain
    US (0x1F) and values are length-prefixed, so no value, however hostile, can forge another
    variant's key; base keys never contain NUL (the request-target normaliser refuses control
    characters), so the base cannot run into the suffix either.
    """
    parts: list[str] = []
    for name in vary_fields:
        value = _get(request_headers, name)
        if name == "accept-encoding":
            # Absent and "identity" select the same representation, so they share a key.
            value = normalise_accept_encoding(value)
        elif value is None:
            parts.append(f"{name}\x1f-")
            continue
        else:
            value = normalise_field_value(value)
        parts.append(f"{name}\x1f{len(value)}\x1f{value}")
    if not parts:
        return base_key
    return base_key + "\x00" + "".join(parts)
