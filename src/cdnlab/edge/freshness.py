"""HTTP caching rules for a shared cache (RFC 9111, RFC 5861, RFC 8246) as pure functions.

The edge daemon is a *shared* cache (an appliance and a shield tier), so every rule here takes the
shared-cache branch of RFC 9111: ``s-maxage`` counts, ``private`` forbids storing, a request with
``Authorization`` is only cached when the response allows it.

Use:

1. ``parse_cache_control`` once per message (``parse_request_cache_control`` for requests, which
   folds in ``Pragma: no-cache``).
2. ``storable`` decides whether a response may be stored at all (§3); ``headers_to_store`` drops
   the fields that must not be kept (§3.1).
3. ``compute_freshness`` runs once when a response is stored or refreshed and yields a small
   ``Freshness`` record the index keeps as JSON (``to_dict``/``from_dict``); per request the daemon
   only does float arithmetic on it.
4. ``request_allows_stored`` applies the request's directives (§5.2.1) to a stored response:
   "fresh", "stale-ok" or "revalidate". When it says "revalidate", the caller may still serve stale
   while revalidating or when the upstream fails: ``Freshness.can_serve_stale_while_revalidate``
   and ``Freshness.can_serve_stale_on_error`` (RFC 5861).
5. ``conditional_headers`` builds the revalidation request (§4.3.1); on a 304,
   ``refresh_applies`` checks it is about the stored response (§4.3.4) and ``merge_304`` yields
   the stored response's new header fields (§3.2, §4.3.4), from which ``compute_freshness`` is run
   again.

Header mappings may use any name case; lower-case keys (the daemon's convention) are the fast path.
A field sent on several lines (Cache-Control, Vary) must be passed joined with ", " (RFC 9110
§5.3): a multidict's ``get`` would return only the first line, and lose, say, a no-store.

Decisions beyond the RFC text, each with a test:

- Invalid delta-seconds (``max-age=abc``, ``max-age=-1``, ``max-age=``) count as present with value
  0, so the response is stale at once: §4.2.1 encourages caches to treat invalid freshness
  information as stale, which is the conservative reading. Huge values cap at 2**31 (§1.2.2).
- Duplicate directives: the first occurrence wins (§4.2.1 allows this or "stale").
- Two Expires lines joined by a comma no longer parse as a date, so they mean "already expired"
  (§5.3), the other option §4.2.1 allows.
- Heuristic freshness is 10% of Date - Last-Modified (§4.2.2's "typical setting"), capped at one
  day (``HEURISTIC_MAX``) so an ancient Last-Modified cannot pin an unversioned object for months.
- Set-Cookie: RFC 9111 lets a cache store it, but a CDN that replays one user's cookie to everyone
  leaks sessions, so ``storable`` refuses with "set-cookie", unless the origin named the field in a
  qualified ``private="Set-Cookie"`` or ``no-cache="Set-Cookie"``: then the response is stored and
  the field dropped (§5.2.2.4 and §5.2.2.7 allow storing the rest). The qualified forms always work
  that way: the named fields are never stored, the rest is.
- 206 is not stored: the store holds whole representations only (§3.3 allows, never requires,
  storing partial content). 304 updates a stored response (``merge_304``) and is never stored.
- The catalog's TTL class works like a CloudFront cache behaviour (see ``compute_freshness``), but
  the origin's ``no-cache`` always wins over ``min_ttl`` (CloudFront lets min_ttl override it; the
  RFC says a no-cache response MUST NOT be reused without validation).
- Serving stale: only ever within stale-while-revalidate / stale-if-error windows or a request's
  max-stale, and never when must-revalidate, proxy-revalidate or s-maxage is present (§4.2.4).
  Note this also blocks the common ``s-maxage=60, stale-while-revalidate=30`` pair: s-maxage
  implies proxy-revalidate (§5.2.2.10) and RFC 9111 ranks that prohibition above RFC 5861's
  permission. A fresh response may always answer when a forced revalidation fails (§4.3.3).
- Errors (status >= 400) under a TTL class are not raised to min_ttl; without explicit freshness
  they are kept ``ERROR_TTL`` seconds (negative caching), see ``compute_freshness``.
- ``immutable`` (from the response or the class) lets a fresh response ignore a request's
  max-age (a browser reload), never its no-cache (a forced reload).
- Revalidation sends If-None-Match *and* If-Modified-Since when both validators are stored
  (§4.3.1's MUST and SHOULD); a 304 without validators still refreshes (``refresh_applies``);
  ``merge_304`` drops the stored Age, which described the old response.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cdnlab.edge.httpdate import format_http_date, parse_http_date
from cdnlab.edge.vary import parse_vary

if TYPE_CHECKING:
    from cdnlab.policy.catalog import TtlClass

__all__ = [
    "DELTA_MAX",
    "ERROR_TTL",
    "HEURISTIC_FRACTION",
    "HEURISTIC_MAX",
    "HEURISTIC_STATUSES",
    "Freshness",
    "compute_freshness",
    "conditional_headers",
    "delta_seconds",
    "headers_to_store",
    "merge_304",
    "parse_cache_control",
    "parse_request_cache_control",
    "refresh_applies",
    "request_allows_stored",
    "storable",
]

CacheControl = Mapping[str, str | None]
Decision = Literal["fresh", "stale-ok", "revalidate"]

# §1.2.2: a delta-seconds too large to represent counts as 2**31.
DELTA_MAX = 2**31
# §4.2.2: "a typical setting of this fraction might be 10%"; the cap is ours (see module doc).
HEURISTIC_FRACTION = 0.1
HEURISTIC_MAX = 86400.0
# Negative caching under a TTL class: an error without explicit freshness is kept this long, as
# CloudFront's default ErrorCachingMinTTL does (the class TTLs are for content, not errors).
ERROR_TTL = 10.0

# RFC 9110 §15.1: the heuristically cacheable status codes.
HEURISTIC_STATUSES = frozenset((200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501))
# Final status codes whose caching rules we implement (RFC 9110 §15), for must-understand
# (§5.2.2.3). 206 and 304 are left out: we store neither (see the module doc).
_UNDERSTOOD = frozenset(
    (
        *(200, 201, 202, 203, 204, 205),
        *(300, 301, 302, 303, 305, 307, 308),
        *range(400, 418),
        *(421, 422, 426),
        *(500, 501, 502, 503, 504, 505),
    )
)
_METHODS = ("GET", "HEAD")
# RFC 9110 §7.6.1 hop-by-hop fields, plus the proxy-specific ones §3.1 forbids storing.
_NOT_STORED = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authentication-info",
        "proxy-authorization",
        # Never replayed to other users (see the module doc).
        "set-cookie",
    )
)
# §3.2 / §4.3.4: what a 304 must not overwrite. Content-Length is named by §3.2; Content-Range is
# "automatically processed"; Content-Encoding describes bytes we already hold ("fields the stored
# response depends upon"). Age is handled separately in merge_304.
_NOT_UPDATED = _NOT_STORED | {"content-length", "content-range", "content-encoding"}


# --- Cache-Control ------------------------------------------------------------------------------


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """Cache-Control directives (§5.2) as ``{lower-case name: argument or None}``.

    Names compare case-insensitively; arguments keep their case. Both argument forms are accepted,
    token and quoted-string (§5.2: "recipients ought to accept both forms"); a quoted-string is
    unquoted (quoted-pairs resolved), so ``max-age="60"`` reads as ``"60"`` and
    ``no-cache="a, b"`` keeps its comma. A directive given twice keeps its first occurrence
    (§4.2.1). Garbage is tolerated: empty list members are skipped, anything after a closing quote
    up to the next comma is ignored, an unterminated quote runs to the end of the value.
    """
    cc: dict[str, str | None] = {}
    if not value:
        return cc
    if '"' in value:
        return _parse_quoted(value, cc)
    # Fast path, no quoted-strings: a comma always separates directives.
    for part in value.split(","):
        name, eq, arg = part.partition("=")
        name = name.strip(" \t").lower()
        if name and name not in cc:
            cc[name] = arg.strip(" \t") if eq else None
    return cc


def _parse_quoted(value: str, cc: dict[str, str | None]) -> dict[str, str | None]:
    i, n = 0, len(value)
    while i < n:
        comma = value.find(",", i)
        if comma < 0:
            comma = n
        eq = value.find("=", i, comma)
        arg: str | None
        if eq < 0:
            name, arg, i = value[i:comma], None, comma + 1
        else:
            name = value[i:eq]
            k = eq + 1
            while k < n and value[k] in " \t":
                k += 1
            if k < n and value[k] == '"':
                buf: list[str] = []
                k += 1
                while k < n:
                    c = value[k]
                    if c == "\\" and k + 1 < n:
                        buf.append(value[k + 1])
                        k += 2
                    elif c == '"':
                        k += 1
                        break
                    else:
                        buf.append(c)
                        k += 1
                arg = "".join(buf)
                # The comma found above may have been inside the quotes: look again after them.
                comma = value.find(",", k)
                i = n + 1 if comma < 0 else comma + 1
            else:
                arg = value[k:comma].strip(" \t")
                i = comma + 1
        name = name.strip(" \t").lower()
        if name and name not in cc:
            cc[name] = arg
    return cc


def parse_request_cache_control(
    cache_control: str | None, pragma: str | None = None
) -> dict[str, str | None]:
    """A request's directives; ``Pragma: no-cache`` counts as ``Cache-Control: no-cache`` only when
    the request has no Cache-Control field (RFC 7234 §5.4; RFC 9111 §5.4 deprecates Pragma but
    HTTP/1.0 clients still send it)."""
    if cache_control is not None:
        return parse_cache_control(cache_control)
    if pragma is not None and "no-cache" in parse_cache_control(pragma):
        return {"no-cache": None}
    return {}


def delta_seconds(arg: str | None) -> int | None:
    """A delta-seconds argument (§1.2.2) as an int, capped at ``DELTA_MAX``; None if invalid.

    Only ASCII digits are valid (no sign, no space, no fraction); ``int()`` alone would accept
    ``"+1"``, ``" 1"`` and ``"1_0"``.
    """
    if not arg or not arg.isascii() or not arg.isdigit():
        return None
    if len(arg) > 10:  # > DELTA_MAX for sure, and int() refuses very long digit strings
        return DELTA_MAX
    return min(int(arg), DELTA_MAX)


def _seconds(cc: CacheControl, name: str) -> int | None:
    """None when the directive is absent; 0 when it is present but invalid (treated as stale)."""
    if name not in cc:
        return None
    v = delta_seconds(cc[name])
    return 0 if v is None else v


def _field_names(arg: str | None) -> frozenset[str]:
    """The field names of a qualified no-cache / private directive, lower-cased."""
    if not arg:
        return frozenset()
    return frozenset(f for f in (p.strip(" \t").lower() for p in arg.split(",")) if f)


def _unqualified(cc: CacheControl, name: str) -> bool:
    """The directive is present without field names (an empty list counts as no list at all,
    so ``no-cache=""`` is read as plain no-cache: the conservative choice)."""
    return name in cc and not _field_names(cc[name])


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _get(headers: Mapping[str, str], name: str) -> str | None:
    """Field NAME (lower-case) from a mapping of any case: one dict lookup when keys are lower."""
    v = headers.get(name)
    if v is not None:
        return v
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


# --- Storing (§3) -------------------------------------------------------------------------------


def storable(
    method: str,
    status: int,
    request_cc: CacheControl,
    response_cc: CacheControl,
    response_headers: Mapping[str, str],
    has_authorization: bool,
    *,
    ttl_class: TtlClass | None = None,
) -> tuple[bool, str]:
    """Whether a shared cache may store this response (RFC 9111 §3, §3.5), and why.

    Refusals (checked in this order): "method" (only GET and HEAD), "status" (interim, 304, or
    not understood under must-understand), "partial-content" (206), "request-no-store",
    "no-store", "private" (unqualified), "authorization", "vary-star" (``*`` or a member that is
    not a field name, see ``vary.parse_vary``), "set-cookie", "policy"
    (the TTL class is not cacheable), "no-freshness" (no explicit freshness, not public and not
    heuristically cacheable).

    Acceptances say which rule of §3's last bullet allows it: "explicit" (s-maxage, max-age or
    Expires), "public", or "heuristic" (a heuristically cacheable status, RFC 9110 §15.1).
    """
    if method not in _METHODS:
        return False, "method"
    if status < 200 or status == 304:
        return False, "status"
    if status == 206:
        return False, "partial-content"
    no_store = "no-store" in response_cc
    if "must-understand" in response_cc:
        # §5.2.2.3: a cache that understands the status ignores the no-store sent alongside
        # must-understand; one that does not must not store.
        if status not in _UNDERSTOOD:
            return False, "status"
        no_store = False
    # §5.2.1.5: no-store in the request forbids storing the response to it.
    if "no-store" in request_cc:
        return False, "request-no-store"
    if no_store:
        return False, "no-store"
    # §5.2.2.7: qualified private only keeps the named fields out (headers_to_store).
    if _unqualified(response_cc, "private"):
        return False, "private"
    # §3.5: only must-revalidate, public and s-maxage allow a shared cache to reuse a response to
    # an authenticated request.
    if has_authorization and not (
        "must-revalidate" in response_cc or "public" in response_cc or "s-maxage" in response_cc
    ):
        return False, "authorization"
    vary = _get(response_headers, "vary")
    if vary is not None and parse_vary(vary) is None:
        # §4.1: a stored Vary: * never matches, so storing it is pointless. parse_vary also says
        # None for a member that is not a field name: no variant key could be built for it.
        return False, "vary-star"
    if _get(response_headers, "set-cookie") is not None:
        named = _field_names(response_cc.get("private")) | _field_names(response_cc.get("no-cache"))
        if "set-cookie" not in named:
            return False, "set-cookie"
    if ttl_class is not None and not ttl_class.cacheable:
        return False, "policy"
    if "s-maxage" in response_cc or "max-age" in response_cc or _get(response_headers, "expires") is not None:
        return True, "explicit"
    if "public" in response_cc:
        return True, "public"
    if status in HEURISTIC_STATUSES:
        return True, "heuristic"
    return False, "no-freshness"


def headers_to_store(
    response_headers: Mapping[str, str], response_cc: CacheControl | None = None
) -> dict[str, str]:
    """The response's fields a shared cache keeps, lower-cased (§3.1).

    Dropped: hop-by-hop fields and those the Connection field names (RFC 9110 §7.6.1), the
    proxy-specific fields (§3.1), Set-Cookie (never replayed, see the module doc), and the fields
    named by a qualified ``no-cache`` (§5.2.2.4) or ``private`` (§5.2.2.7).
    """
    h = _lower(response_headers)
    if response_cc is None:
        response_cc = parse_cache_control(h.get("cache-control"))
    drop = _dropped(h, response_cc)
    return {k: v for k, v in h.items() if k not in drop}


def _dropped(h: Mapping[str, str], cc: CacheControl) -> frozenset[str]:
    drop = _NOT_STORED
    conn = h.get("connection")
    if conn:
        drop = drop | _field_names(conn)
    if "no-cache" in cc or "private" in cc:
        drop = drop | _field_names(cc.get("no-cache")) | _field_names(cc.get("private"))
    return drop


# --- Freshness (§4.2) ---------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Freshness:
    """How long a stored response may be reused, fixed when it is stored or refreshed.

    ``lifetime`` is the freshness lifetime (§4.2.1) after the TTL class; ``corrected_initial_age``
    the response's age when it arrived (§4.2.3); ``response_time`` when it arrived (POSIX
    seconds, the daemon's wall clock). The windows are RFC 5861's, in seconds past the lifetime.
    ``must_revalidate``: never serve stale (must-revalidate, proxy-revalidate, s-maxage, or the
    class says so). ``no_cache``: never reuse without validation (lifetime is then 0).
    ``immutable`` (RFC 8246): a fresh response ignores the request's max-age (a reload).
    ``source`` names the rule that set the lifetime, for logs and Cache-Status.
    """

    lifetime: float
    corrected_initial_age: float
    response_time: float
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    must_revalidate: bool = False
    no_cache: bool = False
    immutable: bool = False
    source: str = ""

    def age(self, now: float) -> float:
        """current_age (§4.2.3). A clock stepping back never makes the response younger than it
        arrived."""
        resident = now - self.response_time
        return self.corrected_initial_age + (resident if resident > 0.0 else 0.0)

    def is_fresh(self, now: float) -> bool:
        """§4.2: fresh while freshness_lifetime > current_age."""
        return self.lifetime > self.age(now)

    def fresh_until(self) -> float:
        """The wall-clock time it turns stale: ``is_fresh(now)`` is ``now < fresh_until()``."""
        return self.response_time - self.corrected_initial_age + self.lifetime

    def ttl(self, now: float) -> float:
        """Seconds of freshness left (negative once stale), e.g. for Cache-Status ``ttl``."""
        return self.lifetime - self.age(now)

    def staleness(self, now: float) -> float:
        """Seconds past the lifetime (0 while fresh)."""
        s = self.age(now) - self.lifetime
        return s if s > 0.0 else 0.0

    def can_serve_stale_while_revalidate(self, now: float, request_cc: CacheControl | None = None) -> bool:
        """RFC 5861 §3: stale, within the window, and nothing forbids serving stale.

        With ``request_cc`` the client's directives count too: a client asking for no-cache,
        max-age or min-fresh without max-stale does not want a stale answer (§5.2.1.1-4).
        """
        if self.must_revalidate or self.no_cache or self.stale_while_revalidate <= 0.0:
            return False
        age = self.age(now)
        if not self.lifetime <= age <= self.lifetime + self.stale_while_revalidate:
            return False
        return request_cc is None or not _client_refuses_stale(request_cc, age - self.lifetime)

    def can_serve_stale_on_error(self, now: float, request_cc: CacheControl | None = None) -> bool:
        """RFC 5861 §4: the upstream failed (or answered 500, 502, 503 or 504) and the stored
        response is within its stale-if-error window; never under must-revalidate or no-cache.
        A response still fresh can always be used (§4.3.3: act as if the server did not answer).

        A request's own ``stale-if-error=N`` replaces the window for that request (RFC 5861 §4:
        its scope is the request); otherwise the client's refusal of stale answers counts as in
        ``can_serve_stale_while_revalidate``.
        """
        age = self.age(now)
        if self.lifetime > age:
            return True  # still fresh (a forced revalidation failed): nothing stale about it
        if self.must_revalidate or self.no_cache:
            return False
        staleness = age - self.lifetime
        if request_cc is not None and "stale-if-error" in request_cc:
            window = delta_seconds(request_cc["stale-if-error"]) or 0
            return staleness <= window
        if self.stale_if_error <= 0.0 or staleness > self.stale_if_error:
            return False
        return request_cc is None or not _client_refuses_stale(request_cc, staleness)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``from_dict(to_dict())`` is the identity."""
        return {
            "lifetime": self.lifetime,
            "corrected_initial_age": self.corrected_initial_age,
            "response_time": self.response_time,
            "stale_while_revalidate": self.stale_while_revalidate,
            "stale_if_error": self.stale_if_error,
            "must_revalidate": self.must_revalidate,
            "no_cache": self.no_cache,
            "immutable": self.immutable,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Freshness:
        """From ``to_dict``'s output; optional fields may be missing (older index entries)."""
        return cls(
            lifetime=float(d["lifetime"]),
            corrected_initial_age=float(d["corrected_initial_age"]),
            response_time=float(d["response_time"]),
            stale_while_revalidate=float(d.get("stale_while_revalidate", 0.0)),
            stale_if_error=float(d.get("stale_if_error", 0.0)),
            must_revalidate=bool(d.get("must_revalidate", False)),
            no_cache=bool(d.get("no_cache", False)),
            immutable=bool(d.get("immutable", False)),
            source=str(d.get("source", "")),
        )


def _age_value(value: str | None) -> float:
    """§5.1: the first member of a list-valued Age; an invalid one is ignored (0)."""
    if value is None:
        return 0.0
    v = delta_seconds(value.partition(",")[0].strip(" \t"))
    return float(v) if v is not None else 0.0


def _window(cc: CacheControl, name: str, class_value: float) -> float:
    """An RFC 5861 window: the response's directive (invalid: 0), else the class's value."""
    v = _seconds(cc, name)
    return float(v) if v is not None else float(class_value)


def compute_freshness(
    response_headers: Mapping[str, str],
    request_time: float,
    response_time: float,
    ttl_class: TtlClass | None = None,
    *,
    status: int = 200,
    response_cc: CacheControl | None = None,
) -> Freshness:
    """The ``Freshness`` of a response received at ``response_time`` for a request sent at
    ``request_time`` (both the daemon's wall clock, POSIX seconds).

    ``response_cc`` saves parsing Cache-Control again when the caller already has it.

    The origin's lifetime (§4.2.1, first match; ``source`` records which):

    1. ``no-cache`` (unqualified): 0, always revalidate, whatever the class says;
    2. ``s-maxage`` (we are a shared cache); 3. ``max-age``;
    4. ``Expires - Date`` (Date missing or invalid: the response time, RFC 9110 §6.6.1); an
       invalid Expires, "0" included, is already expired (§5.3); Expires is ignored when max-age
       or s-maxage is present (§5.3);
    5. otherwise heuristic (§4.2.2), only for a heuristically cacheable status or a ``public``
       response (§5.2.2.9): 10% of Date - Last-Modified, at most ``HEURISTIC_MAX``; 0 without a
       usable Last-Modified.

    Then the TTL class, as a CloudFront cache behaviour applies its TTLs:

    ========================  =====================================  ==============================
    status                    origin sent 2-4 (explicit)             origin sent none
    ========================  =====================================  ==============================
    < 400                     clamp(explicit, min_ttl, max_ttl)      default_ttl (replaces 5)
    >= 400                    min(explicit, max_ttl)                 min(ERROR_TTL, max_ttl) for a
                                                                     heuristically cacheable
                                                                     status, else 0
    ========================  =====================================  ==============================

    Errors are not raised to min_ttl: a class keeps content, and a 404 must not live for a year.
    The windows: the response's stale-while-revalidate / stale-if-error, else the class's.
    ``must_revalidate`` and ``immutable`` are the response's directives or the class's flags.
    """
    h = _lower(response_headers)
    cc = response_cc if response_cc is not None else parse_cache_control(h.get("cache-control"))

    date_hdr = h.get("date")
    date = parse_http_date(date_hdr, now=response_time) if date_hdr is not None else None
    if date is None:
        date = response_time

    # §4.2.3, with response_delay floored at 0 in case the caller's clock stepped back.
    apparent_age = response_time - date
    apparent_age = apparent_age if apparent_age > 0.0 else 0.0
    delay = response_time - request_time
    corrected_age_value = _age_value(h.get("age")) + (delay if delay > 0.0 else 0.0)
    corrected_initial_age = max(apparent_age, corrected_age_value)

    no_cache = _unqualified(cc, "no-cache")
    explicit: float | None = None
    source = ""
    if no_cache:
        lifetime, source = 0.0, "no-cache"
    else:
        s = _seconds(cc, "s-maxage")
        if s is not None:
            explicit, source = float(s), "s-maxage"
        else:
            s = _seconds(cc, "max-age")
            if s is not None:
                explicit, source = float(s), "max-age"
            else:
                expires = h.get("expires")
                if expires is not None:
                    t = parse_http_date(expires, now=response_time)
                    explicit = 0.0 if t is None or t <= date else t - date
                    source = "expires"
        if explicit is not None:
            lifetime = explicit
        else:
            lifetime = _heuristic(status, cc, h.get("last-modified"), date, response_time)
            source = "heuristic"

    swr_class = 0.0
    sie_class = 0.0
    must_revalidate = "must-revalidate" in cc or "proxy-revalidate" in cc or "s-maxage" in cc
    immutable = "immutable" in cc
    if ttl_class is not None:
        swr_class = float(ttl_class.stale_while_revalidate)
        # The catalog has no stale-if-error field yet; read it if a later catalog adds one.
        sie_class = float(getattr(ttl_class, "stale_if_error", 0) or 0)
        must_revalidate = must_revalidate or ttl_class.must_revalidate
        immutable = immutable or ttl_class.immutable
        if not no_cache:
            lo, hi = float(ttl_class.min_ttl), float(ttl_class.max_ttl)
            if status < 400:
                if explicit is None:
                    lifetime, source = float(ttl_class.default_ttl), "default"
                else:
                    lifetime = min(max(explicit, lo), hi)
            elif explicit is None:
                lifetime, source = (min(ERROR_TTL, hi) if status in HEURISTIC_STATUSES else 0.0), "error"
            else:
                lifetime = min(explicit, hi)

    return Freshness(
        lifetime=lifetime,
        corrected_initial_age=corrected_initial_age,
        response_time=response_time,
        stale_while_revalidate=_window(cc, "stale-while-revalidate", swr_class),
        stale_if_error=_window(cc, "stale-if-error", sie_class),
        must_revalidate=must_revalidate,
        no_cache=no_cache,
        immutable=immutable,
        source=source,
    )


def _heuristic(status: int, cc: CacheControl, last_modified: str | None, date: float, now: float) -> float:
    if status not in HEURISTIC_STATUSES and "public" not in cc:
        return 0.0
    if last_modified is None:
        return 0.0
    lm = parse_http_date(last_modified, now=now)
    if lm is None or lm >= date:
        return 0.0  # modified "in the future" or just now: nothing to extrapolate from
    return min((date - lm) * HEURISTIC_FRACTION, HEURISTIC_MAX)


# --- Request directives (§5.2.1) ----------------------------------------------------------------


def _client_refuses_stale(request_cc: CacheControl, staleness: float) -> bool:
    """Whether the client's directives rule out a stale answer this stale."""
    if "no-cache" in request_cc:
        return True
    if "max-stale" in request_cc:
        arg = request_cc["max-stale"]
        if arg is None:
            return False  # §5.2.1.2: max-stale without a value accepts any staleness
        limit = delta_seconds(arg)
        return limit is None or staleness > limit  # invalid: no staleness accepted
    # §5.2.1.1: with max-age (and, a fortiori, min-fresh) but no max-stale, the client "does not
    # wish to receive a stale response".
    return "max-age" in request_cc or "min-fresh" in request_cc


def request_allows_stored(request_cc: CacheControl, freshness: Freshness, now: float) -> Decision:
    """Whether a stored response may answer this request as it is (§4, §5.2.1):

    - "fresh": fresh, and the request's max-age / min-fresh are met;
    - "stale-ok": stale, but the request's max-stale accepts it and nothing forbids it;
    - "revalidate": ask the origin first (response no-cache; request no-cache, max-age exceeded,
      min-fresh not met; stale without an applicable max-stale). The caller may then still use
      ``Freshness.can_serve_stale_while_revalidate`` / ``can_serve_stale_on_error``.

    Invalid request arguments are read conservatively: max-age and min-fresh as 0 (so a stored
    response is revalidated, never served too old), max-stale as "no staleness".
    ``no-store`` is ignored here: it forbids storing the response, not reusing one (§5.2.1.5).
    ``immutable`` (RFC 8246): while fresh, the request's max-age is ignored, since browsers send
    max-age=0 on reload; no-cache (a forced reload) is still honoured.
    """
    if freshness.no_cache:
        return "revalidate"
    age = freshness.age(now)
    lifetime = freshness.lifetime
    if not request_cc:  # the common case: one comparison
        return "fresh" if lifetime > age else "revalidate"
    if "no-cache" in request_cc:
        return "revalidate"
    fresh = lifetime > age
    if "max-age" in request_cc and not (fresh and freshness.immutable):
        max_age = delta_seconds(request_cc["max-age"]) or 0
        if age > max_age:
            return "revalidate"
    if "min-fresh" in request_cc:
        min_fresh = delta_seconds(request_cc["min-fresh"]) or 0
        if lifetime - age < min_fresh:
            return "revalidate"
    if fresh:
        return "fresh"
    if freshness.must_revalidate or "max-stale" not in request_cc:
        return "revalidate"
    arg = request_cc["max-stale"]
    if arg is None:
        return "stale-ok"
    limit = delta_seconds(arg)
    return "stale-ok" if limit is not None and age - lifetime <= limit else "revalidate"


# --- Validation (§4.3) --------------------------------------------------------------------------


def conditional_headers(etag: str | None, last_modified: str | float | None) -> dict[str, str]:
    """The validators to send when revalidating a stored response (§4.3.1).

    §4.3.1: a cache MUST send the stored entity-tag (If-None-Match) and SHOULD send the stored
    Last-Modified (If-Modified-Since) as well; an origin ignores If-Modified-Since when
    If-None-Match is present (RFC 9110 §13.1.3), so sending both only helps origins that know
    just one. ``last_modified`` is the stored field value (sent verbatim) or a POSIX timestamp.
    ``etag`` must be the origin's own ETag, never one the cache made up.
    """
    out: dict[str, str] = {}
    if etag:
        out["If-None-Match"] = etag
    if last_modified is not None and last_modified != "":
        out["If-Modified-Since"] = (
            last_modified if isinstance(last_modified, str) else format_http_date(last_modified)
        )
    return out


def _opaque(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag


def refresh_applies(
    stored_etag: str | None, stored_last_modified: float | None, response_304_headers: Mapping[str, str]
) -> bool:
    """Whether a 304 selects the stored response for update (§4.3.4).

    - a strong ETag in the 304 must equal the stored one (strong comparison);
    - a weak ETag must match the stored one by weak comparison;
    - else a valid Last-Modified must equal the stored one (at one-second resolution);
    - a 304 with no validator is accepted: it answers our own conditional request for the single
      stored response (§4.3.4 only allows this when the stored response has no validator either;
      we are more lenient because origins that omit validators from 304s exist, and refusing
      would turn every revalidation into a full refetch).
    """
    h = _lower(response_304_headers)
    etag = h.get("etag")
    if etag:
        etag = etag.strip(" \t")
        if not stored_etag:
            return False
        if etag.startswith("W/"):
            return _opaque(etag) == _opaque(stored_etag)
        return not stored_etag.startswith("W/") and etag == stored_etag
    lm = h.get("last-modified")
    if lm:
        t = parse_http_date(lm)
        if t is not None:
            return stored_last_modified is not None and math.floor(stored_last_modified) == t
    return True


def merge_304(stored_headers: Mapping[str, str], response_304_headers: Mapping[str, str]) -> dict[str, str]:
    """The stored response's header fields after a 304 (§3.2, §4.3.4), lower-cased.

    Every field of the 304 replaces or joins the stored ones, except Content-Length (§3.2),
    hop-by-hop, Connection-named and proxy-specific fields (§3.1), Content-Range and
    Content-Encoding (the stored bytes depend on them, §3.2), Set-Cookie (never stored), and the
    fields a qualified no-cache / private in the 304's Cache-Control names (those are also
    removed from the stored set, so they cannot be replayed).

    Age: the stored Age described the old response; the 304 is the new one, so its Age (or none)
    is what counts when ``compute_freshness`` runs again on the result. The stored Age is dropped.
    """
    new = _lower(response_304_headers)
    cc = parse_cache_control(new.get("cache-control"))
    named = _field_names(cc.get("no-cache")) | _field_names(cc.get("private"))
    skip = _NOT_UPDATED | named | _field_names(new.get("connection"))
    merged = {k: v for k, v in _lower(stored_headers).items() if k != "age" and k not in named}
    for k, v in new.items():
        if k not in skip:
            merged[k] = v
    return merged
