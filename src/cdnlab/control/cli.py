"""``cdnlab control …``: serve the control plane, write its OpenAPI document, check a coverage zone
file, publish fleet figures to CloudWatch. Heavy imports stay inside the handlers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class _Fmt(argparse.RawDescriptionHelpFormatter):
    pass


def _load_config(args: argparse.Namespace):  # -> ControlConfig
    from cdnlab.control.config import ConfigError, load

    try:
        cfg = load(Path(args.config))
    except ConfigError as exc:
        print(f"cdnlab control: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    updates = {}
    if getattr(args, "listen", None):
        updates["listen"] = args.listen
    if getattr(args, "database", None):
        updates["database"] = args.database
    if getattr(args, "monitor_id", None):
        updates["monitor_id"] = args.monitor_id
    return cfg.model_copy(update=updates) if updates else cfg


def _serve(args: argparse.Namespace) -> int:
    from cdnlab.control.catalog import CatalogError
    from cdnlab.control.config import ConfigError
    from cdnlab.control.coverage import CoverageZoneError
    from cdnlab.control.service import serve

    cfg = _load_config(args)
    try:
        serve(cfg, log_level=args.log_level, access_log=args.access_log)
    except (ConfigError, CoverageZoneError, CatalogError) as exc:
        print(f"cdnlab control: {exc}", file=sys.stderr)
        return 2
    return 0


def openapi_document() -> dict:
    """The OpenAPI document of the app, built without a database or background tasks."""
    from cdnlab.control.app import create_app
    from cdnlab.control.config import from_mapping
    from cdnlab.control.state import ControlState

    cfg = from_mapping({"database": "sqlite://", "signing": {"key": "openapi-only-key"}})
    state = ControlState(cfg)
    try:
        return create_app(state, background=False).openapi()
    finally:
        state.close()


def _openapi(args: argparse.Namespace) -> int:
    text = json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    return 0


def _check_czf(args: argparse.Namespace) -> int:
    import time

    from cdnlab.control.coverage import CoverageZoneError, CoverageZones

    t0 = time.perf_counter()
    try:
        czf = CoverageZones.load(Path(args.file))
    except CoverageZoneError as exc:
        print(f"cdnlab control: {exc}", file=sys.stderr)
        return 2
    took = time.perf_counter() - t0
    print(f"{args.file}: {czf.prefix_count} prefixes, {len(czf.sites)} sites, loaded in {took:.2f}s")
    for ip in args.lookup or []:
        m = czf.lookup(ip)
        print(f"  {ip} → {m.site} ({m.prefix})" if m else f"  {ip} → no match")
    return 0


def _publish_cloudwatch(args: argparse.Namespace) -> int:
    import urllib.request

    from cdnlab.control.cloudwatch import CloudWatchPublisher
    from cdnlab.control.config import CloudWatchConfig

    with urllib.request.urlopen(f"{args.control.rstrip('/')}/v1/analytics", timeout=10) as resp:
        analytics = json.load(resp)
    cfg = CloudWatchConfig(
        enabled=True, namespace=args.namespace, distribution_id=args.distribution_id, region=args.region
    )
    n = CloudWatchPublisher(cfg).publish(analytics)
    print(f"published {n} metric data points to namespace {cfg.namespace}")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="control_cmd", metavar="SUBCOMMAND")

    p = sub.add_parser(
        "serve",
        help="run the control plane HTTP API, health monitor and steering",
        formatter_class=_Fmt,
        description="Run the control plane: registry, health monitor, inventory, steering, analytics.",
        epilog="example:\n  cdnlab control serve --config /etc/cdnlab/control.toml --listen 127.0.0.1:8900"
        "\n\n"
        'minimal control.toml:\n  database = "sqlite:////var/lib/cdnlab/control.db"\n'
        '  coverage_zone_file = "czf.json"\n  catalog_file = "catalog.toml"\n'
        '  [signing]\n  kid = "k1"\n  key = "a-shared-secret"',
    )
    p.add_argument("--config", required=True, help="control plane TOML file")
    p.add_argument("--listen", help="HOST:PORT (overrides the file)")
    p.add_argument(
        "--database", help="SQLAlchemy URL, e.g. sqlite:///control.db or postgresql://… (overrides)"
    )
    p.add_argument("--monitor-id", help="this node's monitor name (overrides)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=_serve)

    p = sub.add_parser(
        "openapi",
        help="write the OpenAPI document",
        formatter_class=_Fmt,
        description="Write the control plane's OpenAPI document (checked into docs/openapi.json).",
        epilog="example:\n  cdnlab control openapi --output docs/openapi.json",
    )
    p.add_argument("--output", default="-", help="file to write, '-' for stdout (default)")
    p.set_defaults(func=_openapi)

    p = sub.add_parser(
        "check-czf",
        help="load a coverage zone file and look addresses up",
        formatter_class=_Fmt,
        description="Validate a coverage zone file (Traffic Control JSON) and try lookups.",
        epilog="example:\n  cdnlab control check-czf czf.json --lookup 192.0.2.7 --lookup 2001:db8::1",
    )
    p.add_argument("file")
    p.add_argument("--lookup", action="append", metavar="IP", help="address to look up (repeatable)")
    p.set_defaults(func=_check_czf)

    p = sub.add_parser(
        "publish-cloudwatch",
        help="publish the fleet figures once to CloudWatch custom metrics",
        formatter_class=_Fmt,
        description="Read /v1/analytics from a control node and put the figures to CloudWatch "
        "(boto3; AWS_ENDPOINT_URL selects an emulator).",
        epilog="example:\n  AWS_ENDPOINT_URL=http://127.0.0.1:5000 cdnlab control publish-cloudwatch \\\n"
        "      --control http://127.0.0.1:8900",
    )
    p.add_argument("--control", required=True, help="control plane base URL")
    p.add_argument("--namespace", default="cdnlab/CDN")
    p.add_argument("--distribution-id", default="cdnlab-oca-fleet")
    p.add_argument("--region", default="us-east-1")
    p.set_defaults(func=_publish_cloudwatch)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
