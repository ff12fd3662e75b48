"""The player's endpoint selection (seed 003 OCASelector/CDNSelector), failover, buffer and ABR,
against fake steering and fake endpoints on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from cdnlab.client.player import Options, Player

SEGMENTS = 8


class FakeCDN:
    """One fake endpoint: serves any segment after ``delay`` seconds, or fails."""

    def __init__(self, name: str, delay: float = 0.0, size: int = 20_000) -> None:
        self.name, self.delay, self.size = name, delay, size
        self.dead = False
        self.fail_after: int | None = None  # GETs served before it starts failing
        self.gets = 0
        self.url = ""

    async def handle(self, req: web.Request) -> web.StreamResponse:
        if self.dead or (
            self.fail_after is not None and self.gets >= self.fail_after and req.method == "GET"
        ):
            raise web.HTTPServiceUnavailable()
        await asyncio.sleep(self.delay)
        if req.method == "GET":
            self.gets += 1
        return web.Response(body=b"x" * self.size if req.method == "GET" else b"", content_type="video/mp4")


async def _serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


def _manifest(cdns: list[FakeCDN], cloudfront: FakeCDN | None) -> dict:
    eps = [{"url": c.url, "kind": "oca", "appliance_id": c.name, "site": "s", "score": 90.0} for c in cdns]
    if cloudfront is not None:
        eps.append({"url": cloudfront.url, "kind": "cloudfront", "appliance_id": None})
    tracks = []
    for profile, bw in (("low", 200_000), ("high", 2_000_000)):
        base = f"/content/t1/{profile}/"
        tracks.append(
            {
                "profile": profile,
                "bandwidth": bw,
                "segment_duration": 1.0,
                "cdn_urls": [e["url"] + base for e in eps],
                "segments": [
                    f"seg-{n:05d}.m4s?exp=9999999999&kid=k1&sig={'0' * 64}" for n in range(1, SEGMENTS + 1)
                ],
            }
        )
    return {
        "title": "t1",
        "expires_at": 9999999999,
        "client": {"address": "127.0.0.1", "site": "s", "matched_by": "default", "prefix": None},
        "endpoints": eps,
        "video_tracks": tracks,
    }


async def _play(cdns: list[FakeCDN], cloudfront: FakeCDN | None, opts: Options) -> Player:
    runners = []
    for c in [*cdns, *([cloudfront] if cloudfront else [])]:
        r, c.url = await _serve(c.handle)
        runners.append(r)

    async def steer(_req: web.Request) -> web.Response:
        return web.json_response(_manifest(cdns, cloudfront))

    r, control = await _serve(steer)
    runners.append(r)
    player = Player(control, "t1", opts)
    try:
        await player.run()
    finally:
        for r in runners:
            await r.cleanup()
    return player


def test_fastest_appliance_under_50ms_wins() -> None:
    a, b, cf = FakeCDN("a", delay=0.03), FakeCDN("b", delay=0.0), FakeCDN("cf")
    p = asyncio.run(_play([a, b], cf, Options(speed=50, tie_ms=5)))
    assert p.qoe.completed and p.qoe.endpoints_used == ["b"] and p.qoe.failovers == 0
    assert p.qoe.bytes_per_endpoint == {"b": SEGMENTS * 20_000}


def test_ties_go_to_steering_rank() -> None:
    a, b = FakeCDN("a"), FakeCDN("b")
    p = asyncio.run(_play([a, b], None, Options(speed=50, tie_ms=1000)))
    assert p.qoe.endpoints_used == ["a"]


def test_slow_appliances_fall_back_to_the_next_tier() -> None:
    a, cf = FakeCDN("a", delay=0.08), FakeCDN("cf")
    p = asyncio.run(_play([a], cf, Options(speed=50)))
    assert p.qoe.completed and p.qoe.endpoints_used == [cf.url]
    # …unless the next tier does not answer: then the slow appliance is still better than nothing.
    a, cf = FakeCDN("a", delay=0.08), FakeCDN("cf")
    cf.dead = True
    p = asyncio.run(_play([a], cf, Options(speed=50)))
    assert p.qoe.completed and p.qoe.endpoints_used == ["a"]


def test_failover_keeps_playing_and_skips_the_failed_url() -> None:
    a, b = FakeCDN("a"), FakeCDN("b")
    a.fail_after = 3
    p = asyncio.run(_play([a, b], None, Options(speed=20, tie_ms=1000)))
    q = p.qoe
    assert q.completed and q.segments_played == SEGMENTS
    assert q.endpoints_used == ["a", "b"] and q.failovers == 1
    assert q.bytes_per_endpoint["a"] == 3 * 20_000 and a.url in p.failed


def test_abr_climbs_with_throughput_and_reports_qoe() -> None:
    a = FakeCDN("a", size=50_000)
    p = asyncio.run(_play([a], None, Options(speed=10)))
    q = p.qoe
    assert q.profiles.get("low", 0) >= 1 and q.profiles.get("high", 0) >= 1  # starts low, climbs on loopback
    assert 200_000 < q.avg_bitrate_bps <= 2_000_000
    assert q.startup_time_s is not None and q.startup_time_s < 1 and q.rebuffer_count == 0


def test_rebuffer_counted_when_downloads_are_slower_than_playback() -> None:
    a = FakeCDN("a", delay=0.15)
    p = asyncio.run(_play([a], None, Options(speed=20, fast_ms=1000, buffer_low=0, buffer_high=1)))
    assert p.qoe.completed and p.qoe.rebuffer_count >= 1 and p.qoe.rebuffer_time_s > 0
