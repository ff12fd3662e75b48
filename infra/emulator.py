"""Start a local AWS emulator (MiniStack) on loopback, for the lab and the tests.

MiniStack keeps CloudFront's whole configuration (OAC ids, function associations, cache
policies) where moto drops some of it, and it serves distributions. Everything else reaches it
only through its URL (AWS_ENDPOINT_URL), so another emulator or real AWS can stand in.

    .venv/bin/python -m infra.emulator --port 4566     # runs until interrupted
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HEALTH_PATH = "/_ministack/health"
# Loopback never goes through a proxy, whatever the environment says.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(port: int, workdir: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GATEWAY_PORT": str(port),
        # Loopback only, and none of the extra listeners (MQTT on 8883, SFTP) a CDN does not need.
        "BIND_HOST": "127.0.0.1",
        "MINISTACK_HOST": "127.0.0.1",
        "IOT_MTLS_ENABLED": "0",
        "SFTP_ENABLED": "0",
        "PERSIST_STATE": "0",
        "STATE_DIR": str(workdir / "state"),
        "LOG_LEVEL": "WARNING",
    }
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (the child owns it)
    return subprocess.Popen(
        [sys.executable, "-m", "ministack"], cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT
    )


def wait_ready(endpoint: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the emulator exited with status {proc.returncode}")
        try:
            with _DIRECT.open(endpoint + HEALTH_PATH, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"the emulator at {endpoint} was not ready after {timeout:.0f} s")


@contextlib.contextmanager
def running(workdir: Path, port: int | None = None, log: Path | None = None) -> Iterator[str]:
    """An emulator for the duration of the block; yields its endpoint URL."""
    port = port or free_port()
    proc = start(port, workdir, log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_ready(endpoint, proc)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.emulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4566)
    parser.add_argument("--workdir", type=Path, default=Path("lab/out/emulator"))
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    # SIGTERM (as from `kill`) unwinds like Ctrl-C, so the emulator child is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with running(args.workdir, args.port) as endpoint:
        print(f"AWS emulator ready: export AWS_ENDPOINT_URL={endpoint}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
