"""Real processes for tests: nginx from Debian as the origin, cdnlab edge daemons on loopback."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CDNLAB = [sys.executable, "-m", "cdnlab.cli"]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


NGINX_CONF = """
daemon off;
master_process on;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    types {{ text/html html; video/mp4 mp4 m4s; application/dash+xml mpd; image/jpeg jpg;
            application/octet-stream bin; text/plain txt; }}
    default_type application/octet-stream;
    access_log {access};
    sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_requests 100000;
    open_file_cache max=10000 inactive=60s;
    server {{
        listen 127.0.0.1:{port} reuseport;
        root {root};
        {extra}
    }}
}}
"""


@dataclass
class Nginx:
    port: int
    root: Path
    dir: Path
    proc: subprocess.Popen
    access_log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests_for(self, path: str) -> int:
        """How many times the origin was asked for ``path`` (from its access log)."""
        if not self.access_log.exists():
            return 0
        return sum(1 for line in self.access_log.read_text().splitlines() if f" {path} " in line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def nginx(
    base: Path,
    root: Path | None = None,
    workers: int = 1,
    extra: str = "",
    access: bool = True,
    port: int | None = None,
) -> Iterator[Nginx]:
    base.mkdir(parents=True, exist_ok=True)
    root = root or base / "www"
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    access_log = base / "access.log"
    conf = base / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            dir=base,
            workers=workers,
            port=port,
            root=root,
            extra=extra,
            access=f"{access_log} combined" if access else "off",
        )
    )
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(base)], stderr=subprocess.PIPE)
    try:
        wait_port(port, proc=proc)
        n = Nginx(port, root, base, proc, access_log)
        yield n
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Edge:
    port: int
    admin_port: int
    proc: subprocess.Popen
    store: Path
    log: Path
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def health(self) -> dict:
        _, _, body = request(self.admin_port, "GET", "/healthz")
        return json.loads(body)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@contextmanager
def edge(
    base: Path,
    upstreams: list[str] | None = None,
    *,
    config: str | None = None,
    workers: int = 1,
    role: str = "edge",
    port: int | None = None,
    admin_port: int | None = None,
) -> Iterator[Edge]:
    """Start ``cdnlab edge serve`` (quick flags, or a TOML ``config`` with {port}/{admin}/{store} holes)."""
    base.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    admin_port = admin_port or free_port()
    store = base / "store"
    log = base / "edge.log"
    if config is not None:
        cfg = write_config(
            base / "edge.toml", config.format(port=port, admin=admin_port, store=store, base=base)
        )
        args = ["edge", "serve", "--config", str(cfg)]
    else:
        args = [
            "edge",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--admin-listen",
            f"127.0.0.1:{admin_port}",
            "--store",
            str(store),
            "--workers",
            str(workers),
            "--role",
            role,
        ]
        for u in upstreams or []:
            args += ["--upstream", u]
    logf = open(log, "ab")  # noqa: SIM115 - lives as long as the process
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [*CDNLAB, *args], stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    e = Edge(port, admin_port, proc, store, log)
    try:
        wait_port(admin_port, proc=proc)
        wait_port(port, proc=proc)
        yield e
    finally:
        e.stop()
        logf.close()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass


def request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0, until_close: bool = True) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if not until_close:
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)
