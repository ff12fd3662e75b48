"""``cdnlab fill …``: the popularity side of overnight fill. ``fill predict`` generates a seeded
catalog and viewing history, trains the random forest and reports it against the decayed-count
baseline on held-out days."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time


class _Fmt(argparse.RawDescriptionHelpFormatter):
    pass


def _predict(args: argparse.Namespace) -> int:
    from cdnlab.control.content_catalog import default_regions, generate_catalog
    from cdnlab.control.popularity import evaluate
    from cdnlab.control.viewing_history import generate_history

    t0 = time.perf_counter()
    regions = default_regions(args.days)
    if args.regions:
        wanted = args.regions.split(",")
        if not set(wanted) <= {r.name for r in regions}:
            print(f"cdnlab fill predict: --regions: choose from {', '.join(r.name for r in regions)}")
            return 2
        regions = [r for r in regions if r.name in wanted]
    catalog = generate_catalog(args.seed, args.titles, regions, args.days)
    history = generate_history(catalog, regions, args.days, args.seed)
    ev = evaluate(history, args.top, args.test_days, trees=args.trees, seed=args.seed)
    took = time.perf_counter() - t0
    if args.json:
        out = dataclasses.asdict(ev)
        out["seconds"] = took
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"{args.titles} titles, {len(regions)} regions, {args.days} days (seed {args.seed}); "
        f"train targets days {ev.train_days[0]}-{ev.train_days[1]}, "
        f"held out {ev.test_days[0]}-{ev.test_days[1]}"
    )
    print(f"'in tomorrow's top {args.top} per region', mean over region-days:")
    rows = [
        ("random forest, top N by probability", ev.model),
        ("random forest, probability >= 0.5", ev.model_threshold),
        (f"decayed counts (half-life {ev.baseline_half_life:g} d), top N", ev.baseline),
        ("random forest, region-days with a release", ev.model_release),
        ("decayed counts, region-days with a release", ev.baseline_release),
    ]
    rows[1:1] = [
        ("forest without the calendar features, top N", ev.model_before),
        ("forest regressing views, top N by views", ev.views_model),
    ]
    rows.append(("forest without the calendar features, release days", ev.model_before_release))
    for name, s in rows:
        print(f"  {name:<52} precision {s.precision:.3f}  recall {s.recall:.3f}  ({s.days} region-days)")
    print(f"the releases themselves (a title released that day in a region) in the top {args.top}:")
    for key, name in (
        ("model", "random forest"),
        ("model_before", "forest without the calendar features"),
        ("views_model", "forest regressing views"),
        ("baseline", "decayed counts"),
    ):
        s = ev.releases[key]
        print(f"  {name:<52} precision {s.precision:.3f}  recall {s.recall:.3f}  ({s.days} releases)")
    print(f"({took:.1f} s)")
    return 0


def _plan(args: argparse.Namespace) -> int:
    import numpy as np

    from cdnlab.control.content_catalog import LADDER, default_regions, generate_catalog
    from cdnlab.control.fill_plan import ApplianceSpec, catalog_units, expected_views, plan, session_bytes
    from cdnlab.control.popularity import predict_tomorrow
    from cdnlab.control.viewing_history import generate_history

    regions = default_regions(args.days)
    names = [r.name for r in regions]
    if args.region not in names:
        print(f"cdnlab fill plan: --region must be one of {', '.join(names)}")
        return 2
    catalog = generate_catalog(args.seed, args.titles, regions, args.days)
    history = generate_history(catalog, regions, args.days, args.seed)
    ri = names.index(args.region)
    prob = predict_tomorrow(history, args.top, trees=args.trees, seed=args.seed)[ri]
    views = expected_views(history.views[:, ri, :], prob, args.top)
    popularity = {t.id: float(views[j]) for j, t in enumerate(catalog)}
    tb = 10**12
    site = [
        ApplianceSpec(
            f"{args.region}-a{i}",
            f"{args.region}-s1",
            args.region,
            int(args.flash_tb * tb),
            int(args.hdd_tb * tb),
        )
        for i in range(args.appliances)
    ]
    units = catalog_units(catalog, LADDER)
    size = {cu.unit: cu.size for cu in units}
    plans = [plan(a, site, units, popularity, {}, hot=args.hot, session_bytes=session_bytes()) for a in site]
    out = [
        {
            "appliance": p.appliance_id,
            "flash_units": sum(1 for t in p.placement.values() if t == "flash"),
            "hdd_units": sum(1 for t in p.placement.values() if t == "hdd"),
            "flash_used": p.used["flash"] / max(1, a.flash_bytes),
            "hdd_used": p.used["hdd"] / max(1, a.hdd_bytes),
            "titles": len({u.title for u in p.placement}),
            "fetch_bytes": sum(size[u] for u, _ in p.fetch),
        }
        for p, a in zip(plans, site, strict=True)
    ]
    distinct = len({u.title for p in plans for u in p.placement})
    licensed = sum(1 for t in catalog if args.region in t.regions)
    if args.json:
        print(
            json.dumps({"appliances": out, "site_distinct_titles": distinct, "licensed": licensed}, indent=2)
        )
        return 0
    for row in out:
        print(
            f"  {row['appliance']}: flash {row['flash_units']} units ({100 * row['flash_used']:.1f} %), "
            f"HDD {row['hdd_units']} units ({100 * row['hdd_used']:.1f} %), {row['titles']} titles, "
            f"fetch {row['fetch_bytes'] / 1e9:,.0f} GB"
        )
    print(
        f"site {args.region}-s1 holds {distinct} distinct titles of {licensed} licensed in {args.region} "
        f"(one appliance alone: {max(r['titles'] for r in out)}); {int(np.sum(prob >= 0.5))} titles "
        f"predicted in tomorrow's top {args.top}"
    )
    return 0


def _publish(args: argparse.Namespace) -> int:
    """Walk DIR's content/ tree, hash every file, PUT the set (and popularity) to the control plane."""
    import hashlib
    from pathlib import Path

    import httpx

    root = Path(args.root)
    base = root / "content" if (root / "content").is_dir() else root
    if not base.is_dir():
        print(f"cdnlab fill publish: {root} is not a directory")
        return 2
    objects = []
    for f in sorted(base.rglob("*")):
        if not f.is_file() or f.name.startswith(".") or f.suffix == ".log":
            continue
        key = "/content/" + f.relative_to(base).as_posix()
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        objects.append({"key": key, "size": f.stat().st_size, "sha256": h.hexdigest()})
    body: dict = {"objects": objects, "hot": args.hot}
    if args.popularity:
        body["popularity"] = json.loads(Path(args.popularity).read_text())
    if args.window:
        body["window"] = args.window
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    try:
        resp = httpx.put(
            f"{args.control.rstrip('/')}/v1/fill/content", json=body, headers=headers, timeout=60
        )
    except httpx.HTTPError as exc:
        print(f"cdnlab fill publish: control plane unreachable: {exc}")
        return 1
    if resp.status_code != 200:
        print(f"cdnlab fill publish: {resp.status_code} {resp.text[:500]}")
        return 1
    print(json.dumps(resp.json()) if args.json else f"published {len(objects)} objects: {resp.json()}")
    return 0


