"""Compression at the edge: gzip and brotli variants stored once, JSON minified when stored.

Each text object is stored once as fetched (identity). A compressed variant is made from the
stored, SHA-256-verified identity bytes the first time a client asks for that coding, stored as an
object of its own under ``vary.variant_key(key, ("accept-encoding",), coding)``, and served from
the store from then on (Cache-Status hit), ranges and conditionals applying to it as its own
representation (RFC 9110 §8.8.3, §14): its ETag is the identity ETag with ``-gzip``/``-br`` inside
the quotes, as nginx and Apache do. The request that triggers a build waits for it (one build per
variant per worker, in a thread pool, never on the event loop; concurrent requests wait on the same
build); in another worker racing for the same variant the loser answers identity meanwhile.

A variant records the SHA-256 of the identity it was made from (in its stored ``etag`` header, the
slot that holds the origin's validator on fetched objects, which variants never revalidate): when
the identity changes, a variant made from the old bytes is never served and is rebuilt.

The policy catalog decides per class which codings are offered and whether JSON is minified or
images optimised (``imageopt``); the Content-Type decides what is text. Rewrites (minify, image)
replace the stored identity with the rewritten bytes under an ETag with ``-min``/``-img`` inside
the quotes; the origin's own ETag stays in the stored headers for revalidation.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import re
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import brotli

from cdnlab.edge import imageopt
from cdnlab.edge.meta import ObjectMeta
from cdnlab.edge.vary import normalise_accept_encoding, variant_key
from cdnlab.policy import ImageOpt, classify

if TYPE_CHECKING:
    from cdnlab.edge.conn import Conn
    from cdnlab.edge.fetch import Fetch
    from cdnlab.edge.handler import Handler
    from cdnlab.edge.output import FileHandle, Response
    from cdnlab.edge.worker import HotObject, Worker

log = logging.getLogger("cdnlab.edge.compress")

MIN_SIZE = 256  # smaller bodies gain nothing worth a variant (nginx gzip_min_length is 20)
MAX_SIZE = 64 << 20  # compressed and rewritten in memory: bigger text objects are served identity
GZIP_LEVEL = 6  # gzip's default: most of level 9's gain at a fraction of its time
BROTLI_QUALITY = 5  # built on first request: q11 is ~20x slower for a few percent
WAIT_MAX = 8 << 20  # a miss this size or smaller that wants a coding waits for its commit
WAIT_SECONDS = 30.0  # after this a deferred miss is answered from the fetch as it is (identity)
_FIELDS = ("accept-encoding",)

# Content types that are text and worth compressing (besides text/*, */*+json and */*+xml).
_TEXT = frozenset(
    {
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/json",
        "application/xml",
        "application/xhtml+xml",
        "application/rss+xml",
        "application/atom+xml",
        "application/dash+xml",
        "application/vnd.apple.mpegurl",
        "application/x-mpegurl",
        "audio/mpegurl",
        "audio/x-mpegurl",
        "application/manifest+json",
        "application/ld+json",
        "application/wasm",
        "image/svg+xml",
        "image/x-icon",
        "image/vnd.microsoft.icon",
        "image/bmp",
        "font/ttf",
        "font/otf",
        "application/vnd.ms-fontobject",
    }
)
# text/* that is a stream, not a document.
_NOT_TEXT = frozenset({"text/event-stream"})
# Origins that send no useful type (nginx's default_type) for manifests and other text files.
_TEXT_SUFFIXES = (
    ".m3u8",
    ".m3u",
    ".mpd",
    ".html",
    ".htm",
    ".css",
    ".js",
    ".mjs",
    ".json",
    ".xml",
    ".svg",
    ".txt",
    ".vtt",
    ".srt",
)
_UNTYPED = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def compressible(content_type: str, path: str) -> bool:
    """Text worth compressing, by Content-Type; an untyped body by its path's suffix (manifests)."""
    mt = media_type(content_type)
    if mt in _UNTYPED:
        return path.lower().endswith(_TEXT_SUFFIXES)
    if mt in _TEXT or mt.endswith(("+json", "+xml")):
        return True
    return mt.startswith("text/") and mt not in _NOT_TEXT


