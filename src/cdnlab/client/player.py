"""The reference player: fetch the steering manifest, pick an endpoint, play with ABR, fail over.

* Endpoint selection follows seed 003 ``OCASelector``/``CDNSelector``: HEAD every candidate of a
  tier in parallel (2 s timeout); take the fastest appliance if it answered under 50 ms, else try
  the next tier (CloudFront); if that fails too, the fastest appliance that answered at all.
  Answers within ``tie_ms`` (10 ms) of the fastest count as a tie, broken by steering's order.
* Sticky: the chosen endpoint stays until a request to it fails. A failed URL is skipped for
  5 minutes (``markCDNFailed``); the segment is retried elsewhere, playback goes on from the
  buffer. With every endpoint failed the manifest is fetched again (steering has moved on).
* Buffer: fetch until 5 segments are ahead of the playhead, resume below 3.
* ABR: the highest track whose bandwidth fits 80 % of the measured throughput (EWMA), the lowest
  when the buffer is nearly empty.
* Playback is simulated on the wall clock (``speed`` > 1 plays faster, for tests and labs).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from cdnlab.manifest import Endpoint, SteeringManifest, VideoTrack


class PlaybackError(RuntimeError):
    pass


@dataclass
class QoE:
    title: str
    startup_time_s: float | None = None
    rebuffer_count: int = 0
    rebuffer_time_s: float = 0.0
    avg_bitrate_bps: float = 0.0
    segments_played: int = 0
    segments_total: int = 0
    bytes_per_endpoint: dict[str, int] = field(default_factory=dict)
    failovers: int = 0
    manifest_fetches: int = 0
    errors: list[str] = field(default_factory=list)
    endpoints_used: list[str] = field(default_factory=list)
    profiles: dict[str, int] = field(default_factory=dict)
    completed: bool = False
    wall_time_s: float = 0.0
    client_site: str | None = None

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Options:
    probe_timeout: float = 2.0
    fast_ms: float = 50.0
    tie_ms: float = 10.0
    buffer_low: int = 3
    buffer_high: int = 5
    fail_ttl: float = 300.0
    safety: float = 0.8
    segment_timeout: float = 10.0
    speed: float = 1.0
    max_segments: int | None = None
    profile: str | None = None  # pin one profile (no ABR)
    give_up_after: float = 30.0  # with no endpoint at all, stop after this long


class Player:
    def __init__(
        self,
        control_url: str,
        title: str,
        opts: Options | None = None,
        *,
        source_address: str | None = None,
        forwarded_for: str | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.control_url = control_url.rstrip("/")
        self.title = title
        self.opts = opts or Options()
        self.source_address = source_address
        self.forwarded_for = forwarded_for
        self.on_event = on_event or (lambda msg: None)
        self.failed: dict[str, float] = {}  # endpoint URL → retry after (monotonic)
        self.current: Endpoint | None = None
        self.manifest: SteeringManifest | None = None
        self.qoe = QoE(title=title)
        self._throughput: float | None = None  # bits/s, EWMA
        self._session = None

    # -- HTTP ----------------------------------------------------------------------------------

    async def _open(self) -> None:
        import aiohttp

        local = (self.source_address, 0) if self.source_address else None
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=local, limit=32, force_close=False),
            auto_decompress=False,
        )

    async def fetch_manifest(self) -> SteeringManifest:
        import aiohttp

        url = f"{self.control_url}/v1/steer?title={quote(self.title)}"
        if self.opts.profile:
            url += f"&profile={quote(self.opts.profile)}"
        headers = {"X-Forwarded-For": self.forwarded_for} if self.forwarded_for else {}
        self.qoe.manifest_fetches += 1
        async with self._session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as resp:  # type: ignore[union-attr]
            body = await resp.read()
            if resp.status != 200:
                raise PlaybackError(f"steering answered {resp.status}: {body[:200]!r}")
        m = SteeringManifest.model_validate_json(body)
        if not m.video_tracks or not any(t.segments for t in m.video_tracks):
            raise PlaybackError("manifest has no segments")
        self.manifest = m
        self.qoe.client_site = m.client.site
        self.on_event(f"manifest: {len(m.endpoints)} endpoints, site {m.client.site}")
        return m

    def _track_for(self, ahead: int) -> VideoTrack:
        assert self.manifest is not None
        tracks = sorted(self.manifest.video_tracks, key=lambda t: t.bandwidth)
        if ahead < 1 or self._throughput is None:
            return tracks[0]
        fit = [t for t in tracks if t.bandwidth <= self.opts.safety * self._throughput]
        return fit[-1] if fit else tracks[0]

    def _url(self, track: VideoTrack, endpoint: Endpoint, index: int) -> str:
        assert self.manifest is not None
        i = next(i for i, e in enumerate(self.manifest.endpoints) if e.url == endpoint.url)
        return track.cdn_urls[i] + track.segments[index]

    async def _probe(self, endpoint: Endpoint) -> float:
        """Latency of a HEAD for the first segment, in ms; inf when it fails."""
        import aiohttp

        assert self.manifest is not None
        track = min(self.manifest.video_tracks, key=lambda t: t.bandwidth)
        t0 = time.perf_counter()
        try:
            async with self._session.head(  # type: ignore[union-attr]
                self._url(track, endpoint, 0), timeout=aiohttp.ClientTimeout(total=self.opts.probe_timeout)
            ) as resp:
                if resp.status not in (200, 206, 304):
                    return float("inf")
        except Exception:
            return float("inf")
        return (time.perf_counter() - t0) * 1000

    def _usable(self) -> list[Endpoint]:
        now = time.monotonic()
        assert self.manifest is not None
        return [e for e in self.manifest.endpoints if self.failed.get(e.url, 0) <= now]

    async def select(self) -> Endpoint:
        """Seed 003 OCASelector: fastest OCA under 50 ms, else the next tier, else any that works."""
        usable = self._usable()
        tiers = [[e for e in usable if e.kind == "oca"], [e for e in usable if e.kind != "oca"]]
        answered: list[tuple[float, Endpoint]] = []
        for tier in tiers:
            if not tier:
                continue
            lat = await asyncio.gather(*(self._probe(e) for e in tier))
            ranked = sorted(zip(lat, range(len(tier)), tier, strict=True))
            for ms, _, e in ranked:
                if ms == float("inf"):
                    self._mark_failed(e, "probe failed")
            ok = [(ms, e) for ms, _, e in ranked if ms != float("inf")]
            answered += ok
            if ok and ok[0][0] < self.opts.fast_ms:
                # Answers within tie_ms of the fastest are equally fast (measurement noise, a
                # cold cache's first HEAD): then steering's order, which knows load and which
                # appliance the title hashes to, decides.
                order = {e.url: i for i, e in enumerate(tier)}
                close = [e for ms, e in ok if ms < self.opts.fast_ms and ms - ok[0][0] <= self.opts.tie_ms]
                return min(close, key=lambda e: order[e.url])
        if answered:
            return min(answered, key=lambda x: x[0])[1]
        raise PlaybackError("no endpoint answered")

    def _mark_failed(self, e: Endpoint, why: str) -> None:
        self.failed[e.url] = time.monotonic() + self.opts.fail_ttl
        self.on_event(
            f"endpoint {e.appliance_id or e.url} failed ({why}); skipped for {self.opts.fail_ttl:g}s"
        )

    async def _choose(self) -> Endpoint:
        """Select among what is left; with nothing left ask steering again (bounded)."""
        deadline = time.monotonic() + self.opts.give_up_after
        while True:
            try:
                e = await self.select()
                if self.current is None or e.url != self.current.url:
                    self.qoe.endpoints_used.append(e.appliance_id or e.url)
                    self.on_event(f"using {e.kind} {e.appliance_id or e.url}")
                self.current = e
                return e
            except PlaybackError:
                if time.monotonic() > deadline:
                    raise
            with contextlib.suppress(Exception):
                await self.fetch_manifest()
            await asyncio.sleep(0.2)

    async def _fetch(self, url: str) -> int:
        import aiohttp

        n = 0
        async with self._session.get(  # type: ignore[union-attr]
            url, timeout=aiohttp.ClientTimeout(total=self.opts.segment_timeout)
        ) as resp:
            if resp.status != 200:
                raise PlaybackError(f"HTTP {resp.status}")
            async for chunk in resp.content.iter_chunked(1 << 16):
                n += len(chunk)
            if resp.content_length is not None and n != resp.content_length:
                raise PlaybackError(f"short body {n}/{resp.content_length}")
        return n

    # -- playback ------------------------------------------------------------------------------

    async def run(self) -> QoE:
        t0 = time.monotonic()
        await self._open()
        try:
            await self.fetch_manifest()
            await self._play(t0)
        finally:
            self.qoe.wall_time_s = round(time.monotonic() - t0, 3)
            if self._session is not None:
                await self._session.close()
        return self.qoe

    async def _play(self, t0: float) -> None:
        assert self.manifest is not None
        total = min(len(t.segments) for t in self.manifest.video_tracks)
        if self.opts.max_segments is not None:
            total = min(total, self.opts.max_segments)
        self.qoe.segments_total = total
        buffer: asyncio.Queue[float] = asyncio.Queue()  # durations of downloaded segments
        bitrates: list[int] = []
        done_downloading = asyncio.Event()
        fatal: list[BaseException] = []
        state = {"ahead": 0}
        drained = asyncio.Event()  # set when the buffer falls to the low mark

        async def downloader() -> None:
            try:
                await self._choose()
                for index in range(total):
                    if state["ahead"] >= self.opts.buffer_high:
                        drained.clear()
                        await drained.wait()
                    track = (
                        self._track_for(state["ahead"])
                        if not self.opts.profile
                        else self.manifest.video_tracks[0]
                    )
                    while True:
                        e = self.current or await self._choose()
                        url = self._url(track, e, index)
                        started = time.perf_counter()
                        try:
                            n = await self._fetch(url)
                        except Exception as exc:
                            self.qoe.errors.append(
                                f"segment {index} from {e.appliance_id or e.url}: {exc}"[:200]
                            )
                            self._mark_failed(e, str(exc)[:80] or type(exc).__name__)
                            self.qoe.failovers += 1
                            self.current = None
                            await self._choose()
                            track = self._track_for(state["ahead"]) if not self.opts.profile else track
                            continue
                        took = max(time.perf_counter() - started, 1e-6)
                        bps = n * 8 / took
                        self._throughput = (
                            bps if self._throughput is None else 0.7 * self._throughput + 0.3 * bps
                        )
                        key = e.appliance_id or e.url
                        self.qoe.bytes_per_endpoint[key] = self.qoe.bytes_per_endpoint.get(key, 0) + n
                        self.qoe.profiles[track.profile] = self.qoe.profiles.get(track.profile, 0) + 1
                        bitrates.append(track.bandwidth)
                        break
                    state["ahead"] += 1
                    buffer.put_nowait(track.segment_duration)
            except BaseException as exc:
                fatal.append(exc)
                raise
            finally:
                done_downloading.set()

        async def playhead() -> None:
            played = 0
            while played < total:
                if buffer.empty():
                    if done_downloading.is_set():
                        return
                    stall_start = time.monotonic()
                    if self.qoe.startup_time_s is not None:
                        self.qoe.rebuffer_count += 1
                        self.on_event(f"rebuffering before segment {played}")
                    getter = asyncio.ensure_future(buffer.get())
                    stopper = asyncio.ensure_future(done_downloading.wait())
                    await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    stopper.cancel()
                    if not getter.done():
                        getter.cancel()
                        return
                    duration = getter.result()
                    if self.qoe.startup_time_s is not None:
                        self.qoe.rebuffer_time_s += time.monotonic() - stall_start
                else:
                    duration = buffer.get_nowait()
                if self.qoe.startup_time_s is None:
                    self.qoe.startup_time_s = round(time.monotonic() - t0, 4)
                state["ahead"] -= 1
                if state["ahead"] <= self.opts.buffer_low:
                    drained.set()
                await asyncio.sleep(duration / self.opts.speed)
                played += 1
                self.qoe.segments_played = played

        dl = asyncio.create_task(downloader())
        try:
            await playhead()
        finally:
            if not dl.done():
                dl.cancel()
            with contextlib.suppress(BaseException):
                await dl
        self.qoe.rebuffer_time_s = round(self.qoe.rebuffer_time_s, 4)
        self.qoe.avg_bitrate_bps = round(sum(bitrates) / len(bitrates), 1) if bitrates else 0.0
        self.qoe.completed = self.qoe.segments_played == total
        if fatal and not self.qoe.completed:
            self.qoe.errors.append(f"stopped: {fatal[0]}")
