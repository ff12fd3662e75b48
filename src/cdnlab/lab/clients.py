"""Players in the host lab: ``cdnlab play`` run inside a client network namespace per site, each
with an address in its site's coverage-zone prefix, so the control plane steers it to that site."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cdnlab.lab.hostlab import HostLab

CDNLAB = str(Path(sys.executable).parent / "cdnlab")


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def play(lab: HostLab, site: str, title: str, speed: float = 4.0) -> subprocess.Popen[str]:
    netns = lab.state["clients"][site]["netns"]
    return subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            netns,
            CDNLAB,
            "play",
            "--control",
            lab.control_url(),
            "--title",
            title,
            "--speed",
            str(speed),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def result(proc: subprocess.Popen[str], timeout: float = 180) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    try:
        return json.loads(out)
    except ValueError:
        return {"completed": False, "errors": [f"cdnlab play exited {proc.returncode}: {err.strip()[-300:]}"]}


def steer(lab: HostLab, site: str, title: str = "t0001") -> list[str]:
    """The appliance ids steering ranks for a client of SITE, best first (asked from its netns)."""
    netns = lab.state["clients"][site]["netns"]
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "curl",
            "-s",
            "--max-time",
            "5",
            f"{lab.control_url()}/v1/steer?title={title}",
        ],
        capture_output=True,
        text=True,
        timeout=15,
        env=_env(),
        check=False,
    ).stdout
    try:
        urls = json.loads(out)["video_tracks"][0]["cdn_urls"]
    except (ValueError, KeyError, IndexError):
        return []
    by_addr = {f"http://{h.address}": n for n, h in lab.lab.hosts.items()}
    ids = []
    for url in urls:
        base = "/".join(url.split("/")[:3])
        ids.append(by_addr.get(base, base))
    return ids


def sessions(lab: HostLab) -> None:
    """Every site's client plays every title (sites in parallel): steering must rank the client's
    own site first, and each session must play to the end without a rebuffer or an error."""
    g = lab.gate
    assert lab.content is not None
    site_of = dict(lab.topo.appliances())
    qoe: dict[str, Any] = lab.gate.data.setdefault("qoe", {})
    for i, site in enumerate(lab.topo.site_names):
        ranked = steer(lab, site)
        g.check(
            f"steering ranks {site}'s appliances first for a client in {lab.topo.client_prefix(i)}",
            bool(ranked) and site_of.get(ranked[0]) == site,
            "ranked " + ", ".join(ranked),
        )
    for title in lab.content.titles:
        running = {site: play(lab, site, title) for site in lab.topo.site_names}
        for site, proc in running.items():
            q = result(proc)
            client = lab.state["clients"][site]["address"]
            qoe[f"{client} {title}"] = q | {"site": site}
            used = {site_of.get(e, e) for e in q.get("endpoints_used", [])}
            # Steering ranks the client's site first; the player then takes the fastest candidate
            # that answers its probe (seed 003), so on a loaded machine it may pick another site.
            where = "its own site" if used == {site} else f"{sorted(used)} (fastest probe)"
            g.check(
                f"client {client} ({site}) plays {title} to the end without a playback failure",
                bool(q.get("completed")) and q.get("rebuffer_count", 1) == 0 and not q.get("errors"),
                f"from {where}, startup {round((q.get('startup_time_s') or 0) * 1000)} ms, "
                f"{q.get('segments_played')}/{q.get('segments_total')} segments, "
                f"{round((q.get('avg_bitrate_bps') or 0) / 1000)} kbit/s, endpoints {q.get('endpoints_used')}"
                + (f", errors {q['errors'][:2]}" if q.get("errors") else ""),
            )
        time.sleep(0.1)
