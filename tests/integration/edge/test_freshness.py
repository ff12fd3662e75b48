"""RFC 9111 caching rules, end to end: a real origin sends the headers in question and counts
what it is asked; the daemon in front of it must store, serve, revalidate and refuse accordingly."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from helpers import edge, free_port, request


@dataclass
class Scenario:
    headers: dict[str, str]
    body: bytes = b"version-1 " * 100
    etag: str = '"v1"'
    status: int = 200


@dataclass
class Origin:
    """An origin whose answers per path are set by the test; it counts every request it gets."""

    port: int = 0
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    conditional: Counter[str] = field(default_factory=Counter)
    seen_auth: list[str | None] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, req: web.Request) -> web.Response:
        path = req.path
        self.hits[path] += 1
        self.seen_auth.append(req.headers.get("Authorization"))
        sc = self.scenarios.get(path)
        if sc is None:
            return web.Response(status=404, text="no such scenario")
        if sc.status != 200:
            return web.Response(status=sc.status, text=f"origin says {sc.status}", headers=sc.headers)
        inm = req.headers.get("If-None-Match")
        if inm is not None:
            self.conditional[path] += 1
            if inm == sc.etag:
                return web.Response(status=304, headers={**sc.headers, "ETag": sc.etag})
        return web.Response(
            body=sc.body, headers={**sc.headers, "ETag": sc.etag, "Content-Type": "application/octet-stream"}
        )


@contextmanager
def running_origin() -> Iterator[tuple[Origin, Callable[[], None]]]:
    """An Origin served from a thread; the callable takes it off the network (a dead origin)."""
    o = Origin(port=free_port())
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", o.handle)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", o.port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def kill() -> None:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)

    try:
        yield o, kill
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with running_origin() as (o, _):
        yield o


@pytest.fixture(scope="module")
def cache(origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    base: Path = tmp_path_factory.mktemp("fresh")
    with edge(base, [origin.url]) as e:
        yield e.port


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return request(port, "GET", path, headers)


def cs(h: dict[str, str]) -> str:
    return h.get("cache-status", "")


def wait_stored(port: int, path: str, timeout: float = 5.0) -> None:
    """The first answer streams before the commit lands; wait until a request is a hit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cs(get(port, path)[1]).endswith("; hit"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never became a hit")


def test_fresh_then_revalidated_with_304(origin: Origin, cache: int) -> None:
    path = "/f/maxage1"
    origin.scenarios[path] = Scenario({"Cache-Control": "max-age=1"})
    s, h, b = get(cache, path)
    assert s == 200 and "fwd=miss" in cs(h) and "stored" in cs(h)
    wait_stored(cache, path)
    before = origin.hits[path]
    time.sleep(1.3)
    s, h, b = get(cache, path)
    assert s == 200 and b == origin.scenarios[path].body
    assert "fwd=stale" in cs(h) and "fwd-status=304" in cs(h), cs(h)
    assert origin.conditional[path] == 1 and origin.hits[path] == before + 1
    s, h, _ = get(cache, path)  # refreshed: fresh again for a second
    assert cs(h).endswith("; hit"), cs(h)
    assert origin.hits[path] == before + 1


def test_changed_at_origin_is_refetched_and_replaced(origin: Origin, cache: int) -> None:
    path = "/f/changes"
    origin.scenarios[path] = Scenario({"Cache-Control": "max-age=1"})
    get(cache, path)
    wait_stored(cache, path)
    origin.scenarios[path] = Scenario({"Cache-Control": "max-age=60"}, body=b"version-2 " * 50, etag='"v2"')
    time.sleep(1.3)
    _, h, b = get(cache, path)
    assert b == b"version-2 " * 50 and "fwd=stale" in cs(h) and "stored" in cs(h), cs(h)
    wait_stored(cache, path)
    _s, h, b = get(cache, path)
    assert b == b"version-2 " * 50 and h["etag"] == '"v2"'


@pytest.mark.parametrize("cc", ["no-store", "private", "private, max-age=600", "no-store, max-age=600"])
def test_never_stored(origin: Origin, cache: int, cc: str) -> None:
    path = f"/f/never-{hashlib.md5(cc.encode()).hexdigest()[:8]}"
    origin.scenarios[path] = Scenario({"Cache-Control": cc})
    for _ in range(3):
        s, h, _ = get(cache, path)
        assert s == 200 and "stored" not in cs(h) and "hit" not in cs(h), cs(h)
        time.sleep(0.1)
    assert origin.hits[path] == 3


def test_vary_star_and_unknown_vary_are_not_stored_but_accept_encoding_is(origin: Origin, cache: int) -> None:
    for path, vary, stored in (
        ("/f/vary-star", "*", False),
        ("/f/vary-lang", "Accept-Language", False),
        ("/f/vary-ae", "Accept-Encoding", True),
    ):
        origin.scenarios[path] = Scenario({"Cache-Control": "max-age=600", "Vary": vary})
        get(cache, path)
        time.sleep(0.3)
        _, h, _ = get(cache, path)
        assert cs(h).endswith("; hit") is stored, (path, cs(h))
        if stored:
            assert h.get("vary") == "Accept-Encoding"


def test_authorization_not_stored_unless_the_origin_allows(origin: Origin, cache: int) -> None:
    secret, shared = "/f/auth-secret", "/f/auth-public"
    origin.scenarios[secret] = Scenario({"Cache-Control": "max-age=600"})
    origin.scenarios[shared] = Scenario({"Cache-Control": "public, max-age=600"})
    for path in (secret, shared):
        get(cache, path, {"Authorization": "Bearer alice"})
        time.sleep(0.3)
    assert "Bearer alice" in origin.seen_auth  # credentials reach the origin
    _, h, _ = get(cache, secret, {"Authorization": "Bearer bob"})
    assert "hit" not in cs(h) and origin.hits[secret] == 2
    _, h, _ = get(cache, shared)
    assert cs(h).endswith("; hit") and origin.hits[shared] == 1


def test_stale_while_revalidate_serves_stale_and_refreshes_in_the_background(
    origin: Origin, cache: int
) -> None:
    path = "/f/swr"
    origin.scenarios[path] = Scenario({"Cache-Control": "max-age=1, stale-while-revalidate=30"})
    get(cache, path)
    wait_stored(cache, path)
    time.sleep(1.3)
    t0 = time.monotonic()
    s, h, _b = get(cache, path)
    assert s == 200 and "stale-while-revalidate" in cs(h) and time.monotonic() - t0 < 0.5, cs(h)
    deadline = time.monotonic() + 5
    while origin.conditional[path] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert origin.conditional[path] == 1  # the background revalidation happened
    wait_stored(cache, path)  # and refreshed the stored copy: fresh hits again
    assert origin.hits[path] <= 3


def test_stale_if_error_covers_an_origin_5xx(origin: Origin, cache: int) -> None:
    path = "/f/sie"
    origin.scenarios[path] = Scenario({"Cache-Control": "max-age=1, stale-if-error=60"})
    get(cache, path)
    wait_stored(cache, path)
    body = origin.scenarios[path].body
    origin.scenarios[path] = Scenario({}, status=500)
    time.sleep(1.3)
    s, h, b = get(cache, path)
    assert s == 200 and b == body and "stale-if-error" in cs(h) and "fwd-status=500" in cs(h), cs(h)


def test_without_stale_if_error_a_5xx_is_passed_on(origin: Origin, cache: int) -> None:
    path = "/f/no-sie"
    origin.scenarios[path] = Scenario({"Cache-Control": "max-age=1"})
    get(cache, path)
    wait_stored(cache, path)
    origin.scenarios[path] = Scenario({}, status=503)
    time.sleep(1.3)
    s, h, _ = get(cache, path)
    assert s == 503, (s, cs(h))


def test_gone_upstream_drops_the_stale_copy(origin: Origin, cache: int) -> None:
    path = "/f/gone"
    origin.scenarios[path] = Scenario({"Cache-Control": "max-age=1"})
    get(cache, path)
    wait_stored(cache, path)
    origin.scenarios[path] = Scenario({}, status=404)
    time.sleep(1.3)
    assert get(cache, path)[0] == 404
    origin.scenarios[path] = Scenario({"Cache-Control": "max-age=60"}, body=b"back", etag='"v9"')
    _s, h, b = get(cache, path)
    assert b == b"back" and "fwd=miss" in cs(h), cs(h)


def test_upstream_age_and_expires_count(origin: Origin, cache: int) -> None:
    aged, expired, smax = "/f/aged", "/f/expired", "/f/smaxage"
    origin.scenarios[aged] = Scenario({"Cache-Control": "max-age=100", "Age": "99"})
    origin.scenarios[expired] = Scenario({"Expires": "Thu, 01 Jan 1970 00:00:00 GMT"})
    origin.scenarios[smax] = Scenario({"Cache-Control": "max-age=0, s-maxage=600"})
    for p in (aged, expired, smax):
        get(cache, p)
    time.sleep(0.3)
    _, h, _ = get(cache, smax)
    assert cs(h).endswith("; hit"), "s-maxage wins over max-age in a shared cache"
    _, h, _ = get(cache, expired)
    assert "fwd=stale" in cs(h), "an Expires in the past is stale at once"
    time.sleep(1.5)
    _, h, _ = get(cache, aged)
    assert "fwd=stale" in cs(h), "Age 99 of max-age 100 left a second"
    assert int(h["age"]) < 5  # just revalidated


def test_disconnected_origin_serves_stale_unless_must_revalidate(tmp_path: Path) -> None:
    with running_origin() as (o, kill):
        o.scenarios["/plain"] = Scenario({"Cache-Control": "max-age=1"})
        o.scenarios["/strict"] = Scenario({"Cache-Control": "max-age=1, must-revalidate"})
        with edge(tmp_path, [o.url]) as e:
            for p in ("/plain", "/strict"):
                get(e.port, p)
                wait_stored(e.port, p)
            kill()  # the origin goes away
            time.sleep(1.3)
            s, h, _ = get(e.port, "/plain")
            assert s == 200 and "stale" in cs(h), cs(h)
            s, h, _ = get(e.port, "/strict")
            assert s in (502, 504), (s, cs(h))
