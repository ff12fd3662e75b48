"""The shared templates rendered with FreeBSD facts (no FreeBSD host can run here) and with Debian
facts, for every host of the example inventory, through tests/ansible/render.yml (the roles' own
defaults and per-OS variables), then checked: the daemons' configs by their own parsers, the
rc.d scripts by sh -n, loader.conf, sysctl.conf and newsyslog line by line, prometheus.yml by
promtool."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from ansible_lab import ANSIBLE_BIN, REPO, ansible_env

EXAMPLE = REPO / "inventories" / "example"
APPLIANCES = ["oca-nyc-01", "oca-nyc-02", "oca-fra-01", "oca-fra-02", "shield-fra-01"]


def render(tmp_path_factory: pytest.TempPathFactory, os_name: str) -> Path:
    out = tmp_path_factory.mktemp(f"render-{os_name}")
    proc = subprocess.run(
        [
            str(ANSIBLE_BIN / "ansible-playbook"),
            "-i",
            str(EXAMPLE),
            str(REPO / "tests" / "ansible" / "render.yml"),
            "-e",
            f"render_facts={REPO / 'tests' / 'ansible' / 'facts' / f'{os_name}.yml'}",
            "-e",
            f"render_dir={out}",
            "-e",
            "ansible_connection=local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
        ],
        cwd=REPO,
        env=ansible_env(out),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return out


@pytest.fixture(scope="module")
def freebsd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory, "freebsd")


@pytest.fixture(scope="module")
def debian(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory, "debian")


def settings(path: Path) -> list[str]:
    """The lines of a config file that are not comments or blank."""
    return [x for x in path.read_text().splitlines() if x.strip() and not x.startswith("#")]


def edge_check(path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cdnlab.cli", "edge", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("host", APPLIANCES)
def test_freebsd_edge_config_is_valid_and_uses_the_inventory(freebsd: Path, host: str) -> None:
    path = freebsd / host / "edge.toml"
    edge_check(path)
    cfg = tomllib.loads(path.read_text())
    assert cfg["id"] == host
    assert [t["path"] for t in cfg["tiers"]] == [
        "/srv/cdnlab/ram/0",
        "/srv/cdnlab/flash/0",
        "/srv/cdnlab/flash/1",
        "/srv/cdnlab/hdd/0",
    ]
    assert cfg["tiers"][1]["capacity"] == int(4000000000000 * 0.9)
    assert cfg["site"] == ("isp-a-nyc" if "nyc" in host else "ixp-fra")
    if host.startswith("shield"):
        assert cfg["role"] == "shield" and cfg["upstreams"] == ["https://d111111abcdef8.cloudfront.net"]
    else:
        assert cfg["role"] == "edge" and cfg["upstreams"][0] == "http://203.0.113.31"
        assert cfg["signing"]["keys"] == {"k2026a": "CHANGE-ME-signing-key-shared-by-control-and-edges"}
    hosts = yaml.safe_load((EXAMPLE / "hosts.yml").read_text())["all"]["children"]["appliances"]["children"]
    address = next(h[host]["ansible_host"] for h in (g["hosts"] for g in hosts.values()) if host in h)
    assert cfg["admin"]["listen"] == f"{address}:8081"


def test_freebsd_rc_script(freebsd: Path) -> None:
    script = freebsd / "oca-nyc-02" / "cdnlab_edge"
    text = script.read_text()
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert text.startswith("#!/bin/sh\n")
    assert "# PROVIDE: cdnlab_edge" in text and "# KEYWORD: shutdown" in text
    assert ". /etc/rc.subr" in text and 'run_rc_command "$1"' in text
    assert ': ${cdnlab_edge_limits:="-n 1048576"}' in text
    assert "/usr/local/cdnlab/venv/bin/cdnlab edge serve --config /usr/local/etc/cdnlab/edge.toml" in text
    assert "edge check --config /usr/local/etc/cdnlab/edge.toml" in text
    assert re.search(r'^command="/usr/sbin/daemon"$', text, re.M)


def test_freebsd_rc_script_runs_under_a_stub_rc_subr(freebsd: Path, tmp_path: Path) -> None:
    """Source the script with a stand-in rc.subr that records what run_rc_command would run."""
    text = (freebsd / "oca-nyc-02" / "cdnlab_edge").read_text()
    stub = tmp_path / "rc.subr"
    stub.write_text(
        "load_rc_config() { :; }\n"
        'run_rc_command() { echo "name=$name rcvar=$rcvar command=$command"; echo "args=$command_args";'
        ' echo "limits=$cdnlab_edge_limits user=$cdnlab_edge_user precmd=$start_precmd"; }\n'
    )
    script = tmp_path / "cdnlab_edge"
    script.write_text(text.replace(". /etc/rc.subr", f". {stub}"))
    out = subprocess.run(["sh", str(script), "start"], capture_output=True, text=True, check=True).stdout
    assert "name=cdnlab_edge rcvar=cdnlab_edge_enable command=/usr/sbin/daemon" in out
    assert "-u cdnlab /usr/local/cdnlab/venv/bin/cdnlab edge serve" in out
    assert "limits=-n 1048576 user=cdnlab precmd=cdnlab_edge_configtest" in out


def test_freebsd_loader_conf(freebsd: Path) -> None:
    lines = [
        x for x in (freebsd / "oca-fra-02" / "loader.conf").read_text().splitlines() if x and x[0] != "#"
    ]
    assert all(re.fullmatch(r'[A-Za-z0-9_.]+="[^"]*"', x) for x in lines), lines
    assert 'tcp_rack_load="YES"' in lines
    assert 'ktls_ocf_load="YES"' in lines and 'kern.ipc.tls.enable="1"' in lines
    assert any(x.startswith("vfs.aio.") for x in lines)


def test_freebsd_sysctl_conf(freebsd: Path) -> None:
    lines = [
        x for x in (freebsd / "oca-fra-02" / "sysctl.conf").read_text().splitlines() if x and x[0] != "#"
    ]
    assert all(re.fullmatch(r"[a-z0-9_.]+=\S+", x) for x in lines), lines
    values = dict(x.split("=", 1) for x in lines)
    assert values["net.inet.tcp.functions_default"] == "rack"
    assert int(values["kern.ipc.maxsockbuf"]) >= 16 * 1024 * 1024
    assert int(values["kern.ipc.soacceptqueue"]) >= 4096


def test_freebsd_newsyslog(freebsd: Path) -> None:
    lines = [
        x for x in (freebsd / "oca-nyc-02" / "newsyslog.conf").read_text().splitlines() if x and x[0] != "#"
    ]
    assert lines
    for line in lines:
        path, owner, mode, count, size, when, flags = line.split()
        assert path == "/var/log/cdnlab/access.log" and owner == "cdnlab:cdnlab"
        assert mode == "640" and count.isdigit() and size == "*" and when == "@T00"
        assert set(flags) <= set("JNCZXBGp") and "N" in flags


def test_freebsd_control_node(freebsd: Path) -> None:
    from cdnlab.control.config import load

    cfg = load(freebsd / "control-1" / "control.toml")
    assert cfg.database == "postgresql://cdnlab@/cdnlab?host=/tmp"
    assert cfg.signing.kid == "k2026a" and cfg.steering.max_per_site == 2
    script = freebsd / "control-1" / "cdnlab_control"
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert "# REQUIRE: LOGIN NETWORKING postgresql" in script.read_text()


@pytest.mark.parametrize("os_name", ["freebsd", "debian"])
def test_prometheus_config(request: pytest.FixtureRequest, os_name: str) -> None:
    out: Path = request.getfixturevalue(os_name)
    path = out / "control-1" / "prometheus.yml"
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).exists():
        pytest.skip("promtool is not installed (Debian package prometheus)")
    proc = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = yaml.safe_load(path.read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    edges = {sc["labels"]["appliance"]: sc["targets"] for sc in jobs["cdnlab-edge"]["static_configs"]}
    assert edges["oca-nyc-02"] == ["198.51.100.12:8081"] and set(edges) == set(APPLIANCES)
    assert jobs["cdnlab-control"]["static_configs"][0]["targets"] == ["192.0.2.10:8900"]
    assert cfg["global"]["external_labels"] == {"fleet": "example"}
    rules = "/usr/local/etc/prometheus/rules" if os_name == "freebsd" else "/etc/prometheus/rules"
    assert cfg["rule_files"] == [f"{rules}/cdnlab-alerts.yml"]


def test_debian_files(debian: Path) -> None:
    edge_check(debian / "oca-nyc-01" / "edge.toml")
    unit = (debian / "oca-nyc-01" / "cdnlab-edge.service").read_text()
    assert "ExecStart=/opt/cdnlab/venv/bin/cdnlab edge serve --config /etc/cdnlab/edge.toml" in unit
    assert "LimitNOFILE=1048576" in unit and "AmbientCapabilities=CAP_NET_BIND_SERVICE" in unit
    rules = (debian / "oca-nyc-01" / "65-cdnlab-disks.rules").read_text()
    assert 'ENV{ID_FS_LABEL}=="cdnlab-f[0-9]*", ATTR{queue/scheduler}="none"' in rules
    assert 'ENV{ID_FS_LABEL}=="cdnlab-h[0-9]*", ATTR{queue/scheduler}="mq-deadline"' in rules
    sysctl = (debian / "oca-nyc-01" / "sysctl.conf").read_text()
    assert "net.ipv4.tcp_congestion_control=bbr" in sysctl and "net.core.default_qdisc=fq" in sysctl
    assert "copytruncate" in (debian / "oca-nyc-01" / "cdnlab-edge.logrotate").read_text()
