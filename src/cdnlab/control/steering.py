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
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

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


_MASK64 = (1 << 64) - 1


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same on every control node (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _mix64(x: int) -> int:
    # splitmix64's finaliser: cheap, and spreads (title ⊕ appliance) well enough for HRW.
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def hrw_weight(title_hash: int, appliance_hash: int, capacity: float) -> float:
    """Weighted rendezvous hashing: -capacity / ln(u), u uniform in (0, 1) from the pair's hash."""
    u = (_mix64(title_hash ^ appliance_hash) + 0.5) / _MAX64
    return -capacity / math.log(u)


@dataclass(frozen=True)
class Candidate:
    id: str
    site: str
    url: str
    capacity: float
    load: float  # load score 0–100
    perf: float  # performance score 0–100
    hash: int = 0  # stable_hash(id), for rendezvous hashing


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


class DistanceTable:
    """Distance scores from a client site to every site, one vectorised row per client site,
    computed on first use. Site coordinates change only with the registry or the coverage zone
    file, so the table outlives the snapshots that health changes rebuild every poll round."""

    def __init__(self, coords: dict[str, Coordinates]) -> None:
        self.coords = dict(coords)
        self.sites = list(self.coords)
        self.index = {s: i for i, s in enumerate(self.sites)}
        self._lat = np.radians(np.array([c.latitude for c in self.coords.values()], dtype=float))
        self._lon = np.radians(np.array([c.longitude for c in self.coords.values()], dtype=float))
        self._rows: dict[str | None, np.ndarray | None] = {}

    def row(self, client_site: str | None) -> np.ndarray | None:
        """Distance scores (0–100) to ``self.sites`` in order; None if the client has no place."""
        if client_site in self._rows:
            return self._rows[client_site]
        i = self.index.get(client_site) if client_site is not None else None
        r = None
        if i is not None:
            lat1, lon1 = self._lat[i], self._lon[i]
            h = (
                np.sin((self._lat - lat1) / 2) ** 2
                + np.cos(lat1) * np.cos(self._lat) * np.sin((self._lon - lon1) / 2) ** 2
            )
            km = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(1.0, h)))
            r = np.maximum(0.0, 100.0 - km / 100.0)
        self._rows[client_site] = r
        return r