def is_json(content_type: str) -> bool:
    mt = media_type(content_type)
    return mt in ("application/json", "text/json") or mt.endswith("+json")


def encode(data: bytes, coding: str) -> bytes:
    """``data`` in ``coding`` (deterministic: gzip without a timestamp)."""
    if coding == "gzip":
        return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    if coding == "br":
        return brotli.compress(data, mode=brotli.MODE_TEXT, quality=BROTLI_QUALITY)
    raise ValueError(f"unknown coding {coding!r}")


def suffixed_etag(etag: str, suffix: str) -> str:
    """``"abc"`` -> ``"abc-gzip"`` (``W/`` kept): a distinct validator per representation."""
    if len(etag) >= 2 and etag.endswith('"'):
        return f'{etag[:-1]}-{suffix}"'
    return f'"{etag.strip(chr(34))}-{suffix}"'


def negotiate(accept_encoding: str | None, offered: tuple[str, ...]) -> str:
    """The coding to answer with among ``offered`` and identity (RFC 9110 §12.5.3), using
    ``vary.normalise_accept_encoding``; a coding the class does not offer is taken out first."""
    best = normalise_accept_encoding(accept_encoding)
    if best == "identity" or best in offered or accept_encoding is None:
        return best if best in offered else "identity"
    # The client's favourite is not offered: drop it (and its weight via "*") and ask again.
    drop = {"br"} if best == "br" else {"gzip", "x-gzip"}
    members = [m for m in accept_encoding.split(",") if m.partition(";")[0].strip(" \t").lower() not in drop]
    members.append(f"{best};q=0")
    again = normalise_accept_encoding(",".join(members))
    return again if again in offered else "identity"


