"""Provisioning the host lab as an operator would: an inventory of the booted hosts, ``site.yml``
over SSH (the role builds the wheel from this checkout and installs it from a wheelhouse: the
hosts have no route to a package index), then the testinfra suites against the same inventory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdnlab.lab.hosts import wheelhouse_archive
from cdnlab.lab.topology import ORIGIN_PORT, inventory_vars

if TYPE_CHECKING:
    from cdnlab.lab.hostlab import HostLab

BIN = Path(sys.executable).parent
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def ansible_env(workdir: Path, repo: Path) -> dict[str, str]:
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(repo / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-tmp"),
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "TMPDIR": str(workdir / "tmp"),
    }


def snapshot_source(repo: Path, dest: Path) -> Path:
    """A copy of what the wheel is built from (and of the alerting rules), taken once per run, so
    edits to the working tree while the lab runs cannot change what the hosts get halfway."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(repo / name, dest / name)
    shutil.copytree(repo / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(repo / "monitoring" / "prometheus", dest / "monitoring" / "prometheus")
    return dest


def write_inventory(lab: HostLab) -> Path:
    from cdnlab.lab.hostlab import REPO

    assert lab.content is not None
    source = snapshot_source(REPO, lab.workdir / "source")
    catalog = lab.workdir / "catalog.toml"
    catalog.write_text(lab.content.catalog_toml())
    wheelhouse = wheelhouse_archive(REPO, progress=lab._progress)
    group_vars, host_vars = inventory_vars(
        lab.topo,
        lab.lab,
        origin_url=lab.origin_url,
        aws_endpoint=f"http://{lab.lab.controller_address}:{ORIGIN_PORT}",
        distribution_id=lab.outputs["distribution_id"],
        repo=source,
        wheelhouse=wheelhouse,
        build_dir=lab.workdir / "wheel",
        catalog=catalog,
    )
    inventory = lab.lab.write_inventory(lab.workdir / "inventory.yml", group_vars=group_vars)
    data = json.loads(inventory.read_text())
    for group in data["all"]["children"].values():
        for name, hv in group.get("hosts", {}).items():
            hv.update(host_vars.get(name, {}))
    inventory.write_text(json.dumps(data, indent=2) + "\n")
    return inventory


def site(lab: HostLab) -> None:
    from cdnlab.lab.hostlab import REPO

    g = lab.gate
    inventory = write_inventory(lab)
    n = len(lab.lab.hosts)
    t0 = time.monotonic()
    cmd = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(inventory),
        str(REPO / "site.yml"),
        "-e",
        f"cdnlab_serial={n}",
    ]
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env=ansible_env(lab.workdir, REPO),
        capture_output=True,
        text=True,
        timeout=2400,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    output = proc.stdout + proc.stderr
    log = lab.workdir / "site.yml.log"
    log.write_text(" ".join(cmd) + "\n\n" + output)
    recap: dict[str, dict[str, int]] = {}
    for line in output.split("PLAY RECAP", 1)[-1].splitlines():
        m = _RECAP.match(line)
        if m:
            recap[m.group(1)] = dict(
                zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()[1:]), strict=True)
            )
    lab.gate.data["site_yml"] = {"seconds": round(time.monotonic() - t0, 1), "recap": recap}
    g.check(
        "site.yml applies over SSH with no failed or unreachable host",
        proc.returncode == 0
        and set(recap) == set(lab.lab.hosts)
        and all(r["failed"] == 0 and r["unreachable"] == 0 for r in recap.values()),
        f"{time.monotonic() - t0:.0f} s, changed "
        + ", ".join(f"{h}={r['changed']}" for h, r in sorted(recap.items()))
        + ("" if proc.returncode == 0 else f"; see {log}: " + _last_error(output)),
    )


def _last_error(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith(("fatal:", "failed:", "ERROR"))]
    return lines[-1][:300] if lines else output[-300:]


def testinfra(lab: HostLab) -> None:
    from cdnlab.lab.hostlab import REPO

    inventory = lab.workdir / "inventory.yml"
    env = ansible_env(lab.workdir, REPO)
    # The shield is not registered for steering; the delivery suites apply to the edges.
    env["CDNLAB_GROUP_APPLIANCES"] = "edges"
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
            f"--ansible-inventory={inventory}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    log = lab.workdir / "testinfra.log"
    log.write_text(proc.stdout + proc.stderr)
    summary = next(
        (ln for ln in reversed(proc.stdout.splitlines()) if " passed" in ln or " failed" in ln), ""
    )
    lab.gate.data["testinfra"] = summary
    failed = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")]
    lab.gate.check(
        "the testinfra suites (tests/infra) pass against the hosts",
        proc.returncode == 0 and " passed" in proc.stdout,
        summary.strip("= ") + ("; " + "; ".join(failed[:3]) if failed else ""),
    )


def edge_config(lab: HostLab, name: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(lab.host(name).ssh("cat /etc/cdnlab/edge.toml").stdout)
