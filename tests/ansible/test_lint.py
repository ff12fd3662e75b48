"""ansible-lint on the production profile (with the opt-in role-argument-spec rule) over
site.yml, every role (their Linux and FreeBSD task files alike), the example inventory and the
render playbook; ansible-playbook --syntax-check; the example inventory's shape."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from ansible_lab import ANSIBLE_BIN, REPO, ansible_env

ROLES = [
    "appliance_tuning",
    "appliance_storage",
    "cdnlab_package",
    "cdnlab_delivery",
    "cdnlab_control",
    "prometheus",
]


def test_ansible_lint_production_profile(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            str(ANSIBLE_BIN / "ansible-lint"),
            "--profile",
            "production",
            "--enable-list",
            "role-argument-spec",
            "--nocolor",
            "site.yml",
            "roles",
            "inventories/example",
            "tests/ansible/render.yml",
            "tests/ansible/vm-storage.yml",
        ],
        cwd=REPO,
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "Profile 'production' was required, and it passed" in out


def test_syntax_check_with_the_example_inventory(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(ANSIBLE_BIN / "ansible-playbook"), "-i", "inventories/example", "--syntax-check", "site.yml"],
        cwd=REPO,
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("role", ROLES)
def test_every_role_is_documented_and_per_os(role: str) -> None:
    root = REPO / "roles" / role
    for path in ("meta/main.yml", "meta/argument_specs.yml", "defaults/main.yml", "tasks/main.yml"):
        assert (root / path).is_file(), f"{role}: {path}"
    assert (root / "vars" / "Linux.yml").is_file() and (root / "vars" / "FreeBSD.yml").is_file()
    import yaml

    spec = yaml.safe_load((root / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"][
        "options"
    ]
    defaults = yaml.safe_load((root / "defaults" / "main.yml").read_text()) or {}
    assert set(defaults) <= set(spec), (
        f"{role}: defaults without an argument spec: {set(defaults) - set(spec)}"
    )
    assert all(o.get("description") for o in spec.values()), role
    text = (root / "defaults" / "main.yml").read_text()
    assert text.count("\n#") >= 2, f"{role}: defaults/main.yml is not commented"


def test_example_inventory(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(ANSIBLE_BIN / "ansible-inventory"), "-i", "inventories/example", "--list"],
        cwd=REPO,
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    inv = json.loads(proc.stdout)
    hostvars = inv["_meta"]["hostvars"]

    def hosts(group: str) -> set[str]:
        out = set(inv.get(group, {}).get("hosts", []))
        for child in inv.get(group, {}).get("children", []):
            out |= hosts(child)
        return out

    assert hosts("control") and hosts("monitoring")
    assert hosts("appliances") == hosts("appliances_linux") | hosts("appliances_freebsd")
    assert hosts("appliances_linux") and hosts("appliances_freebsd")
    sites = {hostvars[h]["cdnlab_delivery_site"] for h in hosts("appliances")}
    assert sites == {"isp-a-nyc", "ixp-fra"}
    for h in hosts("appliances_freebsd"):
        assert hostvars[h]["appliance_storage_fstype"] == "ufs"
        assert hostvars[h]["ansible_python_interpreter"].startswith("/usr/local/bin/python3")