_JSON_WS = re.compile(r'("(?:[^"\\]|\\.)*")|[ \t\r\n]+', re.DOTALL)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def minify_json(data: bytes) -> bytes | None:
    """``data`` without insignificant whitespace, or None when it is not strict UTF-8 JSON (left
    untouched) or already minimal. Only whitespace between tokens goes: numbers and strings keep
    their exact text, so nothing is rounded or re-escaped."""
    try:
        text = data.decode("utf-8")
        original = json.loads(text, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    out = _JSON_WS.sub(lambda m: m.group(1) or "", text).encode("utf-8")
    if len(out) >= len(data):
        return None
    try:
        same = json.loads(out) == original
    except (ValueError, RecursionError):
        same = False
    if not same:  # cannot happen for valid JSON; refuse rather than store something else
        log.error("minified JSON differs from the original; storing the original")
        return None
    return out


@dataclass(frozen=True, slots=True)
class Plan:
    """What the edge does with one stored object."""

    codings: tuple[str, ...]  # offered codings (empty: identity only, no Vary)
    rewrite: str = ""  # "minify" or "image" still to do on the stored identity
    image: ImageOpt | None = None


_NOTHING = Plan(())
Done = dict[str, int]  # what a background job did, as counter increments
_REWRITTEN = ('-min"', '-img"')


def plan_for(key: str, meta: ObjectMeta) -> Plan:
    path = key.split("?", 1)[0]
    cls = classify(path)
    ce = meta.headers.get("content-encoding", "").strip().lower()
    if ce and ce != "identity":
        return _NOTHING  # encoded upstream: stored and served as it came, never compressed again
    if "no-transform" in meta.headers.get("cache-control", "").lower():
        return _NOTHING  # RFC 9110 §7.7: an intermediary must not transform this content
    size = meta.size
    codings: tuple[str, ...] = ()
    if cls.codings and compressible(meta.content_type, path) and (size < 0 or MIN_SIZE <= size <= MAX_SIZE):
        codings = tuple(cls.codings)
    rewrite = ""
    if meta.sha256 and not meta.etag.endswith(_REWRITTEN) and 0 < size <= MAX_SIZE:
        if cls.minify_json and is_json(meta.content_type):
            rewrite = "minify"
        elif cls.image is not None and imageopt.handles(meta.content_type):
            rewrite = "image"
    if not codings and not rewrite:
        return _NOTHING
    return Plan(codings, rewrite, cls.image)


class Compressor:
    """One worker's compression state: plans per object, builds under way, served variants."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="compress")
        self._plans: dict[str, tuple[ObjectMeta, Plan]] = {}
        self._jobs: dict[str, asyncio.Future[Done]] = {}
        # (key, identity sha256) whose build or rewrite gave nothing: not tried again here.
        self._futile: set[tuple[str, str]] = set()
        self._served: dict[str, tuple[ObjectMeta, ObjectMeta, HotObject]] = {}
        self._overdue: weakref.WeakSet[Fetch] = weakref.WeakSet()  # commits we stopped waiting for
        self._watched: weakref.WeakSet[Fetch] = weakref.WeakSet()  # fetches with a rewrite to start

    # decisions -------------------------------------------------------------------------------

    def plan(self, key: str, meta: ObjectMeta) -> Plan | None:
        """The plan for ``meta`` (None: nothing to do). Adds ``Vary: Accept-Encoding`` to an
        object served in several codings, so its identity answers say so too (RFC 9110 §12.5.5)."""
        cached = self._plans.get(key)
        if cached is not None and cached[0] is meta:
            p = cached[1]
        else:
            p = plan_for(key, meta)
            if len(self._plans) >= 65536:
                self._plans.clear()
            self._plans[key] = (meta, p)
            if p.codings:
                vary = meta.headers.get("vary", "")
                if "accept-encoding" not in vary.lower():
                    meta.headers["vary"] = f"{vary}, Accept-Encoding" if vary else "Accept-Encoding"
                    meta._static = meta._head_200 = b""  # rebuilt with the Vary line
        return p if p is not _NOTHING else None

    def choose(self, key: str, obj: HotObject, plan: Plan, accept_encoding: str | None) -> Any:
        """The object to serve now (identity or a stored variant), or a Future to wait on."""
        meta = obj[0]
        if plan.rewrite and (key, meta.sha256) not in self._futile:
            return self._job(key, self._rewrite, key, meta, plan)
        if not plan.codings:
            return obj
        coding = negotiate(accept_encoding, plan.codings)
        if coding == "identity" or not meta.sha256:
            return obj
        vkey = variant_key(key, _FIELDS, {"accept-encoding": coding})
        if (vkey, meta.sha256) in self._futile:
            return obj
        v = self.w.lookup(vkey)
        if v is not None and v[0].headers.get("etag") == _source_tag(meta.sha256):
            return self._served_obj(vkey, coding, meta, v)
        return self._job(vkey, self._build, key, vkey, coding, meta)

    def _served_obj(self, vkey: str, coding: str, meta: ObjectMeta, v: HotObject) -> HotObject:
        """The variant as served: its bytes, the identity's headers and freshness, its own ETag."""
        cached = self._served.get(vkey)
        if cached is not None and cached[0] is meta and cached[1] is v[0]:
            return cached[2]
        raw = v[0]
        headers = dict(meta.headers)
        headers["content-encoding"] = coding
        served = ObjectMeta(
            size=raw.size,
            # Always the current identity's ETag + coding (the identity may have been refetched
            # with the same bytes and a new ETag since the variant was made).
            etag=suffixed_etag(meta.etag, coding),
            last_modified=meta.last_modified,
            content_type=meta.content_type,
            stored_at=meta.stored_at,
            tier=raw.tier,
            headers=headers,
            sha256=raw.sha256,
            freshness=meta.freshness,
            fresh_until=meta.fresh_until,
        )
        obj: HotObject = (served, v[1], v[2])
        if len(self._served) >= 4096:
            self._served.clear()
        self._served[vkey] = (meta, raw, obj)
        return obj

    # misses ----------------------------------------------------------------------------------

    def after_store(self, key: str, f: Fetch) -> None:
        """Start a fetched object's rewrite (minify, image) as soon as it is committed, in the
        background: the client that fetched it has its answer already."""
        meta = f.meta
        if meta is None or not f.stored or f in self._watched:
            return
        cls = classify(key.split("?", 1)[0])
        if not (
            (cls.minify_json and is_json(meta.content_type))
            or (cls.image is not None and imageopt.handles(meta.content_type))
        ):
            return
        self._watched.add(f)

        def committed() -> None:
            if f.meta is None or not f.meta.sha256 or not f.stored:
                return
            obj = self.w.lookup(key)
            if obj is None or obj[0].sha256 != f.meta.sha256:
                return
            p = self.plan(key, obj[0])
            if p is not None and p.rewrite and (key, obj[0].sha256) not in self._futile:
                self._job(key, self._rewrite, key, obj[0], p)

        _AfterCommit(f, committed).kick()

    def _wants_coding(self, key: str, f: Fetch, accept_encoding: str | None) -> bool:
        meta = f.meta
        if meta is None or not f.stored or f.failed is not None:
            return False
        p = self.plan(key, meta)
        return p is not None and bool(p.codings) and negotiate(accept_encoding, p.codings) != "identity"

    def defer(self, key: str, f: Fetch, accept_encoding: str | None, again: Callable[[], None]) -> bool:
        """A miss that wants gzip/br for a body being stored: True when ``again`` will be called
        once the commit is done (or the fetch failed), so the answer can be the stored variant."""
        meta = f.meta
        if meta is None or meta.sha256 or not 0 < meta.size <= WAIT_MAX or f in self._overdue:
            return False
        if not self._wants_coding(key, f, accept_encoding):
            return False
        waiter = _AfterCommit(f, again)

        def overdue() -> None:  # a commit that never reports must not hold the client forever
            if not waiter.called:
                log.warning("%s: commit not reported after %.0f s; answering identity", key, WAIT_SECONDS)
                self._overdue.add(f)
                waiter.fire()

        self.w.loop.call_later(WAIT_SECONDS, overdue)
        waiter.kick()
        return True

    def committed(self, key: str, f: Fetch, accept_encoding: str | None) -> HotObject | None:
        """The stored object ``f`` committed, when the request wants one of its codings."""
        meta = f.meta
        if meta is None or not meta.sha256 or not self._wants_coding(key, f, accept_encoding):
            return None
        obj = self.w.lookup(key)
        return obj if obj is not None and obj[0].sha256 == meta.sha256 else None

    # serving ---------------------------------------------------------------------------------

    def serve(
        self,
        h: Handler,
        conn: Conn,
        resp: Response,
        key: str,
        obj: HotObject,
        plan: Plan,
        hdrs: dict[bytes, str],
        accept_encoding: str | None,
        status: bytes,
        close_hdr: bytes,
        depth: int = 0,
    ) -> bool:
        """Answer with the negotiated representation of ``obj``; False leaves it to the caller
        (identity, nothing to wait for)."""
        got = self.choose(key, obj, plan, accept_encoding) if depth < 3 else obj
        if isinstance(got, asyncio.Future):
            held: FileHandle | None = obj[1].acquire() if obj[1] is not None else None

            def resume(_: asyncio.Future[Done]) -> None:
                try:
                    if conn.closed:
                        return
                    now = self.w.lookup(key)
                    cur = now if now is not None else obj  # purged meanwhile: the copy we hold
                    p = self.plan(key, cur[0])
                    if p is None or not self.serve(
                        h, conn, resp, key, cur, p, hdrs, accept_encoding, status, close_hdr, depth + 1
                    ):
                        resp.tier = cur[0].tier
                        h.render(resp, cur[0], hdrs, status, close_hdr, handle=cur[1], body=cur[2])
                    conn.kick()
                except Exception:  # never leave the client waiting
                    log.exception("serving %s after a compression job failed", key)
                    if not resp.complete:
                        err = h.error(500, "internal error", resp.method, resp.path)
                        resp.parts.extend(err.parts)
                        resp.status, resp.cache_status, resp.complete = 500, "error", True
                    conn.kick()
                finally:
                    if held is not None:
                        held.release()

            got.add_done_callback(resume)
            return True
        if got is obj:
            return False
        meta, handle, body = got
        resp.tier = meta.tier
        if not hdrs and body is not None:  # a whole variant from RAM, no conditions: the short path
            resp.status = 200
            resp.body_bytes = meta.size
            whole = None if resp.method == "HEAD" else body
            resp.parts.append(meta.whole_200(self.w.date.get(), status, close_hdr, whole))
            resp.complete = True
        else:
            h.render(resp, meta, hdrs, status, close_hdr, handle=handle, body=body)
        coding = meta.headers.get("content-encoding", "")
        st = self.w.stats.compress
        st[f"served:{coding}"] += 1
        if resp.method == "GET" and resp.status == 200:
            st[f"saved:{coding}"] += max(0, obj[0].size - meta.size)
        return True

    # background work -------------------------------------------------------------------------

    def _job(self, name: str, fn: Callable[..., Done], *args: Any) -> asyncio.Future[Done]:
        """One build per ``name`` in this worker; concurrent requests share it."""
        fut = self._jobs.get(name)
        if fut is None:
            fut = self.w.loop.run_in_executor(self.pool, fn, *args)
            self._jobs[name] = fut
            fut.add_done_callback(lambda f: self._done(name, f))
        return fut

    def _done(self, name: str, fut: asyncio.Future[Done]) -> None:
        """Counted here, on the loop: the pool threads never touch the stats."""
        self._jobs.pop(name, None)
        try:
            counts = fut.result()
        except Exception:
            log.exception("compression job %r failed", name)
            counts = {"error": 1}
        st = self.w.stats.compress
        for k, n in counts.items():
            st[k] += n

    def _read_identity(self, key: str, meta: ObjectMeta) -> tuple[Any, bytes] | None:
        """The stored identity, read and checked against the SHA-256 the request saw."""
        entry = self.w.store.lookup(key)
        if entry is None or entry.sha256 != meta.sha256 or entry.size > MAX_SIZE:
            return None
        with open(entry.path, "rb") as f:
            data = f.read(entry.size + 1)
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            log.error("integrity: %s does not match its SHA-256; not compressing it", key)
            return None
        return entry, data

    def _give_up(self, name: str, sha256: str) -> None:
        if len(self._futile) >= 65536:
            self._futile.clear()
        self._futile.add((name, sha256))

    def _locked(self, name: str, fn: Callable[[], Done]) -> Done:
        """Run ``fn`` holding the cross-worker lock for ``name``; "busy" if another worker does."""
        locks = self.w.locks
        if not locks.try_acquire(name):
            return {"busy": 1}
        try:
            return fn()
        finally:
            locks.release(name)

    def _build(self, key: str, vkey: str, coding: str, meta: ObjectMeta) -> Done:
        """Make and store one variant (in the compress pool)."""

        def build() -> Done:
            done = self.w.store.lookup(vkey)
            if done is not None and done.headers.get("etag") == _source_tag(meta.sha256):
                return {"built-elsewhere": 1}  # another worker just built it
            since = self.w.store.index.purge_seq()  # a purge after the read refuses the variant
            got = self._read_identity(key, meta)
            if got is None:
                return {"source-gone": 1}
            entry, data = got
            out = encode(data, coding)
            if len(out) >= len(data):
                self._give_up(vkey, meta.sha256)
                return {"no-gain": 1}
            writer = self.w.store.begin(vkey, len(out), entry.content_type, since)
            try:
                writer.write(out)
                writer.commit(
                    etag=suffixed_etag(entry.etag or meta.etag, coding),
                    last_modified=entry.last_modified,
                    headers={
                        "etag": _source_tag(meta.sha256),
                        "content-encoding": coding,
                        "vary": "Accept-Encoding",
                    },
                )
            finally:
                writer.abort()  # no-op after a commit
            return {f"built:{coding}": 1, f"stored-saved:{coding}": len(data) - len(out)}

        return self._locked(vkey, build)

    def _rewrite(self, key: str, meta: ObjectMeta, plan: Plan) -> Done:
        """Minify or optimise the stored identity in place (a new object under the same key)."""

        def rewrite() -> Done:
            since = self.w.store.index.purge_seq()  # a purge after the read refuses the rewrite
            got = self._read_identity(key, meta)
            if got is None:
                return {"source-gone": 1}
            entry, data = got
            ctype = entry.content_type
            if plan.rewrite == "minify":
                out = minify_json(data)
                kind, suffix = "json", "min"
            else:
                assert plan.image is not None
                kind, suffix = "image", "img"
                try:
                    res = imageopt.optimise(data, plan.image)
                except imageopt.ImageError as exc:
                    log.warning("%s: image left as stored: %s", key, exc)
                    self._give_up(key, meta.sha256)
                    return {"rewrite:image:corrupt": 1}
                out, ctype = res if res is not None else (None, ctype)
            if out is None:
                self._give_up(key, meta.sha256)
                return {f"rewrite:{kind}:unchanged": 1}
            writer = self.w.store.begin(key, len(out), ctype, since)
            try:
                writer.write(out)
                now = self.w.store.lookup(key)
                if now is None or now.sha256 != meta.sha256:
                    return {"source-gone": 1}  # refetched or purged meanwhile: theirs wins
                writer.commit(
                    etag=suffixed_etag(entry.etag or meta.etag, suffix),
                    last_modified=entry.last_modified,
                    headers=entry.headers,
                )
            finally:
                writer.abort()
            return {f"rewrite:{kind}:ok": 1}

        return self._locked(key, rewrite)


class _AfterCommit:
    """Calls back once a fetch's commit is done, it failed, or it will not be stored."""

    __slots__ = ("again", "called", "f")

    def __init__(self, f: Fetch, again: Callable[[], None]) -> None:
        self.f = f
        self.again = again
        self.called = False

    def fire(self) -> None:
        if not self.called:
            self.called = True
            self.again()

    def kick(self) -> None:
        f = self.f
        if self.called:
            return
        if f.failed is not None or not f.stored or (f.meta is not None and f.meta.sha256):
            self.fire()
        else:
            f.subscribe(self)  # each progress report takes the subscribers: ask again


def content_only(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A store snapshot without the variants stored under ``key NUL …`` (``vary.variant_key``):
    what the control plane's inventory is about (titles and their files), and what its database
    can hold (PostgreSQL text cannot contain NUL)."""
    return {k: v for k, v in snapshot.items() if "\x00" not in k}


def _source_tag(sha256: str) -> str:
    return f'"sha256:{sha256}"'


def metrics(s: dict[str, Any]) -> Any:
    """Prometheus families from the merged worker counters (``s["compress"]``)."""
    from prometheus_client.core import CounterMetricFamily

    c: dict[str, int] = s.get("compress", {})
    built = CounterMetricFamily(
        "cdnlab_compression_variants_built", "Compressed variants made and stored", labels=["coding"]
    )
    served = CounterMetricFamily(
        "cdnlab_compression_variants_served",
        "Responses answered with a compressed variant",
        labels=["coding"],
    )
    saved = CounterMetricFamily(
        "cdnlab_compression_bytes_saved",
        "Bytes not sent thanks to compression (identity size minus variant size, whole 200 answers)",
        labels=["coding"],
    )
    stored = CounterMetricFamily(
        "cdnlab_compression_stored_bytes_saved",
        "Identity size minus variant size, per variant stored",
        labels=["coding"],
    )
    for coding in ("br", "gzip"):
        built.add_metric([coding], c.get(f"built:{coding}", 0))
        served.add_metric([coding], c.get(f"served:{coding}", 0))
        saved.add_metric([coding], c.get(f"saved:{coding}", 0))
        stored.add_metric([coding], c.get(f"stored-saved:{coding}", 0))
    rewrites = CounterMetricFamily(
        "cdnlab_rewrites",
        "Stored objects rewritten (JSON minified, images optimised)",
        labels=["kind", "result"],
    )
    for kind, result in (
        ("json", "ok"),
        ("json", "unchanged"),
        ("image", "ok"),
        ("image", "unchanged"),
        ("image", "corrupt"),
    ):
        rewrites.add_metric([kind, result], c.get(f"rewrite:{kind}:{result}", 0))
    yield from (built, served, saved, stored, rewrites)
