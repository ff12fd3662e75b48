"""``cdnlab sim …``: replay a trace through eviction policies, or generate a synthetic trace.

Kept light: the simulator's modules load only when a command runs."""

from __future__ import annotations

import argparse
import json
import sys

_EXAMPLE = """examples:
  cdnlab sim generate --workload cdn --out cdn.csv            # 1M requests, seeded
  cdnlab sim --trace cdn.csv --cache-size 20G                 # every policy and Belady
  cdnlab sim --trace cdn.csv --cache-size 5% --policy default --policy lru --json
  cdnlab sim --trace w.oracleGeneral.bin --cache-size 1G      # libCacheSim binary trace

--cache-size takes bytes (20G, 512M, 1073741824) or a share of the trace's working set (5%).
Policies: the eviction registry's names (lru, sieve, s3fifo, …, NAME+tinylfu), "default",
and Belady's offline bounds "belady" (object variant) and "belady-bytes"."""

BELADY = ("belady", "belady-bytes")


def register(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _EXAMPLE
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--trace", metavar="FILE", help="CSV timestamp,key,size or oracleGeneral binary")
    parser.add_argument(
        "--format", choices=["auto", "csv", "oracle"], default="auto", help="trace format (default: by name)"
    )
    parser.add_argument("--cache-size", metavar="BYTES", help="cache capacity: 20G, 1073741824 or 5%%")
    parser.add_argument(
        "--policy", metavar="NAME", action="append", default=[], help="repeatable; default: all"
    )
    parser.add_argument("--json", action="store_true", help="print JSON: {policy: {object_miss_ratio, …}}")
    parser.set_defaults(func=_simulate)
    sub = parser.add_subparsers(dest="sim_cmd", metavar="COMMAND")
    gen = sub.add_parser(
        "generate",
        help="write a seeded synthetic workload trace",
        description="Write a seeded synthetic workload trace (see cdnlab.sim.workload).",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("--workload", default="cdn", help="cdn, cdn-releases, cdn-longtail or scan")
    gen.add_argument("--out", metavar="FILE", required=True, help="*.csv, or *.bin for oracleGeneral")
    gen.add_argument("--format", choices=["auto", "csv", "oracle"], default="auto")
    gen.add_argument("--seed", type=int, default=None, help="another seed than the preset's")
    gen.add_argument("--requests", type=int, default=None, help="trace length (default 1000000)")
    gen.set_defaults(func=_generate)


def _all_policies() -> list[str]:
    from cdnlab.eviction.registry import POLICIES

    return [*POLICIES, *BELADY]


def _capacity(text: str, working_set: int) -> int:
    from cdnlab.sizes import parse_size

    text = text.strip()
    if text.endswith("%"):
        return int(working_set * float(text[:-1]) / 100)
    return parse_size(text)


def _simulate(args: argparse.Namespace) -> int:
    if not args.trace or not args.cache_size:
        print("cdnlab sim: need --trace FILE and --cache-size BYTES (see --help)", file=sys.stderr)
        return 2
    from cdnlab.eviction.registry import DEFAULT_POLICY, get_policy
    from cdnlab.sim.belady import belady
    from cdnlab.sim.replay import Result, replay
    from cdnlab.sim.trace import read_trace

    names = args.policy or _all_policies()
    for name in names:  # fail before the long part, with the one bad name
        if name not in BELADY:
            try:
                get_policy(name, 1)
            except (ValueError, TypeError) as exc:
                print(f"cdnlab sim: --policy: {exc}", file=sys.stderr)
                return 2
    try:
        trace = read_trace(args.trace, args.format)
    except (OSError, ValueError) as exc:
        print(f"cdnlab sim: --trace: {exc}", file=sys.stderr)
        return 2
    try:
        capacity = _capacity(args.cache_size, trace.unique_bytes())
    except ValueError as exc:
        print(f"cdnlab sim: --cache-size: {exc}", file=sys.stderr)
        return 2

    results: dict[str, Result] = {}
    with _progress(len(trace) * len(names)) as advance:
        for name in names:
            if name in BELADY:
                results[name] = belady(trace, capacity, name, progress=advance)
            else:
                results[name] = replay(get_policy(name, capacity), trace, progress=advance)

    if args.json:
        print(json.dumps({name: r.as_dict() for name, r in results.items()}, indent=2))
        return 0
    _print_table(args.trace, trace, capacity, results, DEFAULT_POLICY)
    return 0


class _progress:
    """A rich progress bar on stderr when it is a terminal; otherwise nothing."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._bar = None

    def __enter__(self):  # type: ignore[no-untyped-def]
        if not sys.stderr.isatty():
            return lambda n: None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task("replaying", total=self.total)
        return lambda n: self._bar.advance(task, n)  # type: ignore[union-attr]

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _print_table(path: str, trace, capacity: int, results, default: str) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    ws = trace.unique_bytes()
    table = Table(
        title=f"{path}: {len(trace):,} requests, working set {_human(ws)}, "
        f"cache {_human(capacity)} ({100 * capacity / ws if ws else 0:.1f}%)"
    )
    table.add_column("policy")
    table.add_column("object miss ratio", justify="right")
    table.add_column("byte miss ratio", justify="right")
    for name, r in results.items():
        label = f"{name} (default)" if name == default else name
        table.add_row(label, f"{r.object_miss_ratio:.4f}", f"{r.byte_miss_ratio:.4f}")
    Console().print(table)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError  # unreachable


def _generate(args: argparse.Namespace) -> int:
    from cdnlab.sim.trace import is_oracle, write_csv, write_oracle
    from cdnlab.sim.workload import PRESETS, generate

    if args.workload not in PRESETS:
        known = ", ".join(PRESETS)
        print(f"cdnlab sim generate: --workload: unknown {args.workload!r}; known: {known}", file=sys.stderr)
        return 2
    fmt = args.format
    if fmt == "auto":
        fmt = "oracle" if is_oracle(args.out) else "csv"
    trace = generate(args.workload, seed=args.seed, requests=args.requests)
    (write_oracle if fmt == "oracle" else write_csv)(trace, args.out)
    print(
        f"wrote {args.out}: {len(trace):,} requests, {len(set(trace.keys)):,} objects, "
        f"working set {_human(trace.unique_bytes())} ({fmt})"
    )
    return 0
