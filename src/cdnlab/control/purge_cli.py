"""``cdnlab purge …``: ask the control plane to invalidate paths across the fleet and CloudFront,
and show an invalidation's status. Only the control plane's HTTP API is used (stdlib client)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

_DONE = ("done", "failed")


class _Fmt(argparse.RawDescriptionHelpFormatter):
    pass


def _call(args: argparse.Namespace, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    token = args.token or os.environ.get("CDNLAB_ADMIN_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"{args.control.rstrip('/')}{path}", data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"detail": text}


def _summary(inv: dict) -> str:
    by_state: dict[str, int] = {}
    for t in inv["appliances"]:
        by_state[t["state"]] = by_state.get(t["state"], 0) + 1
    parts = [f"{inv['id']}: {inv['state']}", ", ".join(f"{n} {s}" for s, n in sorted(by_state.items()))]
    if inv.get("cloudfront"):
        cf = inv["cloudfront"]
        parts.append(
            f"cloudfront {cf['state']} {cf.get('cloudfront_id') or ''} {cf.get('cloudfront_status') or ''}"
        )
    if inv.get("started_at") and inv.get("finished_at"):
        parts.append(f"{inv['finished_at'] - inv['started_at']:.3f}s")
    return "; ".join(p.strip() for p in parts if p.strip())


def _print(args: argparse.Namespace, inv: dict) -> None:
    if args.json:
        print(json.dumps(inv, indent=2))
        return
    print(_summary(inv))
    for t in inv["appliances"]:
        err = f"  {t['error']}" if t.get("error") else ""
        print(
            f"  stage {t['stage']}  {t['name']:<20} {t['state']:<8} attempts={t['attempts']} "
            f"purged={t['purged']}{err}"
        )


def _wait(args: argparse.Namespace, inv: dict) -> tuple[int, dict]:
    deadline = time.monotonic() + args.wait_timeout
    while inv["state"] not in _DONE and time.monotonic() < deadline:
        time.sleep(0.2)
        status, inv = _call(args, "GET", f"/v1/invalidations/{inv['id']}")
        if status != 200:
            return status, inv
    return 200, inv


def _send(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "paths": args.paths,
        "prefixes": args.prefix or [],
        "patterns": args.pattern or [],
        "staged": not args.no_stage,
        "cloudfront": not args.no_cloudfront,
    }
    if args.request_id:
        body["request_id"] = args.request_id
    if args.not_before:
        nb = args.not_before
        body["not_before"] = time.time() + float(nb[1:]) if nb.startswith("+") else nb
    status, inv = _call(args, "POST", "/v1/invalidations", body)
    if status not in (200, 202):
        print(f"cdnlab purge: HTTP {status}: {inv.get('detail', inv)}", file=sys.stderr)
        return 1
    if args.wait:
        status, inv = _wait(args, inv)
        if status != 200:
            print(f"cdnlab purge: HTTP {status}: {inv}", file=sys.stderr)
            return 1
    _print(args, inv)
    return 0 if inv["state"] != "failed" else 1


def _status(args: argparse.Namespace) -> int:
    status, inv = _call(args, "GET", f"/v1/invalidations/{args.id}")
    if status != 200:
        print(f"cdnlab purge: HTTP {status}: {inv.get('detail', inv)}", file=sys.stderr)
        return 1
    if args.wait:
        status, inv = _wait(args, inv)
    _print(args, inv)
    return 0 if inv["state"] != "failed" else 1


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--control",
        default=os.environ.get("CDNLAB_CONTROL", "http://127.0.0.1:8900"),
        help="control plane base URL (env CDNLAB_CONTROL; default http://127.0.0.1:8900)",
    )
    p.add_argument("--token", help="admin token (env CDNLAB_ADMIN_TOKEN)")
    p.add_argument("--wait", action="store_true", help="wait until the invalidation is done or failed")
    p.add_argument("--wait-timeout", type=float, default=600.0, help="seconds (default 600)")
    p.add_argument("--json", action="store_true", help="print the invalidation as JSON")


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="purge_cmd", metavar="SUBCOMMAND")
    p = sub.add_parser(
        "send",
        help="invalidate paths, prefixes and patterns on every appliance and CloudFront",
        formatter_class=_Fmt,
        description="POST /v1/invalidations. Exit 1 if it fails (with --wait: if any target failed).",
        epilog="examples:\n"
        "  cdnlab purge send /content/t0001/manifest.json --wait\n"
        "  cdnlab purge send --prefix /content/t0002/ --pattern '/content/t0003/*/seg-0000?.m4s' \\\n"
        "      --not-before 2026-12-01T02:00:00Z --request-id release-42 --control http://127.0.0.1:8900",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="exact paths")
    p.add_argument("--prefix", action="append", metavar="PREFIX", help="path prefix (repeatable)")
    p.add_argument("--pattern", action="append", metavar="GLOB", help="wildcard pattern (repeatable)")
    p.add_argument("--not-before", metavar="WHEN", help="ISO 8601 time, epoch seconds, or +SECONDS")
    p.add_argument("--request-id", help="idempotency key: repeating it returns the same invalidation")
    p.add_argument("--no-stage", action="store_true", help="all appliances at once")
    p.add_argument("--no-cloudfront", action="store_true", help="appliances only")
    _common(p)
    p.set_defaults(func=_send)

    p = sub.add_parser(
        "status",
        help="an invalidation's status per appliance and for CloudFront",
        formatter_class=_Fmt,
        description="GET /v1/invalidations/ID.",
        epilog="example:\n  cdnlab purge status inv-0123456789ab --wait",
    )
    p.add_argument("id")
    _common(p)
    p.set_defaults(func=_status)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
