"""Test data shared by the control plane tests (a module, not a conftest, so tests can import it)."""

from __future__ import annotations

SIGNING_KEY = "unit-test-signing-key"

CZF = {
    "revision": "unit",
    "coverageZones": {
        "site-a": {
            "network": ["10.1.0.0/16", "192.0.2.0/24"],
            "network6": ["2001:db8:a::/48"],
            "coordinates": {"latitude": 40.7, "longitude": -74.0},
        },
        "site-b": {
            "network": ["10.1.2.0/24", "198.51.100.0/24"],
            "network6": ["2001:db8:b::/48"],
            "coordinates": {"latitude": 41.9, "longitude": -87.6},
        },
        "site-c": {
            "network": ["203.0.113.0/24"],
            "coordinates": {"latitude": 51.5, "longitude": -0.1},
        },
    },
}

CATALOG = """
[titles.t0001]
tracks = [
  {profile = "480p", bandwidth = 1000000, segments = 10, segment_duration = 4.0},
  {profile = "1080p", bandwidth = 5000000, segments = 10, segment_duration = 4.0},
]
[titles.t0002]
tracks = [{profile = "720p", bandwidth = 3000000, segments = 5, segment_duration = 2.0}]
"""


class FakeAppliance:
    """An edge admin API on loopback (docs/edge-admin-api.md) whose answers a test can change."""

    def __init__(self, appliance_id: str) -> None:
        self.id = appliance_id
        self.state = "serving"
        self.mode = "ok"  # ok | error (500) | slow (sleeps past the timeout) | garbage
        self.slow_seconds = 1.0
        self.connections = 3
        self.requests = {"hit": 0, "miss": 0, "5xx": 0}
        self.bytes = 0
        self.objects: list[dict] = []
        self.generation = 0
        self.inventory_pulls = 0
        self.drains = 0
        self.url = ""
        self._runner = None

    async def start(self) -> str:
        import asyncio

        from aiohttp import web

        async def healthz(_req: web.Request) -> web.StreamResponse:
            if self.mode == "error":
                return web.Response(status=500, text="boom")
            if self.mode == "slow":
                await asyncio.sleep(self.slow_seconds)
            if self.mode == "garbage":
                return web.Response(text="not json")
            body = {
                "id": self.id,
                "site": "x",
                "role": "edge",
                "version": "0.1.0",
                "state": self.state,
                "disks": [
                    {
                        "path": "/d0",
                        "kind": "flash",
                        "capacity_bytes": 1,
                        "used_bytes": 0,
                        "objects": 0,
                        "failed": False,
                    }
                ],
                "load": {
                    "connections": self.connections,
                    "requests_total": 0,
                    "bytes_total": 0,
                    "requests_per_s": 0.0,
                    "bytes_per_s": 0.0,
                },
                "upstreams": [],
            }
            return web.json_response(body, status=200 if self.state == "serving" else 503)

        async def metrics(_req: web.Request) -> web.Response:
            r = self.requests
            total = r["hit"] + r["miss"] + r["5xx"]
            text = (
                "# TYPE cdnlab_requests_total counter\n"
                f'cdnlab_requests_total{{status="200",cache_status="hit"}} {r["hit"]}\n'
                f'cdnlab_requests_total{{status="200",cache_status="miss"}} {r["miss"]}\n'
                f'cdnlab_requests_total{{status="503",cache_status="error"}} {r["5xx"]}\n'
                "# TYPE cdnlab_response_bytes_total counter\n"
                f'cdnlab_response_bytes_total{{tier="ram"}} {self.bytes}\n'
                "# TYPE cdnlab_request_duration_seconds histogram\n"
                f'cdnlab_request_duration_seconds_bucket{{le="0.05"}} {total}\n'
                f'cdnlab_request_duration_seconds_bucket{{le="+Inf"}} {total}\n'
                f"cdnlab_request_duration_seconds_sum {total * 0.01}\n"
                f"cdnlab_request_duration_seconds_count {total}\n"
            )
            return web.Response(text=text, content_type="text/plain")

        async def inventory(_req: web.Request) -> web.Response:
            self.inventory_pulls += 1
            return web.json_response({"id": self.id, "generation": self.generation, "objects": self.objects})

        async def drain(req: web.Request) -> web.Response:
            self.drains += 1
            self.state = "serving" if req.query.get("cancel") else "draining"
            return web.json_response({"state": self.state})

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/inventory", inventory)
        app.router.add_post("/drain", drain)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
