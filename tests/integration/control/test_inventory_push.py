"""An edge with ``[control] url`` pushes what it holds; steering's view follows the edge's store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_e2e import CDNLAB, KEY, Lab, free_port, get_json, post, start, wait_http, wait_tcp

from cdnlab.signing import sign_path


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        lab.make_origin()
        lab.start_control()
        yield lab
    finally:
        lab.close()


def _pushing_edge(lab: Lab, edge_id: str) -> tuple[str, str]:
    port, admin = free_port(), free_port()
    store = lab.root / edge_id
    cfg = lab.root / f"{edge_id}.toml"
    cfg.write_text(
        f'id = "{edge_id}"\nsite = "site-a"\nlisten = ["127.0.0.1:{port}"]\n'
        f'upstreams = ["{lab.origin_url}"]\nstate_dir = "{store / "state"}"\n'
        f'[[tiers]]\npath = "{store / "flash0"}"\nkind = "flash"\ncapacity = "256M"\n'
        f'[admin]\nlisten = "127.0.0.1:{admin}"\n'
        f'[signing]\nkeys = {{k1 = "{KEY}"}}\n'
        f'[control]\nurl = "{lab.control_url}"\nreport_interval = 0.3\n'
    )
    lab.procs.append(start(edge_id, [CDNLAB, "edge", "serve", "--config", str(cfg)], lab.root))
    wait_http(f"http://127.0.0.1:{admin}/healthz")
    wait_tcp("127.0.0.1", port)
    return f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"


def _summary(lab: Lab, edge_id: str) -> dict:
    return get_json(f"{lab.control_url}/v1/appliances/{edge_id}/inventory")


def _wait(pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise TimeoutError("condition never held")


def test_edge_pushes_full_report_then_deltas(lab: Lab) -> None:
    url, admin = _pushing_edge(lab, "edge-push")
    status, text = post(
        f"{lab.control_url}/v1/appliances",
        {"id": "edge-push", "site": "site-a", "url": url, "admin_url": admin},
    )
    assert status == 201, text
    _wait(lambda: _summary(lab, "edge-push")["source"] == "push")
    assert _summary(lab, "edge-push")["objects"] == 0
    path = "/content/t0001/480p/seg-00001.m4s"
    import urllib.request

    with urllib.request.urlopen(url + sign_path(path, "k1", KEY, int(time.time()) + 60)) as r:
        assert r.status == 200
        r.read()
    _wait(lambda: _summary(lab, "edge-push")["objects"] == 1)
    summary = _summary(lab, "edge-push")
    assert summary["titles"] == ["t0001"] and summary["source"] == "push"
    health = get_json(f"{admin}/healthz")
    assert health["inventory_report"]["error"] is None
