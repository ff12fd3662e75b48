"""``cdnlab play``: play a title as the reference player and print QoE."""

from __future__ import annotations

import argparse
import json
import sys


class _Fmt(argparse.RawDescriptionHelpFormatter):
    pass


def _play(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console

    from cdnlab.client.player import Options, PlaybackError, Player

    console = Console(stderr=True, quiet=args.json)
    opts = Options(
        probe_timeout=args.probe_timeout,
        fast_ms=args.fast_ms,
        tie_ms=args.tie_ms,
        speed=args.speed,
        max_segments=args.segments,
        profile=args.profile,
        segment_timeout=args.segment_timeout,
    )
    player = Player(
        args.control,
        args.title,
        opts,
        source_address=args.source_address,
        forwarded_for=args.forwarded_for,
        on_event=lambda msg: console.log(msg),
    )

    async def main() -> None:
        task = asyncio.create_task(player.run())
        if args.json:
            await task
            return
        from rich.progress import BarColumn, Progress, TextColumn

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} segments"),
            console=console,
        ) as progress:
            bar = progress.add_task(f"playing {args.title}", total=None)
            while not task.done():
                progress.update(
                    bar, completed=player.qoe.segments_played, total=player.qoe.segments_total or None
                )
                await asyncio.sleep(0.1)
            progress.update(bar, completed=player.qoe.segments_played)
        await task

    try:
        asyncio.run(main())
    except PlaybackError as exc:
        player.qoe.errors.append(str(exc))
    except OSError as exc:
        player.qoe.errors.append(f"cannot reach the control plane: {exc}")
    q = player.qoe
    if args.json:
        json.dump(q.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from rich.console import Console as Out
        from rich.table import Table

        t = Table(title=f"QoE for {q.title}", show_header=False)
        rows = [
            ("completed", f"{q.completed} ({q.segments_played}/{q.segments_total} segments)"),
            ("client site", str(q.client_site)),
            ("startup time", "—" if q.startup_time_s is None else f"{q.startup_time_s * 1000:.0f} ms"),
            ("rebuffers", f"{q.rebuffer_count} ({q.rebuffer_time_s:.2f} s)"),
            ("average bitrate", f"{q.avg_bitrate_bps / 1e6:.2f} Mbit/s"),
            ("failovers", str(q.failovers)),
            ("endpoints used", " → ".join(q.endpoints_used) or "—"),
            ("bytes per endpoint", ", ".join(f"{k}: {v}" for k, v in q.bytes_per_endpoint.items()) or "—"),
            ("profiles", ", ".join(f"{k}×{v}" for k, v in q.profiles.items()) or "—"),
        ]
        for k, v in rows:
            t.add_row(k, v)
        Out().print(t)
        for e in q.errors[:10]:
            Out(stderr=True).print(f"[yellow]error:[/] {e}")
    return 0 if q.completed else 1


def register(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _Fmt
    parser.epilog = (
        "example:\n  cdnlab play --control http://127.0.0.1:8900 --title t0001\n"
        "  cdnlab play --control http://127.0.0.1:8900 --title t0001 --speed 20 --json"
    )
    parser.add_argument("--control", required=True, help="control plane base URL")
    parser.add_argument("--title", required=True, help="title id from the catalog")
    parser.add_argument("--profile", help="play one profile only (no bitrate adaptation)")
    parser.add_argument("--segments", type=int, help="stop after N segments")
    parser.add_argument("--speed", type=float, default=1.0, help="playback clock speed-up (default 1)")
    parser.add_argument("--probe-timeout", type=float, default=2.0, help="HEAD probe timeout, s (default 2)")
    parser.add_argument(
        "--fast-ms", type=float, default=50.0, help="take the fastest appliance under this (50)"
    )
    parser.add_argument(
        "--tie-ms", type=float, default=10.0, help="probe answers this close tie; rank decides"
    )
    parser.add_argument("--segment-timeout", type=float, default=10.0, help="per-segment timeout, s (10)")
    parser.add_argument("--source-address", help="bind to this local address (a lab client's identity)")
    parser.add_argument("--forwarded-for", help="send X-Forwarded-For to steering (trusted proxies only)")
    parser.add_argument("--json", action="store_true", help="print QoE as JSON")
    parser.set_defaults(func=_play)