def register(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """Adds predict, plan and publish; returns the subparsers (``cdnlab fill run`` joins them)."""
    sub = parser.add_subparsers(dest="fill_cmd", metavar="SUBCOMMAND")
    p = sub.add_parser(
        "predict",
        help="train and evaluate the popularity model on a seeded viewing history",
        formatter_class=_Fmt,
        description="Seeded catalog and viewing history (release spikes, weekly rhythm, regional "
        "languages, holidays); a random forest against decayed counts on held-out days.",
        epilog="example:\n  cdnlab fill predict --titles 500 --days 70 --test-days 14 --top 50 --seed 1",
    )
    p.add_argument("--titles", type=int, default=500)
    p.add_argument("--days", type=int, default=70, help="days of history, held-out days included")
    p.add_argument("--test-days", type=int, default=14, help="the last days, held out")
    p.add_argument("--regions", help="comma-separated subset of us,de,br,jp (default: all four)")
    p.add_argument("--top", type=int, default=50, help="N in 'tomorrow's top N per region'")
    p.add_argument("--trees", type=int, default=60)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "plan",
        help="plan tomorrow's fill for a site's appliances from the predicted popularity",
        formatter_class=_Fmt,
        description="Seeded catalog and history; the forest predicts tomorrow; each appliance of "
        "the site gets its plan (flash ≤ 95 %%, HDD ≤ 85 %%, licensing, consistent hashing).",
        epilog="example:\n  cdnlab fill plan --region de --appliances 3 --flash-tb 2 --hdd-tb 8 --hot 5",
    )
    p.add_argument("--titles", type=int, default=500)
    p.add_argument("--days", type=int, default=70)
    p.add_argument("--top", type=int, default=100, help="N the forest is trained on")
    p.add_argument("--trees", type=int, default=60)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--region", default="us")
    p.add_argument("--appliances", type=int, default=3)
    p.add_argument("--flash-tb", type=float, default=2.0)
    p.add_argument("--hdd-tb", type=float, default=8.0)
    p.add_argument("--hot", type=int, default=5, help="most popular titles on every appliance of the site")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_plan)

    p = sub.add_parser(
        "publish",
        help="send a content tree (keys, sizes, SHA-256) to the control plane for fill planning",
        formatter_class=_Fmt,
        description="Hashes every file under DIR/content (or DIR) as /content/… keys and PUTs the set "
        "to /v1/fill/content; each appliance's plan (GET /v1/fill/plan) is computed from it.",
        epilog="example:\n  cdnlab fill publish /srv/origin --control http://127.0.0.1:8900 --hot 2",
    )
    p.add_argument("root", metavar="DIR")
    p.add_argument("--control", default=os.environ.get("CDNLAB_CONTROL", "http://127.0.0.1:8900"))
    p.add_argument("--token", default=os.environ.get("CDNLAB_ADMIN_TOKEN"))
    p.add_argument("--popularity", metavar="FILE", help="JSON {title: predicted views}")
    p.add_argument("--hot", type=int, default=0, help="titles planned on every appliance of a site")
    p.add_argument("--window", help="suggested fill window HH:MM-HH:MM (local time)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_publish)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    return sub
