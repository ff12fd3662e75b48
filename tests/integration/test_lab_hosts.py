"""The host lab end to end, one site: `cdnlab lab up --sites 1 --appliances-per-site 1` (a control
host, a shield and one appliance as systemd-nspawn containers, the AWS emulator, site.yml, the
testinfra suites, players, drills, Prometheus), then `lab up` again reusing it, `lab status`, and
`lab down` leaving no container, mount, loop device, namespace, link or process behind.

Needs root, systemd-nspawn, debootstrap and ffmpeg (the Makefile's DEBIAN_PACKAGES); the root
filesystem and wheelhouse are cached in /var/cache/cdnlab-lab (CDNLAB_LAB_CACHE). Skipped
otherwise, or with CDNLAB_SKIP_HOST_TESTS=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lab_leftovers import leftovers

from cdnlab.lab.hostlab import lab_prefix, prerequisites

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def _why_skip() -> str | None:
    if os.environ.get("CDNLAB_SKIP_HOST_TESTS") == "1":
        return "CDNLAB_SKIP_HOST_TESTS=1"
    return prerequisites()


def _cdnlab(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdnlab.cli", "lab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.mark.skipif(_why_skip() is not None, reason=str(_why_skip()))
def test_one_site_lab_up_again_status_down(tmp_path: Path) -> None:
    if Path(f"/run/netns/{lab_prefix(60)}-sw").exists():
        pytest.skip(f"another host lab with --net 60 (namespace {lab_prefix(60)}-sw) is running here")
    tmp_path.chmod(0o755)
    workdir, out = tmp_path / "run", tmp_path / "out"
    common = ["--workdir", str(workdir)]
    try:
        first = _cdnlab(
            "up",
            "--sites",
            "1",
            "--appliances-per-site",
            "1",
            "--net",
            "60",
            "--titles",
            "2",
            "--out",
            str(out),
            *common,
        )
        report = json.loads((out / "report.json").read_text())
        failed = [c for c in report["checks"] if c["status"] == "FAIL"]
        assert first.returncode == 0 and not failed, (failed, first.stdout[-4000:], first.stderr[-2000:])
        names = " ".join(c["name"] for c in report["checks"] if c["status"] == "PASS")
        for must in (
            "site.yml",
            "testinfra",
            "plays t0001",
            "Prometheus",
            "never served",
            "origin unreachable",
        ):
            assert must in names, must
        assert "<svg" in (out / "report.html").read_text()

        # Again: the running hosts and emulator are reused, nothing is rebuilt, every check passes.
        again = _cdnlab("up", "--no-testinfra", "--titles", "2", "--out", str(out / "again"), *common)
        report2 = json.loads((out / "again" / "report.json").read_text())
        assert again.returncode == 0, [c for c in report2["checks"] if c["status"] == "FAIL"]
        assert any("reused" in c["name"] for c in report2["checks"])

        status = _cdnlab("status", *common, timeout=120)
        assert status.returncode == 0 and "oca-a1" in status.stdout and "running" in status.stdout, (
            status.stdout
        )
    finally:
        down = _cdnlab("down", *common, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not leftovers(workdir, lab_prefix(60))
    stopped = _cdnlab("status", *common, timeout=60)
    assert stopped.returncode == 3 and "no lab" in stopped.stdout
