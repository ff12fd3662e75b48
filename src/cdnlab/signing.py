"""Signed URLs shared by the control plane (which signs) and the edge (which checks).

Scheme: ``PATH?…&exp=UNIX&kid=KEYID&sig=HEX`` where
``sig = HMAC-SHA256(keys[kid], "PATH\\nEXP\\nKID")`` in lower-case hex. PATH is the URL path exactly
as sent (still percent-encoded), so signer and checker never disagree about decoding. The same
scheme is implemented in JavaScript for the CloudFront viewer-request function in ``infra/``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode

SIGNATURE_PARAMS: frozenset[str] = frozenset({"exp", "kid", "sig"})


class Verdict(enum.Enum):
    OK = "ok"
    MISSING = "missing signature parameters"
    MALFORMED = "malformed signature parameters"
    EXPIRED = "expired"
    UNKNOWN_KEY = "unknown key id"
    BAD_SIGNATURE = "bad signature"


def _mac(key: str | bytes, path: str, exp: int, kid: str) -> str:
    raw = key.encode() if isinstance(key, str) else key
    msg = f"{path}\n{exp}\n{kid}".encode()
    return hmac.new(raw, msg, hashlib.sha256).hexdigest()


def sign_path(path: str, kid: str, key: str | bytes, expires_at: int, query: str = "") -> str:
    """Return ``path?query&exp=…&kid=…&sig=…`` (query parameters other than ours are kept)."""
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in SIGNATURE_PARAMS]
    pairs += [("exp", str(int(expires_at))), ("kid", kid), ("sig", _mac(key, path, int(expires_at), kid))]
    return f"{path}?{urlencode(pairs)}"


def verify(
    path: str,
    params: Mapping[str, str],
    keys: Mapping[str, str],
    now: float | None = None,
) -> Verdict:
    """Check a request's signature parameters; constant-time comparison of the MAC."""
    exp_s, kid, sig = params.get("exp"), params.get("kid"), params.get("sig")
    if exp_s is None or kid is None or sig is None:
        return Verdict.MISSING
    if not exp_s.isdigit() or len(exp_s) > 12 or len(sig) != 64:
        return Verdict.MALFORMED
    exp = int(exp_s)
    if exp < (time.time() if now is None else now):
        return Verdict.EXPIRED
    key = keys.get(kid)
    if key is None:
        return Verdict.UNKNOWN_KEY
    if not hmac.compare_digest(_mac(key, path, exp, kid), sig.lower()):
        return Verdict.BAD_SIGNATURE
    return Verdict.OK


def strip_signature(query: str) -> str:
    """The query without the signature parameters: the part a cache key may use."""
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in SIGNATURE_PARAMS]
    return urlencode(pairs)
