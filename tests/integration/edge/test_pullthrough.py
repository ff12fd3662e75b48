"""Pull-through (issue 2, daemon point 5): miss/hit, tiers, failover, 502/504, truncated bodies,
collapsed misses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import (
    Edge,
    IncompleteResponse,
    Nginx,
    RawConn,
    ScriptedUpstream,
    build_request,
    content_bytes,
    edge,
    exchange,
    free_port,
    parse_all,
    sha256,
    wait_until,
)

from .edgecheck import (
    assert_common,
    assert_hit,
    assert_miss_stored,
    concurrent_one_object,
    config_toml,
    ours,
)


def test_miss_then_hit_with_one_origin_request(main_edge: Edge, origin: Nginx) -> None:
    path = "/pull/seg-001.m4s"
    data = origin.put(path, 123_456)
    with RawConn(main_edge.port) as c:
        first = c.get(path)
        assert first.status == 200 and first.body == data
        assert_miss_stored(first.headers)
        entry = main_edge.wait_stored(path)
        assert entry == {**entry, "key": path, "size": len(data), "sha256": sha256(data)}
        for _ in range(5):
            r = c.get(path)
            assert r.status == 200 and r.body == data
            assert_hit(r.headers)
            age = r.headers.get("age")
            assert age is not None and age.isdigit() and int(age) <= 5, age  # RFC 9111 §5.1
    assert origin.fetches(path) == 1


def test_age_counts_seconds_since_stored(main_edge: Edge, origin: Nginx) -> None:
    path = "/pull/aged.bin"
    origin.put(path, 1000)
    with RawConn(main_edge.port) as c:
        c.get(path)
        main_edge.wait_stored(path)
        stored = time.time()
    time.sleep(2.1)
    with RawConn(main_edge.port) as c:  # a fresh connection: the old one may hit keepalive_timeout
        r = c.get(path)
    assert_hit(r.headers)
    age = int(r.headers["age"])
    assert 2 <= age <= int(time.time() - stored) + 1, age


def test_small_objects_in_ram_tier_large_on_flash(main_edge: Edge, origin: Nginx) -> None:
    small = origin.put("/pull/small.txt", 4096)
    large = origin.put("/pull/large.bin", 300_000)
    with RawConn(main_edge.port) as c:
        c.get("/pull/small.txt")
        c.get("/pull/large.bin")
        inv_small = main_edge.wait_stored("/pull/small.txt")
        inv_large = main_edge.wait_stored("/pull/large.bin")
        assert inv_small["tier"] == "ram" and inv_small["sha256"] == sha256(small)
        assert inv_large["tier"] == "flash" and inv_large["sha256"] == sha256(large)
        for _ in range(3):
            rs, rl = c.get("/pull/small.txt"), c.get("/pull/large.bin")
            assert rs.body == small and rl.body == large
            assert_hit(rs.headers)
            assert_hit(rl.headers)
    disks = {d["kind"]: d for d in main_edge.health()["disks"]}
    assert disks["ram"]["objects"] >= 1 and disks["flash"]["objects"] >= 1


def test_uncacheable_answer_is_relayed_not_stored(main_edge: Edge, origin: Nginx) -> None:
    path = "/nostore/private.bin"
    data = origin.put(path, 20_000)
    with RawConn(main_edge.port) as c:
        for _ in range(2):
            r = c.get(path)
            assert r.status == 200 and r.body == data
            assert ours(r.headers).get("fwd") == "miss"
            assert "stored" not in ours(r.headers)
            assert r.headers.get("cache-control") == "no-store"
            time.sleep(0.2)
    assert path not in main_edge.inventory_keys()
    assert origin.fetches(path) == 2


def test_origin_404_is_relayed_with_cache_status(main_edge: Edge, origin: Nginx) -> None:
    with RawConn(main_edge.port) as c:
        r = c.get("/pull/does-not-exist.bin")
    assert r.status == 404
    assert_common(r)
    assert ours(r.headers).get("fwd") == "miss"
    assert "/pull/does-not-exist.bin" not in main_edge.inventory_keys()


def test_upstream_target_drops_unkeyed_query_but_keeps_path(main_edge: Edge, origin: Nginx) -> None:
    """Two URLs differing only in a parameter the cache key ignores share one object."""
    path = "/pull/query.bin"
    data = origin.put(path, 5000)
    with RawConn(main_edge.port) as c:
        a = c.get(f"{path}?utm_source=a")
        main_edge.wait_stored(path)
        b = c.get(f"{path}?utm_source=b")
    assert a.body == b.body == data
    assert_hit(b.headers)
    assert origin.fetches(path) == 1


def test_500_simultaneous_requests_one_origin_fetch(main_edge: Edge, origin: Nginx) -> None:
    concurrent_one_object(main_edge, origin, "/slow/pull-500.bin")


# -- failover and upstream failures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def failover_edge(tmp_path_factory: pytest.TempPathFactory, origin: Nginx) -> Iterator[Edge]:
    dead = f"http://127.0.0.1:{free_port()}"
    with edge(tmp_path_factory.mktemp("failover"), [dead, origin.url]) as e:
        e.extra["dead"] = dead
        yield e


def test_failover_to_second_upstream(failover_edge: Edge, origin: Nginx) -> None:
    objs = {f"/pull/fo-{i}.bin": origin.put(f"/pull/fo-{i}.bin", 10_000 + i) for i in range(3)}
    with RawConn(failover_edge.port) as c:
        for path, data in objs.items():
            t0 = time.monotonic()
            r = c.get(path)
            assert r.status == 200 and r.body == data, (path, r.status, r.body[:200])
            assert_miss_stored(r.headers)
            assert time.monotonic() - t0 < 3
    for path in objs:
        assert origin.fetches(path) == 1


def test_healthz_reports_the_dead_upstream(failover_edge: Edge, origin: Nginx) -> None:
    origin.put("/pull/fo-health.bin", 100)
    with RawConn(failover_edge.port) as c:
        assert c.get("/pull/fo-health.bin").status == 200

    def marked() -> dict[str, bool] | None:
        ups = {u["url"]: u.get("healthy") for u in failover_edge.health()["upstreams"]}
        return ups if ups.get(failover_edge.extra["dead"]) is False else None

    try:
        ups = wait_until(marked, 3)
    except TimeoutError:
        ups = {u["url"]: u.get("healthy") for u in failover_edge.health()["upstreams"]}
    assert ups == {failover_edge.extra["dead"]: False, origin.url: True}, ups


def test_all_upstreams_dead_gives_502_with_clear_body(tmp_path: Path) -> None:
    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    with edge(tmp_path / "dead", dead) as e:
        for _ in range(2):
            t0 = time.monotonic()
            raw, _ = exchange(e.port, build_request("GET", "/pull/nowhere.bin", {"Connection": "close"}))
            (r,) = parse_all(raw, ["GET"])
            assert time.monotonic() - t0 < 5
            assert r.status == 502
            assert_common(r)
            assert r.headers["content-type"].startswith("text/plain")
            text = r.body.decode()
            assert "upstream" in text.lower() and "502" in text, text
            assert ours(r.headers).get("detail") or ours(r.headers).get("fwd"), r.headers["cache-status"]
        assert "/pull/nowhere.bin" not in e.inventory_keys()


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as s:
        yield s


@pytest.fixture(scope="module")
def scripted_edge(tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream) -> Iterator[Edge]:
    cfg = config_toml(limits="upstream_read_timeout = 1.0\nupstream_probe_interval = 0.5")
    with edge(tmp_path_factory.mktemp("scripted"), [scripted.url], config=cfg) as e:
        yield e


def test_upstream_that_never_answers_gives_504(scripted_edge: Edge, scripted: ScriptedUpstream) -> None:
    t0 = time.monotonic()
    raw, _ = exchange(
        scripted_edge.port, build_request("GET", "/hang/a.bin", {"Connection": "close"}), timeout=10
    )
    took = time.monotonic() - t0
    (r,) = parse_all(raw, ["GET"])
    assert r.status == 504, (r.status, r.body)
    assert 0.8 <= took < 5, took
    assert_common(r)
    assert "upstream" in r.body.decode().lower()
    assert scripted.count("/hang/a.bin") >= 1
    assert "/hang/a.bin" not in scripted_edge.inventory_keys()


def test_truncated_upstream_body_is_never_committed(scripted_edge: Edge, scripted: ScriptedUpstream) -> None:
    n = 300_000
    path = f"/trunc/{n}/obj.bin"
    full = content_bytes(path, n)
    for attempt in (1, 2):
        with RawConn(scripted_edge.port) as c:
            c.send(build_request("GET", path))
            try:
                r = c.reader.read_response()
            except IncompleteResponse as exc:
                got = exc.partial
                _, _, body = got.partition(b"\r\n\r\n")
                # whatever arrived is a true prefix of the object, and the client sees it end short
                assert len(body) < n
                assert full.startswith(body), "bytes sent that are not the object's"
            else:
                # A clean error status (not a short 200) is acceptable too.
                assert r.status >= 500, (r.status, len(r.body))
        # give a (wrong) commit every chance to happen before we look
        time.sleep(0.5)
        assert path not in scripted_edge.inventory_keys()
        assert scripted.count(path) == attempt  # not stored: the next request goes upstream again


def test_good_object_from_scripted_upstream_is_stored(
    scripted_edge: Edge, scripted: ScriptedUpstream
) -> None:
    path = "/ok/70000/fine.bin"
    data = content_bytes(path, 70_000)
    with RawConn(scripted_edge.port) as c:
        r = c.get(path)
        assert r.status == 200 and r.body == data
        scripted_edge.wait_stored(path)
        r = c.get(path)
        assert r.body == data
        assert_hit(r.headers)
    assert scripted.count(path) == 1
