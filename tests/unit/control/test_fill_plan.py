"""Fill planner invariants over many seeded cases: capacity never exceeded (flash ≤ 95 %, HDD ≤
85 %), licensing respected, plans incremental and idempotent, removals listed, a site split by
consistent hashing (more distinct titles per site, minimal movement when an appliance goes)."""

from __future__ import annotations

import numpy as np
import pytest

from cdnlab.control.content_catalog import LADDER, default_regions, generate_catalog
from cdnlab.control.fill_plan import (
    FILL_LIMIT,
    ApplianceSpec,
    CatalogUnit,
    Unit,
    catalog_units,
    owner,
    plan,
)

GB = 10**9
REGIONS = default_regions(30)
TITLES = generate_catalog(5, 200, REGIONS, 30)
UNITS = catalog_units(TITLES, LADDER)
BY_UNIT = {cu.unit: cu for cu in UNITS}


def _site(n: int, flash: int = 600 * GB, hdd: int = 2000 * GB) -> list[ApplianceSpec]:
    return [ApplianceSpec(f"a{i}", "s1", "us", flash, hdd + i * 100 * GB) for i in range(n)]


def _popularity(seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {t.id: float(rng.pareto(1.2) + 0.01) for t in TITLES}


def _size(units) -> int:
    return sum(BY_UNIT[u].size for u in units)


@pytest.mark.parametrize("seed", range(12))
def test_capacity_licensing_and_incremental(seed: int) -> None:
    rng = np.random.default_rng(seed)
    site = _site(int(rng.integers(1, 5)))
    pop = _popularity(seed)
    a = site[int(rng.integers(0, len(site)))]
    # What it holds now: a random mix, some of it unlicensed in its region or on the wrong tier.
    held = {
        UNITS[int(i)].unit: ("flash" if rng.random() < 0.3 else "hdd")
        for i in rng.integers(0, len(UNITS), 80)
    }
    hot = int(rng.integers(0, 10))
    p = plan(a, site, UNITS, pop, held, hot=hot)
    for tier, cap in (("flash", a.flash_bytes), ("hdd", a.hdd_bytes)):
        on = [u for u, t in p.placement.items() if t == tier]
        assert _size(on) == p.used[tier] <= FILL_LIMIT[tier] * cap
    assert all("us" in BY_UNIT[u].regions for u in p.placement)
    for u, tier in held.items():
        if "us" not in BY_UNIT[u].regions:
            assert (u, tier) in p.remove
    fetched = {u for u, _ in p.fetch}
    assert not fetched & set(held)  # incremental: nothing held is fetched again
    # Applying the plan gives the placement; planning again from there changes nothing.
    after = {u: t for u, t in held.items() if (u, t) not in p.remove}
    after.update({u: to for u, _, to in p.move})
    after.update(dict(p.fetch))
    assert after == p.placement
    again = plan(a, site, UNITS, pop, after, hot=hot)
    assert again.placement == p.placement
    assert again.fetch == [] and again.remove == [] and again.move == []


def test_priority_fills_flash_with_the_densest_value_first() -> None:
    site = _site(1, flash=50 * GB, hdd=400 * GB)
    pop = _popularity(1)
    p = plan(site[0], site, UNITS, pop, {})
    best = max(
        (cu for cu in UNITS if "us" in cu.regions),
        key=lambda cu: (
            pop[cu.unit.title]
            * {"240p": 0.05, "480p": 0.15, "720p": 0.25, "1080p": 0.4, "4k": 0.15}[cu.unit.profile]
            / cu.size
        ),
    )
    assert p.placement[best.unit] == "flash"
    assert p.fetch[0][0] == best.unit
    assert p.used["flash"] > 0.9 * p.budget["flash"]  # packed close to the limit


def test_site_split_by_consistent_hashing() -> None:
    site = _site(4, flash=100 * GB, hdd=300 * GB)
    pop = _popularity(2)
    plans = {a.id: plan(a, site, UNITS, pop, {}, hot=3) for a in site}
    titles = {a: {u.title for u in p.placement} for a, p in plans.items()}
    hot = set(sorted(pop, key=lambda t: (-pop[t], t))[:3])
    # Outside the hot set every title is on at most one appliance of the site.
    for t in set().union(*titles.values()) - hot:
        assert sum(t in s for s in titles.values()) == 1
    assert len(set().union(*titles.values())) > 2 * max(len(s) for s in titles.values())
    # Losing an appliance moves only the titles it owned.
    before = {t.id: owner(t.id, site) for t in TITLES}
    after = {t.id: owner(t.id, site[:3]) for t in TITLES}
    moved = {t for t in before if before[t] != after[t]}
    assert moved == {t for t in before if before[t] == "a3"}


def test_unknown_appliance_and_zero_popularity() -> None:
    site = _site(2)
    with pytest.raises(ValueError):
        plan(ApplianceSpec("x", "s1", "us", GB, GB), site, UNITS, {}, {})
    p = plan(site[0], site, [CatalogUnit(Unit("t", "480p"), GB, frozenset({"us"}))], {"t": 0.0}, {})
    assert p.placement == {} and p.fetch == []


def test_cli_plans_a_site(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from cdnlab.cli import main

    argv = [
        "fill",
        "plan",
        "--titles",
        "80",
        "--days",
        "24",
        "--top",
        "20",
        "--trees",
        "10",
        "--region",
        "br",
        "--appliances",
        "2",
        "--flash-tb",
        "0.3",
        "--hdd-tb",
        "0.6",
        "--json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["appliances"]) == 2
    for row in out["appliances"]:
        assert row["flash_used"] <= 0.95 and row["hdd_used"] <= 0.85
    assert out["site_distinct_titles"] > max(r["titles"] for r in out["appliances"])
