"""The HTTP API end to end in process: registry, health-driven steering, inventory, auth, XFF."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from control_fixtures import FakeAppliance
from fastapi.testclient import TestClient

from cdnlab.control.app import create_app
from cdnlab.control.state import ControlState
from cdnlab.manifest import SteeringManifest


class LoopThread:
    """Fake appliances live on their own event loop, beside the TestClient's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def fakes() -> Iterator[Callable[[str], FakeAppliance]]:
    lt = LoopThread()
    made: list[FakeAppliance] = []

    def make(aid: str) -> FakeAppliance:
        f = FakeAppliance(aid)
        lt.run(f.start())
        made.append(f)
        return f

    yield make
    for f in made:
        lt.run(f.stop())
    lt.close()


def _client(cfg, **kw) -> TestClient:
    state = ControlState(cfg)
    return TestClient(create_app(state), client=("127.0.0.1", 40000), **kw)


def _register(c: TestClient, aid: str, site: str, admin_url: str, **kw) -> None:
    body = {"id": aid, "site": site, "url": f"http://{aid}.test:8080", "admin_url": admin_url, **kw}
    r = c.post("/v1/appliances", json=body)
    assert r.status_code == 201, r.text


def _wait(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _steer(c: TestClient, ip: str, title: str = "t0001", **params) -> SteeringManifest:
    r = c.get("/v1/steer", params={"title": title, **params}, headers={"X-Forwarded-For": ip})
    assert r.status_code == 200, r.text
    return SteeringManifest.model_validate_json(r.content)


def test_steering_follows_health_and_location(control_cfg, fakes) -> None:
    a1, a2, b1 = fakes("a1"), fakes("a2"), fakes("b1")
    with _client(control_cfg) as c:
        _register(c, "a1", "site-a", a1.url)
        _register(c, "a2", "site-a", a2.url)
        _register(c, "b1", "site-b", b1.url)
        _wait(lambda: c.get("/healthz").json()["available"] == 3)
        m = _steer(c, "10.1.99.1")  # site-a by the /16
        assert m.client.site == "site-a" and m.client.prefix == "10.1.0.0/16"
        assert [e.site for e in m.endpoints] == ["site-a", "site-a", "site-b", None]
        assert m.endpoints[-1].url == "https://d111.cloudfront.net"
        assert len(m.video_tracks) == 2 and len(m.video_tracks[0].segments) == 10
        m = _steer(c, "10.1.2.3")  # site-b by the longer /24
        assert m.endpoints[0].site == "site-b"
        m = _steer(c, "8.8.8.8")  # no zone: the default site (site-c, which has no appliances)
        assert m.client.matched_by == "default" and m.client.site == "site-c"
        # An appliance that stops answering leaves the next manifest within one interval.
        a1.mode = "error"
        t0 = time.monotonic()
        _wait(lambda: "a1" not in [e.appliance_id for e in _steer(c, "10.1.99.1").endpoints])
        assert time.monotonic() - t0 <= control_cfg.health.interval + control_cfg.health.timeout + 0.5
        st = c.get("/v1/appliances/a1").json()
        assert not st["available"] and "poll failed" in st["reason"]
        # Drain through the control plane: the appliance reports draining, steering moves away.
        r = c.post("/v1/appliances/b1/drain")
        assert r.status_code == 200 and b1.drains == 1
        _wait(lambda: [e.appliance_id for e in _steer(c, "10.1.2.3").endpoints] == ["a2", None])
        _wait(lambda: c.get("/v1/appliances/b1").json()["appliance"]["drain_state"] == "draining")
        # admin-down is polled but never offered.
        assert c.patch("/v1/appliances/a2", json={"admin_state": "admin-down"}).status_code == 200
        assert [e.kind for e in _steer(c, "10.1.99.1").endpoints] == ["cloudfront"]


def test_inventory_decides_who_is_offered(control_cfg, fakes) -> None:
    fs = {aid: fakes(aid) for aid in ("a1", "a2", "a3")}
    with _client(control_cfg) as c:
        for aid, f in fs.items():
            _register(c, aid, "site-a", f.url)
        _wait(lambda: c.get("/healthz").json()["available"] == 3)
        obj = {"key": "/content/t0002/720p/seg-00001.m4s", "size": 10, "sha256": "", "tier": "flash"}
        r = c.post(
            "/v1/appliances/a3/inventory",
            json={"appliance_id": "a3", "generation": 1, "full": True, "objects": [obj]},
        )
        assert r.status_code == 200 and r.json()["objects"] == 1
        m = _steer(c, "10.1.0.1", title="t0002")
        assert [e.appliance_id for e in m.endpoints] == ["a3", None] and m.endpoints[0].holds_title
        # A delta that removes the last object: nobody holds it, everyone is offered again.
        delta = {"appliance_id": "a3", "generation": 2, "full": False, "added": [], "removed": [obj["key"]]}
        assert c.post("/v1/appliances/a3/inventory", params={"since": 1}, json=delta).json()["applied"]
        assert len(_steer(c, "10.1.0.1", title="t0002").endpoints) == 3  # max_per_site 2 + CloudFront
        # Replayed (stale) and gapped deltas.
        assert not c.post("/v1/appliances/a3/inventory", json=delta).json()["applied"]
        gap = {**delta, "generation": 9}
        assert c.post("/v1/appliances/a3/inventory", params={"since": 7}, json=gap).status_code == 409
        assert c.post("/v1/appliances/zz/inventory", json={**delta, "appliance_id": "zz"}).status_code == 404
        assert c.post("/v1/appliances/a1/inventory", json=delta).status_code == 400
        summary = c.get("/v1/appliances/a3/inventory").json()
        assert summary["generation"] == 2 and summary["objects"] == 0
        # Appliances that never pushed are pulled from /inventory.
        _wait(lambda: fs["a1"].inventory_pulls >= 1)


def test_errors_auth_and_service_endpoints(control_cfg, fakes) -> None:
    cfg = control_cfg.model_copy(update={"admin_token": "s3cret"})
    f = fakes("a1")
    with _client(cfg) as c:
        body = {"id": "a1", "site": "site-a", "url": "http://a1:8080", "admin_url": f.url}
        assert c.post("/v1/appliances", json=body).status_code == 401
        hdr = {"Authorization": "Bearer s3cret"}
        assert c.post("/v1/appliances", json=body, headers=hdr).status_code == 201
        assert c.post("/v1/appliances", json={**body, "url": "ftp://x"}, headers=hdr).status_code == 422
        assert c.post("/v1/appliances", json={**body, "admin_state": "maybe"}, headers=hdr).status_code == 422
        assert c.get("/v1/steer", params={"title": "nope"}).status_code == 404
        assert c.get("/v1/steer", params={"title": "t0001", "profile": "4k"}).status_code == 404
        assert c.get("/v1/steer", params={"title": "../etc"}).status_code == 422
        m = SteeringManifest.model_validate_json(
            c.get("/v1/steer", params={"title": "t0001", "profile": "1080p"}).content
        )
        assert [t.profile for t in m.video_tracks] == ["1080p"]
        assert c.get("/v1/appliances/nope").status_code == 404
        assert c.patch("/v1/appliances/nope", json={"site": "x"}, headers=hdr).status_code == 404
        _wait(lambda: c.get("/healthz").json()["health_rounds"] >= 1)
        metrics = c.get("/metrics").text
        assert 'cdnlab_control_appliance_available{appliance="a1",site="site-a"}' in metrics
        assert c.get("/v1/version").json()["service"] == "cdnlab-control"
        assert set(c.get("/v1/analytics").json()) >= {"global", "sites", "appliances"}
        assert c.get("/v1/health").json()[0]["appliance"]["id"] == "a1"
        assert c.delete("/v1/appliances/a1", headers=hdr).status_code == 204
        assert c.delete("/v1/appliances/a1", headers=hdr).status_code == 404


def test_forwarded_for_only_from_trusted_peers(control_cfg) -> None:
    with _client(control_cfg.model_copy(update={"trusted_proxies": []})) as c:
        r = c.get("/v1/locate", headers={"X-Forwarded-For": "192.0.2.1"})
        assert r.json()["address"] == "127.0.0.1"  # the peer, not the claim
    with _client(control_cfg) as c:
        # Read from the right: the hop the trusted proxy saw, not what the client wrote first.
        r = c.get("/v1/locate", headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7, 127.0.0.5"})
        assert r.json() == {
            "address": "198.51.100.7",
            "site": "site-b",
            "matched_by": "coverage-zone",
            "prefix": "198.51.100.0/24",
        }
        assert c.get("/v1/locate", params={"ip": "2001:db8:a::9"}).json()["site"] == "site-a"


def test_two_monitors_down_only_if_both_say_so(control_cfg, fakes, database_url: str) -> None:
    """Two control nodes share one database (SQLite file or PostgreSQL) and each monitors:
    an appliance is down only when both say so."""
    f = fakes("a1")
    s1 = ControlState(control_cfg.model_copy(update={"monitor_id": "m1", "database": database_url}))
    s2 = ControlState(control_cfg.model_copy(update={"monitor_id": "m2", "database": database_url}))
    # Node 2 cannot reach the appliance from where it stands (a dead admin address).
    s2.monitor._appliances = lambda: [
        a.model_copy(update={"admin_url": "http://127.0.0.1:9"}) for a in s2.appliances.values()
    ]
    with (
        TestClient(create_app(s1), client=("127.0.0.1", 1)) as c1,
        TestClient(create_app(s2), client=("127.0.0.1", 2)) as c2,
    ):
        _register(c1, "a1", "site-a", f.url)
        _wait(lambda: len(c2.get("/v1/appliances/a1").json().get("views", [])) == 2)
        views = {v["monitor_id"]: v["available"] for v in c2.get("/v1/appliances/a1").json()["views"]}
        assert views == {"m1": True, "m2": False}
        for c in (c1, c2):  # one monitor still sees it: both nodes keep steering to it
            assert _steer(c, "10.1.0.1").endpoints[0].appliance_id == "a1"
        f.mode = "error"  # now every monitor agrees
        for c in (c1, c2):
            _wait(lambda c=c: _steer(c, "10.1.0.1").endpoints[0].kind == "cloudfront")
