"""`cdnlab lab up` (what `make lab` runs) passes every one of its checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_lab_up_passes_every_check(tmp_path: Path) -> None:
    out = tmp_path / "out"
    tmp_path.chmod(0o755)  # the lab's nginx workers read the origin files under here
    proc = subprocess.run(
        [sys.executable, "-m", "cdnlab.cli", "lab", "up", "--hosts", "loopback", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads((out / "loopback.json").read_text())
    failed = [c for c in report["checks"] if not c["ok"]]
    assert proc.returncode == 0 and not failed, (failed, proc.stdout[-3000:], proc.stderr[-3000:])
    assert len(report["checks"]) >= 25
    assert all(q["completed"] for q in report["qoe"].values())
