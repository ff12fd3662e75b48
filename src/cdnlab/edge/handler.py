"""From a parsed request to a queued response: validation, signatures, hits, misses, ranges.

Order matters for safety: the method and request-target are checked first, then the URL signature,
and only then is storage consulted, so a forged or hostile request never touches the disks.
"""

from __future__ import annotations

import functools
import time
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from cdnlab import signing
from cdnlab.edge import ranges
from cdnlab.edge.compress import Compressor
from cdnlab.edge.conditional import evaluate_preconditions, if_range_allows
from cdnlab.edge.meta import ObjectMeta
from cdnlab.edge.output import FileHandle, FileSpan, GrowingSpan, Response
from cdnlab.edge.target import BadTarget, normalize_target

if TYPE_CHECKING:
    from cdnlab.edge.conn import Conn
    from cdnlab.edge.fetch import Fetch
    from cdnlab.edge.worker import Worker

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_WANTED = frozenset(
    {
        b"range",
        b"if-range",
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"authorization",
    }
)
_ALLOW = b"Allow: GET, HEAD\r\n"


def status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode()


_STATUS_LINES = {s: status_line(s) for s in (200, 206, 304, 400, 403, 404, 405, 412, 416, 502, 503, 504)}
_REPRESENTATION = (b"content-type:", b"content-encoding:", b"content-language:", b"content-disposition:")


def _strip_representation(head: bytes) -> bytes:
    """``head``'s lines minus those describing the object's representation, for an answer whose
    body is something else (a 416's text, a 412's nothing)."""
    return b"".join(
        line for line in head.splitlines(keepends=True) if not line.lower().startswith(_REPRESENTATION)
    )


