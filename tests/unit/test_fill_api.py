"""The control plane's fill routes in process: a published content set, plans per appliance
(licensing, a site split by consistent hashing, manifests first, incremental against the
reported inventory, removals), progress reports, and the errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cdnlab.control.app import create_app
from cdnlab.control.config import from_mapping
from cdnlab.control.state import ControlState


def _sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def _objects(titles: list[str]) -> list[dict]:
    out = []
    for t in titles:
        out.append({"key": f"/content/{t}/manifest.mpd", "size": 900, "sha256": _sha(t + "mpd")})
        for p, size in (("240p", 100_000), ("720p", 600_000)):
            out.append({"key": f"/content/{t}/{p}/init.m4s", "size": 800, "sha256": _sha(t + p + "init")})
            for n in range(1, 4):
                key = f"/content/{t}/{p}/seg-{n:05d}.m4s"
                out.append({"key": key, "size": size, "sha256": _sha(key)})
    return out


@pytest.fixture
def client(tmp_path: Path):
    cfg = from_mapping(
        {
            "database": f"sqlite:///{tmp_path / 'control.db'}",
            "signing": {"kid": "k1", "key": "fill-api-test-key", "ttl": "6h"},
            "admin_token": "tok",
        }
    )
    with TestClient(create_app(ControlState(cfg), background=False)) as c:
        c.headers["Authorization"] = "Bearer tok"
        for aid, site in (("a1", "s1"), ("a2", "s1"), ("b1", "s2")):
            r = c.post(
                "/v1/appliances",
                json={
                    "id": aid,
                    "site": site,
                    "url": f"http://{aid}:8080",
                    "admin_url": f"http://{aid}:8081",
                    "tiers": [{"kind": "flash", "capacity_bytes": 10_000_000}],
                },
            )
            assert r.status_code == 201, r.text
        yield c


def test_plan_follows_licensing_hashing_and_order(client: TestClient) -> None:
    assert client.get("/v1/fill/plan", params={"appliance": "a1"}).status_code == 409  # nothing published
    titles = [f"t{i}" for i in range(8)]
    body = {
        "objects": _objects(titles),
        "licensing": {"t7": ["s2"]},
        "popularity": {"t0": 5},
        "window": "01:00-05:00",
    }
    r = client.put("/v1/fill/content", json=body)
    assert r.status_code == 200 and r.json()["units"] == 16 and r.json()["titles"] == 8
    plans = {a: client.get("/v1/fill/plan", params={"appliance": a}).json() for a in ("a1", "a2", "b1")}
    held = {a: {o["key"].split("/")[2] for o in p["objects"]} for a, p in plans.items()}
    assert "t7" not in held["a1"] | held["a2"] and "t7" in held["b1"]  # licensed in s2 only
    assert not held["a1"] & held["a2"]  # the site's appliances split the titles
    assert held["a1"] | held["a2"] == set(titles) - {"t7"}
    assert [p["id"] for p in plans["a1"]["peers"]] == ["a2"] and plans["b1"]["peers"] == []
    assert plans["a1"]["window"] == "01:00-05:00"
    for p in plans.values():
        assert sum(o["size"] for o in p["objects"]) == p["bytes_to_fetch"] <= p["budget"]["flash"]
        for t in {o["key"].split("/")[2] for o in p["objects"]}:
            keys = [o["key"] for o in p["objects"] if o["key"].split("/")[2] == t]
            assert keys[0] == f"/content/{t}/manifest.mpd"  # the MPD, then each profile's init first
            assert keys.index(f"/content/{t}/240p/init.m4s") < keys.index(f"/content/{t}/240p/seg-00001.m4s")


def test_plan_is_incremental_and_removes(client: TestClient) -> None:
    objects = _objects(["t0", "t1"])
    assert client.put("/v1/fill/content", json={"objects": objects}).status_code == 200
    first = client.get("/v1/fill/plan", params={"appliance": "b1"}).json()
    assert len(first["objects"]) == len(objects)
    # b1 reports holding t0 entirely, plus a unit nobody plans any more.
    have = [dict(o, tier="flash") for o in objects if o["key"].startswith("/content/t0/")]
    have.append({"key": "/content/old/240p/seg-00001.m4s", "size": 5, "sha256": _sha("old"), "tier": "flash"})
    r = client.post(
        "/v1/appliances/b1/inventory",
        json={"appliance_id": "b1", "generation": 1, "full": True, "objects": have},
    )
    assert r.status_code == 200 and r.json()["applied"]
    second = client.get("/v1/fill/plan", params={"appliance": "b1"}).json()
    assert {o["key"].split("/")[2] for o in second["objects"]} == {"t1"}
    assert {"key": None, "prefix": "/content/old/240p/"} in second["remove"]
    # A held object with another digest is fetched again.
    have[0]["sha256"] = _sha("stale")
    client.post(
        "/v1/appliances/b1/inventory",
        json={"appliance_id": "b1", "generation": 2, "full": True, "objects": have},
    )
    third = client.get("/v1/fill/plan", params={"appliance": "b1"}).json()
    assert have[0]["key"] in {o["key"] for o in third["objects"]}


def test_errors_and_progress(client: TestClient) -> None:
    assert client.get("/v1/fill/plan", params={"appliance": "nope"}).status_code == 404
    bad = {"objects": [{"key": "/content/t/a/b/c.m4s", "size": 1, "sha256": _sha("x")}]}
    assert client.put("/v1/fill/content", json=bad).status_code == 422
    assert client.put("/v1/fill/content", json={"objects": [], "window": "25:00-01:00"}).status_code == 422
    bad_sha = {"objects": [{"key": "/content/t/a/x.m4s", "size": 1, "sha256": "zz"}]}
    assert client.put("/v1/fill/content", json=bad_sha).status_code == 422
    prog = {
        "appliance_id": "a1",
        "state": "running",
        "started_at": 1.0,
        "updated_at": 2.0,
        "objects_total": 3,
    }
    assert client.post("/v1/fill/progress", json=prog).status_code == 204
    assert client.post("/v1/fill/progress", json=dict(prog, appliance_id="zz")).status_code == 404
    got = client.get("/v1/fill/status", params={"appliance": "a1"}).json()
    assert got[0]["state"] == "running" and got[0]["objects_total"] == 3
    del client.headers["Authorization"]
    assert client.get("/v1/fill/plan", params={"appliance": "a1"}).status_code == 401
