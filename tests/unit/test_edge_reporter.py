"""The edge's inventory reporter against the control plane's real inventory API."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web

from cdnlab.edge.reporter import InventoryReporter
from cdnlab.inventory import InventoryReport


class FakeControl:
    """Holds what it was told, applying the same rules as the control plane (full, then deltas
    that must start at the held generation)."""

    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}
        self.generation: int | None = None
        self.posts: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        report = InventoryReport.model_validate(body)
        self.posts.append(body)
        since = request.query.get("since")
        if report.full:
            self.objects = {o.key: o for o in report.objects or []}
        else:
            if self.generation is None or (since is not None and int(since) != self.generation):
                return web.json_response({"detail": "gap"}, status=409)
            for k in report.removed or []:
                self.objects.pop(k, None)
            for o in report.added or []:
                self.objects[o.key] = o
        self.generation = report.generation
        return web.json_response({"objects": len(self.objects)})


async def _run(holdings: list[dict[str, tuple[int, str, str]]], lose_after: int | None = None) -> FakeControl:
    control = FakeControl()
    app = web.Application()
    app.router.add_post("/v1/appliances/{aid}/inventory", control.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state = {"i": 0}

    def snapshot() -> dict[str, tuple[int, str, str]]:
        return holdings[min(state["i"], len(holdings) - 1)]

    rep = InventoryReporter("edge-9", f"http://127.0.0.1:{port}", 1.0, snapshot)
    async with aiohttp.ClientSession() as session:
        for i in range(len(holdings)):
            state["i"] = i
            if lose_after is not None and i == lose_after:
                control.generation = None  # the control plane lost its state
            await rep.report_once(session)
    await runner.cleanup()
    return control


def test_full_then_deltas_then_full_after_a_gap() -> None:
    a = {"/content/t1/a.m4s": (10, "aa", "flash")}
    b = {**a, "/content/t1/b.m4s": (20, "bb", "ram")}
    c = {"/content/t1/b.m4s": (20, "bb", "ram")}
    control = asyncio.run(_run([a, b, c, c]))
    kinds = [
        (p["full"], sorted(o["key"] for o in p.get("objects") or p.get("added") or []), p.get("removed"))
        for p in control.posts
    ]
    assert kinds[0] == (True, ["/content/t1/a.m4s"], None)
    assert kinds[1] == (False, ["/content/t1/b.m4s"], [])
    assert kinds[2] == (False, [], ["/content/t1/a.m4s"])
    assert len(control.posts) == 3, "an unchanged holding sends nothing"
    assert set(control.objects) == {"/content/t1/b.m4s"}
    gens = [p["generation"] for p in control.posts]
    assert gens == sorted(gens) and len(set(gens)) == 3


def test_a_gap_makes_the_next_report_full() -> None:
    a = {"/k1": (1, "", "flash")}
    b = {**a, "/k2": (2, "", "flash")}
    c = {**b, "/k3": (3, "", "hdd")}
    control = asyncio.run(_run([a, b, c, c], lose_after=2))
    fulls = [p["full"] for p in control.posts]
    # full, delta, delta refused (409), then full again
    assert fulls == [True, False, False, True], json.dumps(control.posts)
    assert set(control.objects) == {"/k1", "/k2", "/k3"}
