"""The lab's fill, a compressed fill window: the content set is published to the control plane
(``cdnlab fill publish``), then every appliance runs ``cdnlab fill run --now`` on its host, as its
service user beside the running daemon, pulling its plan and filling from peers, the shield or
the origin with every object's SHA-256 checked."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

from cdnlab.lab import clients

if TYPE_CHECKING:
    from cdnlab.lab.hostlab import HostLab

FILL = (
    "runuser -u cdnlab -- /opt/cdnlab/venv/bin/cdnlab fill run --config /etc/cdnlab/edge.toml "
    "--control {control} --now --json --parallel 2"
)


def run(lab: HostLab) -> None:
    g = lab.gate
    assert lab.content is not None
    proc = subprocess.run(
        [
            clients.CDNLAB,
            "fill",
            "publish",
            str(lab.content.root),
            "--control",
            lab.control_url(),
            "--hot",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=clients._env(),
    )
    g.check(
        "cdnlab fill publish sends the content set to the control plane",
        proc.returncode == 0,
        (proc.stdout.strip() or proc.stderr.strip())[-200:],
    )
    if proc.returncode != 0:
        return
    names = [n for n, _ in lab.topo.appliances()]
    running = {
        n: subprocess.Popen(
            [*lab.host(n).ssh_base, f"root@{lab.host(n).address}", FILL.format(control=lab.control_url())],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for n in names
    }
    report: dict[str, dict] = {}
    for n, p in running.items():
        try:
            out, err = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        try:
            report[n] = json.loads(out.strip().splitlines()[-1]) | {"rc": p.returncode}
        except (ValueError, IndexError):
            report[n] = {"rc": p.returncode, "state": "no report", "errors": [err.strip()[-300:]]}
    lab.gate.data["fill"] = {
        n: {
            k: r.get(k)
            for k in (
                "state",
                "objects_total",
                "objects_done",
                "objects_failed",
                "bytes_fetched",
                "by_source",
            )
        }
        for n, r in report.items()
    }
    ok = all(
        r.get("rc") == 0 and r.get("state") == "done" and not r.get("objects_failed") for r in report.values()
    )
    g.check(
        "cdnlab fill run --now fills every appliance, every object verified",
        ok and sum(r.get("objects_done", 0) for r in report.values()) > 0,
        "; ".join(
            f"{n}: {r.get('state')} {r.get('objects_done')}/{r.get('objects_total')} objects, "
            f"{(r.get('bytes_fetched') or 0) / 1e6:.1f} MB from {r.get('by_source')}"
            + (f" errors {r.get('errors')[:1]}" if r.get("errors") else "")
            for n, r in report.items()
        ),
    )
