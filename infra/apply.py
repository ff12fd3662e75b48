"""Stand the cloud tier up on an AWS emulator, without the Pulumi CLI.

    AWS_ENDPOINT_URL=http://127.0.0.1:4566 .venv/bin/python -m infra.apply --stack lab

Runs the program under Pulumi's mock runtime to capture its resource graph, creates those
resources through boto3 at AWS_ENDPOINT_URL, prints what it created, and writes the stack outputs
(distribution domain and id, bucket names, zone id, name servers, ...) as JSON for the lab and the
control plane. Where a ``pulumi`` CLI is on PATH it runs ``pulumi up`` instead (``--no-cli`` not to).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from infra import graph as graph_mod
from infra import stack_config
from infra.applier import ApplyError, Created, apply_graph
from infra.inventory import InventoryError
from infra.policy_pack.on_graph import check as policy_check
from infra.settings import REPO_ROOT, SettingsError

console = Console(stderr=True, soft_wrap=True)


def default_outputs_path(stack: str) -> Path:
    return REPO_ROOT / "lab" / "out" / f"infra-outputs.{stack}.json"


def capture_config(config: dict[str, str], stack: str = "lab", **build_kwargs: Any) -> graph_mod.Graph:
    """The whole program under fresh mocks with CONFIG (``build_kwargs`` go to ``program.build``)."""
    from infra.program import build

    return graph_mod.capture(lambda: build(**build_kwargs), config, stack=stack)


def capture(stack: str, overrides: list[str]) -> graph_mod.Graph:
    return capture_config(stack_config.load(stack, overrides), stack)


def run_pulumi_cli(stack: str, overrides: list[str]) -> dict:
    """The real thing: ``pulumi up`` on STACK, then its outputs."""
    cwd = str(REPO_ROOT)
    subprocess.run(["pulumi", "stack", "select", "--create", stack], cwd=cwd, check=True)
    for item in overrides:
        key, _, value = item.partition("=")
        subprocess.run(["pulumi", "config", "set", "-s", stack, "--secret", key, value], cwd=cwd, check=True)
    subprocess.run(["pulumi", "up", "-s", stack, "--yes", "--skip-preview"], cwd=cwd, check=True)
    out = subprocess.run(
        ["pulumi", "stack", "output", "-s", stack, "--json"],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.apply",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="example: AWS_ENDPOINT_URL=http://127.0.0.1:4566 python -m infra.apply --stack lab "
        '--set \'cdnlab:signingKeys={"k1":"0123456789abcdef0123"}\'',
    )
    parser.add_argument("--stack", default="lab", help="stack name: reads Pulumi.<stack>.yaml (default lab)")
    parser.add_argument("--set", action="append", default=[], metavar="NS:KEY=VALUE", help="override config")
    parser.add_argument("--outputs", type=Path, help="where to write the outputs JSON")
    parser.add_argument("--graph", type=Path, help="also write the captured resource graph as JSON")
    parser.add_argument("--no-cli", action="store_true", help="never use a pulumi CLI, even if on PATH")
    parser.add_argument("--dry-run", action="store_true", help="capture and check the graph, create nothing")
    parser.add_argument("--skip-policies", action="store_true", help="do not run the CrossGuard rules first")
    args = parser.parse_args(argv)
    out_path: Path = args.outputs or default_outputs_path(args.stack)

    try:
        if shutil.which("pulumi") and not args.no_cli and not args.dry_run:
            console.print(f"[bold]pulumi up -s {args.stack}[/bold] (a Pulumi CLI is on PATH)")
            outputs = run_pulumi_cli(args.stack, args.set)
        else:
            with console.status("running the program under the mock runtime"):
                graph = capture(args.stack, args.set)
            if args.graph:
                args.graph.write_text(graph.to_json())
            custom = [n for n in graph.topological() if not n.is_provider]
            console.print(f"captured {len(custom)} resources of {len({n.type for n in custom})} types")
            if not args.skip_policies:
                failed = {k: v for k, v in policy_check(graph).items() if v}
                for rule, messages in failed.items():
                    for message in messages:
                        console.print(f"[red]policy {rule}:[/red] {message}")
                if failed:
                    return 1
                console.print("CrossGuard rules: all pass")
            if args.dry_run:
                from infra.applier import check_supported

                check_supported(graph)
                console.print("every resource type and input has a creator (dry run: nothing created)")
                return 0
            endpoint = os.environ.get("AWS_ENDPOINT_URL")
            if not endpoint:
                console.print(
                    "AWS_ENDPOINT_URL is not set: refusing to create anything (this path is for emulators)"
                )
                return 2

            def show(c: Created) -> None:
                console.print(f"  created {c.type.split(':')[-1]:<42} {c.name:<44} {c.region:<10} {c.id}")

            console.print(f"creating on {endpoint}")
            created, outputs = apply_graph(graph, endpoint, show)
            console.print(f"[green]created {len(created)} resources[/green]")
    except (stack_config.StackConfigError, SettingsError, InventoryError) as exc:
        console.print(f"[red]config:[/red] {exc}")
        return 2
    except ApplyError as exc:
        console.print(f"[red]apply failed:[/red] {exc}")
        return 1
    except subprocess.CalledProcessError as exc:
        console.print(f"[red]pulumi failed:[/red] {exc}")
        return 1
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(outputs, indent=2, sort_keys=True) + "\n")
    console.print(f"outputs written to {out_path}")
    print(json.dumps(outputs, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
