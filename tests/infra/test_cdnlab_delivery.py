"""cdnlab_delivery: the daemon is enabled, listening and healthy, its config is private, and a
fetch through it returns the origin's bytes."""

from __future__ import annotations

import time
from typing import Any

import pytest
from infra_lib import (
    connect_address,
    edge_config_path,
    http_get,
    http_json,
    inventory_vars,
    read_toml,
    require_group,
    sha256,
    system,
)


@pytest.fixture(autouse=True)
def _appliances(host: Any) -> None:
    require_group(host, "appliances")


def service_name(host: Any) -> str:
    return "cdnlab_edge" if system(host) == "FreeBSD" else "cdnlab-edge"


@pytest.fixture
def config(host: Any) -> dict[str, Any]:
    return read_toml(host, edge_config_path(host))


def admin_url(config: dict[str, Any]) -> str:
    addr, _, port = config["admin"]["listen"].rpartition(":")
    return f"http://{connect_address(addr)}:{port}"


def client_url(config: dict[str, Any]) -> str:
    addr, _, port = config["listen"][0].rpartition(":")
    return f"http://{connect_address(addr)}:{port}"


def test_service_account(host: Any) -> None:
    user = host.user("cdnlab")
    assert user.exists
    assert user.shell.endswith("nologin")


def test_service_enabled_and_running(host: Any) -> None:
    svc = host.service(service_name(host))
    assert svc.is_enabled
    assert svc.is_running


def test_config_is_private_and_valid(host: Any) -> None:
    path = edge_config_path(host)
    f = host.file(path)
    assert f.user == "root" and f.group == "cdnlab" and f.mode == 0o640
    venv = "/usr/local/cdnlab/venv" if system(host) == "FreeBSD" else "/opt/cdnlab/venv"
    assert host.run(f"{venv}/bin/cdnlab edge check --config {path}").rc == 0


def test_listening_on_client_and_admin_ports(host: Any, config: dict[str, Any]) -> None:
    for listen in [*config["listen"], config["admin"]["listen"]]:
        assert host.socket(f"tcp://{listen}").is_listening, listen


def test_file_descriptor_limit(host: Any) -> None:
    nofile = str(inventory_vars(host).get("cdnlab_delivery_nofile", 1048576))
    if system(host) == "FreeBSD":
        assert f"-n {nofile}" in host.file("/usr/local/etc/rc.d/cdnlab_edge").content_string
        return
    assert host.check_output(f"systemctl show -P LimitNOFILE {service_name(host)}") == nofile
    pid = host.check_output(f"systemctl show -P MainPID {service_name(host)}")
    # The unit's limit, unless the machine's own hard limit (PID 1's) is lower: a container
    # started from a shell that may not raise it, for one.
    ceiling = _open_files(host, "1")[1]
    want = str(min(int(nofile), int(ceiling)))
    assert _open_files(host, pid) == (want, want)


def _open_files(host: Any, pid: str) -> tuple[str, str]:
    limits = host.file(f"/proc/{pid}/limits").content_string
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return soft, hard


def test_healthz_serving_with_every_tier(host: Any, config: dict[str, Any]) -> None:
    status, health = http_json(host, f"{admin_url(config)}/healthz")
    assert status == 200 and health["state"] == "serving", health
    assert health["id"] == config["id"]
    assert {d["path"] for d in health["disks"]} == {t["path"] for t in config["tiers"]}
    assert not [d for d in health["disks"] if d["failed"]], health["disks"]


def test_metrics_exposed(host: Any, config: dict[str, Any]) -> None:
    status, _, body = http_get(host, f"{admin_url(config)}/metrics")
    assert status == 200 and b"cdnlab_requests_total" in body


def test_fetch_through_the_appliance_returns_the_origins_bytes(host: Any, config: dict[str, Any]) -> None:
    inv = inventory_vars(host)
    path = inv.get("cdnlab_testinfra_object")
    if not path:
        pytest.skip("set cdnlab_testinfra_object (a path the origin serves) in the inventory")
    origin = config["upstreams"][-1]
    status, _, direct = http_get(host, origin + path)
    assert status == 200, f"the origin answered {status}"
    target = path
    keys = (config.get("signing") or {}).get("keys") or {}
    if keys:
        from cdnlab.signing import sign_path

        kid, key = sorted(keys.items())[0]
        target = sign_path(path, kid, key, int(time.time()) + 600)
    status, headers, body = http_get(host, client_url(config) + target)
    assert status == 200, (status, headers)
    assert sha256(body) == sha256(direct)
    assert "cache-status" in headers
    status, headers, again = http_get(host, client_url(config) + target)
    assert status == 200 and sha256(again) == sha256(direct)
    assert "hit" in headers.get("cache-status", ""), headers


def test_unsigned_requests_are_refused_when_keys_are_set(host: Any, config: dict[str, Any]) -> None:
    path = inventory_vars(host).get("cdnlab_testinfra_object")
    signing = config.get("signing") or {}
    if not path or not signing.get("keys") or not signing.get("required", True):
        pytest.skip("no signing keys, or unsigned requests allowed")
    status, _, _ = http_get(host, client_url(config) + path)
    assert status in (401, 403)


def test_log_rotation(host: Any) -> None:
    if system(host) == "FreeBSD":
        f = host.file("/usr/local/etc/newsyslog.conf.d/cdnlab-edge.conf")
    else:
        f = host.file("/etc/logrotate.d/cdnlab-edge")
        assert host.run(f"logrotate --debug {f.path}").rc == 0
    assert f.exists and f.mode == 0o644


def test_registered_with_the_control_plane(host: Any, config: dict[str, Any]) -> None:
    control = inventory_vars(host).get("cdnlab_delivery_control_url")
    if not control:
        pytest.skip("cdnlab_delivery_control_url is not set")
    status, body = http_json(host, f"{control}/v1/appliances/{config['id']}")
    assert status == 200, body
    assert body["appliance"]["site"] == config["site"]
    assert body["appliance"]["drain_state"] == "serving"
