"""Seeded synthetic workloads: a CDN video family and a scan / one-hit-wonder family.

``cdn_workload`` models what an Open Connect appliance sees (seed 003, "Storage Tiers on OCA"):

* a catalog of titles with Zipf popularity (``zipf_alpha``), each title a run of video segments
  in several bitrate profiles (the ladder below: segment bytes = bitrate x duration, +-30% VBR),
  plus a few artwork images per title (small objects, 20-300 KB);
* viewing sessions: a client picks a title by popularity, one profile, starts at the beginning
  (or resumes part-way), and requests consecutive segments until it stops (geometric watch
  length), after browsing a few artwork images of titles picked by the same popularity;
* daily releases: ``releases_per_day`` new titles go live each morning with a popularity boost
  that halves every ``decay_days``, settling at their long-term catalog rank;
* a regional mix: clients come from several regions (``region_shares``), each ranking part
  (``regional_skew``) of the catalog its own way (local favourites);
* a diurnal cycle (evening peak) for request times.

``scan_workload`` is the adversarial family: a web-like Zipf set of objects with log-normal
sizes, interleaved with one-hit wonders (keys never seen again) and periodic sequential scans
(a crawler or a prefetch job touching a long run of objects once each). Policies that store
everything on first sight suffer; admission and frequency help.

Keys are ints (so traces round-trip through oracleGeneral); sizes are a pure function of the key.
Everything comes from one ``random.Random(seed)``: same parameters, same trace.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Hashable
from dataclasses import dataclass, field

from cdnlab.sim.trace import Trace

DAY = 86400.0
# (bitrate in Mbit/s, share of sessions): a 4K..240p ladder
LADDER: tuple[tuple[float, float], ...] = ((15.0, 0.10), (5.0, 0.45), (3.0, 0.25), (1.2, 0.15), (0.4, 0.05))
IMAGE_SIZES = (20_000, 60_000, 150_000, 300_000)  # thumbnail, tile, box art, hero


def _unit(key: int) -> float:
    """A fixed pseudo-random number in [0, 1) for KEY, so an object's size never changes."""
    return ((key * 0x9E3779B97F4A7C15) >> 40 & 0xFFFFFF) / 16777216.0


@dataclass(frozen=True)
class CdnParams:
    seed: int = 1
    requests: int = 1_000_000
    days: float = 7.0
    titles: int = 3000  # catalog at the start
    releases_per_day: int = 20
    zipf_alpha: float = 0.9
    release_boost: float = 0.3  # a release's peak weight, relative to the most popular title
    decay_days: float = 2.0  # half-life of the release boost
    segment_seconds: float = 6.0
    segments_mean: int = 120  # title length in segments (uniform over 0.5x..1.5x)
    watch_mean: int = 40  # segments watched per session (geometric)
    resume_share: float = 0.2  # sessions that start part-way through
    images_mean: int = 4  # artwork images fetched per session
    ladder: tuple[tuple[float, float], ...] = LADDER
    region_shares: tuple[float, ...] = (0.7, 0.2, 0.1)
    regional_skew: float = 0.3

    @property
    def requests_per_session(self) -> float:
        return self.watch_mean + self.images_mean


@dataclass
class _Title:
    base: float  # long-term popularity weight
    boost: float  # release peak weight (0 for the initial catalog)
    released: float  # seconds
    segments: int
    region_base: list[float] = field(default_factory=list)


def _video_key(title: int, profile: int, segment: int) -> int:
    return (title << 24) | (profile << 20) | segment


def _image_key(title: int, variant: int) -> int:
    return (title << 24) | (15 << 20) | variant


