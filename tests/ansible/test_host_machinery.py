"""cdnlab.lab.hosts: a host boots, answers SSH with its disks, and tearing the lab down (or
cleaning up after a crash) leaves no container, mount, loop device, namespace, link or SSH master."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from ansible_lab import host_tests_possible

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _free_net() -> int:
    for net in range(150, 200):
        if not Path(f"/run/netns/cl{net}-sw").exists() and not Path(f"/sys/class/net/cl{net}-ctl").exists():
            return net
    raise RuntimeError("no free lab network")


def _leftovers(lab_workdir: Path, prefix: str) -> list[str]:
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith(prefix + "-")]
    if Path(f"/sys/class/net/{prefix}-ctl").exists():
        found.append(f"link {prefix}-ctl")
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    found += [f"loop {line}" for line in loops.splitlines() if str(lab_workdir) in line]
    found += [
        f"mount {line}"
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if str(lab_workdir) in line
    ]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(args).decode(errors="replace")
        if str(lab_workdir) in text or f"/run/cdnlab-lab/{prefix}/" in text:
            found.append(f"process {cmdline.parent.name}: {text[:120]}")
    if Path(f"/run/cdnlab-lab/{prefix}").exists():
        found.append(f"runtime dir /run/cdnlab-lab/{prefix}")
    return found


@pytest.fixture
def lab_dir(tmp_path: Path) -> Path:
    why = host_tests_possible()
    if why:
        pytest.skip(why)
    return tmp_path / "lab"


def test_boot_ssh_disks_inventory_and_clean_teardown(lab_dir: Path) -> None:
    from cdnlab.lab.hosts import DiskSpec, HostSpec, Lab

    lab = Lab(lab_dir, net=_free_net())
    try:
        lab.up([HostSpec("h1", groups=("appliances",), disks=(DiskSpec("d0", "512M"), DiskSpec("dead", 0)))])
        h1 = lab.hosts["h1"]
        assert h1.ssh("hostname").stdout.strip() == "h1"
        assert h1.ssh("systemctl is-system-running").stdout.strip() in ("running", "degraded")
        assert h1.ssh(f"blockdev --getsize64 {h1.disks['d0']}").stdout.strip() == str(512 << 20)
        assert h1.ssh(f"blockdev --getsize64 {h1.disks['dead']}").stdout.strip() == "0"
        # its own network namespace: the net.* keys are its own to set
        h1.ssh("sysctl -w net.core.somaxconn=4242")
        assert Path("/proc/sys/net/core/somaxconn").read_text().strip() != "4242"
        import json

        inv = json.loads(lab.write_inventory().read_text())
        assert inv["all"]["children"]["appliances"]["hosts"]["h1"]["ansible_host"] == h1.address
        ssh_master = h1.ssh("true")  # leaves a ControlPersist master behind
        assert ssh_master.returncode == 0
    finally:
        lab.down()
    assert _leftovers(lab_dir, lab.prefix) == []


def test_cleanup_after_a_crash(lab_dir: Path) -> None:
    from cdnlab.lab.hosts import HostSpec, Lab

    lab = Lab(lab_dir, net=_free_net())
    lab.up([HostSpec("h1")])
    lab.hosts["h1"].ssh("true")
    prefix = lab.prefix
    del lab  # the process that made it is gone; only the state file in the workdir remains
    assert _leftovers(lab_dir, prefix)
    Lab.cleanup(lab_dir)
    assert _leftovers(lab_dir, prefix) == []
