"""The storage role proven once on a real kernel with real device names: a qemu VM (software
emulation, DESIGN.md) with an emulated NVMe disk and a SATA disk on an AHCI controller (rotation
rate 7200). Discovery must take nvme0n1 as flash and sda as HDD, the udev rule must give them
the none and mq-deadline schedulers and their read-ahead, a second run must change nothing, and
the tuning role's sysctl keys must all be live (no container limits here).

Opt-in, about ten minutes: CDNLAB_VM_TEST=1 make test (or pytest tests/ansible/test_vm_storage.py).
When opted in it installs qemu-system-x86 with apt-get if missing, and builds the VM image once
(Debian's kernel added to the cached root filesystem) under /var/cache/cdnlab-lab.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_lab import ANSIBLE_BIN, REPO, ansible_env, host_tests_possible, run_playbook

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if os.environ.get("CDNLAB_VM_TEST") != "1":
        pytest.skip("opt-in: CDNLAB_VM_TEST=1 (about ten minutes under software emulation)")
    why = host_tests_possible()
    if why:
        pytest.skip(why)
    if shutil.which("qemu-system-x86_64") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "qemu-system-x86"],
            check=True,
            timeout=1200,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    from cdnlab.lab.hosts import Vm, ensure_vm_image

    image = ensure_vm_image()
    with Vm(image, tmp_path_factory.mktemp("vm"), nvme=("2G",), sata_hdd=("3G",)) as machine:
        yield machine


@pytest.fixture(scope="module")
def inventory(vm: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vm-inventory") / "inventory.yml"
    opts = " ".join(vm.ssh_base()[3:])  # after "ssh -i KEY"; port included
    data = {
        "all": {
            "children": {
                "vm": {
                    "hosts": {
                        "vm1": {
                            "ansible_host": "127.0.0.1",
                            "ansible_port": vm.ssh_port,
                            "ansible_user": "root",
                            "ansible_ssh_private_key_file": str(vm.image.key),
                            "ansible_ssh_common_args": opts.replace(f"-p {vm.ssh_port} ", ""),
                            "ansible_python_interpreter": "/usr/bin/python3",
                            "appliance_storage_discover": True,
                        }
                    }
                }
            }
        }
    }
    path.write_text(json.dumps(data, indent=2))
    return path


def play(inventory: Path, workdir: Path) -> Any:
    return run_playbook(
        workdir, inventory, playbook=REPO / "tests" / "ansible" / "vm-storage.yml", timeout=1800
    )


def test_discovery_formats_mounts_and_tunes_real_devices(vm: Any, inventory: Path, tmp_path: Path) -> None:
    first = play(inventory, tmp_path)
    assert first.rc == 0, first.tail(120)
    found = json.loads(vm.ssh("findmnt --json --list -o TARGET,SOURCE,FSTYPE,OPTIONS,LABEL").stdout)[
        "filesystems"
    ]
    mounts = {f["target"]: f for f in found}
    assert mounts["/srv/cdnlab/flash/0"]["source"] == "/dev/nvme0n1"
    assert mounts["/srv/cdnlab/flash/0"]["label"] == "cdnlab-f0"
    assert mounts["/srv/cdnlab/hdd/0"]["source"] == "/dev/sda"
    assert mounts["/srv/cdnlab/hdd/0"]["label"] == "cdnlab-h0"
    for target in ("/srv/cdnlab/flash/0", "/srv/cdnlab/hdd/0"):
        assert mounts[target]["fstype"] == "xfs" and "noatime" in mounts[target]["options"].split(",")
    # the udev rule, applied by udev itself
    assert "[none]" in vm.ssh("cat /sys/block/nvme0n1/queue/scheduler").stdout
    assert "[mq-deadline]" in vm.ssh("cat /sys/block/sda/queue/scheduler").stdout
    assert vm.ssh("cat /sys/block/nvme0n1/queue/read_ahead_kb").stdout.strip() == "256"
    assert vm.ssh("cat /sys/block/sda/queue/read_ahead_kb").stdout.strip() == "4096"
    assert vm.ssh("cat /sys/block/sda/queue/rotational").stdout.strip() == "1"
    # by label, so a disk that disappears does not shift the others
    fstab = vm.ssh("cat /etc/fstab").stdout
    assert (
        "LABEL=cdnlab-f0 /srv/cdnlab/flash/0 xfs" in fstab
        and "LABEL=cdnlab-h0 /srv/cdnlab/hdd/0 xfs" in fstab
    )
    # every sysctl key of the tuning role is live on a real kernel
    base = yaml.safe_load((REPO / "roles" / "appliance_tuning" / "vars" / "Linux.yml").read_text())
    for key, value in base["__appliance_tuning_sysctl"].items():
        live = vm.ssh(f"sysctl -n {key}").stdout
        assert " ".join(live.split()) == " ".join(str(value).split()), key
    # the second run changes nothing
    second = play(inventory, tmp_path)
    assert second.rc == 0, second.tail()
    assert second.changed == {"vm1": 0}, second.changed_tasks()


def test_udev_rule_survives_a_reboot_of_the_disks(vm: Any, inventory: Path) -> None:
    """A change event (as at boot or hot-plug) sets the scheduler again from the rule alone."""
    vm.ssh("echo mq-deadline > /sys/block/nvme0n1/queue/scheduler")
    vm.ssh("udevadm trigger --action=change --settle /dev/nvme0n1")
    assert "[none]" in vm.ssh("cat /sys/block/nvme0n1/queue/scheduler").stdout


def test_ansible_sees_the_devices(vm: Any, inventory: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            str(ANSIBLE_BIN / "ansible"),
            "-i",
            str(inventory),
            "vm1",
            "-m",
            "ansible.builtin.setup",
            "-a",
            "filter=ansible_devices",
        ],
        cwd=REPO,
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nvme0n1" in proc.stdout and "sda" in proc.stdout
