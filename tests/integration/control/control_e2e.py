"""A small CDN on loopback for the control plane's end-to-end tests: an origin (python's
http.server), real edge daemons (``cdnlab edge serve --config``), and the control plane
(``cdnlab control serve``), all started through the CLI as a user would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cdnlab.edge.worker import clear_run_dir

VENV_BIN = Path(sys.executable).parent
CDNLAB = str(VENV_BIN / "cdnlab")
KEY = "e2e-signing-key-0123456789"
SEGMENTS = 24
SEGMENT_SECONDS = 0.5
TRACKS = {"480p": 400_000, "1080p": 1_600_000}  # bits/s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, ok=(200, 503)) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status in ok:
                    return
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return
            last = e
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer: {last}")


def wait_tcp(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} does not accept connections")


def get_json(url: str, source: str | None = None, timeout: float = 5.0) -> dict:
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(
        u.hostname, u.port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        conn.request("GET", u.path + (f"?{u.query}" if u.query else ""))
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status} {body[:200]!r}")
        return json.loads(body)
    finally:
        conn.close()


def post(url: str, body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL the whole process group (an edge has worker processes)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def start(name: str, argv: list[str], workdir: Path) -> Proc:
    log = workdir / f"{name}.log"
    fh = log.open("wb")
    p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir)
    return Proc(name, p, log)


@dataclass
class Edge:
    id: str
    site: str
    url: str
    admin_url: str
    proc: Proc


@dataclass
class Lab:
    root: Path
    origin_url: str = ""
    control_url: str = ""
    edges: dict[str, Edge] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def make_origin(self) -> None:
        content = self.root / "origin"
        for profile, bps in TRACKS.items():
            d = content / "content" / "t0001" / profile
            d.mkdir(parents=True)
            size = int(bps * SEGMENT_SECONDS / 8)
            for n in range(1, SEGMENTS + 1):
                (d / f"seg-{n:05d}.m4s").write_bytes(bytes([n % 251]) * size)
        port = free_port()
        p = start(
            "origin",
            [
                sys.executable,
                "-m",
                "http.server",
                str(port),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(content),
            ],
            self.root,
        )
        self.procs.append(p)
        self.origin_url = f"http://127.0.0.1:{port}"
        wait_http(f"{self.origin_url}/content/t0001/480p/seg-00001.m4s")

    def add_edge(self, edge_id: str, site: str) -> Edge:
        port, admin = free_port(), free_port()
        store = self.root / edge_id
        (store / "flash0").mkdir(parents=True)
        cfg = self.root / f"{edge_id}.toml"
        cfg.write_text(
            f'id = "{edge_id}"\nsite = "{site}"\nlisten = ["127.0.0.1:{port}"]\n'
            f'upstreams = ["{self.origin_url}"]\nstate_dir = "{store / "state"}"\n'
            f'[[tiers]]\npath = "{store / "flash0"}"\nkind = "flash"\ncapacity = "256M"\n'
            f'[admin]\nlisten = "127.0.0.1:{admin}"\n'
            f'[signing]\nkeys = {{k1 = "{KEY}"}}\nrequired = true\n'
        )
        p = start(edge_id, [CDNLAB, "edge", "serve", "--config", str(cfg)], self.root)
        self.procs.append(p)
        e = Edge(edge_id, site, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", p)
        wait_http(f"{e.admin_url}/healthz")
        wait_tcp("127.0.0.1", port)  # the workers' client listener comes up after the admin API
        self.edges[edge_id] = e
        return e

    def start_control(self, interval: float = 0.5) -> None:
        czf = {
            "coverageZones": {
                "site-a": {
                    "network": ["127.0.0.0/30"],
                    "coordinates": {"latitude": 40.7, "longitude": -74.0},
                },
                "site-b": {
                    "network": ["127.0.1.0/24"],
                    "coordinates": {"latitude": 41.9, "longitude": -87.6},
                },
            }
        }
        (self.root / "czf.json").write_text(json.dumps(czf))
        tracks = ",\n".join(
            f'  {{profile = "{p}", bandwidth = {bps}, segments = {SEGMENTS}, '
            f"segment_duration = {SEGMENT_SECONDS}}}"
            for p, bps in TRACKS.items()
        )
        (self.root / "catalog.toml").write_text(f"[titles.t0001]\ntracks = [\n{tracks}\n]\n")
        port = free_port()
        (self.root / "control.toml").write_text(
            f'listen = "127.0.0.1:{port}"\ndatabase = "sqlite:///{self.root / "control.db"}"\n'
            'coverage_zone_file = "czf.json"\ncatalog_file = "catalog.toml"\ndefault_site = "site-a"\n'
            f'[signing]\nkid = "k1"\nkey = "{KEY}"\nttl = "6h"\n'
            f'[steering]\ncloudfront_url = "{self.origin_url}"\n'
            f"[health]\ninterval = {interval}\ntimeout = 0.4\n"
        )
        p = start(
            "control",
            [CDNLAB, "control", "serve", "--config", "control.toml", "--log-level", "warning"],
            self.root,
        )
        self.procs.append(p)
        self.control_url = f"http://127.0.0.1:{port}"
        wait_http(f"{self.control_url}/healthz", ok=(200,))

    def register(self, e: Edge, **kw) -> None:
        body = {"id": e.id, "site": e.site, "url": e.url, "admin_url": e.admin_url, **kw}
        status, text = post(f"{self.control_url}/v1/appliances", body)
        assert status == 201, text

    def steer(self, source: str, title: str = "t0001") -> dict:
        return get_json(f"{self.control_url}/v1/steer?title={title}", source=source)

    def wait_available(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if get_json(f"{self.control_url}/healthz")["available"] == n:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{n} appliances never became available")

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        for edge_id in self.edges:  # those the tests SIGKILLed left their run directories
            clear_run_dir(self.root / f"{edge_id}.toml")
