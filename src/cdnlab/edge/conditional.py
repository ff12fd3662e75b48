"""Conditional requests (RFC 9110 §13): preconditions and If-Range, as pure functions.

Inputs are raw header values (``None`` when the field is absent) and the stored object's
validators: ``etag`` as it is sent in the ETag header (``"abc"`` or ``W/"abc"``, quotes
included) and ``last_modified`` as a POSIX timestamp. HTTP-dates have one-second resolution, so
``last_modified`` is floored before any comparison (the Last-Modified header we send is floored
the same way).

Choices beyond the RFC text:
- A field whose value is empty or only whitespace is treated as absent (a broken client, not a
  request for a list of zero entity-tags that could never match).
- A malformed entity-tag list matches nothing: If-Match then fails (412), If-None-Match passes.
"""

from __future__ import annotations

import math

from cdnlab.edge.httpdate import parse_http_date

__all__ = ["evaluate_preconditions", "if_range_allows", "parse_etag_list"]

_SAFE_METHODS = ("GET", "HEAD")


def parse_etag_list(value: str) -> list[tuple[bool, str]] | None:
    """Entity-tags of ``#entity-tag`` (RFC 9110 §8.8.3) as ``(weak, opaque_tag)`` pairs.

    ``opaque_tag`` keeps its double quotes. Commas inside quotes belong to the tag (etagc allows
    them), so the list is scanned quote to quote rather than split on commas. Empty list
    elements and OWS around commas are accepted (§5.6.1.2). Returns None if malformed.
    """
    tags: list[tuple[bool, str]] = []
    i, n = 0, len(value)
    need_comma = False
    while i < n:
        c = value[i]
        if c == " " or c == "\t":
            i += 1
            continue
        if c == ",":
            need_comma = False
            i += 1
            continue
        if need_comma:
            return None  # two tags with no comma between them
        weak = value.startswith("W/", i)  # "W/" is case-sensitive (%x57.2F)
        if weak:
            i += 2
        if i >= n or value[i] != '"':
            return None
        j = value.find('"', i + 1)
        if j < 0:
            return None
        tags.append((weak, value[i : j + 1]))
        i = j + 1
        need_comma = True
    return tags


def _split_etag(etag: str) -> tuple[bool, str]:
    # Our own ETag, assumed well-formed.
    if etag.startswith("W/"):
        return True, etag[2:]
    return False, etag


def _if_match_passes(value: str, etag: str | None) -> bool:
    """If-Match (§13.1.1): "*" passes when a representation exists (it does, we hold it);
    otherwise some listed tag must match ``etag`` by strong comparison (§8.8.3.2)."""
    if value == "*":
        return True
    if etag is None:
        return False
    weak, opaque = _split_etag(etag)
    if weak:
        return False  # a weak validator never matches strongly
    if value == etag:
        return True  # the common single-tag case, no parsing
    tags = parse_etag_list(value)
    if tags is None:
        return False
    return any(not w and o == opaque for w, o in tags)


def _if_none_match_passes(value: str, etag: str | None) -> bool:
    """If-None-Match (§13.1.2): "*" fails when a representation exists (it does); otherwise it
    fails when some listed tag matches ``etag`` by weak comparison (§8.8.3.2)."""
    if value == "*":
        return False
    if etag is None:
        return True
    if value == etag:
        return False
    _, opaque = _split_etag(etag)
    tags = parse_etag_list(value)
    if tags is None:
        return True
    return not any(o == opaque for _, o in tags)


def _present(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip(" \t")
    return value or None


def evaluate_preconditions(
    method: str,
    if_match: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
    if_unmodified_since: str | None,
    etag: str | None,
    last_modified: float | None,
) -> int | None:
    """412, 304, or None to go on and serve, following the order of RFC 9110 §13.2.2.

    If-Range (step 5) is separate: see ``if_range_allows``.
    """
    im = _present(if_match)
    inm = _present(if_none_match)
    lm = math.floor(last_modified) if last_modified is not None else None

    # Step 1: If-Match. Step 2: If-Unmodified-Since only when If-Match is absent (§13.1.4).
    if im is not None:
        if not _if_match_passes(im, etag):
            return 412
    else:
        ius = _present(if_unmodified_since)
        # §13.1.4: ignored if not a valid HTTP-date or if there is no modification date.
        if ius is not None and lm is not None:
            date = parse_http_date(ius)
            if date is not None and lm > date:
                return 412

    # Step 3: If-None-Match. Step 4: If-Modified-Since only for GET/HEAD without it (§13.1.3).
    if inm is not None:
        if not _if_none_match_passes(inm, etag):
            return 304 if method in _SAFE_METHODS else 412
    elif method in _SAFE_METHODS:
        ims = _present(if_modified_since)
        if ims is not None and lm is not None:
            date = parse_http_date(ims)
            if date is not None and lm <= date:
                return 304
    return None


def if_range_allows(if_range: str | None, etag: str | None, last_modified: float | None) -> bool:
    """Whether Range may be honoured given If-Range (RFC 9110 §13.1.5).

    True when If-Range is absent. An entity-tag must match ``etag`` by strong comparison, so a
    weak tag on either side fails. An HTTP-date must equal Last-Modified exactly (at one-second
    resolution). Anything else, including an empty or unparseable value, is False: the caller
    then ignores Range and sends the full 200, which is always a correct answer.

    Not checked here: §13.1.5 also requires a date to be a strong validator (§8.8.2.2), which only
    the caller can judge (e.g. the object was stored at least a second after it was modified).
    """
    if if_range is None:
        return True
    value = if_range.strip(" \t")
    if value.startswith('"') or value.startswith("W/"):
        # Equal strings with a strong (unprefixed) etag is exactly a strong match.
        return etag is not None and not etag.startswith("W/") and value == etag
    if last_modified is None:
        return False
    date = parse_http_date(value)
    return date is not None and math.floor(last_modified) == date