def cdn_workload(p: CdnParams = CdnParams()) -> Trace:
    rng = random.Random(p.seed)
    n_regions = len(p.region_shares)
    releases = int(p.releases_per_day * math.ceil(p.days))
    n_titles = p.titles + releases
    zipf = [1.0 / (r**p.zipf_alpha) for r in range(1, n_titles + 1)]
    ranks = list(range(n_titles))
    rng.shuffle(ranks)  # a release's long-term rank is as random as any title's
    region_ranks = []
    for _ in range(n_regions):
        rr = list(range(n_titles))
        rng.shuffle(rr)
        region_ranks.append(rr)
    titles: list[_Title] = []
    for t in range(n_titles):
        released = -DAY if t < p.titles else ((t - p.titles) // p.releases_per_day) * DAY + 8 * 3600
        boost = 0.0 if t < p.titles else p.release_boost * zipf[0] * (0.2 + 1.6 * rng.random())
        seg = max(2, int(p.segments_mean * (0.5 + rng.random())))
        rb = [
            (1 - p.regional_skew) * zipf[ranks[t]] + p.regional_skew * zipf[region_ranks[r][t]]
            for r in range(n_regions)
        ]
        titles.append(_Title(zipf[ranks[t]], boost, released, seg, rb))

    # Expected segments per session, given that a session stops at the end of its title: a
    # geometric watch length truncated at the segments left (resumes start half-way on average).
    q = 1.0 - 1.0 / max(1, p.watch_mean)
    watched = sum(
        (1 - p.resume_share) * p.watch_mean * (1 - q**ti.segments)
        + p.resume_share * p.watch_mean * (1 - q ** max(1, ti.segments // 2))
        for ti in titles
    ) / len(titles)
    sessions = int(p.requests / (watched + p.images_mean) * 1.05) + 1
    # The estimate may fall short (few sessions, rounding): add sessions until it does not.
    # Each attempt replays the same seed, so the trace is still a function of the parameters.
    while True:
        out = _sessions(p, titles, sessions, random.Random(p.seed * 7919 + 17))
        if len(out) >= p.requests:
            break
        sessions = int(sessions * 1.1) + 1
    out.sort(key=lambda r: r[0])
    del out[p.requests :]
    return _to_trace(out)


def _sessions(
    p: CdnParams, titles: list[_Title], sessions: int, rng: random.Random
) -> list[tuple[float, int, int]]:
    """Every request of SESSIONS viewing sessions spread over the days, unsorted."""
    n_titles = len(titles)
    profile_cum = list(_cumulative([s for _, s in p.ladder]))
    seg_bytes = [int(rate * 1e6 / 8 * p.segment_seconds) for rate, _ in p.ladder]
    hours = max(1, int(p.days * 24))
    diurnal = [1.0 + 0.6 * math.sin(2 * math.pi * ((h % 24) - 14) / 24) for h in range(hours)]
    dsum = sum(diurnal)
    cont = 1.0 - 1.0 / max(1, p.watch_mean)  # geometric continue probability
    log_cont = math.log(cont) if cont > 0 else -math.inf
    out: list[tuple[float, int, int]] = []
    carry = 0.0
    for h in range(hours):
        h0 = h * 3600.0
        carry += sessions * diurnal[h] / dsum
        n_h = int(carry)
        carry -= n_h
        live = [t for t in range(n_titles) if titles[t].released <= h0 + 3600]
        per_region = [int(n_h * s + rng.random()) for s in p.region_shares]
        for region, n_r in enumerate(per_region):
            if not n_r:
                continue
            weights = []
            for t in live:
                ti = titles[t]
                w = ti.region_base[region]
                if ti.boost:
                    age = max(0.0, h0 - ti.released) / DAY
                    w += ti.boost * 0.5 ** (age / p.decay_days)
                weights.append(w)
            cum = list(_cumulative(weights))
            picks = rng.choices(live, cum_weights=cum, k=n_r)
            browse = rng.choices(live, cum_weights=cum, k=n_r * p.images_mean)
            for i, t in enumerate(picks):
                ti = titles[t]
                start_t = max(ti.released, h0) + rng.random() * 3600.0
                for b in browse[i * p.images_mean : (i + 1) * p.images_mean]:
                    k = _image_key(b, rng.randrange(len(IMAGE_SIZES)))
                    out.append((start_t - rng.random() * 30, k, _image_size(k)))
                profile = bisect.bisect_right(profile_cum, rng.random() * profile_cum[-1])
                profile = min(profile, len(p.ladder) - 1)
                first = 0 if rng.random() >= p.resume_share else rng.randrange(ti.segments)
                # geometric watch length, drawn in one step
                u = rng.random()
                watch = 1 + (int(math.log(1 - u) / log_cont) if log_cont > -math.inf else 0)
                last = min(ti.segments, first + watch)
                base = seg_bytes[profile]
                for s in range(first, last):
                    k = _video_key(t, profile, s)
                    out.append(
                        (start_t + (s - first) * p.segment_seconds, k, int(base * (0.7 + 0.6 * _unit(k))))
                    )
    return out


def _image_size(key: int) -> int:
    return int(IMAGE_SIZES[key & 3] * (0.6 + 0.8 * _unit(key)))


@dataclass(frozen=True)
class ScanParams:
    seed: int = 2
    requests: int = 1_000_000
    objects: int = 200_000  # the reused (Zipf) object set
    zipf_alpha: float = 0.8
    size_median: int = 200_000  # log-normal object sizes
    size_sigma: float = 1.2
    size_max: int = 64 << 20
    one_hit_share: float = 0.3  # requests for keys never requested again
    scan_every: int = 50_000  # requests between two scans
    scan_length: int = 15_000  # distinct objects per scan
    seconds_per_request: float = 0.01


def scan_workload(p: ScanParams = ScanParams()) -> Trace:
    rng = random.Random(p.seed)
    mu = math.log(p.size_median)
    order = list(range(p.objects))
    rng.shuffle(order)  # popularity rank is unrelated to key and size
    cum = list(_cumulative([1.0 / ((r + 1) ** p.zipf_alpha) for r in range(p.objects)]))
    popular = rng.choices(order, cum_weights=cum, k=p.requests)
    sizes: dict[int, int] = {}

    def size_of(key: int) -> int:
        s = sizes.get(key)
        if s is None:
            s = sizes[key] = max(1, min(p.size_max, int(rng.lognormvariate(mu, p.size_sigma))))
        return s

    trace = Trace()
    next_unique = 1 << 40  # one-hit wonders and scanned objects live above the reused set
    i = 0
    t = 0.0
    pi = 0
    while i < p.requests:
        if p.scan_every and i and i % p.scan_every == 0:
            for _ in range(min(p.scan_length, p.requests - i)):
                trace.append(t, next_unique, size_of(next_unique))
                next_unique += 1
                t += p.seconds_per_request
                i += 1
            if i >= p.requests:
                break
        if rng.random() < p.one_hit_share:
            key = next_unique
            next_unique += 1
        else:
            key = popular[pi]
            pi += 1
        trace.append(t, key, size_of(key))
        t += p.seconds_per_request
        i += 1
    return trace


def _cumulative(weights: list[float]) -> list[float]:
    total = 0.0
    out = []
    for w in weights:
        total += w
        out.append(total)
    return out


def _to_trace(rows: list[tuple[float, Hashable, int]]) -> Trace:
    trace = Trace()
    trace.times = [round(r[0], 3) for r in rows]
    trace.keys = [r[1] for r in rows]
    trace.sizes = [r[2] for r in rows]
    return trace


PRESETS: dict[str, CdnParams | ScanParams] = {
    # a steady catalog: 400 titles (~55 sessions each a week), 5 releases a day
    "cdn": CdnParams(titles=400, releases_per_day=5, segments_mean=80),
    # release-driven churn: a small catalog, 15 strongly boosted releases a day whose boost
    # halves daily, flatter popularity and stronger regional tastes
    "cdn-releases": CdnParams(
        seed=3,
        titles=150,
        releases_per_day=15,
        release_boost=1.5,
        decay_days=1.0,
        zipf_alpha=0.8,
        regional_skew=0.5,
        segments_mean=100,
    ),
    # a long tail: 3000 titles + 20 releases a day for the same traffic, so most objects are
    # requested once or twice (38% of the bytes are compulsory misses)
    "cdn-longtail": CdnParams(seed=4),
    "scan": ScanParams(),
}


def generate(preset: str, seed: int | None = None, requests: int | None = None) -> Trace:
    """Build the trace of a named preset, optionally with another seed or length."""
    try:
        params = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown workload {preset!r}; known: {', '.join(PRESETS)}") from None
    changes: dict[str, int] = {}
    if seed is not None:
        changes["seed"] = seed
    if requests is not None:
        changes["requests"] = requests
    if changes:
        params = type(params)(**{**params.__dict__, **changes})
    if isinstance(params, CdnParams):
        return cdn_workload(params)
    return scan_workload(params)