class Handler:
    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.name = worker.config.cache_name
        self.hit_status = f"Cache-Status: {self.name}; hit\r\n".encode()
        self.swr_status = f"Cache-Status: {self.name}; hit; detail=stale-while-revalidate\r\n".encode()
        self.revalidated_status = f"Cache-Status: {self.name}; fwd=stale; fwd-status=304\r\n".encode()
        self.keys = dict(worker.config.signing.keys)
        self.require_signature = bool(self.keys) and worker.config.signing.required
        self.max_ranges = worker.config.limits.max_ranges
        self.fetch_cap = worker.config.limits.max_upstream_fetches
        # raw request-target -> (path, cache key): spares normalisation on repeated URLs.
        self.targets: dict[bytes, tuple[str, str]] = {}
        self.codec = Compressor(worker)  # gzip/br variants, JSON minify, images (docs/edge.md)

    # entry points ----------------------------------------------------------------------------

    def handle(
        self,
        conn: Conn,
        method_b: bytes,
        url: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        version: str,
        keep_alive: bool,
    ) -> Response:
        started = time.monotonic()
        if method_b == b"GET":
            method = "GET"
        elif method_b == b"HEAD":
            method = "HEAD"
        else:
            method = method_b.decode("latin-1")
            resp = self.error(
                405, f"method {method} is not allowed", method, url.decode("latin-1", "replace"), extra=_ALLOW
            )
            resp.close = not keep_alive
            return resp
        hdrs: dict[bytes, str] = {}
        ae: str | None = None  # Accept-Encoding, kept apart so plain requests keep the short path
        for name, value in raw_headers:
            lname = name.lower()
            if lname in _WANTED:
                hdrs[lname] = value.decode("latin-1")
            elif lname == b"accept-encoding":
                v = value.decode("latin-1")
                ae = v if ae is None else f"{ae}, {v}"
        cached = self.targets.get(url)
        if cached is None:
            try:
                path, query = normalize_target(url)
            except BadTarget as exc:
                return self.error(
                    exc.status, f"bad request-target: {exc.reason}", method, url.decode("latin-1", "replace")
                )
            if self.keys:
                verdict = self._check_signature(url, query)
                if verdict is not signing.Verdict.OK and (
                    self.require_signature or verdict is not signing.Verdict.MISSING
                ):
                    self.w.stats.signature_refused += 1
                    return self.error(403, f"signed URL refused: {verdict.value}", method, path)
            key = self.w.cache_key(path, query)
            if not self.keys and len(self.targets) < 65536:
                self.targets[url] = (path, key)
        else:
            path, key = cached
        resp = Response(method, path, started)
        resp.range = hdrs.get(b"range", "")
        close_hdr = b"" if keep_alive else b"Connection: close\r\n"
        if not keep_alive:
            resp.close = True
        elif version == "1.0":
            close_hdr = b"Connection: keep-alive\r\n"
        obj = self.w.lookup(key)
        if obj is not None:
            meta, handle, body = obj
            plan = self.codec.plan(key, meta)
            if meta.fresh_until <= time.time():
                if self.fetch_cap and self._capped(key, hdrs) and not self._swr(meta):
                    return self.refuse_fetch(method, path, keep_alive)
                self._stale(conn, resp, key, path, hdrs, close_hdr, url, obj, ae)
                return resp
            resp.cache_status = "hit"
            resp.tier = meta.tier
            if plan is not None and self.codec.serve(
                self, conn, resp, key, obj, plan, hdrs, ae, self.hit_status, close_hdr
            ):
                return resp
            if not hdrs and body is not None:
                # The common case, kept short: a whole small object from RAM, no conditions.
                resp.status = 200
                resp.body_bytes = meta.size
                resp.parts.append(
                    meta.whole_200(
                        self.w.date.get(), self.hit_status, close_hdr, None if method == "HEAD" else body
                    )
                )
                resp.complete = True
                return resp
            self.render(resp, meta, hdrs, self.hit_status, close_hdr, handle=handle, body=body)
            return resp
        if self.fetch_cap and self._capped(key, hdrs):
            return self.refuse_fetch(method, path, keep_alive)
        self._miss(conn, resp, key, path, hdrs, close_hdr, url, ae=ae)
        return resp

    def _capped(self, key: str, hdrs: dict[bytes, str]) -> bool:
        """True when this request would start a fetch and the worker already runs its cap of them
        (a request that joins a fetch under way costs the origin nothing and is let through)."""
        w = self.w
        joins = b"authorization" not in hdrs and key in w.fetches
        return not joins and w.fetches_running >= self.fetch_cap

    @staticmethod
    def _swr(meta: ObjectMeta) -> bool:
        fr = meta.freshness
        return fr is not None and fr.can_serve_stale_while_revalidate(time.time())

    def refuse_fetch(self, method: str, path: str, keep_alive: bool) -> Response:
        self.w.stats.refused["upstream"] += 1
        retry = self.w.limiter.retry_after
        resp = self.error(503, "upstream fetch capacity reached", method, path, extra=retry)
        resp.close = not keep_alive
        return resp

    def _stale(self, conn, resp, key, path, hdrs, close_hdr, url, obj, ae=None) -> None:  # type: ignore[no-untyped-def]
        """A stored object past its freshness: serve it while revalidating in the background where
        the origin allows (stale-while-revalidate), else revalidate first."""
        meta, handle, body = obj
        fr = meta.freshness
        if fr is not None and fr.can_serve_stale_while_revalidate(time.time()):
            # Revalidate in the background, collapsed; at the fetch cap serve it unrevalidated.
            if not (self.fetch_cap and self._capped(key, hdrs)):
                self.w.fetch(key, key, stale=meta)
            resp.cache_status = "stale"
            resp.tier = meta.tier
            plan = self.codec.plan(key, meta)
            if plan is None or not self.codec.serve(
                self, conn, resp, key, obj, plan, hdrs, ae, self.swr_status, close_hdr
            ):
                self.render(resp, meta, hdrs, self.swr_status, close_hdr, handle=handle, body=body)
            return
        self._miss(conn, resp, key, path, hdrs, close_hdr, url, stale=obj, ae=ae)

    def error(self, status: int, message: str, method: str, path: str, extra: bytes = b"") -> Response:
        resp = Response(method, path, time.monotonic())
        body = f"{status} {_REASONS.get(status, '')}: {message}\n".encode()
        head = b"".join(
            (
                _STATUS_LINES.get(status) or status_line(status),
                b"Server: cdnlab\r\nDate: ",
                self.w.date.get(),
                b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ",
                str(len(body)).encode(),
                b"\r\nCache-Control: no-store\r\n",
                f"Cache-Status: {self.name}; detail={_detail(status)}\r\n".encode(),
                extra,
                b"Connection: close\r\n\r\n" if status in (400, 408, 414, 431, 505) else b"\r\n",
            )
        )
        resp.parts.append(head if method == "HEAD" else head + body)
        resp.status = status
        resp.cache_status = "error"
        resp.complete = True
        if status in (400, 408, 414, 431):
            resp.close = True
        return resp

    # signatures ------------------------------------------------------------------------------

    def _check_signature(self, url: bytes, query: str) -> signing.Verdict:
        raw_path = url.split(b"?", 1)[0].decode("latin-1")
        if raw_path.startswith(("http://", "https://")):
            raw_path = "/" + raw_path.split("/", 3)[-1] if raw_path.count("/") >= 3 else "/"
        params = dict(parse_qsl(query, keep_blank_values=True))
        return signing.verify(raw_path, params, self.keys)

    # rendering -------------------------------------------------------------------------------

    def render(
        self,
        resp: Response,
        meta: ObjectMeta,
        hdrs: dict[bytes, str],
        cache_status: bytes,
        close_hdr: bytes,
        *,
        handle: FileHandle | None = None,
        body: bytes | None = None,
        source: Fetch | None = None,
    ) -> None:
        """Queue the answer for ``meta``: 304/412, 416, 206 (single or multipart) or 200."""
        w = self.w
        size = meta.size
        common = b"".join(
            (
                b"Server: cdnlab\r\nDate: ",
                w.date.get(),
                b"\r\n",
                meta.static_headers,
                b"Age: %d\r\n" % max(0, int(time.time() - meta.stored_at))
                if meta.tier != "upstream"
                else b"",
                cache_status,
                close_hdr,
            )
        )
        if hdrs:
            pre = evaluate_preconditions(
                resp.method,
                hdrs.get(b"if-match"),
                hdrs.get(b"if-none-match"),
                hdrs.get(b"if-modified-since"),
                hdrs.get(b"if-unmodified-since"),
                meta.etag,
                meta.last_modified,
            )
            if pre is not None:
                resp.status = pre
                if pre == 304:
                    resp.parts.append(b"".join((_STATUS_LINES[304], common, b"\r\n")))
                else:
                    # An empty 412 is not the object: its Content-Type etc. would describe nothing.
                    head = _strip_representation(common)
                    resp.parts.append(b"".join((_STATUS_LINES[412], head, b"Content-Length: 0\r\n\r\n")))
                resp.complete = True
                return
            range_h = hdrs.get(b"range") if resp.method == "GET" else None  # RFC 9110 §14.2
            if range_h is not None and (
                b"if-range" not in hdrs or if_range_allows(hdrs[b"if-range"], meta.etag, meta.last_modified)
            ):
                decision = ranges.parse_range(range_h, size, self.max_ranges)
                if decision.status == "unsatisfiable":
                    resp.status = 416
                    msg = b"416 Range Not Satisfiable\n"
                    resp.parts.append(
                        b"".join(
                            (
                                _STATUS_LINES[416],
                                # The body is this text, not the object: none of the object's
                                # representation headers (Content-Type, -Encoding, ...) apply.
                                _strip_representation(common),
                                b"Content-Range: bytes */%d\r\n" % size,
                                b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(msg),
                                b"" if resp.method == "HEAD" else msg,
                            )
                        )
                    )
                    resp.complete = True
                    return
                if decision.status == "partial":
                    self._partial(resp, meta, decision.ranges, common, handle, body, source)
                    return
        resp.status = 200
        head = b"".join((_STATUS_LINES[200], common, b"Content-Length: %d\r\n\r\n" % size))
        self._body(resp, head, 0, size, handle, body, source)

    def _partial(self, resp, meta, rngs, common, handle, body, source) -> None:  # type: ignore[no-untyped-def]
        resp.status = 206
        size = meta.size
        if len(rngs) == 1:
            r = rngs[0]
            head = b"".join(
                (
                    _STATUS_LINES[206],
                    common,
                    f"Content-Range: {ranges.content_range(r, size)}\r\n".encode(),
                    b"Content-Length: %d\r\n\r\n" % r.length,
                )
            )
            self._body(resp, head, r.start, r.end + 1, handle, body, source)
            return
        boundary = ranges.new_boundary()
        part_heads, closing, total = ranges.multipart_layout(rngs, size, meta.content_type, boundary)
        common = common.replace(
            f"Content-Type: {meta.content_type}\r\n".encode("latin-1", "replace"),
            f"Content-Type: multipart/byteranges; boundary={boundary}\r\n".encode(),
            1,
        )
        resp.parts.append(b"".join((_STATUS_LINES[206], common, b"Content-Length: %d\r\n\r\n" % total)))
        if resp.method != "HEAD":
            for phead, r in part_heads:
                resp.parts.append(phead)
                self._span(resp, r.start, r.end + 1, handle, body, source)
            resp.parts.append(closing)
        resp.body_bytes = total
        resp.complete = True

    def _body(self, resp, head, start, end, handle, body, source) -> None:  # type: ignore[no-untyped-def]
        resp.body_bytes = end - start
        if resp.method == "HEAD":
            resp.parts.append(head)
        elif body is not None:
            resp.parts.append(head + body[start:end] if (start or end != len(body)) else head + body)
        else:
            resp.parts.append(head)
            self._span(resp, start, end, handle, body, source)
        resp.complete = True

    @staticmethod
    def _span(resp, start, end, handle, body, source) -> None:  # type: ignore[no-untyped-def]
        if end <= start:
            return
        if body is not None:
            resp.parts.append(body[start:end])
        elif source is not None:
            resp.parts.append(GrowingSpan(source, start, end))
        else:
            resp.parts.append(FileSpan(handle, start, end))

    # misses ----------------------------------------------------------------------------------

    def _miss(self, conn, resp, key, path, hdrs, close_hdr, url, stale=None, ae=None) -> None:  # type: ignore[no-untyped-def]
        """Go upstream for ``key``; with ``stale`` (a stored object past its freshness) revalidate it."""
        w = self.w
        fetch = w.fetch(
            key,
            key,  # the upstream is asked for exactly what the key holds (see docs/edge.md, poisoning)
            stale=stale[0] if stale is not None else None,
            authorization=hdrs.get(b"authorization"),
        )
        # RFC 9211 "collapsed": this request rides on a fetch another request started.
        collapsed = "; collapsed" if fetch.attached else ""
        # Joining a fetch whose body has all arrived (its commit still under way) forwards nothing:
        # for this request it is a hit, served from the bytes already here.
        arrived = fetch.complete
        fetch.attached += 1
        fwd = "stale" if stale is not None else "miss"

        # A bound method and its arguments, not a closure: a closure that re-arms itself (the
        # deferred compression answer) refers to itself, and each miss left a reference cycle
        # (the closure, its cells and the Response) for the cyclic GC to find.
        args = (conn, resp, key, path, hdrs, close_hdr, url, stale, ae, arrived, collapsed, fwd)
        fetch.when_ready(functools.partial(self._ready, args))

    def _ready(self, args: tuple, f: Fetch) -> None:
        """``_miss``'s fetch is ready: answer its ``resp`` from it (``args``: what ``_miss`` knew)."""
        conn, resp, key, path, hdrs, close_hdr, url, stale, ae, arrived, collapsed, fwd = args
        if conn.closed:
            return
        w = self.w
        if f.outcome == "stream":
            assert f.meta is not None
            self.codec.plan(key, f.meta)  # streamed identity: Vary as on later hits
            self.codec.after_store(key, f)  # JSON minify, images: once it is committed
            if self.codec.defer(key, f, ae, functools.partial(self._ready, args, f)):
                return  # wants gzip/br: answered from the store once the commit is done
        if f.outcome == "stream" and arrived and f.stored:
            assert f.meta is not None
            resp.cache_status = "hit"
            resp.tier = "upstream"
            self._fetched(conn, resp, key, f, hdrs, ae, self.hit_status, close_hdr)
        elif f.outcome == "stream":
            assert f.meta is not None
            stored = "; stored" if f.stored else ""
            prefix = f"{f.upstream_status}, " if f.upstream_status else ""
            status = f"Cache-Status: {prefix}{self.name}; fwd={fwd}{stored}{collapsed}\r\n".encode()
            resp.cache_status = "miss"
            resp.tier = "upstream"
            self._fetched(conn, resp, key, f, hdrs, ae, status, close_hdr)
        elif f.outcome == "stored":
            obj = w.lookup(key)
            if obj is None:  # purged, evicted or its disk failed in the blink between: go round
                if w.fetches.get(key) is f:  # again with a new fetch (this one is done; joining
                    del w.fetches[key]  # it would call back at once, forever)
                self._miss(conn, resp, key, path, hdrs, close_hdr, url, ae=ae)
                return
            meta, handle, body = obj
            if f.revalidated:
                status, resp.cache_status = self.revalidated_status, "revalidated"
            else:
                status, resp.cache_status = self.hit_status, "hit"
            plan = self.codec.plan(key, meta)
            if plan is None or not self.codec.serve(
                self, conn, resp, key, obj, plan, hdrs, ae, status, close_hdr
            ):
                self.render(resp, meta, hdrs, status, close_hdr, handle=handle, body=body)
                resp.tier = meta.tier
        elif stale is not None and self._may_serve_stale(f, stale[0]):
            meta, handle, body = stale
            code = f"; fwd-status={f.relay[0]}" if f.relay is not None else ""
            status = f"Cache-Status: {self.name}; fwd=stale{code}; detail=stale-if-error\r\n".encode()
            self.render(resp, meta, hdrs, status, close_hdr, handle=handle, body=body)
            resp.cache_status = "stale"
            resp.tier = meta.tier
        elif f.outcome == "relay":
            assert f.relay is not None
            self._relay(resp, f, close_hdr)
        else:
            assert f.error is not None
            err = self.error(f.error.status, f.error.message, resp.method, path)
            resp.parts.extend(err.parts)
            resp.status = err.status
            resp.cache_status = "error"
            resp.complete = True
        conn.kick()

    def _fetched(self, conn, resp, key, f, hdrs, ae, status, close_hdr) -> None:  # type: ignore[no-untyped-def]
        """A fetched body: its negotiated variant once stored (see compress.defer), else as it streams."""
        obj = self.codec.committed(key, f, ae)
        if obj is not None:
            plan = self.codec.plan(key, obj[0])
            if plan is not None and self.codec.serve(
                self, conn, resp, key, obj, plan, hdrs, ae, status, close_hdr
            ):
                return
        self.render(resp, f.meta, hdrs, status, close_hdr, source=f)

    @staticmethod
    def _may_serve_stale(f: Fetch, meta: ObjectMeta) -> bool:
        """RFC 9111 §4.2.4 and RFC 5861: a stale copy may answer for a failed upstream when the
        origin allows it (stale-if-error), or when we are disconnected from it and nothing forbids
        it (must-revalidate, no-cache, s-maxage). A 4xx answer is news, not a failure."""
        fr = meta.freshness
        if fr is None:
            return False
        if f.outcome == "relay":
            return f.relay is not None and f.relay[0] >= 500 and fr.can_serve_stale_on_error(time.time())
        if f.outcome == "error":
            return fr.can_serve_stale_on_error(time.time()) or not (fr.must_revalidate or fr.no_cache)
        return False

    def _relay(self, resp: Response, f: Fetch, close_hdr: bytes) -> None:
        assert f.relay is not None
        status, headers, body = f.relay
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers)
        prefix = f"{f.upstream_status}, " if f.upstream_status else ""
        head = b"".join(
            (
                _STATUS_LINES.get(status) or status_line(status),
                b"Server: cdnlab\r\nDate: ",
                self.w.date.get(),
                b"\r\n",
                lines.encode("latin-1", "replace"),
                f"Cache-Status: {prefix}{self.name}; fwd=miss; fwd-status={status}\r\n".encode(),
                close_hdr,
                b"Content-Length: %d\r\n\r\n" % len(body),
            )
        )
        resp.parts.append(head if resp.method == "HEAD" else head + body)
        resp.status = status
        resp.cache_status = "miss"
        resp.tier = "upstream"
        resp.body_bytes = len(body)
        resp.complete = True


def _detail(status: int) -> str:
    return {
        400: "bad-request",
        403: "forbidden",
        405: "method",
        412: "precondition",
        414: "uri-too-long",
        429: "rate-limited",
        431: "headers-too-large",
        502: "upstream-error",
        503: "unavailable",
        504: "upstream-timeout",
    }.get(status, "error")
