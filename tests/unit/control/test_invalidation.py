"""The invalidation runner against fake appliance admin APIs: fan-out, retries with backoff,
staging, scheduling, idempotency, authentication; and the HTTP routes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import pytest
from aiohttp import web
from fastapi.testclient import TestClient

from cdnlab.control.app import create_app
from cdnlab.control.config import InvalidationConfig, from_mapping
from cdnlab.control.invalidation import Conflict, InvalidationManager, InvalidationRequest
from cdnlab.control.models import Appliance
from cdnlab.control.state import ControlState

TOKEN = "purge-token-123"
HMAC_KEY = "purge-hmac-key"


class FakeEdge:
    """An admin API whose /purge fails ``fail`` times, then records what it was asked."""

    def __init__(self, aid: str, site: str, fail: int = 0) -> None:
        self.aid, self.site, self.fail = aid, site, fail
        self.calls: list[tuple[float, dict, dict[str, str]]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def purge(req: web.Request) -> web.Response:
            body = await req.read()
            self.calls.append((time.monotonic(), json.loads(body), dict(req.headers)))
            if req.headers.get("Authorization") != f"Bearer {TOKEN}":
                return web.json_response({"error": "no"}, status=401)
            want = hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).hexdigest()
            if req.headers.get("X-Cdnlab-Signature") != want:
                return web.json_response({"error": "bad signature"}, status=401)
            if self.fail > 0:
                self.fail -= 1
                return web.json_response({"error": "busy"}, status=503)
            return web.json_response({"purged": 2})

        app = web.Application()
        app.router.add_post("/purge", purge)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def appliance(self) -> Appliance:
        return Appliance(id=self.aid, site=self.site, url=self.url, admin_url=self.url)


def _cfg(**kw: object) -> InvalidationConfig:
    base: dict[str, object] = {
        "purge_token": TOKEN,
        "purge_hmac_key": HMAC_KEY,
        "retry_base": 0.02,
        "retry_max": 0.05,
        "max_attempts": 3,
        "batch_delay": 0.2,
        "batch_size": 1,
        "timeout": 2,
    }
    return InvalidationConfig.model_validate(base | kw)


async def _wait(mgr: InvalidationManager, inv_id: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mgr.items[inv_id].state in ("done", "failed"):
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(mgr.items[inv_id].state)


def test_fan_out_retries_and_staging() -> None:
    async def main() -> None:
        edges = [
            FakeEdge("e1", "a"),
            FakeEdge("e2", "b", fail=2),
            FakeEdge("e3", "prio"),
            FakeEdge("e4", "c", fail=9),
        ]
        for e in edges:
            await e.start()
        cascade = [{"match": "/content/{t}/manifest.json", "then": ["/content/{t}/"]}]
        mgr = InvalidationManager(
            _cfg(priority_sites=["prio"], cascade=cascade), lambda: [e.appliance() for e in edges]
        )
        try:
            inv, new = mgr.submit(InvalidationRequest(paths=["/content/t1/manifest.json", "/x/y"]))
            assert new and inv.state == "scheduled"
            assert inv.edge_purges == [{"prefix": "/content/t1/"}, {"key": "/x/y"}]
            assert [(t.name, t.stage) for t in inv.appliances] == [("e3", 0), ("e1", 1), ("e2", 2), ("e4", 3)]
            await _wait(mgr, inv.id)
            st = {t.name: t for t in inv.appliances}
            assert inv.state == "failed"  # e4 never answers 200
            assert (st["e1"].state, st["e1"].attempts, st["e1"].purged) == ("done", 1, 4)
            assert (st["e2"].state, st["e2"].attempts, st["e2"].error) == ("done", 3, None)
            assert (st["e4"].state, st["e4"].attempts) == ("failed", 3)
            assert "503" in (st["e4"].error or "")
            # e2 failed twice on its first body, then sent both: 4 calls; retries were spaced.
            assert [c[1] for c in edges[1].calls] == [
                {"prefix": "/content/t1/"},
                {"prefix": "/content/t1/"},
                {"prefix": "/content/t1/"},
                {"key": "/x/y"},
            ]
            # The priority site went first; each later batch waited batch_delay after the one before.
            first = {e.aid: e.calls[0][0] for e in edges}
            assert first["e3"] < first["e1"] < first["e2"] < first["e4"]
            assert first["e1"] - first["e3"] >= 0.18
        finally:
            await mgr.close()
            for e in edges:
                assert e.runner is not None
                await e.runner.cleanup()

    asyncio.run(main())


def test_scheduled_and_idempotent() -> None:
    async def main() -> None:
        edge = FakeEdge("e1", "a")
        await edge.start()
        mgr = InvalidationManager(_cfg(), lambda: [edge.appliance()])
        try:
            not_before = datetime.fromtimestamp(time.time() + 0.3, tz=UTC)
            req = InvalidationRequest(prefixes=["/content/t2/"], not_before=not_before)
            inv, new = mgr.submit(req)
            again, new2 = mgr.submit(InvalidationRequest.model_validate(req.model_dump()))
            assert new and not new2 and again.id == inv.id
            await asyncio.sleep(0.1)
            assert inv.state == "scheduled" and edge.calls == []
            await _wait(mgr, inv.id)
            assert inv.state == "done" and inv.started_at is not None
            assert inv.started_at >= not_before.timestamp()
            # The same request id comes back the same; reused for something else, refused.
            a, _ = mgr.submit(InvalidationRequest(request_id="r1", paths=["/p"]))
            b, new3 = mgr.submit(InvalidationRequest(request_id="r1", paths=["/p"]))
            assert a.id == b.id and not new3
            with pytest.raises(Conflict):
                mgr.submit(InvalidationRequest(request_id="r1", paths=["/q"]))
            await _wait(mgr, a.id)
            assert len(edge.calls) == 2
        finally:
            await mgr.close()
            assert edge.runner is not None
            await edge.runner.cleanup()

    asyncio.run(main())


def test_not_before_without_a_zone_is_utc() -> None:
    async def main() -> None:
        mgr = InvalidationManager(_cfg(), lambda: [])
        try:
            inv, _ = mgr.submit(InvalidationRequest(paths=["/p"], not_before="2030-01-01T00:00:00"))
            assert inv.not_before == datetime(2030, 1, 1, tzinfo=UTC).timestamp()
            assert inv.state == "scheduled"
        finally:
            await mgr.close()

    asyncio.run(main())


def test_identical_body_purges_again_once_the_first_finished() -> None:
    async def main() -> None:
        edge = FakeEdge("e1", "a")
        await edge.start()
        mgr = InvalidationManager(_cfg(), lambda: [edge.appliance()])
        try:
            a, _ = mgr.submit(InvalidationRequest(prefixes=["/content/t3/"], cloudfront=False))
            await _wait(mgr, a.id)
            b, new = mgr.submit(InvalidationRequest(prefixes=["/content/t3/"], cloudfront=False))
            assert new and b.id != a.id
            await _wait(mgr, b.id)
            assert len(edge.calls) == 2
            # With a request id, the finished one comes back and nothing is sent again.
            c, _ = mgr.submit(InvalidationRequest(request_id="r9", paths=["/p"], cloudfront=False))
            await _wait(mgr, c.id)
            d, new2 = mgr.submit(InvalidationRequest(request_id="r9", paths=["/p"], cloudfront=False))
            assert d.id == c.id and not new2 and len(edge.calls) == 3
        finally:
            await mgr.close()
            assert edge.runner is not None
            await edge.runner.cleanup()

    asyncio.run(main())


def test_idempotency_window_expires() -> None:
    async def main() -> None:
        now = [1000.0]
        mgr = InvalidationManager(_cfg(idempotency_window=60), lambda: [], clock=lambda: now[0])
        try:
            a, _ = mgr.submit(InvalidationRequest(paths=["/p"], cloudfront=False))
            now[0] += 61
            b, new = mgr.submit(InvalidationRequest(paths=["/p"], cloudfront=False))
            assert new and a.id != b.id
        finally:
            await mgr.close()

    asyncio.run(main())


def test_routes_need_the_admin_token(tmp_path) -> None:
    cfg = from_mapping(
        {"database": f"sqlite:///{tmp_path / 'c.db'}", "signing": {"key": "k" * 16}, "admin_token": "adm"}
    )
    state = ControlState(cfg)
    try:
        with TestClient(create_app(state, background=False)) as c:
            assert c.post("/v1/invalidations", json={"paths": ["/a"]}).status_code == 401
            h = {"Authorization": "Bearer adm"}
            assert c.post("/v1/invalidations", json={"paths": ["a"]}, headers=h).status_code == 422
            r = c.post("/v1/invalidations", json={"paths": ["/a"], "request_id": "q"}, headers=h)
            assert r.status_code == 202, r.text
            inv = r.json()
            assert r.headers["location"] == f"/v1/invalidations/{inv['id']}"
            r2 = c.post("/v1/invalidations", json={"paths": ["/a"], "request_id": "q"}, headers=h)
            assert r2.status_code == 200 and r2.json()["id"] == inv["id"]
            assert (
                c.post("/v1/invalidations", json={"paths": ["/b"], "request_id": "q"}, headers=h).status_code
                == 409
            )
            got = c.get(f"/v1/invalidations/{inv['id']}", headers=h).json()
            assert got["state"] == "done" and got["appliances"] == [] and got["cloudfront"] is None
            assert c.get("/v1/invalidations/nope", headers=h).status_code == 404
            assert [i["id"] for i in c.get("/v1/invalidations", headers=h).json()] == [inv["id"]]
    finally:
        state.close()
