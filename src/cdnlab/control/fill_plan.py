"""Overnight fill planning as a pure function: per appliance and tier, what to fetch, what to
move between tiers and what to remove, from predicted popularity.

- The unit of placement is one title in one profile (``/content/{title}/{profile}/``).
- Licensing: a unit is planned only where its title is licensed; held unlicensed units go.
- A site's appliances split the catalog by weighted rendezvous hashing (weight = capacity), so a
  site of k appliances holds up to k times as many distinct titles; the ``hot`` most popular
  titles are on every appliance of the site, for their bandwidth. Losing an appliance moves only
  the units it owned (the property steering's hashing relies on too).
- Priority is predicted views of the profile per byte (value density), greedily packed: flash
  first (at most 95 % of it), then HDD (at most 85 %), skipping what does not fit.
- Incremental: only units not already on the right tier are fetched; removals come first, so the
  planned end state fits at every step of applying it.

Content comes from the shield tier, the origin or a peer; choosing a fill source is not done
here, and no hash-chosen fill masters are (DESIGN.md).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from cdnlab.control.content_catalog import LADDER, Title

TierKind = Literal["flash", "hdd"]
FILL_LIMIT: dict[TierKind, float] = {"flash": 0.95, "hdd": 0.85}
# Share of a title's views per profile (most viewing is at 720p/1080p).
PROFILE_SHARE = {"240p": 0.05, "480p": 0.15, "720p": 0.25, "1080p": 0.4, "4k": 0.15}


@dataclass(frozen=True, order=True)
class Unit:
    title: str
    profile: str

    @property
    def prefix(self) -> str:
        return f"/content/{self.title}/{self.profile}/"


@dataclass(frozen=True)
class CatalogUnit:
    unit: Unit
    size: int
    regions: frozenset[str]  # licensed in


@dataclass(frozen=True)
class ApplianceSpec:
    id: str
    site: str
    region: str
    flash_bytes: int
    hdd_bytes: int

    @property
    def weight(self) -> int:
        return self.flash_bytes + self.hdd_bytes


@dataclass
class FillPlan:
    appliance_id: str
    placement: dict[Unit, TierKind] = field(default_factory=dict)  # the end state
    fetch: list[tuple[Unit, TierKind]] = field(default_factory=list)  # in priority order
    move: list[tuple[Unit, TierKind, TierKind]] = field(default_factory=list)  # (unit, from, to)
    remove: list[tuple[Unit, TierKind]] = field(default_factory=list)
    used: dict[TierKind, int] = field(default_factory=lambda: {"flash": 0, "hdd": 0})
    budget: dict[TierKind, int] = field(default_factory=lambda: {"flash": 0, "hdd": 0})


def _score(key: str, member: str, weight: float) -> float:
    """Weighted rendezvous score (Schindelhauer & Schomaker): -w / ln(u), u uniform in (0, 1)."""
    h = int.from_bytes(hashlib.sha256(f"{key}\0{member}".encode()).digest()[:8], "big")
    u = (h + 1) / (2**64 + 1)
    return -weight / math.log(u)


def owner(title: str, site_appliances: list[ApplianceSpec]) -> str:
    """The appliance of the site that holds a (non-hot) title: all its profiles go together, so
    one appliance serves a whole playback."""
    return max(site_appliances, key=lambda a: (_score(title, a.id, a.weight), a.id)).id


def plan(
    appliance: ApplianceSpec,
    site_appliances: list[ApplianceSpec],
    catalog: Iterable[CatalogUnit],
    popularity: Mapping[str, float],
    held: Mapping[Unit, TierKind],
    hot: int = 0,
    session_bytes: Mapping[str, int] | None = None,
) -> FillPlan:
    """The fill plan of one appliance. ``popularity`` is predicted views per title in the
    appliance's region; ``held`` what it holds now (from its inventory), by tier.

    By default a unit is worth its predicted views per byte (hits per byte of cache). With
    ``session_bytes`` (profile → bytes a view of it transfers) it is worth the bytes it would
    serve per byte (byte hit ratio: offload), so a high bitrate is not penalised for its size."""
    if appliance.id not in {a.id for a in site_appliances}:
        raise ValueError(f"{appliance.id} is not among its site's appliances")
    peers = [a for a in site_appliances if a.site == appliance.site]
    ranked_titles = sorted(popularity, key=lambda t: (-popularity[t], t))
    hot_titles = set(ranked_titles[:hot])
    mine: list[tuple[float, CatalogUnit]] = []
    for cu in catalog:
        if appliance.region not in cu.regions or popularity.get(cu.unit.title, 0.0) <= 0 or cu.size <= 0:
            continue
        if cu.unit.title not in hot_titles and owner(cu.unit.title, peers) != appliance.id:
            continue
        value = popularity[cu.unit.title] * PROFILE_SHARE.get(cu.unit.profile, 0.1)
        if session_bytes is not None:
            value *= min(cu.size, session_bytes.get(cu.unit.profile, cu.size))
        mine.append((value / cu.size, cu))
    mine.sort(key=lambda vc: (-vc[0], vc[1].unit))

    out = FillPlan(appliance.id)
    out.budget = {
        "flash": int(appliance.flash_bytes * FILL_LIMIT["flash"]),
        "hdd": int(appliance.hdd_bytes * FILL_LIMIT["hdd"]),
    }
    for _, cu in mine:
        for tier in ("flash", "hdd"):
            if out.used[tier] + cu.size <= out.budget[tier]:
                out.placement[cu.unit] = tier
                out.used[tier] += cu.size
                break
    for unit, tier in sorted(held.items()):
        want = out.placement.get(unit)
        if want is None:
            out.remove.append((unit, tier))
        elif want != tier:
            out.move.append((unit, tier, want))
    out.fetch = [
        (cu.unit, out.placement[cu.unit])
        for _, cu in mine
        if cu.unit in out.placement and cu.unit not in held
    ]
    return out


def catalog_units(titles: Iterable[Title], ladder: Iterable[tuple[str, int]]) -> list[CatalogUnit]:
    """Units of the synthetic catalog: one per title and profile of the ladder."""
    steps = list(ladder)
    return [CatalogUnit(Unit(t.id, p), t.size_bytes(bps), t.regions) for t in titles for p, bps in steps]


SESSION_MINUTES = 55  # a mean viewing session, for weighing units by the bytes they serve


def session_bytes(minutes: float = SESSION_MINUTES) -> dict[str, int]:
    """Bytes a session of MINUTES transfers in each profile of the ladder (``plan``'s argument)."""
    return {p: int(bps / 8 * 60 * minutes) for p, bps in LADDER}


def expected_views(views: np.ndarray, prob_top: np.ndarray, top: int, half_life: float = 2.0) -> np.ndarray:
    """Tomorrow's views per title in one region, as the planner should weigh them.

    VIEWS is [day, title] up to today; PROB_TOP the forest's probability of "in tomorrow's top
    N". The recent daily rate (counts decayed with HALF_LIFE days, per day of weight) — or, for a
    title the forest puts in the top N without history to show for it (a release), that
    probability times the mean views of today's top N — whichever is larger."""
    days = views.shape[0]
    w = np.power(0.5, np.arange(days)[::-1] / half_life)
    rate = np.tensordot(w, views, axes=(0, 0)) / w.sum()
    in_top = np.sort(views[-1])[::-1][: max(1, min(top, views.shape[1]))].mean()
    return np.maximum(rate, prob_top * in_top)
