"""The one `cdnlab` command. Each part registers its own subcommands; imports stay lazy so
`cdnlab edge serve` does not pay for the control plane's dependencies."""

from __future__ import annotations

import argparse
import importlib
import sys

# (subcommand, module exposing `register(subparsers)`, one-line help)
_PARTS: list[tuple[str, str, str]] = [
    ("edge", "cdnlab.edge.cli", "the delivery daemon (edge or shield appliance)"),
    ("control", "cdnlab.control.cli", "the control plane: steering, health, fill, invalidation"),
    ("purge", "cdnlab.control.purge_cli", "invalidate content on every appliance and CloudFront"),
    ("fill", "cdnlab.fill_cli", "overnight fill: popularity prediction, plans, running a plan"),
    ("cost", "cdnlab.control.cost_cli", "CloudFront's tiered pricing against appliance cost"),
    ("play", "cdnlab.client.cli", "play a title as the reference player and print QoE"),
    ("sim", "cdnlab.sim.cli", "replay a request trace through eviction policies and Belady"),
    ("policy", "cdnlab.policy.cli", "check the policy catalog, show what it decides for a path"),
    ("lab", "cdnlab.lab.cli", "stand the whole CDN up on this machine and prove it"),
]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdnlab",
        formatter_class=_Formatter,
        description="cdnlab: a multi-tier CDN delivered as code.",
        epilog="example:\n  cdnlab edge serve --listen 127.0.0.1:8080 --admin-listen 127.0.0.1:8081 \\\n"
        "      --store /var/cache/cdnlab --upstream http://127.0.0.1:9000",
    )
    sub = parser.add_subparsers(dest="part", metavar="COMMAND")
    for name, module, help_text in _PARTS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue  # that part has not landed yet
            raise
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_Formatter)
        mod.register(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
