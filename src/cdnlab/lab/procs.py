"""Real processes on loopback for the lab and the benchmarks: nginx from Debian, cdnlab daemons."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cdnlab.edge.worker import clear_run_dir

NGINX_CONF = """
{user}
daemon off;
master_process on;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    types {{ text/html html; text/css css; application/javascript js; application/json json;
            video/mp4 mp4 m4s; application/dash+xml mpd; image/jpeg jpg; image/png png;
            application/octet-stream bin; text/plain txt; }}
    default_type application/octet-stream;
    access_log {access};
    sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_requests 1000000;
    open_file_cache max=10000 inactive=60s;
    client_body_temp_path {dir}/client_temp;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    {http_extra}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        root {root};
        {extra}
    }}
}}
"""


def nginx_binary() -> str:
    path = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(path):
        raise FileNotFoundError("nginx is not installed (Debian package nginx; `make lab` installs it)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Service:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    dir: Path
    admin_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


@contextmanager
def nginx(
    base: Path, root: Path, workers: int = 1, access_log: bool = True, extra: str = "", http_extra: str = ""
) -> Iterator[Service]:
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = base / "nginx.conf"
    access = f"{base / 'access.log'} combined" if access_log else "off"
    conf.write_text(
        NGINX_CONF.format(
            dir=base,
            workers=workers,
            port=port,
            root=root,
            extra=extra,
            access=access,
            http_extra=http_extra,
            # Loopback lab and benchmarks only: as root, workers keep root's rights on the temp and
            # cache directories made here (otherwise they drop to nobody and cannot write them).
            user="user root;" if os.geteuid() == 0 else "",
        )
    )
    proc = subprocess.Popen([nginx_binary(), "-c", str(conf), "-p", str(base)], stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc=proc)
        yield Service("nginx", port, proc, base)
    finally:
        stop(proc, signal.SIGQUIT)


@contextmanager
def edge(base: Path, config_toml: str, name: str = "edge") -> Iterator[Service]:
    """Start ``cdnlab edge serve --config`` with a TOML config ({port}, {admin}, {base} are filled in)."""
    base.mkdir(parents=True, exist_ok=True)
    port, admin = free_port(), free_port()
    cfg = base / "edge.toml"
    cfg.write_text(config_toml.format(port=port, admin=admin, base=base))
    log = open(base / "edge.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdnlab.cli", "edge", "serve", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_port(admin, proc=proc)
        wait_port(port, proc=proc)
        yield Service(name, port, proc, base, admin)
    finally:
        stop(proc)
        log.close()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        clear_run_dir(cfg)  # a master that was SIGKILLed (a drill) left it behind


@contextmanager
def control(base: Path, config_toml: str) -> Iterator[Service]:
    """Start ``cdnlab control serve --config`` ({port} and {base} are filled in)."""
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = base / "control.toml"
    cfg.write_text(config_toml.format(port=port, base=base))
    log = open(base / "control.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cdnlab.cli",
            "control",
            "serve",
            "--config",
            str(cfg),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=base,
        start_new_session=True,
    )
    try:
        wait_port(port, proc=proc)
        yield Service("control", port, proc, base)
    finally:
        stop(proc)
        log.close()


def edge_config(
    upstreams: list[str],
    *,
    role: str = "edge",
    ident: str = "edge-1",
    site: str = "default",
    listen_host: str = "127.0.0.1",
    control_url: str | None = None,
    workers: int = 1,
    capacity: str = "4G",
    ram: str | None = None,
    signing_keys: dict[str, str] | None = None,
    purge_token: str | None = None,
    access_log: bool = True,
) -> str:
    """A TOML config for ``edge()`` with one flash disk (and optionally a RAM tier)."""
    ups = ", ".join(f'"{u}"' for u in upstreams)
    lines = [
        f'role = "{role}"',
        f'id = "{ident}"',
        f'site = "{site}"',
        f'listen = ["{listen_host}:{{port}}"]',
        f"workers = {workers}",
        f"upstreams = [{ups}]",
        'state_dir = "{base}/state"',
    ]
    if access_log:
        lines += ["[log]", 'access_log = "{base}/access.log"']
    lines += ["[admin]", 'listen = "127.0.0.1:{admin}"']
    if purge_token:
        lines.append(f'purge_token = "{purge_token}"')
    if signing_keys:
        pairs = ", ".join(f'{k} = "{v}"' for k, v in signing_keys.items())
        lines += ["[signing]", "keys = {{ " + pairs + " }}"]  # doubled braces survive .format()
    if control_url:
        lines += ["[control]", f'url = "{control_url}"', "report_interval = 1.0"]
    if ram:
        lines += ["[[tiers]]", 'path = "{base}/ram0"', 'kind = "ram"', f'capacity = "{ram}"']
    lines += ["[[tiers]]", 'path = "{base}/flash0"', 'kind = "flash"', f'capacity = "{capacity}"']
    return "\n".join(lines) + "\n"
