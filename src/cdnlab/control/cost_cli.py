"""``cdnlab cost``: CloudFront's bill against an appliance fleet for a month of traffic, with the
break-even; ``--seed-example`` reruns seed 003 §5.2 and prints the seed's own figures beside ours."""

from __future__ import annotations

import argparse
import json

from cdnlab.control.cost import (
    GB_PER_PB,
    ApplianceCost,
    Comparison,
    Traffic,
    appliances_needed,
    break_even_gb_per_appliance,
    break_even_share,
)

# Seed 003 §5.2 as written. Its request line does not follow from its own inputs:
# 500B requests × $0.0100 / 10K = $0.5M, not $5M; the totals built on it inherit the factor.
SEED = {
    "cloudfront_transfer_month": 1.5e6,
    "cloudfront_requests_month": 5e6,
    "cloudfront_month": 6.5e6,
    "cloudfront_year": 78e6,
    "appliances_year": 60e6,
    "total_year": 138e6,
    "without_year": 500e6,
    "avoided_year": 422e6,
    "roi": 7.0,
}


class _Fmt(argparse.RawDescriptionHelpFormatter):
    pass


def seed_example(flat_marginal: bool = True) -> Comparison:
    """The seed's case: 50 PB and 500B HTTPS requests a month are the 5% CloudFront carries, so
    the whole is 1,000 PB and 10T requests; 10,000 appliances at $5K hardware + $1K support."""
    return Comparison(
        total=Traffic(gb=1000 * GB_PER_PB, requests=10e12, https_share=1.0),
        appliance_share=0.95,
        appliances=10_000,
        appliance_cost=ApplianceCost(hardware_per_year=5_000, support_per_year=1_000),
        flat_marginal=flat_marginal,
    )


def figures(c: Comparison) -> dict[str, float]:
    w = c.cloudfront_with
    return {
        "appliances": c.appliances,
        "cloudfront_transfer_month": w.transfer,
        "cloudfront_requests_month": w.requests,
        "cloudfront_month": w.total,
        "cloudfront_year": 12 * w.total,
        "appliances_year": c.appliances_per_year,
        "total_year": c.with_per_year,
        "without_year": c.without_per_year,
        "avoided_year": c.avoided_per_year,
        "savings_year": c.savings_per_year,
        "roi": c.roi,
        "break_even_share": break_even_share(c),
        "break_even_gb_per_appliance_month": break_even_gb_per_appliance(c),
    }


_LABELS = {
    "appliances": "appliances",
    "cloudfront_transfer_month": "CloudFront transfer, per month",
    "cloudfront_requests_month": "CloudFront requests, per month",
    "cloudfront_month": "CloudFront, per month",
    "cloudfront_year": "CloudFront, per year",
    "appliances_year": "appliances, per year",
    "total_year": "total CDN, per year",
    "without_year": "without appliances (all via CloudFront), per year",
    "avoided_year": "CloudFront bill avoided, per year",
    "savings_year": "savings net of appliance cost, per year",
    "roi": "ROI (bill avoided / appliance cost)",
    "break_even_share": "break-even: share appliances must serve",
    "break_even_gb_per_appliance_month": "break-even: GB per appliance per month",
}


def _fmt(key: str, v: float) -> str:
    if key in ("roi",):
        return f"{v:.1f}x"
    if key == "break_even_share":
        return f"{100 * v:.2f} %"
    if key in ("appliances", "break_even_gb_per_appliance_month"):
        return f"{v:,.0f}"
    return f"${v / 1e6:,.3f}M"


def _run(args: argparse.Namespace) -> int:
    if args.seed_example:
        c = seed_example(flat_marginal=not args.tiered)
    else:
        total = Traffic(
            gb=args.traffic_pb * GB_PER_PB,
            requests=args.traffic_pb * 1e15 / (args.avg_request_kb * 1e3),
            https_share=args.https_share,
        )
        a = ApplianceCost(
            hardware_per_year=args.hardware_per_year,
            support_per_year=args.support_per_year,
            sustained_gbps=args.appliance_gbps,
            subscribers=args.subscribers_per_appliance,
        )
        n = args.appliances or appliances_needed(
            total.scaled(args.appliance_share), args.subscribers, a, args.peak_to_mean
        )
        c = Comparison(total, args.appliance_share, n, a, flat_marginal=args.flat_marginal)
    out = figures(c)
    if args.json:
        print(json.dumps({"figures": out, "seed": SEED if args.seed_example else None}, indent=2))
        return 0
    print(
        f"traffic {c.total.gb / GB_PER_PB:,.1f} PB/month, {c.total.requests:,.0f} requests, "
        f"{100 * c.appliance_share:.1f} % from appliances; pricing "
        f"{'top-tier rate on every GB (the seed)' if c.flat_marginal else 'tiered'}"
    )
    for k, v in out.items():
        seed = f"   seed: {_fmt(k, SEED[k])}" if args.seed_example and k in SEED else ""
        print(f"  {_LABELS[k]:<52} {_fmt(k, v):>14}{seed}")
    if args.seed_example:
        print(
            "  note: the seed's request line is 10x its own inputs (500B / 10K × $0.0100 = $0.5M);"
            " its totals carry that."
        )
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _Fmt
    parser.epilog = (
        "examples:\n"
        "  cdnlab cost --seed-example\n"
        "  cdnlab cost --traffic-pb 20 --appliance-share 0.9 --subscribers 2000000 --avg-request-kb 500"
    )
    parser.add_argument("--seed-example", action="store_true", help="seed 003 §5.2's worked example")
    parser.add_argument("--tiered", action="store_true", help="with --seed-example: tiered, not flat")
    parser.add_argument("--traffic-pb", type=float, default=1.0, help="PB served per month, all tiers")
    parser.add_argument("--appliance-share", type=float, default=0.95, help="share appliances serve")
    parser.add_argument("--avg-request-kb", type=float, default=100.0, help="mean bytes per request, kB")
    parser.add_argument("--https-share", type=float, default=1.0, help="share of requests over HTTPS")
    parser.add_argument("--subscribers", type=int, default=0, help="subscribers served")
    parser.add_argument("--subscribers-per-appliance", type=int, default=25_000, help="seed: 10K-50K")
    parser.add_argument("--appliance-gbps", type=float, default=40.0, help="sustained Gbps (seed: 40-80)")
    parser.add_argument("--peak-to-mean", type=float, default=2.0, help="peak / mean traffic")
    parser.add_argument("--appliances", type=int, help="fleet size (default: from subscribers and peak)")
    parser.add_argument("--hardware-per-year", type=float, default=5_000.0, help="USD, amortised")
    parser.add_argument("--support-per-year", type=float, default=1_000.0, help="USD per appliance")
    parser.add_argument("--flat-marginal", action="store_true", help="price every GB at its top tier")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=_run)
