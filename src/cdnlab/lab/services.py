"""Processes the host lab keeps running on the controller after ``lab up`` returns (the AWS
emulator on loopback and the forwarder that shows it to the hosts), recorded by PID and start
time so ``lab status`` and ``lab down`` find exactly them and nothing else."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cdnlab.lab.hosts import _alive, _start_time


def spawn(name: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start ARGS detached (own session: Ctrl-C on ``lab up`` does not take it down)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    time.sleep(0.05)
    return {"name": name, "pid": proc.pid, "start": _start_time(proc.pid), "args": args, "log": str(log)}


def alive(rec: dict[str, Any]) -> bool:
    return _alive(int(rec["pid"]), rec.get("start"))


def stop(rec: dict[str, Any], timeout: float = 10.0) -> bool:
    """SIGTERM the process group (the emulator has children), then SIGKILL. True if it is gone."""
    if not alive(rec):
        return True
    pid = int(rec["pid"])
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(rec):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if alive(rec):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.3)
    return not alive(rec)


def python() -> str:
    return sys.executable
