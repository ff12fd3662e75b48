"""``cdnlab edge …`` subcommands. Kept light: the daemon's modules load only when it runs."""

from __future__ import annotations

import argparse
import json
import sys

_EXAMPLE = """examples:
  cdnlab edge serve --config /etc/cdnlab/edge.toml
  cdnlab edge serve --listen 127.0.0.1:8080 --admin-listen 127.0.0.1:8081 \\
      --store /var/cache/cdnlab --upstream http://127.0.0.1:9000 --upstream http://127.0.0.1:9001
  cdnlab edge serve ... --tls-listen 0.0.0.0:443 --tls-cert fullchain.pem --tls-key key.pem
  cdnlab edge check --config /etc/cdnlab/edge.toml     # validate only (exit 2 on a bad key)
  cdnlab edge scrub --config /etc/cdnlab/edge.toml --rate 200M   # one integrity pass now"""


def register(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _EXAMPLE
    sub = parser.add_subparsers(dest="edge_cmd", metavar="COMMAND")
    for name, help_text in (("serve", "run the delivery daemon"), ("check", "validate a config and exit")):
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_EXAMPLE,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--config", metavar="FILE", help="TOML config file")
        p.add_argument("--listen", metavar="HOST:PORT", help="client listener (quick form)")
        p.add_argument("--admin-listen", metavar="HOST:PORT", help="admin listener (quick form)")
        p.add_argument("--store", metavar="DIR", help="one flash tier and the index in DIR (quick form)")
        p.add_argument(
            "--upstream",
            metavar="URL",
            action="append",
            default=[],
            help="upstream (origin or shield) URL, in failover order; repeatable",
        )
        p.add_argument("--tls-listen", metavar="HOST:PORT", help="HTTPS listener (quick form)")
        p.add_argument("--tls-cert", metavar="FILE", help="certificate chain (PEM) for --tls-listen")
        p.add_argument("--tls-key", metavar="FILE", help="private key (PEM) for --tls-cert")
        p.add_argument("--role", choices=["edge", "shield"], default="edge")
        p.add_argument("--workers", type=int, default=1, help="worker processes (quick form, default 1)")
        p.add_argument("--capacity", default="10G", help="capacity of the quick-form tier (default 10G)")
        p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
        p.set_defaults(func=_serve if name == "serve" else _check)
    p = sub.add_parser(
        "scrub",
        help="re-verify every stored object's SHA-256 once (safe while the daemon runs)",
        description="One scrub pass: objects whose bytes no longer match are dropped (the next "
        "request refetches them). Prints the counts as JSON; exit 1 if anything was dropped.",
    )
    p.add_argument("--config", metavar="FILE", required=True, help="the daemon's TOML config file")
    p.add_argument("--rate", default=None, help="bytes/s to read (default [storage] scrub_rate; 0: no limit)")
    p.set_defaults(func=_scrub)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _scrub(args: argparse.Namespace) -> int:
    from cdnlab.edge.config import ConfigError, load
    from cdnlab.edge.scrub import scrub_once
    from cdnlab.sizes import parse_size

    try:
        config = load(args.config)
        rate = config.storage.scrub_rate if args.rate is None else parse_size(args.rate)
    except (ConfigError, ValueError) as exc:
        print(f"cdnlab edge: config error: {exc}", file=sys.stderr)
        return 2
    counts = scrub_once(config, rate)
    print(json.dumps(counts, sort_keys=True))
    return 1 if counts.get("corrupt") or counts.get("missing") else 0


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from cdnlab.edge import config as cfg
    from cdnlab.policy import CatalogError, default_catalog

    try:  # the catalog every worker classifies with: a bad one stops the start, not a request
        default_catalog()
    except CatalogError as exc:
        raise cfg.ConfigError(f"policy catalog: {exc}") from None
    quick = [args.listen, args.admin_listen, args.store]
    tls = [args.tls_listen, args.tls_cert, args.tls_key]
    if args.config:
        if any(quick) or args.upstream or any(tls):
            raise cfg.ConfigError("use either --config or the quick flags, not both")
        return cfg.load(args.config)
    if not all(quick) or not args.upstream:
        raise cfg.ConfigError(
            "need --config FILE, or all of --listen, --admin-listen, --store and at least one --upstream"
        )
    if any(tls) and not all(tls):
        raise cfg.ConfigError("--tls-listen, --tls-cert and --tls-key go together")
    return cfg.quick(
        args.listen,
        args.admin_listen,
        args.store,
        args.upstream,
        role=args.role,
        workers=args.workers,
        capacity=args.capacity,
        tls=tuple(tls) if all(tls) else None,
    )


def _check(args: argparse.Namespace) -> int:
    from cdnlab.edge.config import ConfigError

    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"cdnlab edge: config error: {exc}", file=sys.stderr)
        return 2
    print(f"ok: {config.role} {config.id}, {len(config.tiers)} disk(s), {len(config.upstreams)} upstream(s)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import logging

    from cdnlab.edge.config import ConfigError

    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"cdnlab edge: config error: {exc}", file=sys.stderr)
        return 2
    if args.log_level:
        config = config.model_copy(update={"log": config.log.model_copy(update={"level": args.log_level})})
    logging.basicConfig(
        level=config.log.level.upper(), format="%(asctime)s master %(levelname)s %(name)s: %(message)s"
    )
    from cdnlab.edge.master import serve

    return serve(config)
