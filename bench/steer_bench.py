"""Steering under load: ``GET /v1/steer`` against a plain static-JSON endpoint of the same app
(``GET /v1/version``), in the same run, on the same server process.

The fleet is synthetic but full size: 10,000 appliances in 1,000 sites (registered through the
store in bulk, admin state ``online`` so no monitor polls them), 200 titles each held by ~10 % of
the appliances, and a coverage zone file of 500,000 prefixes (490,000 IPv4 /24 and 10,000 IPv6
/48). Each request comes from a random address (X-Forwarded-For from a trusted loopback proxy),
so every request does a fresh longest-prefix match; titles are random too.

The server (``cdnlab control serve``: one uvicorn process) is pinned to CPU 0 and the load
generator (wrk, or a bounded Python generator if wrk is missing) to CPU 1.

Example:
    .venv/bin/python bench/steer_bench.py --duration 10 --connections 32
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

console = Console(stderr=True)  # progress and logs; results go to stdout
CDNLAB = str(Path(sys.executable).parent / "cdnlab")
V4_BASE = 1 << 24  # 1.0.0.0: /24 number i is V4_BASE + i*256

LUA = """
local titles = {titles}
local n_v4 = {n_v4}
local profile = "{profile}"
math.randomseed(os.time())
request = function()
  local i = math.random(0, n_v4 - 1)
  local a = {base} + i * 256 + math.random(1, 254)
  local ip = string.format("%d.%d.%d.%d", bit.rshift(a, 24), bit.band(bit.rshift(a, 16), 255),
                           bit.band(bit.rshift(a, 8), 255), bit.band(a, 255))
  local t = titles[math.random(1, #titles)]
  return wrk.format("GET", "/v1/steer?title=" .. t .. "&profile=" .. profile, {{["X-Forwarded-For"] = ip}})
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_czf(path: Path, sites: int, prefixes: int) -> None:
    n6 = min(10_000, prefixes // 50)
    n4 = prefixes - n6
    zones: dict[str, dict] = {
        f"site-{s:04d}": {
            "network": [],
            "network6": [],
            "coordinates": {"latitude": ((s * 37) % 140) - 70.0, "longitude": ((s * 53) % 360) - 180.0},
        }
        for s in range(sites)
    }
    for i in range(n4):
        a = V4_BASE + i * 256
        zones[f"site-{i % sites:04d}"]["network"].append(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.0/24")
    for i in range(n6):
        zones[f"site-{i % sites:04d}"]["network6"].append(f"2001:db8:{i >> 8:x}:{(i & 255) << 8:x}::/56")
    path.write_text(json.dumps({"revision": "bench", "coverageZones": zones}))


def make_state(db: str, appliances: int, sites: int, titles: int, hold: float) -> None:
    from cdnlab.control.models import Appliance
    from cdnlab.control.store import Store

    rng = random.Random(7)
    store = Store(db)
    fleet = []
    for i in range(appliances):
        s = i % sites
        fleet.append(
            Appliance(
                id=f"oca-{i:05d}",
                site=f"site-{s:04d}",
                url=f"http://oca-{i:05d}.isp{s % 50}.example:8080",
                admin_url=f"http://oca-{i:05d}.isp{s % 50}.example:8081",
                latitude=((s * 37) % 140) - 70.0,
                longitude=((s * 53) % 360) - 180.0,
                capacity_bps=rng.choice([10, 40, 100]) * 1_000_000_000,
                admin_state="online",
            )
        )
    store.put_appliances(fleet)
    holdings = {a.id: {f"t{t:04d}": 10 for t in range(titles) if rng.random() < hold} for a in fleet}
    store.put_title_holdings(holdings)
    store.close()


def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def run_wrk(url: str, duration: int, connections: int, script: Path | None) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "1", *cmd]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
        "errors": int(non2xx.group(1)) if non2xx else 0,
        "raw": out,
    }


def run_python(url: str, duration: int, connections: int, titles: list[str], n_v4: int, steer: bool) -> dict:
    """A bounded asyncio generator for machines without wrk (slower: it competes for the GIL)."""
    import asyncio

    import aiohttp

    lat: list[float] = []
    errors = 0

    async def worker(session: aiohttp.ClientSession, stop: float) -> None:
        nonlocal errors
        while time.monotonic() < stop:
            headers = {}
            u = url
            if steer:
                a = V4_BASE + random.randrange(n_v4) * 256 + random.randint(1, 254)
                headers["X-Forwarded-For"] = socket.inet_ntoa(a.to_bytes(4, "big"))
                u = f"{url}?title={random.choice(titles)}&profile=1080p"
            t0 = time.perf_counter()
            async with session.get(u, headers=headers) as r:
                await r.read()
                errors += r.status != 200
            lat.append((time.perf_counter() - t0) * 1000)

    async def main() -> None:
        stop = time.monotonic() + duration
        async with aiohttp.ClientSession() as s:
            await asyncio.gather(*(worker(s, stop) for _ in range(connections)))

    asyncio.run(main())
    lat.sort()
    return {
        "rps": len(lat) / duration,
        "p99_ms": lat[int(len(lat) * 0.99)] if lat else float("nan"),
        "errors": errors,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Benchmark GET /v1/steer against a static-JSON endpoint of the same app.",
        epilog="example:\n  .venv/bin/python bench/steer_bench.py --duration 10 --connections 32",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--appliances", type=int, default=10_000)
    ap.add_argument("--sites", type=int, default=1_000)
    ap.add_argument("--prefixes", type=int, default=500_000)
    ap.add_argument("--titles", type=int, default=200)
    ap.add_argument("--hold", type=float, default=0.1, help="share of titles each appliance holds")
    ap.add_argument("--segments", type=int, default=150, help="segments per track (signed per request)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per endpoint")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--python-load", action="store_true", help="use the Python generator even if wrk exists")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="steer-bench-"))
    server = None
    try:
        with console.status("building the coverage zone file…"):
            t0 = time.perf_counter()
            make_czf(tmp / "czf.json", args.sites, args.prefixes)
            czf_mb = (tmp / "czf.json").stat().st_size / 1e6
            took = time.perf_counter() - t0
            console.log(f"coverage zone file: {args.prefixes} prefixes, {czf_mb:.1f} MB ({took:.1f}s)")
        with console.status(f"registering {args.appliances} appliances and their titles…"):
            t0 = time.perf_counter()
            make_state(f"sqlite:///{tmp / 'control.db'}", args.appliances, args.sites, args.titles, args.hold)
            took = time.perf_counter() - t0
            console.log(f"registry: {args.appliances} appliances in {args.sites} sites ({took:.1f}s)")
        seg = f"segments = {args.segments}, segment_duration = 4.0"
        tracks = ", ".join(
            f'{{profile = "{p}", bandwidth = {b}, {seg}}}'
            for p, b in (("1080p", 5_000_000), ("480p", 1_000_000))
        )

        (tmp / "catalog.toml").write_text(
            "".join(f"[titles.t{t:04d}]\ntracks = [{tracks}]\n" for t in range(args.titles))
        )
        port = free_port()
        (tmp / "control.toml").write_text(
            f'listen = "127.0.0.1:{port}"\ndatabase = "sqlite:///{tmp / "control.db"}"\n'
            'coverage_zone_file = "czf.json"\ncatalog_file = "catalog.toml"\ndefault_site = "site-0000"\n'
            'trusted_proxies = ["127.0.0.1/32"]\n'
            '[signing]\nkid = "k1"\nkey = "bench-signing-key-0123456789"\n'
            '[steering]\ncloudfront_url = "https://d111111abcdef8.cloudfront.net"\n'
        )
        cmd = [CDNLAB, "control", "serve", "--config", str(tmp / "control.toml"), "--log-level", "warning"]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", "0", *cmd]
        with console.status("starting the control plane (loading the coverage zone file)…"):
            t0 = time.perf_counter()
            server = subprocess.Popen(
                cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=(tmp / "server.log").open("wb")
            )
            base = f"http://127.0.0.1:{port}"
            wait_ready(f"{base}/healthz")
            startup = time.perf_counter() - t0
            with urllib.request.urlopen(f"{base}/healthz") as r:
                health = json.load(r)
            console.log(f"control plane ready in {startup:.1f}s: {health}")
        req = urllib.request.Request(
            f"{base}/v1/steer?title=t0001&profile=1080p", headers={"X-Forwarded-For": "1.0.1.7"}
        )
        with urllib.request.urlopen(req) as r:
            sample = r.read()
        manifest = json.loads(sample)
        console.log(
            f"sample manifest: {len(sample)} bytes, {len(manifest['endpoints'])} endpoints "
            f"({', '.join(e['appliance_id'] or 'cloudfront' for e in manifest['endpoints'])}), "
            f"client site {manifest['client']['site']}"
        )
        use_wrk = shutil.which("wrk") is not None and not args.python_load
        titles = [f"t{t:04d}" for t in range(args.titles)]
        n_v4 = args.prefixes - min(10_000, args.prefixes // 50)
        results = {}
        if use_wrk:
            lua = tmp / "steer.lua"
            lua.write_text(
                LUA.format(
                    titles="{" + ",".join(f'"{t}"' for t in titles) + "}",
                    n_v4=n_v4,
                    base=V4_BASE,
                    profile="1080p",
                )
            )
        for name, path in (("static", "/v1/version"), ("steer", "/v1/steer")):
            with console.status(f"loading {path} for {args.duration}s with {args.connections} connections…"):
                run_wrk(
                    f"{base}{path}", 2, args.connections, lua if name == "steer" else None
                ) if use_wrk else None
                if use_wrk:
                    results[name] = run_wrk(
                        f"{base}{path}", args.duration, args.connections, lua if name == "steer" else None
                    )
                else:
                    results[name] = run_python(
                        f"{base}{path}", args.duration, args.connections, titles, n_v4, name == "steer"
                    )
                results[name].pop("raw", None)
        summary = {
            "appliances": args.appliances,
            "sites": args.sites,
            "prefixes": args.prefixes,
            "segments_signed_per_manifest": args.segments,
            "manifest_bytes": len(sample),
            "control_startup_s": round(startup, 2),
            "load_generator": "wrk -t1" if use_wrk else "python asyncio",
            "connections": args.connections,
            "duration_s": args.duration,
            "cpus": os.cpu_count(),
            "static": results["static"],
            "steer": results["steer"],
            "ratio": round(results["steer"]["rps"] / results["static"]["rps"], 3),
        }
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            t = Table(title="GET /v1/steer vs static JSON (same app, same run)")
            for col in ("endpoint", "req/s", "p99 ms", "non-2xx"):
                t.add_column(col, justify="right")
            for name in ("static", "steer"):
                r = results[name]
                t.add_row(name, f"{r['rps']:.0f}", f"{r['p99_ms']:.2f}", str(r["errors"]))
            out = Console()
            out.print(t)
            out.print(f"steer / static = {summary['ratio']:.3f}")
        return 0
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
