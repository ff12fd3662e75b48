"""SHA-256 digests an upstream sends with a body, to check the bytes before they are served.

Understood, all lower-cased hex out:

- ``Content-Digest`` and ``Repr-Digest`` (RFC 9530): Structured Field dictionaries such as
  ``sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:``. The daemon always fetches the whole
  representation with ``Accept-Encoding: identity`` and no range, so both cover exactly the body
  bytes it receives. Other algorithms (sha-512, the deprecated md5/sha…) are ignored.
- ``x-amz-checksum-sha256`` (S3 with checksum mode): base64 of the object's SHA-256. Composite
  checksums of multipart uploads (``…-N``) are not a digest of the bytes and are ignored.
- ``x-amz-meta-sha256`` (user metadata set at upload, a common convention): hex or base64.

A value that cannot be read is ignored (logged): it says nothing about the bytes. When several
digests are sent, the body must match every one.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping

log = logging.getLogger("cdnlab.edge.digest")

_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def _b64(value: str) -> str | None:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def _sf_sha256(field: str) -> str | None:
    """The sha-256 member of an RFC 9530 dictionary field (byte sequence ``:base64:``)."""
    for member in field.split(","):
        name, eq, value = member.strip().partition("=")
        if not eq or name.strip().lower() != "sha-256":
            continue
        value = value.split(";", 1)[0].strip()  # parameters are allowed, and ignored
        if len(value) >= 2 and value[0] == ":" and value[-1] == ":":
            return _b64(value[1:-1])
        return None
    return None


def upstream_sha256(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """(header name, hex SHA-256) for every digest of the body the upstream sent."""
    out: list[tuple[str, str]] = []
    for name in ("Content-Digest", "Repr-Digest"):
        value = headers.get(name)
        if value is None:
            continue
        got = _sf_sha256(value)
        if got is not None:
            out.append((name, got))
        elif "sha-256" in value.lower():
            log.warning("unreadable %s: %r", name, value[:200])
    amz = headers.get("x-amz-checksum-sha256")
    if amz is not None and "-" not in amz:
        got = _b64(amz)
        if got is not None:
            out.append(("x-amz-checksum-sha256", got))
        else:
            log.warning("unreadable x-amz-checksum-sha256: %r", amz[:200])
    meta = headers.get("x-amz-meta-sha256")
    if meta is not None:
        meta = meta.strip()
        got = meta.lower() if _HEX.match(meta) else _b64(meta)
        if got is not None:
            out.append(("x-amz-meta-sha256", got))
        else:
            log.warning("unreadable x-amz-meta-sha256: %r", meta[:200])
    return out
