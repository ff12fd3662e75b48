"""``cdnlab lab …``: stand the CDN up on this machine and prove it."""

from __future__ import annotations

import argparse
from pathlib import Path

_EXAMPLE = """examples:
  cdnlab lab up                  # origin → shield → edge on loopback, a client, checks
  cdnlab lab up --out lab/out    # where the report goes"""


def register(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _EXAMPLE
    sub = parser.add_subparsers(dest="lab_cmd", metavar="COMMAND")
    up = sub.add_parser(
        "up",
        help="bring the lab up, run every check, print and save a report",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument("--out", type=Path, default=Path("lab/out"), help="report directory (default lab/out)")
    up.set_defaults(func=_up)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _up(args: argparse.Namespace) -> int:
    from rich.console import Console

    from cdnlab.lab.loopback import run

    console = Console(width=max(Console().width, 150))
    report = run(args.out, console)
    return 0 if report.ok else 1
