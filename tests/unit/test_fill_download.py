"""``edge.fill.download`` against a small counting origin on loopback (aiohttp): resume with
Range/If-Range, restart when the source changed or ignores ranges, a source sending too much or
too little, and the token bucket's long-run rate."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from cdnlab.edge.fill import FillError, Partials, Source, TokenBucket, download
from cdnlab.fillplan import PlanObject

BODY = bytes(range(256)) * 1024  # 256 KiB


class Origin:
    def __init__(self) -> None:
        self.body = BODY
        self.etag = '"v1"'
        self.ranges = True
        self.requests: list[dict[str, str]] = []
        self.sent = 0
        self.cut_after: int | None = None  # drop the connection after this many body bytes
        self.chunked = False  # no Content-Length: the size is known only at the end

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.headers))
        body, status, headers = self.body, 200, {"ETag": self.etag}
        rng = request.headers.get("Range")
        if self.ranges and rng and request.headers.get("If-Range") == self.etag:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            body = self.body[start:]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(self.body) - 1}/{len(self.body)}"
        resp = web.StreamResponse(status=status, headers=headers)
        if not self.chunked:
            resp.content_length = len(body)
        await resp.prepare(request)
        if self.cut_after is not None:
            await resp.write(body[: self.cut_after])
            self.sent += self.cut_after
            request.transport.close()  # type: ignore[union-attr]
            return resp
        await resp.write(body)
        self.sent += len(body)
        return resp


def _obj(data: bytes = BODY) -> PlanObject:
    return PlanObject(key="/content/t/p/x.bin", size=len(data), sha256=hashlib.sha256(data).hexdigest())


async def _serve(origin: Origin):
    app = web.Application()
    app.router.add_get("/{tail:.*}", origin.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, Source("origin", f"http://127.0.0.1:{port}")


def _run(coro):
    return asyncio.run(coro)


def test_resume_fetches_only_the_rest(tmp_path: Path) -> None:
    async def go() -> None:
        origin = Origin()
        runner, src = await _serve(origin)
        parts = Partials(tmp_path)
        bucket = TokenBucket(0)
        try:
            async with aiohttp.ClientSession() as s:
                origin.cut_after = 100_000
                with pytest.raises(FillError):
                    await download(s, src, _obj(), parts, bucket, lambda n: None)
                part, _ = parts.paths(_obj().key)
                have = part.stat().st_size
                assert 0 < have <= 100_000
                origin.cut_after, origin.sent = None, 0
                await download(s, src, _obj(), parts, bucket, lambda n: None)
                assert origin.requests[-1]["Range"] == f"bytes={have}-"
                assert origin.requests[-1]["If-Range"] == '"v1"'
                assert origin.sent == len(BODY) - have
                assert part.read_bytes() == BODY
        finally:
            await runner.cleanup()

    _run(go())


@pytest.mark.parametrize("change", ["etag", "no-ranges"])
def test_changed_source_restarts_from_zero(tmp_path: Path, change: str) -> None:
    async def go() -> None:
        origin = Origin()
        runner, src = await _serve(origin)
        parts = Partials(tmp_path)
        try:
            async with aiohttp.ClientSession() as s:
                origin.cut_after = 50_000
                with pytest.raises(FillError):
                    await download(s, src, _obj(), parts, TokenBucket(0), lambda n: None)
                origin.cut_after, origin.sent = None, 0
                if change == "etag":
                    origin.etag = '"v2"'
                else:
                    origin.ranges = False
                await download(s, src, _obj(), parts, TokenBucket(0), lambda n: None)
                assert origin.sent == len(BODY)  # all of it again: the old prefix was not kept
                assert parts.paths(_obj().key)[0].read_bytes() == BODY
        finally:
            await runner.cleanup()

    _run(go())


def test_wrong_sizes(tmp_path: Path) -> None:
    async def go() -> None:
        origin = Origin()
        runner, src = await _serve(origin)
        parts = Partials(tmp_path)
        smaller = _obj(BODY[:1000])  # the plan names 1000 bytes, the source has 256 KiB
        try:
            async with aiohttp.ClientSession() as s:
                with pytest.raises(FillError, match="262144 bytes, the plan says 1000"):
                    await download(s, src, smaller, parts, TokenBucket(0), lambda n: None)
                origin.chunked = True  # found out only while reading: dropped, not kept
                with pytest.raises(FillError, match="more than the plan's 1000 bytes"):
                    await download(s, src, smaller, parts, TokenBucket(0), lambda n: None)
                assert list(parts.dir.iterdir()) == []
        finally:
            await runner.cleanup()

    _run(go())


def test_token_bucket_long_run_rate() -> None:
    async def go() -> float:
        bucket = TokenBucket(2_000_000)
        t0 = asyncio.get_running_loop().time()
        for _ in range(40):  # 40 × 64 KiB = 2.6 MB at 2 MB/s: about 1.2 s after the burst
            await bucket.take(65536)
        return asyncio.get_running_loop().time() - t0

    elapsed = _run(go())
    expected = (40 * 65536 - 200_000) / 2_000_000
    assert elapsed >= expected * 0.95
