"""The control plane's AWS environment (roles/cdnlab_control, templates/control.env.j2): rendered
through tests/ansible/render.yml with the roles' own variables for the example inventory's control
node, with AWS settings given and without, and read back the way systemd and a shell read it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_lab import ANSIBLE_BIN, REPO, ansible_env

AWS = {
    "cdnlab_control_aws_endpoint_url": "http://10.203.50.1:4566",
    "cdnlab_control_aws_region": "eu-central-1",
    "cdnlab_control_aws_access_key_id": "AKIAEXAMPLE",
    "cdnlab_control_aws_secret_access_key": "wJalr/XUtnFEMI+K7MDENG",
}


def render(tmp_path: Path, os_name: str, extra: dict[str, str]) -> Path:
    extra_file = tmp_path / "extra.json"
    extra_file.write_text(json.dumps(extra))
    proc = subprocess.run(
        [
            str(ANSIBLE_BIN / "ansible-playbook"),
            "-i",
            str(REPO / "inventories" / "example"),
            str(REPO / "tests" / "ansible" / "render.yml"),
            "-e",
            f"render_facts={REPO / 'tests' / 'ansible' / 'facts' / f'{os_name}.yml'}",
            "-e",
            f"render_dir={tmp_path}",
            "-e",
            "render_hosts=control",
            "-e",
            "ansible_connection=local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-e",
            f"@{extra_file}",
        ],
        cwd=REPO,
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return tmp_path / "control-1"


def shell_env(path: Path) -> dict[str, str]:
    """The variables the file sets when sourced by sh with set -a (FreeBSD rc.subr's env_file)."""
    out = subprocess.run(
        ["sh", "-c", 'set -a; . "$1"; env -0', "sh", str(path)],
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.decode()
    return {k: v for k, _, v in (x.partition("=") for x in out.split("\0") if x.startswith("AWS_"))}


@pytest.mark.slow
def test_aws_settings_go_to_the_environment_file_not_the_unit(tmp_path: Path) -> None:
    out = render(tmp_path, "debian", AWS)
    env = shell_env(out / "control.env")
    assert env == {
        "AWS_ENDPOINT_URL": "http://10.203.50.1:4566",
        "AWS_DEFAULT_REGION": "eu-central-1",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalr/XUtnFEMI+K7MDENG",
    }
    unit = (out / "cdnlab-control.service").read_text()
    assert "EnvironmentFile=/etc/cdnlab/control.env" in unit.splitlines()
    assert "AKIAEXAMPLE" not in unit and "wJalr" not in unit and "4566" not in unit


@pytest.mark.slow
def test_empty_aws_settings_are_left_out(tmp_path: Path) -> None:
    out = render(tmp_path, "debian", {"cdnlab_control_aws_region": "us-east-1"})
    assert shell_env(out / "control.env") == {"AWS_DEFAULT_REGION": "us-east-1"}
    lines = [x for x in (out / "control.env").read_text().splitlines() if x and not x.startswith("#")]
    assert lines == ["AWS_DEFAULT_REGION='us-east-1'"]
