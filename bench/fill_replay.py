"""Fill benchmark: nightly planned fill against reactive caching, and fill throughput against
its cap.

**Replay** (``--replay``, the default). The control plane's seeded catalog and viewing history
(``content_catalog``, ``viewing_history``: release spikes, weekly rhythm, languages, holidays)
over WARMUP + DAYS days; the last DAYS are replayed in each region, one appliance per region of
CAPACITY (a share of the bytes licensed there). Every view is a session on one unit (a title in
one profile, chosen by the planner's profile shares) watching 10-100 minutes, a movie from its
start and a series from anywhere; the cache objects are CHUNK-MINUTES pieces of a unit (what a
segment cache holds), or whole units with ``--chunk-minutes 0``. The appliances see the same
requests, at equal capacity, with the same eviction policy (``cdnlab.eviction``, the daemon's
code):

- *reactive*: misses are admitted by the policy (warmed up on the week before);
- *planned*: each night the forest (trained once on the warm-up days) predicts tomorrow from
  the days so far, ``fill_plan.plan`` places units by it, and the cache holds exactly that
  during the day (misses go upstream, nothing is admitted);
- *planned + reactive*: the night's placement, then misses admitted by the policy as well;
- *bound*: the planner told the day's real views instead of the prediction (what better
  prediction could reach with this planner and capacity);
- *hindsight*: the cache objects (chunks) that served the most bytes per byte that day, known
  after the fact: what no nightly placement, by any planner or predictor, can beat.

Reported: the share of bytes served by the appliance, overall and on region-days when a
licensed title is released, and the planned appliances' fill traffic (bytes fetched at night)
per byte served.

**Throughput** (``--throughput``). Real processes on loopback: nginx (Debian) as the origin,
``cdnlab control serve``, a fresh ``cdnlab edge serve`` per cap, and ``cdnlab fill run --now
--rate CAP --parallel N`` filling a published tree of random objects; bytes / elapsed against
the cap.

Examples:
    .venv/bin/python bench/fill_replay.py --replay --titles 300 --regions us,de --capacity 0.1,0.2,0.3
    .venv/bin/python bench/fill_replay.py --throughput --mb 96 --caps 10M,25M,50M,0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cdnlab.control.content_catalog import LADDER, default_regions, generate_catalog
from cdnlab.control.fill_plan import (
    PROFILE_SHARE,
    ApplianceSpec,
    CatalogUnit,
    Unit,
    expected_views,
    plan,
    session_bytes,
)
from cdnlab.control.popularity import HISTORY_DAYS, _released, features, train
from cdnlab.control.viewing_history import generate_history
from cdnlab.eviction import DEFAULT_POLICY, get_policy

# scikit-learn's joblib notice, once per tree and prediction: noise in a benchmark's output.
warnings.filterwarnings("ignore", message=".*sklearn.utils.parallel.delayed.*")
PROFILES = [p for p, _ in LADDER]
SHARES = np.array([PROFILE_SHARE[p] for p in PROFILES]) / sum(PROFILE_SHARE[p] for p in PROFILES)


@dataclass
class Tally:
    total: float = 0.0
    hits: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("reactive", "planned", "both", "oracle", "hindsight"), 0.0)
    )

    def add(self, other: Tally) -> None:
        self.total += other.total
        for k, v in other.hits.items():
            self.hits[k] += v

    def share(self, k: str) -> float:
        return self.hits[k] / self.total if self.total else float("nan")


def _best_static_set(keys: np.ndarray, sizes: np.ndarray, served: np.ndarray, cap: int) -> set[int]:
    """The cache objects a night's placement should have held, told the day's requests: by bytes
    served per byte stored (greedy knapsack) until the capacity is full. No planner, whatever it
    predicts, places better for the day (up to the greedy's rounding at the last object)."""
    uk, inv = np.unique(keys, return_inverse=True)
    gain = np.bincount(inv, weights=served)
    size = np.zeros(uk.size)
    size[inv] = sizes
    order = np.argsort(-gain / np.maximum(size, 1))
    return set(uk[order[np.cumsum(size[order]) <= cap]].tolist())


def replay(args: argparse.Namespace, capacity_share: float) -> dict:
    days_total = args.warmup + args.days
    wanted = args.regions.split(",")
    regions_all = default_regions(days_total)
    regions = [r for r in regions_all if r.name in wanted]
    if len(regions) != len(wanted):
        raise SystemExit(f"--regions: choose from {', '.join(r.name for r in regions_all)}")
    catalog = generate_catalog(args.seed, args.titles, regions, days_total)
    h = generate_history(catalog, regions, days_total, args.seed, views_per_region=args.views)
    forest = train(h, args.top, range(HISTORY_DAYS + 1, args.warmup), args.trees, args.seed)
    nt, nl = len(catalog), len(LADDER)
    size = np.array([[t.size_bytes(bps) for _, bps in LADDER] for t in catalog], dtype=np.int64)
    bps = np.array([b for _, b in LADDER], dtype=float)
    runtime = np.array([t.runtime_min for t in catalog], dtype=float)
    series = np.array([t.type == "series" for t in catalog])
    session = session_bytes()  # a mean session: 55 minutes
    rng = np.random.default_rng(args.seed + 1)
    overall, release = Tally(), Tally()
    fill_bytes = {"planned": 0, "both": 0}
    per_region = {}
    releases: list[tuple[float, int, float]] = []  # (forest probability, actual rank, share of the day)
    ch = args.chunk_minutes
    nchunks = np.ceil(runtime / ch).astype(np.int64) if ch else np.ones(nt, dtype=np.int64)
    maxc = int(nchunks.max()) + 1

    def chunk_bytes(u: int, c: int) -> int:
        j, p = divmod(u, nl)
        if not ch:
            return int(size[j, p])
        return int(bps[p] / 8 * 60 * min(ch, runtime[j] - c * ch))

    def unit_chunks(u: int) -> range:
        return range(int(nchunks[u // nl]))

    def held_units(policy: Any, key_of: dict[Unit, int]) -> dict[Unit, str]:
        """Units the cache holds whole (what the planner may count as held)."""
        return {
            u: "flash"
            for u, k in key_of.items()
            if all(policy.contains(k * maxc + c if ch else k) for c in unit_chunks(k))
        }

    for ri, region in enumerate(regions):
        licensed = [j for j, t in enumerate(catalog) if region.name in t.regions]
        cap = int(capacity_share * size[licensed].sum())
        units = [
            CatalogUnit(Unit(catalog[j].id, PROFILES[p]), int(size[j, p]), frozenset({region.name}))
            for j in licensed
            for p in range(nl)
        ]
        key_of = {Unit(catalog[j].id, PROFILES[p]): j * nl + p for j in licensed for p in range(nl)}
        spec = ApplianceSpec(f"{region.name}-1", region.name, region.name, cap, 0)
        reactive = get_policy(args.policy, cap)
        both = get_policy(args.policy, cap)
        now = 0.0

        def day_requests(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            """(cache key, its size, bytes served, unit) per request, sessions in random order."""
            counts = h.views[d, ri]  # noqa: B023 - the region of this loop turn
            titles = np.repeat(np.arange(nt), counts)
            prof = rng.choice(nl, size=titles.size, p=SHARES)
            order = rng.permutation(titles.size)
            titles, prof = titles[order], prof[order]
            unit = titles * nl + prof
            rt = runtime[titles]
            # A session watches 10 to 100 minutes: a movie from its start, a series from anywhere.
            minutes = np.minimum(rng.uniform(10, 100, size=titles.size), rt)
            start = np.where(series[titles], rng.uniform(0, 1, size=titles.size) * (rt - minutes), 0.0)
            rate = bps[prof] / 8 * 60  # bytes per minute
            if not ch:  # whole units: a miss stores all of it at once
                return unit, size[titles, prof], rate * minutes, unit
            c0 = np.floor(start / ch).astype(np.int64)
            n = np.ceil((start + minutes) / ch).astype(np.int64) - c0
            sess = np.repeat(np.arange(titles.size), n)
            first = np.repeat(np.cumsum(n) - n, n)
            c = c0[sess] + (np.arange(sess.size) - first)
            lo = np.maximum(start[sess], c * ch)
            hi = np.minimum(start[sess] + minutes[sess], (c + 1) * ch)
            obj = rate[sess] * np.minimum(ch, rt[sess] - c * ch)
            return unit[sess] * maxc + c, obj.astype(np.int64), rate[sess] * (hi - lo), unit[sess]

        for d in range(args.warmup - 7, args.warmup):  # warm the reactive caches up
            for k, s, _, _ in zip(*day_requests(d), strict=True):
                now += 1.0
                reactive.request(int(k), int(s), now)
                both.request(int(k), int(s), now)

        held_planned: dict[Unit, str] = {}
        held_both = held_units(both, key_of)
        region_tally = Tally()
        for d in range(args.warmup, days_total):
            prob = forest.predict_proba(features(h, d - 1))[:, 1].reshape(len(regions), nt)[ri]
            for j in licensed:  # how the forest rates tomorrow's releases
                if catalog[j].release_day == d:
                    rank = int((h.views[d, ri] > h.views[d, ri, j]).sum()) + 1
                    releases.append(
                        (float(prob[j]), rank, float(h.views[d, ri, j] / max(1, h.views[d, ri].sum())))
                    )
            popularity = expected_views(h.views[:d, ri, :], prob, args.top)
            popularity = {catalog[j].id: float(popularity[j]) for j in licensed}
            p_plan = plan(spec, [spec], units, popularity, held_planned, session_bytes=session)
            p_both = plan(spec, [spec], units, popularity, held_both, session_bytes=session)
            unit_size = {cu.unit: cu.size for cu in units}
            fill_bytes["planned"] += sum(unit_size[u] for u, _ in p_plan.fetch)
            held_planned = dict(p_plan.placement)
            planned_keys = {key_of[u] for u in p_plan.placement}
            # The bound on prediction: the same planner told tomorrow's real views.
            actual = {catalog[j].id: float(h.views[d, ri, j]) for j in licensed}
            oracle = plan(spec, [spec], units, actual, {}, session_bytes=session)
            oracle_keys = {key_of[u] for u in oracle.placement}
            # The night's plan applied to the reactive cache: removals, then fetches (lowest
            # priority first, so the policy sees the most valuable as the most recent); only
            # the parts of a unit not already held are fetched.
            for u, _ in p_both.remove:
                for c in unit_chunks(key_of[u]):
                    k = key_of[u] * maxc + c if ch else key_of[u]
                    if both.contains(k):
                        both.on_remove(k)
            for u, _ in reversed(p_both.fetch):
                for c in unit_chunks(key_of[u]):
                    k = key_of[u] * maxc + c if ch else key_of[u]
                    if both.contains(k):
                        continue
                    s = chunk_bytes(key_of[u], c)
                    both.evict(s, now)
                    both.on_insert(k, s, now)
                    fill_bytes["both"] += s
            reqs = day_requests(d)
            hindsight = _best_static_set(*reqs[:3], cap)
            day = Tally()
            for k, s, b, u in zip(*reqs, strict=True):
                now += 1.0
                k, s, u = int(k), int(s), int(u)
                day.total += b
                if reactive.request(k, s, now):
                    day.hits["reactive"] += b
                if u in planned_keys:
                    day.hits["planned"] += b
                if u in oracle_keys:
                    day.hits["oracle"] += b
                if both.request(k, s, now):
                    day.hits["both"] += b
                if k in hindsight:
                    day.hits["hindsight"] += b
            held_both = held_units(both, key_of)
            region_tally.add(day)
            if _released(h, d)[ri]:
                release.add(day)
        overall.add(region_tally)
        per_region[region.name] = {k: region_tally.share(k) for k in region_tally.hits}
    return {
        "capacity_share": capacity_share,
        "overall": {k: overall.share(k) for k in overall.hits},
        "release_days": {k: release.share(k) for k in release.hits},
        "release_bytes_share": release.total / overall.total,
        "per_region": per_region,
        "fill_per_served": {k: v / overall.total for k, v in fill_bytes.items()},
        "releases": releases,
    }


def _print_replay(args: argparse.Namespace, rows: list[dict]) -> None:
    print(
        f"\nFill replay: {args.titles} titles, regions {args.regions}, {args.days} days replayed after "
        f"{args.warmup} warm-up days (seed {args.seed}), {args.views:,.0f} views/day per unit region weight, "
        f"policy {args.policy}\n"
    )
    print("| capacity (share of licensed bytes) | reactive | planned | planned + reactive | "
          "planned, told tomorrow (bound) | release days: reactive | planned | planned + reactive | "
          "bound | gain on release days | fill bytes / served (planned+reactive) | "
          "hindsight | release days: hindsight | hindsight over reactive on release days |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o, rel = r["overall"], r["release_days"]
        gain = 100 * (max(rel["planned"], rel["both"]) - rel["reactive"])
        cells = [f"{100 * r['capacity_share']:.0f} %"]
        cells += [f"{100 * o[k]:.1f} %" for k in ("reactive", "planned", "both", "oracle")]
        cells += [f"{100 * rel[k]:.1f} %" for k in ("reactive", "planned", "both", "oracle")]
        cells += [f"{gain:+.1f} points", f"{r['fill_per_served']['both']:.3f}"]
        over = 100 * (rel["hindsight"] - rel["reactive"])
        cells += [f"{100 * o['hindsight']:.1f} %", f"{100 * rel['hindsight']:.1f} %", f"{over:+.1f} points"]
        print("| " + " | ".join(cells) + " |")
    rel = rows[0]["releases"]
    if rel:
        probs = sorted(p for p, _, _ in rel)
        print(
            f"\n{len(rel)} region-releases in the replay: the forest's probability of 'top {args.top} "
            f"tomorrow' median {probs[len(probs) // 2]:.2f} (min {probs[0]:.2f}, max {probs[-1]:.2f}); "
            f"{sum(1 for _, r, _ in rel if r <= args.top)} were in the top {args.top}, "
            f"{sum(1 for _, r, _ in rel if r <= 3)} in the top 3, the largest with "
            f"{100 * max(sh for _, _, sh in rel):.0f} % of its region's views that day"
        )
    best = max(max(r["overall"]["planned"], r["overall"]["both"]) for r in rows)
    gains = [
        100 * (max(r["release_days"]["planned"], r["release_days"]["both"]) - r["release_days"]["reactive"])
        for r in rows
    ]
    print(
        f"\ntargets: >= 95 % of bytes from appliances: {'met' if best >= 0.95 else 'NOT met'} "
        f"(best planned {100 * best:.1f} %); >= 10 points over reactive on release days: "
        f"{'met' if max(gains) >= 10 else 'NOT met'} (best {max(gains):+.1f} points)"
    )


# -- throughput -------------------------------------------------------------------------------


def throughput(args: argparse.Namespace) -> list[dict]:
    import hashlib

    from cdnlab.lab import procs

    cdnlab = [sys.executable, "-m", "cdnlab.cli"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fill-bench-") as tmp:
        base = Path(tmp)
        www = base / "www"
        n = max(1, args.mb // 2)
        for i in range(n):
            f = www / "content" / f"t{i // 8:04d}" / "bin" / f"obj-{i:03d}.bin"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(hashlib.shake_256(f"obj-{i}".encode()).digest(2 * 1024 * 1024))
        total = n * 2 * 1024 * 1024
        with (
            procs.nginx(base / "nginx", www) as origin,
            procs.control(
                base / "control",
                'listen = "127.0.0.1:{port}"\ndatabase = "sqlite:///{base}/control.db"\n'
                '[signing]\nkid = "k1"\nkey = "bench-key"\n',
            ) as control,
        ):
            for i, cap in enumerate(args.caps.split(",")):
                from cdnlab.sizes import parse_size

                rate = parse_size(cap)
                cfg = procs.edge_config([origin.url], ident=f"fill-{i}", capacity="2G", access_log=False)
                with procs.edge(base / f"edge-{i}", cfg) as e:
                    body = {
                        "id": f"fill-{i}",
                        "site": f"s{i}",
                        "url": e.url,
                        "admin_url": e.admin,
                        "tiers": [{"kind": "flash", "capacity_bytes": 2 * 2**30}],
                    }
                    req = urllib.request.Request(
                        f"{control.url}/v1/appliances",
                        json.dumps(body).encode(),
                        {"Content-Type": "application/json"},
                    )
                    urllib.request.urlopen(req, timeout=10).read()
                    if i == 0:
                        subprocess.run(
                            [*cdnlab, "fill", "publish", str(www), "--control", control.url],
                            check=True,
                            capture_output=True,
                        )
                    t0 = time.monotonic()
                    out = subprocess.run(
                        [*cdnlab, "fill", "run", "--config", str(base / f"edge-{i}" / "edge.toml"),
                         "--control", control.url, "--now", "--rate", cap, "--parallel", str(args.parallel),
                         "--json"],
                        capture_output=True, text=True, timeout=600,
                    )  # fmt: skip
                    elapsed = time.monotonic() - t0
                    rep = json.loads(out.stdout)
                    assert rep["state"] == "done", out.stdout[-2000:] + out.stderr[-2000:]
                    assert rep["bytes_fetched"] == total
                    rows.append(
                        {
                            "cap_bytes_per_s": rate,
                            "bytes": total,
                            "seconds": elapsed,
                            "fill_seconds": rep["updated_at"] - rep["started_at"],
                            "measured": total / elapsed,
                            "ratio_to_cap": total / elapsed / rate if rate else None,
                        }
                    )
    return rows


def _print_throughput(args: argparse.Namespace, rows: list[dict]) -> None:
    mib = rows[0]["bytes"] / 2**20
    print(
        f"\nFill throughput: {mib:.0f} MiB of 2 MiB objects, --parallel {args.parallel}, "
        "nginx origin -> cdnlab fill run -> the store of a running edge daemon (loopback)\n"
    )
    print("| cap | fill rate (run's own clock) | measured / cap | whole command incl. start-up |")
    print("|---|---|---|---|")
    for r in rows:
        cap = f"{r['cap_bytes_per_s'] / 2**20:.0f} MiB/s" if r["cap_bytes_per_s"] else "none"
        rate = r["bytes"] / r["fill_seconds"]
        ratio = f"{rate / r['cap_bytes_per_s']:.2f}" if r["cap_bytes_per_s"] else "—"
        print(
            f"| {cap} | {rate / 2**20:.1f} MiB/s ({r['fill_seconds']:.1f} s) | {ratio} | "
            f"{r['measured'] / 2**20:.1f} MiB/s ({r['seconds']:.1f} s) |"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replay", action="store_true")
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--titles", type=int, default=300)
    ap.add_argument("--regions", default="us,de")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=35)
    ap.add_argument("--views", type=float, default=20_000, help="views per day in a region of weight 1")
    ap.add_argument("--capacity", default="0.1,0.2,0.3", help="shares of the licensed catalog's bytes")
    ap.add_argument("--policy", default=DEFAULT_POLICY)
    ap.add_argument(
        "--chunk-minutes", type=int, default=10, help="cache object: minutes of a unit (0: whole units)"
    )
    ap.add_argument("--top", type=int, default=50)
    ap.add_argument("--trees", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mb", type=int, default=96, help="throughput: MiB to fill")
    ap.add_argument("--caps", default="10M,25M,50M,0", help="throughput: rate caps (0 = none)")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not args.replay and not args.throughput:
        args.replay = True
    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}"
    )
    out: dict = {}
    if args.replay:
        t0 = time.perf_counter()
        out["replay"] = [replay(args, float(c)) for c in args.capacity.split(",")]
        _print_replay(args, out["replay"])
        print(f"({time.perf_counter() - t0:.0f} s)")
    if args.throughput:
        out["throughput"] = throughput(args)
        _print_throughput(args, out["throughput"])
    if args.json:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
