"""Hosts for the Ansible tests (the fixture lab_hosts, registered in conftest.py): Debian booted
under systemd-nspawn (cdnlab.lab.hosts), loop devices as their disks, an origin on the
controller's lab address, and a generated inventory.

The root filesystem is built once with debootstrap and cached (CDNLAB_LAB_CACHE, default
/var/cache/cdnlab-lab): the first run pays about two minutes for it. Needs root and the Debian
packages the Makefile installs; skipped otherwise, or when CDNLAB_SKIP_HOST_TESTS=1.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_BIN = Path(sys.executable).parent
SIGNING_KID, SIGNING_KEY = "lab1", "lab-signing-key-not-secret"
TEST_OBJECT = "/content/t0001/1080p/seg-00001.m4s"


def host_tests_possible() -> str | None:
    """Why the host tests cannot run here, or None."""
    if os.environ.get("CDNLAB_SKIP_HOST_TESTS") == "1":
        return "CDNLAB_SKIP_HOST_TESTS=1"
    if os.geteuid() != 0:
        return "needs root (network namespaces, loop devices, systemd-nspawn)"
    for tool in ("systemd-nspawn", "debootstrap", "losetup", "ip", "ssh", "mkfs.ext4"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (the Makefile's DEBIAN_PACKAGES)"
    return None


@dataclass
class Run:
    """One ansible-playbook run: exit code, output, and the PLAY RECAP per host."""

    args: list[str]
    rc: int
    output: str
    recap: dict[str, dict[str, int]] = field(default_factory=dict)

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    @property
    def changed(self) -> dict[str, int]:
        return {h: r["changed"] for h, r in self.recap.items()}

    def changed_tasks(self) -> list[str]:
        """The tasks (and hosts) that reported changed, for a readable failure."""
        out, task = [], ""
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                task = line.split("]")[0] + "]"
            elif line.startswith("changed: ["):
                out.append(f"{task} {line.split(']')[0]}]")
        return out


_RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)"
)


def ansible_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-tmp"),
            "PATH": f"{ANSIBLE_BIN}:{env.get('PATH', '')}",
            "TMPDIR": str(workdir / "tmp"),
        }
    )
    (workdir / "tmp").mkdir(exist_ok=True)
    return env


def run_playbook(
    workdir: Path, inventory: Path, *args: str, timeout: float = 900, playbook: Path = REPO / "site.yml"
) -> Run:
    cmd = [str(ANSIBLE_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), *args]
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env=ansible_env(workdir),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    output = proc.stdout + proc.stderr
    (workdir / "logs").mkdir(exist_ok=True)
    n = len(list((workdir / "logs").glob("*-ansible-playbook.log")))
    (workdir / "logs" / f"{n:02d}-ansible-playbook.log").write_text(" ".join(cmd) + "\n\n" + output)
    recap: dict[str, dict[str, int]] = {}
    in_recap = False
    for line in output.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        m = _RECAP.match(line) if in_recap else None
        if m:
            keys = ("ok", "changed", "unreachable", "failed", "skipped")
            recap[m.group(1)] = dict(zip(keys, map(int, m.groups()[1:]), strict=True))
    return Run(cmd, proc.returncode, output, recap)


class _Origin(http.server.ThreadingHTTPServer):
    daemon_threads = True


def make_origin_content(root: Path) -> None:
    for profile, size in (("240p", 96 * 1024), ("1080p", 1536 * 1024)):
        for i in range(1, 4):
            blob = (f"{profile}/{i}".encode() * (size // 8 + 1))[:size]
            path = root / f"content/t0001/{profile}/seg-{i:05d}.m4s"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(64) + blob[64:])


@dataclass
class LabHosts:
    workdir: Path
    inventory: Path
    lab: Any
    origin_url: str
    runs: dict[str, Run] = field(default_factory=dict)


def _snapshot_source(dest: Path) -> Path:
    """A copy of what the wheel is built from (and of the alerting rules), so other people editing
    the working tree during the test cannot make the second run see a change."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "monitoring" / "prometheus", dest / "monitoring" / "prometheus")
    return dest


def _free_net() -> int:
    for net in range(200, 250):
        if not Path(f"/run/netns/cl{net}-sw").exists() and not Path(f"/sys/class/net/cl{net}-ctl").exists():
            return net
    raise RuntimeError("no free lab network (10.203.200-249.0/24 all in use)")


