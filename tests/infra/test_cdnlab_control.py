"""cdnlab_control: the control plane and its database run, the config is private, the appliances
of the inventory are registered and healthy."""

from __future__ import annotations

from typing import Any

import pytest
from infra_lib import GROUPS, http_json, inventory_vars, require_group, system, wait_for


@pytest.fixture(autouse=True)
def _control(host: Any) -> None:
    require_group(host, "control")


def port(host: Any) -> int:
    return int(inventory_vars(host).get("cdnlab_control_port", 8900))


def base(host: Any) -> str:
    return f"http://127.0.0.1:{port(host)}"


def test_service_enabled_and_running(host: Any) -> None:
    svc = host.service("cdnlab_control" if system(host) == "FreeBSD" else "cdnlab-control")
    assert svc.is_enabled and svc.is_running


def test_listening(host: Any) -> None:
    assert (
        host.socket(f"tcp://0.0.0.0:{port(host)}").is_listening
        or host.socket(f"tcp://127.0.0.1:{port(host)}").is_listening
    )


def test_healthz(host: Any) -> None:
    status, body = http_json(host, f"{base(host)}/healthz")
    assert status == 200, body


def test_config_is_private(host: Any) -> None:
    path = "/usr/local/etc/cdnlab/control.toml" if system(host) == "FreeBSD" else "/etc/cdnlab/control.toml"
    f = host.file(path)
    assert f.user == "root" and f.group == "cdnlab" and f.mode == 0o640


def test_database(host: Any) -> None:
    if inventory_vars(host).get("cdnlab_control_database", "postgresql") != "postgresql":
        pytest.skip("SQLite")
    if inventory_vars(host).get("cdnlab_control_db_url"):
        pytest.skip("an external database")
    assert host.service("postgresql").is_running
    name = inventory_vars(host).get("cdnlab_control_db_name", "cdnlab")
    out = host.check_output("su postgres -s /bin/sh -c \"psql -Atc 'select datname from pg_database'\"")
    assert name in out.split()
    tables = host.check_output(f"su postgres -s /bin/sh -c \"psql -Atc '\\\\dt' {name}\"")
    assert tables.strip(), "the control plane created no table"


def test_inventory_appliances_registered_and_available(host: Any) -> None:
    groups = inventory_vars(host).get("groups") or {}
    expected = set(groups.get(GROUPS["appliances"], []))
    if not expected:
        pytest.skip("no appliances in the inventory")

    def all_available() -> bool:
        status, body = http_json(host, f"{base(host)}/v1/appliances")
        seen = {a["appliance"]["id"]: a["available"] for a in body} if status == 200 else {}
        return expected <= set(seen) and all(seen[a] for a in expected)

    assert wait_for(all_available, timeout=60), http_json(host, f"{base(host)}/v1/appliances")
