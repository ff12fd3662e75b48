"""Filling one object into the store from a fill source: rate-capped, resumable, verified.

Bytes land in a *partial* file on a store disk (``<disk>/fill-partial/<sha256(key)>.part``, with
a ``.json`` beside it holding the source's validator), not in ``tmp/``, which the daemon wipes at
start: an interrupted fill (the process killed, the window closed) continues on the next run
with ``Range: bytes=N-`` and ``If-Range`` (the ETag, else Last-Modified, the source gave), and
starts over when the source answers 200 (it changed) or the plan's SHA-256 did. Only a complete
file whose SHA-256 is the plan's, and — for a video segment — that parses as fragmented MP4 and
matches the MPD's Representation (``cdnlab.media``), is copied into the store with
``Writer.commit(expected_sha256=…)``. Anything refused is deleted: no partial, no temp file, no
index row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdnlab.edge.freshness import headers_to_store
from cdnlab.edge.httpdate import parse_http_date
from cdnlab.edge.meta import default_etag
from cdnlab.edge.store import Store, StoreError
from cdnlab.fillplan import PlanObject

CHUNK = 64 * 1024
PARTIAL_DIR = "fill-partial"


class FillError(Exception):
    """This source could not deliver the object (another source may)."""


class Rejected(Exception):
    """The object's bytes are wrong whatever the source: it is not stored."""


class TokenBucket:
    """Bytes per second shared by every stream of a run. Debt is allowed (a chunk is taken
    whole), so the long-run rate is the cap; the burst is a tenth of a second's worth."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.burst = burst if burst is not None else max(CHUNK, self.rate / 10)
        self.tokens = self.burst
        self.last = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        async with self._lock:  # FIFO: streams take turns
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            self.tokens -= n
            if self.tokens < 0:
                await asyncio.sleep(-self.tokens / self.rate)


@dataclass(frozen=True)
class Source:
    kind: str  # peer, shield, origin, upstream
    base: str  # http://host:port, content at the root
    name: str = ""
    sign: Callable[[str], str] | None = None  # path -> signed path (peers check URL signatures)

    def url(self, key: str) -> str:
        return self.base.rstrip("/") + (self.sign(key) if self.sign else key)


class Partials:
    """Partial downloads, on one store disk, named from the key's SHA-256."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / PARTIAL_DIR
        self.dir.mkdir(parents=True, exist_ok=True)

    def paths(self, key: str) -> tuple[Path, Path]:
        h = hashlib.sha256(key.encode()).hexdigest()
        return self.dir / f"{h}.part", self.dir / f"{h}.json"

    def meta(self, key: str) -> dict[str, Any]:
        _, meta = self.paths(key)
        try:
            got = json.loads(meta.read_text())
        except (OSError, ValueError):
            return {}
        return got if isinstance(got, dict) else {}

    def save_meta(self, key: str, meta: dict[str, Any]) -> None:
        _, path = self.paths(key)
        tmp = path.with_suffix(".json.new")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, path)

    def drop(self, key: str) -> None:
        for p in self.paths(key):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def prune(self, keep: set[str]) -> int:
        """Remove partials of keys no longer planned (and stray files)."""
        want = {hashlib.sha256(k.encode()).hexdigest() for k in keep}
        n = 0
        for p in self.dir.iterdir():
            if p.name.split(".", 1)[0] not in want:
                with contextlib.suppress(OSError):
                    p.unlink()
                    n += p.suffix == ".part"
        return n

    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("*.part"))


def _validator(headers: Any) -> str | None:
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return str(etag)  # If-Range needs a strong validator (RFC 9110 §13.1.5)
    lm = headers.get("Last-Modified")
    return str(lm) if lm else None


