"""Lab phase: the control plane steers players from two client prefixes to two sites, and a
player carries on when its appliance is killed mid-session."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cdnlab.lab import procs
from cdnlab.lab.topology import site_coordinates

# Client prefixes inside 127/8: every address there is this machine, so players can bind to them.
SITE_PREFIXES = {"site-a": "127.0.2.0/24", "site-b": "127.0.1.0/24"}
CLIENTS = {"site-a": "127.0.2.10", "site-b": "127.0.1.10"}
SEGMENT_SECONDS = 2.0

Check = Callable[[str, bool, str], None]


@dataclass
class Appliance:
    ident: str
    site: str
    service: procs.Service


def control_config(work: Path, key_id: str, key: str, catalog: dict[str, int], segments: int) -> str:
    """TOML for ``cdnlab control serve`` with a coverage zone file and the lab's title."""
    czf = {
        "coverageZones": {
            site: {"network": [prefix], "coordinates": site_coordinates(i)}
            for i, (site, prefix) in enumerate(SITE_PREFIXES.items())
        }
    }
    (work / "czf.json").write_text(json.dumps(czf, indent=1))
    tracks = ",\n".join(
        f'  {{profile = "{p}", bandwidth = {int(size * 8 / SEGMENT_SECONDS)}, segments = {segments}, '
        f"segment_duration = {SEGMENT_SECONDS}}}"
        for p, size in catalog.items()
    )
    (work / "catalog.toml").write_text(f"[titles.t0001]\ntracks = [\n{tracks}\n]\n")
    return (
        'listen = "127.0.0.1:{port}"\n'
        'database = "sqlite:///{base}/control.db"\n'
        f'coverage_zone_file = "{work / "czf.json"}"\n'
        f'catalog_file = "{work / "catalog.toml"}"\n'
        'default_site = "site-a"\n'
        f'[signing]\nkid = "{key_id}"\nkey = "{key}"\nttl = "6h"\n'
        "[health]\ninterval = 0.5\ntimeout = 0.4\n"
    )


def _request(
    port: int, method: str, path: str, body: dict | None = None, source: str | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0) if source else None
    )
    try:
        conn.request(
            method,
            path,
            body=json.dumps(body).encode() if body else None,
            headers={"Content-Type": "application/json"} if body else {},
        )
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def register(control: procs.Service, appliances: list[Appliance]) -> None:
    for a in appliances:
        status, text = _request(
            control.port,
            "POST",
            "/v1/appliances",
            {"id": a.ident, "site": a.site, "url": a.service.url, "admin_url": a.service.admin},
        )
        if status not in (200, 201):
            raise RuntimeError(f"registering {a.ident}: {status} {text!r}")


def wait_available(control: procs.Service, n: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = _request(control.port, "GET", "/healthz")
        if status == 200 and json.loads(body).get("available") == n:
            return True
        time.sleep(0.1)
    return False


def steer(control: procs.Service, source: str) -> list[str]:
    status, body = _request(control.port, "GET", "/v1/steer?title=t0001", source=source)
    if status != 200:
        raise RuntimeError(f"steering answered {status}: {body!r}")
    return list(json.loads(body)["video_tracks"][0]["cdn_urls"])


def play(control: procs.Service, source: str, speed: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cdnlab.cli",
            "play",
            "--control",
            f"http://127.0.0.1:{control.port}",
            "--title",
            "t0001",
            "--speed",
            str(speed),
            "--json",
            "--source-address",
            source,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def qoe_of(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> dict:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode not in (0, 1) or not out.strip():
        raise RuntimeError(f"cdnlab play exited {proc.returncode}: {err.decode()[-500:]}")
    return json.loads(out)


def _fetch_signed(port: int, path: str, sign: Callable[[str], str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", sign(path))
        conn.getresponse().read()
    finally:
        conn.close()


def _holds(control: procs.Service, ident: str) -> bool:
    status, body = _request(control.port, "GET", f"/v1/appliances/{ident}/inventory")
    return status == 200 and "t0001" in json.loads(body).get("titles", [])


def run(  # type: ignore[no-untyped-def]
    control: procs.Service,
    appliances: list[Appliance],
    check: Check,
    console,
    profiles: list[str],
    sign: Callable[[str], str],
) -> dict[str, dict]:
    """Players from both prefixes, then the kill drill. Returns each client's QoE."""
    by_id = {a.ident: a for a in appliances}

    def owner(url: str) -> Appliance | None:  # cdn_urls are per-track base URLs on an appliance
        return next((a for a in appliances if url.startswith(a.service.url + "/")), None)

    register(control, appliances)
    # Steering offers an appliance for a title only once it holds some of it: give every appliance
    # the title's first segments, then wait for their inventory reports to say so.
    for a in appliances:
        for profile in profiles:
            _fetch_signed(a.service.port, f"/content/t0001/{profile}/seg-00001.m4s", sign)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(_holds(control, a.ident) for a in appliances):
        time.sleep(0.2)
    check(
        "the control plane sees every appliance healthy",
        wait_available(control, len(appliances)),
        f"{len(appliances)} appliances in {len(SITE_PREFIXES)} sites",
    )
    qoes: dict[str, dict] = {}
    for site, source in CLIENTS.items():
        ranked = [a for a in map(owner, steer(control, source)) if a is not None]
        check(
            f"steering sends a client from {SITE_PREFIXES[site]} to {site} first",
            bool(ranked) and ranked[0].site == site,
            f"ranked {[a.ident for a in ranked]}",
        )
        qoe = qoe_of(play(control, source, speed=20))
        qoes[source] = qoe
        used = {by_id[i].site for i in qoe["endpoints_used"] if i in by_id}
        check(
            f"the player from {source} plays the whole title from {site}",
            qoe["completed"] and qoe["rebuffer_count"] == 0 and used == {site},
            f"startup {qoe['startup_time_s'] and round(qoe['startup_time_s'] * 1000)} ms, "
            f"{qoe['segments_played']} segments, endpoints {sorted(qoe['endpoints_used'])}",
        )

    console.print("[bold]   … and the appliance a player is using is killed mid-session")
    source = CLIENTS["site-a"]
    first = steer(control, source)[0]
    victim = owner(first)
    if victim is None:
        check("steering offers an appliance first", False, first)
        return qoes
    player = play(control, source, speed=2)
    time.sleep(1.5)
    killed_at = time.monotonic()
    procs.stop(victim.service.proc, sig=9)
    gone_after = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if all(owner(u) is not victim for u in steer(control, source)):
            gone_after = time.monotonic() - killed_at
            break
        time.sleep(0.1)
    check(
        f"steering drops the killed {victim.ident} within a poll interval",
        gone_after is not None and gone_after <= 1.5,
        f"gone after {gone_after and round(gone_after, 2)} s",
    )
    qoe = qoe_of(player)
    qoes[f"{source} (drill)"] = qoe
    check(
        "the player fails over and finishes without a playback failure",
        qoe["completed"]
        and qoe["failovers"] >= 1
        and not any(e.startswith("stopped") for e in qoe["errors"]),
        f"failovers {qoe['failovers']}, rebuffers {qoe['rebuffer_count']}, endpoints {qoe['endpoints_used']}",
    )
    appliances.remove(victim)
    return qoes
