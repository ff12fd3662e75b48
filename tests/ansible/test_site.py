"""site.yml over SSH against booted Debian hosts (two appliances with loop devices as their disks,
a control node that also runs Prometheus): check mode on the fresh hosts, the real run, the
testinfra suites, a second run that changes nothing, and a rolling restart one appliance at a
time. The tests share one set of hosts and run in this order."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from ansible_lab import REPO, LabHosts, Run, ansible_env, run_playbook

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
# Both appliances in one batch (faster); the rolling test uses site.yml's default, one at a time.
BOTH_AT_ONCE = ("-e", "cdnlab_serial=2")


@pytest.fixture(scope="module")
def applied(lab_hosts: LabHosts) -> Run:
    run = run_playbook(lab_hosts.workdir, lab_hosts.inventory, *BOTH_AT_ONCE)
    lab_hosts.runs["apply"] = run
    return run


def _need(lab_hosts: LabHosts, name: str) -> Run:
    run = lab_hosts.runs.get(name)
    if run is None or run.rc != 0:
        pytest.skip(f"the {name} run failed or did not run")
    return run


def test_check_mode_runs_on_fresh_hosts(lab_hosts: LabHosts) -> None:
    run = run_playbook(lab_hosts.workdir, lab_hosts.inventory, "--check", "--diff", *BOTH_AT_ONCE)
    assert run.rc == 0, run.tail()
    assert set(run.recap) == {"oca1", "oca2", "ctl1"}
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in run.recap.values()), run.recap
    # Nothing was touched: the disks are still as they came.
    oca1 = lab_hosts.lab.hosts["oca1"]
    assert "olddata" in oca1.ssh(f"blkid -p -o value -s LABEL {oca1.disks['nvme1']}").stdout
    assert oca1.ssh("test -e /etc/cdnlab/edge.toml", check=False).returncode != 0


def test_site_applies(lab_hosts: LabHosts, applied: Run) -> None:
    assert applied.rc == 0, applied.tail(150)
    assert set(applied.recap) == {"oca1", "oca2", "ctl1"}
    assert all(r["failed"] == 0 for r in applied.recap.values()), applied.recap


def test_storage_run_said_which_disks_it_wiped_and_skipped(applied: Run) -> None:
    out = " ".join(applied.output.split())
    assert "WIPING 1 disk(s): flash/1" in out
    assert "flash/2" in out and "holds ext4 labelled 'keepme'; set wipe: true" in out
    assert "hdd/1" in out and "no medium" in out
    assert "hdd/2 (/dev/disk/by-id/ata-ST20000NM007D_MISSING) skipped: missing" in out


def test_testinfra_suites_pass(lab_hosts: LabHosts) -> None:
    _need(lab_hosts, "apply")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            str(REPO / "tests" / "infra"),
            "--hosts=ansible://all",
            f"--ansible-inventory={lab_hosts.inventory}",
        ],
        cwd=REPO,
        env=ansible_env(lab_hosts.workdir),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    (lab_hosts.workdir / "logs" / "testinfra.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


def test_second_run_changes_nothing(lab_hosts: LabHosts) -> None:
    _need(lab_hosts, "apply")
    run = run_playbook(lab_hosts.workdir, lab_hosts.inventory, *BOTH_AT_ONCE)
    lab_hosts.runs["again"] = run
    assert run.rc == 0, run.tail()
    assert run.changed == {"oca1": 0, "oca2": 0, "ctl1": 0}, run.changed_tasks()


def _journal(host: Any, unit: str) -> list[tuple[int, str]]:
    out = host.ssh(f"journalctl -u {unit} -o json --no-pager").stdout
    entries = []
    for line in out.splitlines():
        e = json.loads(line)
        msg = e.get("MESSAGE")
        if isinstance(msg, str):
            entries.append((int(e["__REALTIME_TIMESTAMP"]), msg))
    return entries


def test_config_change_rolls_one_appliance_at_a_time(lab_hosts: LabHosts) -> None:
    """A changed config restarts each appliance in turn: drained, restarted, serving, and only
    then the next one is drained (site.yml: serial 1)."""
    _need(lab_hosts, "apply")
    hosts = lab_hosts.lab.hosts
    since = {n: max((t for t, _ in _journal(hosts[n], "cdnlab-edge")), default=0) for n in ("oca1", "oca2")}
    run = run_playbook(
        lab_hosts.workdir, lab_hosts.inventory, "--limit", "appliances", "-e", "cdnlab_delivery_workers=1"
    )
    assert run.rc == 0, run.tail()
    assert run.recap["oca1"]["changed"] > 0 and run.recap["oca2"]["changed"] > 0
    events: dict[str, dict[str, int]] = {}
    for name in ("oca1", "oca2"):
        new = [(t, m) for t, m in _journal(hosts[name], "cdnlab-edge") if t > since[name]]
        drained = [t for t, m in new if "drained" in m]
        started = [t for t, m in new if m.startswith("Started ")]
        assert drained, f"{name} was not drained before its restart: {new[-20:]}"
        assert started and started[-1] > drained[0], f"{name}: no restart after the drain: {new[-20:]}"
        events[name] = {"drained": drained[0], "started": started[-1]}
    first, second = sorted(events, key=lambda n: events[n]["drained"])
    assert events[first]["started"] < events[second]["drained"], events
    for name in ("oca1", "oca2"):
        health = hosts[name].ssh(
            f"python3 -c \"import urllib.request as u; print(u.urlopen('http://{hosts[name].address}:8081/healthz').read().decode())\""
        )
        assert json.loads(health.stdout)["state"] == "serving"
        assert "workers = 1" in hosts[name].ssh("cat /etc/cdnlab/edge.toml").stdout
