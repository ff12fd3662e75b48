"""The loopback lab: origin (nginx) → shield → edge on 127.0.0.1, a client fetching ranges through
them, and checks of what happened. It drives the daemons only through their CLI and HTTP APIs.

This is the largest end-to-end that exists until the full lab (appliance hosts, AWS emulator,
control plane, player) lands; `make lab` runs it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cdnlab.lab import procs, steering
from cdnlab.signing import sign_path

SEGMENT = 512 * 1024
PROFILES = {"240p": 96 * 1024, "480p": 384 * 1024, "1080p": 1536 * 1024}  # bytes per segment
SEGMENTS = 12
KEY_ID, KEY = "lab1", "lab-signing-key-not-secret"
PURGE_TOKEN = "lab-purge-token"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    fetches: list[dict[str, object]] = field(default_factory=list)
    qoe: dict[str, dict] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def make_content(root: Path) -> dict[str, str]:
    """A title with three profiles of segments, a manifest, an image and a script; returns SHA-256s."""
    files: dict[str, bytes] = {}
    for profile, size in PROFILES.items():
        for i in range(1, SEGMENTS + 1):
            seed = hashlib.sha256(f"t0001/{profile}/{i}".encode()).digest()
            blob = (seed * (size // len(seed) + 1))[:size]
            files[f"/content/t0001/{profile}/seg-{i:05d}.m4s"] = blob
    files["/content/t0001/manifest.mpd"] = b'<?xml version="1.0"?><MPD profiles="lab"/>\n'
    files["/images/poster.jpg"] = hashlib.sha512(b"poster").digest() * 512
    files["/static/app.js"] = b"console.log('cdnlab lab');\n" * 100
    digests = {}
    for path, blob in files.items():
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(blob)
        digests[path] = hashlib.sha256(blob).hexdigest()
    return digests


def call(
    port: int, method: str, target: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def signed(path: str, ttl: int = 3600) -> str:
    return sign_path(path, KEY_ID, KEY, int(time.time()) + ttl)


def fetch_ranges(port: int, path: str, size: int, report: Report, label: str) -> bytes:
    """Fetch ``path`` in 512 KiB ranges over one keep-alive connection, as a player does."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    parts = []
    try:
        for start in range(0, size, SEGMENT):
            end = min(start + SEGMENT, size) - 1
            t0 = time.perf_counter()
            conn.request("GET", signed(path), headers={"Range": f"bytes={start}-{end}"})
            resp = conn.getresponse()
            data = resp.read()
            report.fetches.append(
                {
                    "pass": label,
                    "path": path,
                    "range": f"{start}-{end}",
                    "status": resp.status,
                    "cache_status": resp.getheader("Cache-Status", ""),
                    "bytes": len(data),
                    "ms": round((time.perf_counter() - t0) * 1000, 2),
                }
            )
            parts.append(data)
    finally:
        conn.close()
    return b"".join(parts)