@pytest.fixture(scope="session")
def lab_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHosts]:
    why = host_tests_possible()
    if why:
        pytest.skip(why)
    from cdnlab.lab.hosts import DiskSpec, HostSpec, Lab, LabError, wheelhouse_archive

    workdir = tmp_path_factory.mktemp("ansible-lab")
    (workdir / "logs").mkdir()
    source = _snapshot_source(workdir / "source")
    wheelhouse = wheelhouse_archive(REPO)
    origin_root = workdir / "origin"
    make_origin_content(origin_root)

    specs = [
        HostSpec(
            "oca1",
            groups=("appliances",),
            disks=(
                DiskSpec("nvme0", "2G", "flash"),
                DiskSpec("nvme1", "1G", "flash"),  # holds ext4 "olddata", wipe: true
                DiskSpec("nvme2", "1G", "flash"),  # holds ext4 "keepme", no wipe: skipped, untouched
                DiskSpec("hdd0", "3G", "hdd"),
                DiskSpec("hdd1", 0, "hdd"),  # failed: no medium
            ),
        ),
        HostSpec("oca2", groups=("appliances",), disks=(DiskSpec("nvme0", "1G", "flash"),)),
        HostSpec("ctl1", groups=("control", "monitoring")),
    ]
    lab = None
    for _ in range(5):
        lab = Lab(workdir / "lab", net=_free_net())
        try:
            lab.up(specs)
            break
        except LabError as exc:
            lab.down()
            if "already exists" not in str(exc):
                raise
    assert lab is not None and lab.hosts
    server: _Origin | None = None
    try:
        oca1, oca2, ctl1 = lab.hosts["oca1"], lab.hosts["oca2"], lab.hosts["ctl1"]
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "olddata", oca1.disks["nvme1"]], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "keepme", oca1.disks["nvme2"]], check=True)

        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
            *a, directory=str(origin_root), **k
        )
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
        server = _Origin((lab.controller_address, 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        origin_url = f"http://{lab.controller_address}:{server.server_address[1]}"

        common = {
            "cdnlab_package_source": str(source),
            "cdnlab_package_build_dir": str(workdir / "wheel"),
            "cdnlab_package_wheelhouse": str(wheelhouse),
        }
        inventory = lab.write_inventory(
            group_vars={
                "appliances": {
                    **common,
                    "cdnlab_delivery_upstreams": [origin_url],
                    "cdnlab_delivery_site": "lab-site",
                    "cdnlab_delivery_workers": 2,
                    "cdnlab_delivery_ram_tier_size": "64M",
                    "cdnlab_delivery_signing_keys": {SIGNING_KID: SIGNING_KEY},
                    "cdnlab_delivery_purge_token": "lab-purge-token",
                    "cdnlab_delivery_control_url": f"http://{ctl1.address}:8900",
                    "cdnlab_delivery_drain_timeout": 60,
                    "cdnlab_delivery_limits": {"drain_timeout": 30.0},
                    "cdnlab_testinfra_object": TEST_OBJECT,
                },
                "control": {
                    **common,
                    "cdnlab_control_signing_kid": SIGNING_KID,
                    "cdnlab_control_signing_key": SIGNING_KEY,
                    "cdnlab_control_health": {"interval": "2s"},
                },
                "monitoring": {
                    "prometheus_scrape_interval": "5s",
                    "prometheus_rules_files": [str(source / "monitoring/prometheus/cdnlab-alerts.yml")],
                },
            },
        )
        # Per-host disks: by the device paths this lab gave them, plus one that is not there.
        data = json.loads(inventory.read_text())
        hosts = data["all"]["children"]["appliances"]["hosts"]
        hosts["oca1"].update(
            {
                "appliance_storage_flash_disks": [
                    {"device": oca1.disks["nvme0"]},
                    {"device": oca1.disks["nvme1"], "wipe": True},
                    {"device": oca1.disks["nvme2"]},
                ],
                "appliance_storage_hdd_disks": [
                    {"device": oca1.disks["hdd0"]},
                    {"device": oca1.disks["hdd1"]},
                    {"device": "/dev/disk/by-id/ata-ST20000NM007D_MISSING"},
                ],
            }
        )
        hosts["oca2"].update({"appliance_storage_flash_disks": [{"device": oca2.disks["nvme0"]}]})
        for name in ("oca1", "oca2"):
            hosts[name]["cdnlab_delivery_admin_address"] = lab.hosts[name].address
        inventory.write_text(json.dumps(data, indent=2) + "\n")
        yield LabHosts(workdir=workdir, inventory=inventory, lab=lab, origin_url=origin_url)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        lab.down()
        _assert_nothing_left(lab)
        # The hosts' upper layers hold a venv each (hundreds of MB); keep only the logs.
        shutil.rmtree(workdir / "lab" / "hosts", ignore_errors=True)
        shutil.rmtree(workdir / "source", ignore_errors=True)


def _assert_nothing_left(lab: Any) -> None:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lab.prefix + "-" not in netns, netns
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert str(lab.workdir) not in loops, loops
    assert str(lab.workdir) not in Path("/proc/self/mountinfo").read_text()


def wait_until(check: Any, timeout: float, interval: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())