class TitleSites:
    """title → site → appliances holding it, regardless of health; computed per title on first
    use and kept until the inventory changes (snapshots rebuilt for health reuse it)."""

    def __init__(self, title_index: dict[str, set[str]], site_of: dict[str, str]) -> None:
        self.title_index = title_index
        self.site_of = site_of
        self._cache: dict[str, dict[str, frozenset[str]]] = {}

    def get(self, title: str) -> dict[str, frozenset[str]]:
        got = self._cache.get(title)
        if got is None:
            by_site: dict[str, set[str]] = {}
            site_of = self.site_of
            for aid in self.title_index.get(title, ()):
                site = site_of.get(aid)
                if site is not None:
                    by_site.setdefault(site, set()).add(aid)
            got = {site: frozenset(ids) for site, ids in by_site.items()}
            self._cache[title] = got
        return got


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
        distances: DistanceTable | None = None,
        title_sites: TitleSites | None = None,
    ) -> None:
        self.cfg = cfg
        self.version = version
        self.zones = zones
        self.by_site: dict[str, list[Candidate]] = {}
        coords: dict[str, list[Coordinates]] = {}
        registered: dict[str, str] = {}
        for a in appliances:
            registered[a.id] = a.site
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
                hash=stable_hash(a.id),
            )
            self.by_site.setdefault(a.site, []).append(c)
        self.available_ids = {c.id for cs in self.by_site.values() for c in cs}
        self.unavailable_ids = frozenset(registered.keys() - self.available_ids)
        if (
            title_sites is None
            or title_sites.title_index is not title_index
            or title_sites.site_of != registered
        ):
            title_sites = TitleSites(title_index, registered)
        self.title_sites = title_sites
        # Site coordinates: the coverage zone file's, else the mean of its appliances'.
        self.site_coords: dict[str, Coordinates] = {
            s: Coordinates(sum(c.latitude for c in cs) / len(cs), sum(c.longitude for c in cs) / len(cs))
            for s, cs in coords.items()
        }
        if zones is not None:
            self.site_coords.update(zones.coordinates)
        if distances is None or distances.coords != self.site_coords:
            distances = DistanceTable(self.site_coords)
        self.distances = distances
        w = cfg.weights
        # Per site with anything available: its best load/performance part of the score.
        self._sites = sorted(self.by_site)
        self._site_pos = {site: i for i, site in enumerate(self._sites)}
        self._lp = np.array(
            [
                max(w.load * c.load + w.performance * c.perf for c in self.by_site[site])
                for site in self._sites
            ]
        )
        gidx = np.array([distances.index.get(site, -1) for site in self._sites], dtype=np.int64)
        self._has_coords = gidx >= 0
        self._gidx = np.where(self._has_coords, gidx, 0)
        self._titles = title_index
        self._rank_cache: dict[str | None, tuple[list[int], list[float]]] = {}
        self._order_cache: dict[tuple[str, str], list[Candidate]] = {}
        self._holders_cache: dict[str, dict[str, frozenset[str]]] = {}

    @property
    def appliance_count(self) -> int:
        return len(self.available_ids)

    def _distances(self, client_site: str | None) -> np.ndarray:
        row = self.distances.row(client_site)
        dist = np.zeros(len(self._sites)) if row is None else np.where(self._has_coords, row[self._gidx], 0.0)
        own = self._site_pos.get(client_site) if client_site is not None else None
        if own is not None:
            dist[own] = 100.0  # the client's own site is at distance 0
        return dist

    def ranked_sites(self, client_site: str | None) -> tuple[list[int], list[float]]:
        """Site positions best first, and every site's distance score; cached per client site."""
        cached = self._rank_cache.get(client_site)
        if cached is None:
            dist = self._distances(client_site)
            score = self.cfg.weights.distance * dist + self._lp
            # Stable sort on -score over name-sorted sites: ties go to the lower name.
            order = np.argsort(-score, kind="stable")
            cached = (order.tolist(), dist.tolist())
            self._rank_cache[client_site] = cached
        return cached

    def site_ranking(self, client_site: str | None) -> list[tuple[str, float]]:
        """(site, score) best first: for inspection and tests."""
        order, dist = self.ranked_sites(client_site)
        wd = self.cfg.weights.distance
        return [(self._sites[i], round(wd * dist[i] + float(self._lp[i]), 3)) for i in order]

    def holders(self, title: str) -> dict[str, frozenset[str]]:
        """site → available appliances holding the title."""
        cached = self._holders_cache.get(title)
        if cached is None:
            cached = self.title_sites.get(title)
            down = self.unavailable_ids & self._titles.get(title, set()) if self.unavailable_ids else ()
            if down:
                cached = {site: ids - down for site, ids in cached.items() if ids - down}
            self._holders_cache[title] = cached
        return cached

    def _site_order(self, title: str, site: str, held: frozenset[str] | None) -> list[Candidate]:
        """The site's appliances for a title in rendezvous order (cached per snapshot)."""
        key = (title, site)
        order = self._order_cache.get(key)
        if order is None:
            cands = self.by_site[site] if held is None else [c for c in self.by_site[site] if c.id in held]
            th = stable_hash(title)
            order = sorted(cands, key=lambda c: -hrw_weight(th, c.hash, c.capacity))[: self.cfg.max_per_site]
            if len(self._order_cache) > 200_000:
                self._order_cache.clear()
            self._order_cache[key] = order
        return order

    def rank(self, title: str, client_site: str | None) -> list[Ranked]:
        holders = self.holders(title)
        w = self.cfg.weights
        out: list[Ranked] = []
        order, dists = self.ranked_sites(client_site)
        sites = self._sites
        for pos in order:
            site, dist = sites[pos], dists[pos]
            held = None
            if holders:
                held = holders.get(site)
                if not held:
                    continue
            for c in self._site_order(title, site, held):
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
        self._json = lru_cache(maxsize=4096)(self._to_json)

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

    def segments_json(self, title: str, track: Track, exp: int) -> str:
        return self._json(title, track, exp)

    def _to_json(self, title: str, track: Track, exp: int) -> str:
        return json.dumps(list(self._signed(title, track, exp)), separators=(",", ":"))


def manifest_json(
    title: str,
    tracks: list[Track],
    ranked: list[Ranked],
    place: ClientPlace,
    signer: Signer,
    cloudfront_url: str | None,
    now: float | None = None,
) -> str:
    """The manifest as JSON text (shape: cdnlab.manifest.SteeringManifest). The signed segment
    lists are the bulk of it and the same for every client in an expiry bucket, so their JSON is
    cached and spliced in rather than encoded per request."""
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
    head = {
        "title": title,
        "expires_at": exp,
        "client": {
            "address": place.address,
            "site": place.site,
            "matched_by": place.matched_by,
            "prefix": place.prefix,
        },
        "endpoints": endpoints,
    }
    dumps = json.dumps
    bases = [e["url"] for e in endpoints]
    parts = []
    for t in tracks:
        prefix = f"/content/{title}/{t.profile}/"
        parts.append(
            f'{{"profile":{dumps(t.profile)},"bandwidth":{t.bandwidth},'
            f'"segment_duration":{dumps(t.segment_duration)},'
            f'"cdn_urls":{dumps([b + prefix for b in bases], separators=(",", ":"))},'
            f'"segments":{signer.segments_json(title, t, exp)}}}'
        )
    text = dumps(head, separators=(",", ":"))
    return f'{text[:-1]},"video_tracks":[{",".join(parts)}]}}'


def build_manifest(
    title: str,
    tracks: list[Track],
    ranked: list[Ranked],
    place: ClientPlace,
    signer: Signer,
    cloudfront_url: str | None,
    now: float | None = None,
) -> dict:
    """The manifest as a dict (the same document as ``manifest_json``)."""
    return json.loads(manifest_json(title, tracks, ranked, place, signer, cloudfront_url, now))


def catalog_tracks(catalog: CatalogSource, title: str, profile: str | None) -> list[Track] | None:
    t = catalog.get(title)
    if t is None:
        return None
    if profile is None:
        return list(t.tracks)
    track = t.track(profile)
    return [track] if track is not None else []
