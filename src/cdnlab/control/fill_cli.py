"""``cdnlab fill …``: the popularity side of overnight fill. ``fill predict`` generates a seeded
catalog and viewing history, trains the random forest and reports it against the decayed-count
baseline on held-out days."""

from __future__ import annotations

import argparse
import json
import time


class _Fmt(argparse.RawDescriptionHelpFormatter):
    pass


def _predict(args: argparse.Namespace) -> int:
    from cdnlab.control.content_catalog import default_regions, generate_catalog
    from cdnlab.control.popularity import evaluate
    from cdnlab.control.viewing_history import generate_history

    t0 = time.perf_counter()
    regions = default_regions(args.days)
    catalog = generate_catalog(args.seed, args.titles, regions, args.days)
    history = generate_history(catalog, regions, args.days, args.seed)
    ev = evaluate(history, args.top, args.test_days, trees=args.trees, seed=args.seed)
    took = time.perf_counter() - t0
    if args.json:
        out = {k: (v.__dict__ if hasattr(v, "__dict__") else v) for k, v in ev.__dict__.items()}
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
    for name, s in rows:
        print(f"  {name:<48} precision {s.precision:.3f}  recall {s.recall:.3f}  ({s.days} region-days)")
    print(f"({took:.1f} s)")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
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
    p.add_argument("--top", type=int, default=50, help="N in 'tomorrow's top N per region'")
    p.add_argument("--trees", type=int, default=60)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_predict)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
