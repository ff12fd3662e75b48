"""Helpers shared by the testinfra suites (see conftest.py for how to run them)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GROUPS = {
    "appliances": os.environ.get("CDNLAB_GROUP_APPLIANCES", "appliances"),
    "control": os.environ.get("CDNLAB_GROUP_CONTROL", "control"),
    "monitoring": os.environ.get("CDNLAB_GROUP_MONITORING", "monitoring"),
}


def inventory_vars(host: Any) -> dict[str, Any]:
    """The host's inventory variables (host and group vars), or {} for non-Ansible backends."""
    try:
        return dict(host.ansible.get_variables())
    except Exception:
        return {}


def require_group(host: Any, key: str) -> None:
    """Skip unless the host is in the group of KEY (no groups known: run)."""
    names = inventory_vars(host).get("group_names")
    if names is not None and GROUPS[key] not in names:
        pytest.skip(f"not in group {GROUPS[key]}")


def role_defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}


def role_vars(role: str, system: str) -> dict[str, Any]:
    path = REPO / "roles" / role / "vars" / f"{system}.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def setting(host: Any, role: str, name: str) -> Any:
    """An inventory variable, else the role's default (literal defaults only)."""
    inv = inventory_vars(host)
    if name in inv:
        return inv[name]
    value = role_defaults(role).get(name)
    if isinstance(value, str) and "{{" in value:
        raise LookupError(f"{name}: the default is a template; set it in the inventory to test it")
    return value


def system(host: Any) -> str:
    return "FreeBSD" if host.system_info.type == "freebsd" else "Linux"


def in_container(host: Any) -> bool:
    if system(host) != "Linux":
        return host.run("sysctl -n security.jail.jailed").stdout.strip() == "1"
    return host.run("systemd-detect-virt --container").rc == 0


def http_get(
    host: Any, url: str, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    """GET URL from the host itself (its own Python): status, headers, body."""
    script = (
        "import json, sys, urllib.request, urllib.error, base64\n"
        "req = urllib.request.Request(sys.argv[1], headers=json.loads(sys.argv[2]))\n"
        "try:\n"
        f"    r = urllib.request.urlopen(req, timeout={timeout})\n"
        "except urllib.error.HTTPError as e:\n"
        "    r = e\n"
        "body = r.read()\n"
        "print(json.dumps({'status': r.status, 'headers': dict(r.headers.items()),"
        " 'body': base64.b64encode(body).decode()}))\n"
    )
    python = inventory_vars(host).get("ansible_python_interpreter", "python3")
    out = host.check_output(
        "%s -c %s %s %s",
        python,
        script,
        url,
        json.dumps(headers or {}),
    )
    data = json.loads(out)
    import base64

    return data["status"], {k.lower(): v for k, v in data["headers"].items()}, base64.b64decode(data["body"])


def http_json(host: Any, url: str) -> Any:
    status, _, body = http_get(host, url)
    return status, json.loads(body) if body else None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def connect_address(address: str) -> str:
    return "127.0.0.1" if address in ("0.0.0.0", "::", "") else address


def mounts(host: Any) -> dict[str, dict[str, str]]:
    """Mount point → {source, fstype, options, label} for the mounted filesystems."""
    out: dict[str, dict[str, str]] = {}
    if system(host) == "Linux":
        data = json.loads(host.check_output("findmnt --json --list -o TARGET,SOURCE,FSTYPE,OPTIONS,LABEL"))
        for fs in data["filesystems"]:
            out[fs["target"]] = {
                "source": fs["source"],
                "fstype": fs["fstype"],
                "options": fs["options"],
                "label": fs.get("label") or "",
            }
    else:
        for line in host.check_output("mount -p").splitlines():
            src, target, fstype, opts = line.split()[:4]
            label = src.removeprefix("/dev/ufs/") if src.startswith("/dev/ufs/") else ""
            out[target] = {"source": src, "fstype": fstype, "options": opts, "label": label}
    return out


def edge_config_path(host: Any) -> str:
    return "/usr/local/etc/cdnlab/edge.toml" if system(host) == "FreeBSD" else "/etc/cdnlab/edge.toml"


def read_toml(host: Any, path: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(host.file(path).content_string)


LABEL = re.compile(r"^(?P<prefix>.*)(?P<kind>[fh])(?P<index>\d+)$")
