"""appliance_tuning: the sysctl / loader settings are written and live, the limits are in place."""

from __future__ import annotations

from typing import Any

import pytest
from infra_lib import in_container, inventory_vars, require_group, role_vars, setting, system

# A container may set only the keys of its own network namespace; the others belong to its host
# and are proven on real hosts (and on the qemu VM of tests/ansible/test_vm_storage.py).
NETNS_KEYS = ("net.ipv4.", "net.ipv6.", "net.core.somaxconn")


@pytest.fixture(autouse=True)
def _appliances(host: Any) -> None:
    require_group(host, "appliances")


def expected_sysctl(host: Any) -> dict[str, str]:
    base = role_vars("appliance_tuning", system(host))["__appliance_tuning_sysctl"]
    overrides = inventory_vars(host).get("appliance_tuning_sysctl_overrides") or {}
    return {k: str(v) for k, v in {**base, **overrides}.items()}


def normalise(value: str) -> str:
    return " ".join(value.split())


def test_sysctl_file_holds_every_key(host: Any) -> None:
    path = (
        "/etc/sysctl.conf.local"
        if system(host) == "FreeBSD"
        else setting(host, "appliance_tuning", "appliance_tuning_sysctl_file")
    )
    f = host.file(path)
    assert f.exists and f.user == "root" and f.mode == 0o644
    lines = dict(
        line.split("=", 1)
        for line in f.content_string.splitlines()
        if "=" in line and not line.startswith("#")
    )
    for key, value in expected_sysctl(host).items():
        assert normalise(lines.get(key, "")) == normalise(value), key


def test_sysctl_values_are_live(host: Any) -> None:
    container = in_container(host)
    checked = 0
    for key, value in expected_sysctl(host).items():
        if container and not key.startswith(NETNS_KEYS):
            continue
        live = host.check_output(f"sysctl -n {key}")
        assert normalise(live) == normalise(value), f"{key}: live {live!r}, expected {value!r}"
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("key", ["net.ipv4.tcp_congestion_control", "net.core.default_qdisc"])
def test_bbr_and_fq(host: Any, key: str) -> None:
    if system(host) != "Linux":
        pytest.skip("Linux only")
    if in_container(host) and not key.startswith(NETNS_KEYS):
        pytest.skip("the host's setting, not the container's")
    assert host.check_output(f"sysctl -n {key}") == {"net.ipv4.tcp_congestion_control": "bbr"}.get(key, "fq")


def test_rack_is_the_default_stack(host: Any) -> None:
    if system(host) != "FreeBSD":
        pytest.skip("FreeBSD only")
    assert host.check_output("sysctl -n net.inet.tcp.functions_default") == "rack"
    loader = host.file("/boot/loader.conf.d/cdnlab.conf").content_string
    assert 'tcp_rack_load="YES"' in loader and 'kern.ipc.tls.enable="1"' in loader


def test_modules_load_at_boot(host: Any) -> None:
    if system(host) != "Linux":
        pytest.skip("Linux only")
    f = host.file("/etc/modules-load.d/cdnlab.conf")
    assert "tcp_bbr" in f.content_string.split()


def test_open_file_limits(host: Any) -> None:
    if system(host) != "Linux":
        pytest.skip("FreeBSD: the rc.d script sets the limit (see test_cdnlab_delivery)")
    f = host.file(setting(host, "appliance_tuning", "appliance_tuning_limits_file"))
    nofile = str(setting(host, "appliance_tuning", "appliance_tuning_nofile"))
    assert f.exists and f.mode == 0o644
    assert any(
        line.split()[-2:] == ["nofile", nofile] for line in f.content_string.splitlines() if line.strip()
    )
