"""``cdnlab lab …``: stand the CDN up on this machine and prove it."""

from __future__ import annotations

import argparse
from pathlib import Path

_EXAMPLE = """examples:
  cdnlab lab up                                    # two sites of two appliances, a shield, a control host
  cdnlab lab up --sites 1 --appliances-per-site 1  # a small machine
  cdnlab lab status                                # what runs
  cdnlab lab down                                  # remove everything the lab made
  cdnlab lab up --hosts loopback                   # daemons on 127.0.0.1 only (no root needed)
  cdnlab lab up --hosts vm --sites 1 --appliances-per-site 1 --net 61 --workdir /tmp/vm/run
                                                   # appliances as qemu VMs (slow: ~20 min)"""


def register(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _EXAMPLE
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="lab_cmd", metavar="COMMAND")
    up = sub.add_parser(
        "up",
        help="bring the lab up (or reuse it), run every check, print and save a report",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument(
        "--hosts",
        choices=("nspawn", "vm", "loopback"),
        default="nspawn",
        help="nspawn: every host a systemd-nspawn container with loop-device disks (default); "
        "vm: the edge appliances are qemu VMs (software emulation, minutes to boot) with emulated "
        "NVMe and SATA disks, the shield and the control host stay containers (installs "
        "qemu-system-x86 with apt-get if missing); loopback: daemons on 127.0.0.1",
    )
    up.add_argument("--out", type=Path, default=Path("lab/out"), help="report directory (default lab/out)")
    up.add_argument(
        "--workdir", type=Path, default=Path("lab/out/run"), help="lab state (default lab/out/run)"
    )
    up.add_argument("--sites", type=int, default=2, help="sites (default 2)")
    up.add_argument("--appliances-per-site", type=int, default=2, help="edge appliances per site (default 2)")
    up.add_argument("--net", type=int, default=50, help="lab network 10.203.NET.0/24 (default 50)")
    up.add_argument("--titles", type=int, default=3, help="DASH titles to make (default 3)")
    up.add_argument("--no-testinfra", action="store_true", help="skip the testinfra suites")
    up.add_argument("--no-drills", action="store_true", help="skip the drills")
    up.set_defaults(func=_up)
    for name, func, text in (
        ("down", _down, "stop and remove everything the lab made"),
        ("status", _status, "show what the lab runs"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--workdir", type=Path, default=Path("lab/out/run"), help="lab state (default lab/out/run)"
        )
        p.set_defaults(func=func)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(width=max(Console().width, 150))


def _up(args: argparse.Namespace) -> int:
    console = _console()
    if args.hosts == "loopback":
        from cdnlab.lab.loopback import run

        return 0 if run(args.out, console).ok else 1
    from cdnlab.lab.hostlab import HostLab, Options
    from cdnlab.lab.topology import Topology

    try:
        topo = Topology(sites=args.sites, per_site=args.appliances_per_site, net=args.net, hosts=args.hosts)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    opts = Options(
        workdir=args.workdir,
        out=args.out,
        topology=topo,
        titles=args.titles,
        testinfra=not args.no_testinfra,
        drills=not args.no_drills,
    )
    gate = HostLab(opts, console).up()
    return 0 if gate.ok else 1


def _down(args: argparse.Namespace) -> int:
    from cdnlab.lab.hostlab import HostLab, Options

    console = _console()
    lab = HostLab(Options(workdir=args.workdir), console)
    if not lab.state:
        console.print(f"no lab in {lab.workdir}")
        return 0
    problems = lab.down_quiet()
    for p in problems:
        console.print(f"[red]{p}[/]")
    if not problems:
        console.print(
            "lab down: containers, VMs, taps, disk images, mounts, loop devices, namespaces, bridge "
            "and processes removed"
        )
    return 1 if problems else 0


def _status(args: argparse.Namespace) -> int:
    from cdnlab.lab.hostlab import HostLab, Options

    return HostLab(Options(workdir=args.workdir), _console()).status()
