"""``cdnlab policy …``: check the policy catalog and show what it decides for a request path."""

from __future__ import annotations

import argparse
import json
import os
import sys

_EXAMPLE = """examples:
  cdnlab policy check                          # the catalog in use ($CDNLAB_CATALOG or the packaged one)
  cdnlab policy check --catalog ./catalog.toml # exit 2 and one line naming the key if it is wrong
  cdnlab policy show /api/v1/titles.json       # class, TTLs, compression, JSON minify, images
  cdnlab policy show /images/a.jpg --json"""


def register(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _EXAMPLE
    sub = parser.add_subparsers(dest="policy_cmd", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("check", help="validate a catalog", description="validate a catalog", epilog=_EXAMPLE)
    p.formatter_class = fmt
    p.add_argument(
        "--catalog", metavar="FILE", help="catalog file (default: $CDNLAB_CATALOG or the packaged one)"
    )
    p.set_defaults(func=_check)
    p = sub.add_parser(
        "show", help="what the catalog decides for a path", description="the class of PATH", epilog=_EXAMPLE
    )
    p.formatter_class = fmt
    p.add_argument("path", metavar="PATH", help="request path, e.g. /title/1/manifest.mpd")
    p.add_argument(
        "--catalog", metavar="FILE", help="catalog file (default: $CDNLAB_CATALOG or the packaged one)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_show)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _load(path: str | None):  # type: ignore[no-untyped-def]
    from cdnlab.policy import CATALOG_ENV, load

    return load(path or os.environ.get(CATALOG_ENV) or None)


def _check(args: argparse.Namespace) -> int:
    from cdnlab.policy import CatalogError

    try:
        cat = _load(args.catalog)
    except CatalogError as exc:
        print(f"cdnlab policy: {exc}", file=sys.stderr)
        return 2
    names = ", ".join(c.name for c in cat.classes)
    print(f"ok: {len(cat.classes)} classes ({names})")
    return 0


def _show(args: argparse.Namespace) -> int:
    from cdnlab.policy import CatalogError

    try:
        cat = _load(args.catalog)
    except CatalogError as exc:
        print(f"cdnlab policy: {exc}", file=sys.stderr)
        return 2
    path = args.path if args.path.startswith("/") else "/" + args.path
    c = cat.classify(path)
    info = {
        "path": path,
        "class": c.name,
        "cacheable": c.cacheable,
        "ttl": {"min": c.min_ttl, "default": c.default_ttl, "max": c.max_ttl},
        "cache_control": c.cache_control,
        "compress": list(c.codings),
        "minify_json": c.minify_json,
        "image": c.image.model_dump() if c.image is not None else None,
        "range": c.range,
        "signed": c.signed,
        "query_key": c.query_key,
    }
    if args.json:
        print(json.dumps(info, sort_keys=True))
        return 0
    for k, v in info.items():
        print(f"{k:14} {v}")
    return 0
