"""Steering: which appliances a client should fetch a title from, best first.

1. Sites are ranked for the client's site by the seed 000 score — distance 0.4, load 0.3,
   performance 0.3 (configurable) — taking for each site its best available appliance.
   Distance is 0 within the client's own site, else great-circle km between site coordinates
   (score ``100 - km/100``). Load is ``100 × (1 - bandwidth utilisation)``. Performance is
   ``100 × (1 - poll time / 1000 ms)``, so it reaches 0 at Traffic Monitor's default queryTime
   threshold (the seed's ``100 - ms × 10`` would be 0 for anything 10 ms away).
2. Only appliances holding the title are offered (inventory), unless none does.
3. Within a site the order is rendezvous (highest-random-weight) hashing of the title, weighted
   by capacity, so each title lands on the same appliances and a lost appliance moves only its
   own titles.
4. Up to ``max_per_site`` per site and ``max_endpoints`` in all; the CloudFront URL goes last.

A ``FleetSnapshot`` is immutable and rebuilt whenever health, registry or inventory change;
the site ranking per client site is cached inside it, so a steer request costs a prefix lookup,
a few dict probes and a handful of hashes even with 10,000 appliances.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from cdnlab.control.catalog import CatalogSource, Track
from cdnlab.control.config import SigningConfig, SteeringConfig
from cdnlab.control.coverage import Coordinates, CoverageZones
from cdnlab.control.models import Appliance
from cdnlab.signing import sign_path

EARTH_RADIUS_KM = 6371.0
_MAX64 = float(2**64)


def haversine_km(a: Coordinates, b: Coordinates) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a.latitude, a.longitude, b.latitude, b.longitude))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, h)))


def distance_score(km: float) -> float:
    return max(0.0, 100.0 - km / 100.0)


def load_score(utilization: float) -> float:
    return min(100.0, max(0.0, (1.0 - utilization) * 100.0))


def performance_score(query_ms: float, ceiling_ms: float = 1000.0) -> float:
    return min(100.0, max(0.0, 100.0 * (1.0 - query_ms / ceiling_ms)))


def hrw_weight(title: str, appliance_id: str, capacity: float) -> float:
    """Weighted rendezvous hashing: -capacity / ln(u), u uniform in (0, 1) from the hash."""
    h = int.from_bytes(hashlib.blake2b(f"{title}\x00{appliance_id}".encode(), digest_size=8).digest(), "big")
    u = (h + 0.5) / _MAX64
    return -capacity / math.log(u)


@dataclass(frozen=True)
class Candidate:
    id: str
    site: str
    url: str
    capacity: float
    load: float  # load score 0–100
    perf: float  # performance score 0–100


@dataclass(frozen=True)
class ClientPlace:
    address: str
    site: str | None
    matched_by: str  # coverage-zone | default
    prefix: str | None


@dataclass(frozen=True)
class Ranked:
    candidate: Candidate
    score: float
    holds_title: bool


class FleetSnapshot:
    def __init__(
        self,
        appliances: Iterable[Appliance],
        available: dict[str, bool],
        measurements: dict[str, dict[str, float]],
        title_index: dict[str, set[str]],
        zones: CoverageZones | None,
        cfg: SteeringConfig,
        perf_ceiling_ms: float = 1000.0,
        version: int = 0,
    ) -> None:
        self.cfg = cfg
        self.version = version
        self.zones = zones
        self.by_site: dict[str, list[Candidate]] = {}
        coords: dict[str, list[Coordinates]] = {}
        for a in appliances:
            if a.latitude is not None and a.longitude is not None:
                coords.setdefault(a.site, []).append(Coordinates(a.latitude, a.longitude))
            if not available.get(a.id):
                continue
            m = measurements.get(a.id, {})
            c = Candidate(
                id=a.id,
                site=a.site,
                url=a.url,
                capacity=float(a.capacity_bps),
                load=load_score(m.get("bandwidth_utilization", 0.0)),
                perf=performance_score(m.get("query_time_ms", 0.0), perf_ceiling_ms),
            )
            self.by_site.setdefault(a.site, []).append(c)
        self._site_of = {c.id: c.site for cs in self.by_site.values() for c in cs}
        self.available_ids = set(self._site_of)
        # Site coordinates: the coverage zone file's, else the mean of its appliances'.
        self.site_coords: dict[str, Coordinates] = {
            s: Coordinates(sum(c.latitude for c in cs) / len(cs), sum(c.longitude for c in cs) / len(cs))
            for s, cs in coords.items()
        }
        if zones is not None:
            self.site_coords.update(zones.coordinates)
        w = cfg.weights
        self._best_lp = {
            s: max(w.load * c.load + w.performance * c.perf for c in cs) for s, cs in self.by_site.items()
        }
        self._titles = title_index
        self._rank_cache: dict[str | None, list[tuple[str, float]]] = {}
        self._holders_cache: dict[str, dict[str, frozenset[str]]] = {}

    @property
    def appliance_count(self) -> int:
        return len(self.available_ids)

    def _distance(self, client_site: str | None, site: str) -> float:
        if client_site is not None and client_site == site:
            return 100.0
        a = self.site_coords.get(client_site) if client_site is not None else None
        b = self.site_coords.get(site)
        if a is None or b is None:
            return 0.0
        return distance_score(haversine_km(a, b))

    def ranked_sites(self, client_site: str | None) -> list[tuple[str, float]]:
        cached = self._rank_cache.get(client_site)
        if cached is None:
            wd = self.cfg.weights.distance
            cached = sorted(
                ((s, wd * self._distance(client_site, s) + lp) for s, lp in self._best_lp.items()),
                key=lambda x: (-x[1], x[0]),
            )
            self._rank_cache[client_site] = cached
        return cached

    def holders(self, title: str) -> dict[str, frozenset[str]]:
        """site → available appliances holding the title."""
        cached = self._holders_cache.get(title)
        if cached is None:
            by_site: dict[str, set[str]] = {}
            for aid in self._titles.get(title, ()):
                if aid in self.available_ids:
                    by_site.setdefault(self._site_of[aid], set()).add(aid)
            cached = {s: frozenset(ids) for s, ids in by_site.items()}
            self._holders_cache[title] = cached
        return cached

    def rank(self, title: str, client_site: str | None) -> list[Ranked]:
        holders = self.holders(title)
        w = self.cfg.weights
        out: list[Ranked] = []
        for site, _ in self.ranked_sites(client_site):
            if holders:
                held = holders.get(site)
                if not held:
                    continue
                cands = [c for c in self.by_site[site] if c.id in held]
            else:
                cands = self.by_site[site]
            cands = sorted(cands, key=lambda c: -hrw_weight(title, c.id, c.capacity))[: self.cfg.max_per_site]
            dist = self._distance(client_site, site)
            for c in cands:
                score = w.distance * dist + w.load * c.load + w.performance * c.perf
                out.append(Ranked(c, round(score, 3), bool(holders)))
                if len(out) >= self.cfg.max_endpoints:
                    return out
        return out


def locate(zones: CoverageZones | None, address: str, default_site: str | None) -> ClientPlace:
    match = zones.lookup(address) if zones is not None else None
    if match is not None:
        return ClientPlace(address, match.site, "coverage-zone", match.prefix)
    return ClientPlace(address, default_site, "default", None)


class Signer:
    """Signed segment lists, cached per title, track and expiry bucket (signatures cover the path
    only, so one list serves every client and every endpoint within a bucket)."""

    def __init__(self, cfg: SigningConfig) -> None:
        self.cfg = cfg
        self._signed = lru_cache(maxsize=4096)(self._sign_track)

    def expiry(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        bucket = self.cfg.bucket
        return int((math.floor(now / bucket) + 1) * bucket + self.cfg.ttl)

    def _sign_track(self, title: str, track: Track, exp: int) -> tuple[str, ...]:
        base = f"/content/{title}/{track.profile}/"
        out = []
        for name in track.segment_names:
            signed = sign_path(base + name, self.cfg.kid, self.cfg.key, exp)
            out.append(signed[len(base) :])
        return tuple(out)

    def segments(self, title: str, track: Track, exp: int) -> tuple[str, ...]:
        return self._signed(title, track, exp)


def build_manifest(
    title: str,
    tracks: list[Track],
    ranked: list[Ranked],
    place: ClientPlace,
    signer: Signer,
    cloudfront_url: str | None,
    now: float | None = None,
) -> dict:
    """The manifest as a plain dict (serialised straight to JSON; shape: cdnlab.manifest)."""
    exp = signer.expiry(now)
    endpoints = [
        {
            "url": r.candidate.url,
            "kind": "oca",
            "appliance_id": r.candidate.id,
            "site": r.candidate.site,
            "score": r.score,
            "holds_title": r.holds_title,
        }
        for r in ranked
    ]
    if cloudfront_url:
        endpoints.append(
            {
                "url": cloudfront_url,
                "kind": "cloudfront",
                "appliance_id": None,
                "site": None,
                "score": None,
                "holds_title": None,
            }
        )
    bases = [e["url"] for e in endpoints]
    video_tracks = []
    for t in tracks:
        prefix = f"/content/{title}/{t.profile}/"
        video_tracks.append(
            {
                "profile": t.profile,
                "bandwidth": t.bandwidth,
                "segment_duration": t.segment_duration,
                "cdn_urls": [b + prefix for b in bases],
                "segments": list(signer.segments(title, t, exp)),
            }
        )
    return {
        "title": title,
        "expires_at": exp,
        "client": {
            "address": place.address,
            "site": place.site,
            "matched_by": place.matched_by,
            "prefix": place.prefix,
        },
        "endpoints": endpoints,
        "video_tracks": video_tracks,
    }


def catalog_tracks(catalog: CatalogSource, title: str, profile: str | None) -> list[Track] | None:
    t = catalog.get(title)
    if t is None:
        return None
    if profile is None:
        return list(t.tracks)
    track = t.track(profile)
    return [track] if track is not None else []