def metric(port: int, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of a Prometheus sample family, filtered by labels."""
    _, _, body = call(port, "GET", "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in (labels or {}).items()):
            total += float(m.group(2))
    return total


def origin_requests(origin_dir: Path, path: str) -> int:
    log = origin_dir / "access.log"
    return sum(1 for line in log.read_text().splitlines() if f" {path}" in line) if log.exists() else 0


def run(out: Path, console: Console) -> Report:
    report = Report()

    def check(name: str, ok: bool, detail: str = "") -> None:
        report.checks.append(Check(name, ok, detail))
        console.print(
            f"  [{'green' if ok else 'red'}]{'PASS' if ok else 'FAIL'}[/] {name}"
            + (f" [dim]({detail})[/]" if detail else "")
        )

    work = out / "loopback"
    shutil.rmtree(work, ignore_errors=True)
    root = work / "origin-www"
    digests = make_content(root)
    console.rule("[bold]cdnlab loopback lab: origin (nginx) → shield → edge → client")
    with ExitStack() as stack:
        origin = stack.enter_context(procs.nginx(work / "origin", root))
        console.print(f"origin   nginx            {origin.url}")
        shield = stack.enter_context(
            procs.edge(
                work / "shield",
                procs.edge_config([origin.url], role="shield", ident="shield-1", purge_token=PURGE_TOKEN),
                name="shield",
            )
        )
        console.print(f"shield   cdnlab edge      {shield.url} (admin {shield.admin})")
        control = stack.enter_context(
            procs.control(work / "control", steering.control_config(work, KEY_ID, KEY, PROFILES, SEGMENTS))
        )
        control_url = f"http://127.0.0.1:{control.port}"
        console.print(f"control  cdnlab control   {control_url}")
        appliances: list[steering.Appliance] = []
        for ident, site, workers, ram in (
            ("edge-1", "site-a", 2, "64M"),
            ("edge-2", "site-a", 1, None),
            ("edge-3", "site-b", 1, None),
        ):
            svc = stack.enter_context(
                procs.edge(
                    work / ident,
                    procs.edge_config(
                        [shield.url, origin.url],
                        ident=ident,
                        site=site,
                        workers=workers,
                        ram=ram,
                        signing_keys={KEY_ID: KEY},
                        purge_token=PURGE_TOKEN,
                        control_url=control_url,
                    ),
                    name=ident,
                )
            )
            appliances.append(steering.Appliance(ident, site, svc))
            console.print(
                f"{ident}   cdnlab edge      {svc.url} (admin {svc.admin}) in {site}, {workers} worker(s)"
            )
        edge = appliances[0].service
        console.print()

        segs = [p for p in digests if p.endswith(".m4s")]
        sizes = {p: (root / p.lstrip("/")).stat().st_size for p in digests}

        console.print(
            "[bold]1. A client plays every segment in 512 KiB ranges through edge-1 (cold, then warm)"
        )
        for label in ("cold", "warm"):
            bad = [
                p
                for p in segs
                if hashlib.sha256(fetch_ranges(edge.port, p, sizes[p], report, label)).hexdigest()
                != digests[p]
            ]
            check(f"{label} pass: every byte matches the origin's SHA-256", not bad, f"{len(segs)} segments")
        warm = [f for f in report.fetches if f["pass"] == "warm"]
        hits = sum(1 for f in warm if str(f["cache_status"]).endswith("hit"))
        check("warm pass is served from the edge's cache", hits == len(warm), f"{hits}/{len(warm)} hits")
        once = all(origin_requests(origin.dir, p) == 1 for p in segs)
        check("the origin was asked for each segment exactly once (the shield absorbs the rest)", once)

        console.print("[bold]2. Signed URLs")
        status, _, body = call(edge.port, "GET", "/content/t0001/480p/seg-00001.m4s")
        check("an unsigned request is refused (403)", status == 403, body.decode().strip())
        expired = sign_path("/content/t0001/480p/seg-00001.m4s", KEY_ID, KEY, int(time.time()) - 5)
        status, _, body = call(edge.port, "GET", expired)
        check("an expired signature is refused (403)", status == 403, body.decode().strip())

        console.print("[bold]3. Fifty clients ask for one cold object at once")
        path = "/images/poster.jpg"
        results: list[str] = []

        def grab() -> None:
            _, _, data = call(edge.port, "GET", signed(path))
            results.append(hashlib.sha256(data).hexdigest())

        threads = [threading.Thread(target=grab) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        check("all 50 got the right bytes", results.count(digests[path]) == 50, f"{len(results)} answers")
        n = origin_requests(origin.dir, path)
        check("exactly one origin fetch for them", n == 1, f"origin saw {n}")

        console.print("[bold]4. Purge")
        target = "/content/t0001/240p/seg-00001.m4s"
        status, _, _ = call(edge.admin_port, "POST", "/purge", body=json.dumps({"key": target}).encode())
        check("purge without a token is refused (401)", status == 401)
        status, _, body = call(
            edge.admin_port,
            "POST",
            "/purge",
            {"Authorization": f"Bearer {PURGE_TOKEN}"},
            json.dumps({"key": target}).encode(),
        )
        check(
            "purge with the token removes the object",
            status == 200 and json.loads(body)["purged"] == 1,
            body.decode(),
        )
        _, hdrs, data = call(edge.port, "GET", signed(target))
        check(
            "after purge the edge fetches it again (from the shield's cache)",
            "fwd=miss" in hdrs.get("cache-status", "")
            and "hit" in hdrs.get("cache-status", "")
            and hashlib.sha256(data).hexdigest() == digests[target],
            hdrs.get("cache-status", ""),
        )

        console.print("[bold]5. What edge-1 says about itself")
        time.sleep(1.2)  # workers publish counters once a second
        health = json.loads(call(edge.admin_port, "GET", "/healthz")[2])
        check("/healthz reports serving", health["state"] == "serving", f"{health['load']}")
        hit = metric(edge.admin_port, "cdnlab_requests_total", {"cache_status": "hit"})
        total = metric(edge.admin_port, "cdnlab_requests_total")
        check(
            "/metrics counts the requests",
            total >= len(report.fetches),
            f"hit ratio {hit / max(total, 1):.0%}",
        )
        inv = json.loads(call(edge.admin_port, "GET", "/inventory")[2])
        check(
            "/inventory lists the stored objects with SHA-256",
            all(o["sha256"] == digests.get(o["key"], o["sha256"]) for o in inv["objects"]),
            f"{len(inv['objects'])} objects",
        )
        logged = (work / "edge-1" / "access.log").read_text().splitlines()
        check(
            "the access log has a JSON line per request",
            len(logged) >= len(report.fetches),
            f"{len(logged)} lines",
        )

        console.print("[bold]6. The control plane steers players from two prefixes to two sites")
        report.qoe = steering.run(control, appliances, check, console, list(PROFILES), signed)

        console.print("[bold]7. The shield dies, then the origin")
        survivor = next(a for a in appliances if a.site == "site-a").service
        call(survivor.port, "GET", signed(segs[-1]))  # make sure it holds this one
        procs.stop(shield.proc, signal.SIGKILL)
        _, hdrs, data = call(survivor.port, "GET", signed(segs[-1]))
        check(
            "cached content is still served",
            hdrs.get("cache-status", "").endswith("hit")
            and hashlib.sha256(data).hexdigest() == digests[segs[-1]],
        )
        _, hdrs, data = call(survivor.port, "GET", signed("/static/app.js"))
        check(
            "a cold object fails over to the origin",
            hashlib.sha256(data).hexdigest() == digests["/static/app.js"],
            hdrs.get("cache-status", ""),
        )
        procs.stop(origin.proc, signal.SIGQUIT)
        status, _, body = call(survivor.port, "GET", signed("/content/t0001/manifest.mpd"))
        check("with every upstream down a cold object gets a clear 502", status == 502, body.decode().strip())
    _summarise(report, out, console)
    return report


def _summarise(report: Report, out: Path, console: Console) -> None:
    table = Table(title="Range fetches through the edge (first 8 of each pass)")
    for col in ("pass", "path", "range", "status", "cache_status", "bytes", "ms"):
        table.add_column(col, no_wrap=True)
    shown: dict[object, int] = {}
    for f in report.fetches:
        shown[f["pass"]] = shown.get(f["pass"], 0) + 1
        if shown[f["pass"]] <= 8:
            table.add_row(
                *(str(f[c]) for c in ("pass", "path", "range", "status", "cache_status", "bytes", "ms"))
            )
    console.print(table)
    passed = sum(c.ok for c in report.checks)
    colour = "green" if report.ok else "red"
    console.print(f"[bold {colour}]{passed}/{len(report.checks)} checks passed[/]")
    out.mkdir(parents=True, exist_ok=True)
    (out / "loopback.json").write_text(
        json.dumps(
            {"checks": [c.__dict__ for c in report.checks], "fetches": report.fetches, "qoe": report.qoe},
            indent=1,
        )
    )
    console.print(f"report: {out / 'loopback.json'}")


Runner = Callable[[Path, Console], Report]
