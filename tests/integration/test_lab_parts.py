"""Parts of the host lab that run without root: the readiness gate and its report, the origin
forwarder (a real TCP relay on loopback), and the topology's inventory variables."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import xml.dom.minidom
from itertools import combinations
from pathlib import Path

import pytest
from rich.console import Console

from cdnlab.control.coverage import Coordinates
from cdnlab.control.steering import distance_score, haversine_km
from cdnlab.edge.config import load
from cdnlab.edge.worker import run_dir
from cdnlab.lab import procs
from cdnlab.lab.gate import Gate
from cdnlab.lab.report import write
from cdnlab.lab.topology import SITES, Topology, site_coordinates


def test_gate_records_pass_fail_skip_and_a_broken_stage(tmp_path: Path) -> None:
    gate = Gate(Console(file=open(tmp_path / "console.txt", "w"), width=120))  # noqa: SIM115
    with gate.step("one"):
        gate.check("good", True, "detail")
        gate.skip("later", "not here")
    with gate.step("two"):
        raise RuntimeError("boom")
    assert not gate.ok
    statuses = [(c.stage, c.status) for c in gate.checks]
    assert statuses == [("one", "PASS"), ("one", "SKIP"), ("two", "FAIL")]
    assert "boom" in gate.checks[-1].detail
    assert [s["name"] for s in gate.stages] == ["one", "two"]


def test_report_has_every_plot_as_valid_inline_svg(tmp_path: Path) -> None:
    gate = Gate(Console(file=open(tmp_path / "console.txt", "w"), width=120))  # noqa: SIM115
    with gate.step("sessions"):
        gate.check("plays <t0001> & more", True)
    gate.data.update(
        {
            "prometheus": {
                "hit_ratio": {"oca-a1": 0.75, "oca-b1": 0.5},
                "bytes_by_tier": {"oca-a1": {"ram": 1e6, "flash": 3e6}, "shield1": {"hdd": 2e6}},
            },
            "qoe": {"10.211.50.10 t0001": {"startup_time_s": 0.2, "avg_bitrate_bps": 2.3e6}},
            "failover": [
                {"t": 0.0, "event": "start"},
                {"t": 3.1, "event": "killed"},
                {"t": 3.5, "event": "dropped"},
            ],
        }
    )
    write(gate, tmp_path / "out", Console(file=open(tmp_path / "c2.txt", "w")))  # noqa: SIM115
    page = (tmp_path / "out" / "report.html").read_text()
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["ok"] and data["checks"][0]["status"] == "PASS"
    svgs = page.split("<svg")[1:]
    assert len(svgs) == 6
    for s in svgs:
        xml.dom.minidom.parseString("<svg" + s.split("</svg>")[0] + "</svg>")
    assert "75%" in page and "killed" in page and "plays &lt;t0001&gt; &amp; more" in page
    assert "http://" not in page.replace("http://www.w3.org", "")  # nothing fetched at view time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_forwarder_relays_and_refuses_once_stopped(tmp_path: Path) -> None:
    (tmp_path / "obj").write_bytes(b"x" * 300_000)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = _free_port()
    fwd = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cdnlab.lab.forward",
            f"127.0.0.1:{port}",
            f"127.0.0.1:{server.server_address[1]}",
        ]
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        deadline = time.monotonic() + 10
        body = b""
        while time.monotonic() < deadline:
            try:
                body = opener.open(f"http://127.0.0.1:{port}/obj", timeout=5).read()
                break
            except OSError:
                time.sleep(0.1)
        assert body == b"x" * 300_000
    finally:
        fwd.terminate()
        fwd.wait(10)
        server.shutdown()
    with pytest.raises(OSError):
        opener.open(f"http://127.0.0.1:{port}/obj", timeout=5)


def test_topology_names_sites_prefixes_and_hosts() -> None:
    t = Topology(sites=2, per_site=2, net=7)
    assert t.appliances() == [
        ("oca-a1", "site-a"),
        ("oca-a2", "site-a"),
        ("oca-b1", "site-b"),
        ("oca-b2", "site-b"),
    ]
    assert t.client_prefix(1) == "10.212.7.0/24" and t.client_address(0) == "10.211.7.10"
    assert [s.name for s in t.specs()][:2] == ["ctl1", "shield1"]
    with pytest.raises(ValueError):
        Topology(sites=0)


def test_topology_with_vm_hosts_makes_only_the_edges_vms() -> None:
    specs = {s.name: s for s in Topology(sites=1, per_site=2, net=61, hosts="vm").specs()}
    assert [n for n, s in specs.items() if s.vm] == ["oca-a1", "oca-a2"]
    assert {d.kind for d in specs["oca-a1"].disks} == {"flash", "hdd"}
    assert not any(s.vm for s in Topology(sites=1, per_site=2).specs())
    with pytest.raises(ValueError, match="nspawn or vm"):
        Topology(hosts="kvm")
    with pytest.raises(ValueError, match=r"0\.\.255"):
        Topology(net=256)


def test_an_edge_killed_with_sigkill_leaves_no_run_directory(tmp_path: Path) -> None:
    """The loopback lab SIGKILLs daemons in its drills; stopping them must not leave their run
    directory (counters, locks, the invalidation ring) on tmpfs."""
    with procs.edge(tmp_path / "e", procs.edge_config(["http://127.0.0.1:9"], access_log=False)) as svc:
        rundir = run_dir(load(tmp_path / "e" / "edge.toml"))
        assert (rundir / "config.json").exists()
        os.killpg(svc.proc.pid, signal.SIGKILL)
        svc.proc.wait(10)
        assert rundir.exists()  # what a SIGKILLed master cannot clear itself
    assert not rundir.exists()


def test_lab_sites_are_far_enough_apart_that_distance_decides_steering() -> None:
    """Between two lab sites the distance part of the steering score must outweigh any poll-time
    or load difference a loaded machine can produce (sites 1 degree apart did not: 0.5 points)."""
    places = [Coordinates(**site_coordinates(i)) for i in range(len(SITES))]
    for a, b in combinations(places, 2):
        assert haversine_km(a, b) >= 1000, (a, b)
    # The lab's default two sites: the gap beats a 600 ms difference in health-poll time.
    gap = 0.4 * (100 - distance_score(haversine_km(places[0], places[1])))
    assert gap > 0.3 * 60, gap