async def download(
    session: Any,
    source: Source,
    obj: PlanObject,
    partials: Partials,
    bucket: TokenBucket,
    counted: Callable[[int], None],
) -> dict[str, str]:
    """Complete the partial file of OBJ from SOURCE; returns the response headers to keep.
    Raises FillError when this source failed (the partial keeps what arrived)."""
    import aiohttp

    part, _ = partials.paths(obj.key)
    meta = partials.meta(obj.key)
    have = part.stat().st_size if part.exists() else 0
    if meta.get("sha256") != obj.sha256 or have > obj.size:
        partials.drop(obj.key)
        meta, have = {}, 0
    if have == obj.size and have > 0 and meta.get("headers") is not None:
        return dict(meta["headers"])
    if have == obj.size:  # complete but its headers were never saved: fetch again
        partials.drop(obj.key)
        meta, have = {}, 0
    headers = {"Accept-Encoding": "identity", "User-Agent": "cdnlab-fill"}
    if have and meta.get("validator"):
        headers["Range"] = f"bytes={have}-"
        headers["If-Range"] = meta["validator"]
    try:
        async with session.get(source.url(obj.key), headers=headers, allow_redirects=False) as resp:
            if resp.status == 206 and "Range" in headers:
                start = _content_range_start(resp.headers.get("Content-Range", ""))
                if start != have:
                    raise FillError(f"206 from byte {start}, asked for {have}")
                mode = "ab"
            elif resp.status == 200:
                have, mode = 0, "wb"  # new, or the source changed since the partial: from zero
            else:
                raise FillError(f"{source.kind} answered {resp.status}")
            clen = resp.headers.get("Content-Length")
            if clen is not None and clen.isdigit() and have + int(clen) != obj.size:
                raise FillError(f"{source.kind} has {have + int(clen)} bytes, the plan says {obj.size}")
            kept = headers_to_store(resp.headers)
            validator = _validator(resp.headers) if mode == "wb" else meta.get("validator")
            partials.save_meta(
                obj.key,
                {
                    "key": obj.key,
                    "sha256": obj.sha256,
                    "validator": validator,
                    "source": source.base,
                    "headers": None,
                },
            )
            overrun = False
            with open(part, mode) as f:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    await bucket.take(len(chunk))
                    if f.tell() + len(chunk) > obj.size:
                        overrun = True
                        break
                    f.write(chunk)
                    counted(len(chunk))
                got = f.tell()
            if overrun:  # not the object the plan names: drop it, another source may have it
                partials.drop(obj.key)
                raise FillError(f"{source.kind} sent more than the plan's {obj.size} bytes")
            if got != obj.size:
                raise FillError(f"{source.kind} body ended at {got} of {obj.size} bytes")
            kept.setdefault("content-type", resp.headers.get("Content-Type", "application/octet-stream"))
            partials.save_meta(
                obj.key,
                {
                    "key": obj.key,
                    "sha256": obj.sha256,
                    "validator": validator,
                    "source": source.base,
                    "headers": kept,
                },
            )
            return kept
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise FillError(f"{source.kind} {source.base}: {exc or type(exc).__name__}") from None


def _content_range_start(value: str) -> int:
    try:
        unit, rest = value.split(" ", 1)
        return int(rest.split("-", 1)[0]) if unit.strip() == "bytes" else -1
    except ValueError:
        return -1


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def commit_partial(
    store: Store, obj: PlanObject, partials: Partials, kept: dict[str, str], since_purge: int | None = None
) -> int:
    """Copy the verified partial into the store (blocking). The commit re-checks the SHA-256 and
    refuses if a purge covering the key ran after SINCE_PURGE (``Index.purge_seq()``)."""
    part, _ = partials.paths(obj.key)
    ctype = kept.pop("content-type", "application/octet-stream")
    lm = parse_http_date(kept["last-modified"]) if "last-modified" in kept else None
    etag = kept.get("etag") or default_etag(obj.size, lm or time.time())
    writer = store.begin(obj.key, obj.size, ctype, since_purge)
    try:
        with open(part, "rb") as f:
            while block := f.read(1 << 20):
                writer.write(block)
        writer.commit(etag, lm, kept, expected_sha256=obj.sha256)
    except (StoreError, OSError):
        writer.abort()
        raise
    finally:
        writer.close()
    partials.drop(obj.key)
    return obj.size
