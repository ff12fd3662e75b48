"""The admin listener (issue 2, daemon point 7; docs/edge-admin-api.md)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cdnlab import __version__
from helpers import (
    Edge,
    Nginx,
    RawConn,
    RawResponse,
    ScriptedUpstream,
    build_request,
    content_bytes,
    edge,
    request,
    sha256,
    wait_until,
)

from .conftest import PURGE_HMAC_KEY, PURGE_TOKEN
from .edgecheck import assert_hit, assert_miss_stored, config_toml, ours

CACHE_STATUS_LABELS = {"hit", "miss", "stale", "error", "none"}
TIER_LABELS = {"ram", "flash", "hdd", "upstream"}


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def types(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            out[name] = kind
    return out


def value(text: str, name: str, **labels: str) -> float:
    return sum(
        v for n, lab, v in samples(text) if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


# -- /healthz --------------------------------------------------------------------------------------


def test_healthz_shape(main_edge: Edge, origin: Nginx) -> None:
    origin.put("/admin/health.bin", 1000)
    request(main_edge.port, "GET", "/admin/health.bin")
    main_edge.wait_stored("/admin/health.bin")  # the commit follows the response
    status, headers, body = request(main_edge.admin_port, "GET", "/healthz")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    h = json.loads(body)
    assert h["id"] == "edge-main" and h["site"] == "lab-1" and h["role"] == "edge"
    assert h["version"] == __version__
    assert h["state"] == "serving"
    store = main_edge.store
    disks = {d["kind"]: d for d in h["disks"]}
    assert set(disks) == {"ram", "flash"} and len(h["disks"]) == 2
    assert disks["ram"]["path"] == str(store / "ram0") and disks["flash"]["path"] == str(store / "flash0")
    assert disks["ram"]["capacity_bytes"] == 64 * 1024 * 1024
    assert disks["flash"]["capacity_bytes"] == 2 * 1024**3
    for d in h["disks"]:
        assert d["failed"] is False
        assert isinstance(d["used_bytes"], int) and 0 <= d["used_bytes"] <= d["capacity_bytes"]
        assert isinstance(d["objects"], int) and d["objects"] >= 0
    assert sum(d["objects"] for d in h["disks"]) >= 1
    load = h["load"]
    assert set(load) >= {"connections", "requests_total", "bytes_total", "requests_per_s", "bytes_per_s"}
    assert all(isinstance(load[k], int | float) and load[k] >= 0 for k in load)
    # counters are published about once a second
    wait_until(lambda: main_edge.health()["load"]["requests_total"] >= 1, 5)
    assert [u["url"] for u in h["upstreams"]] == [origin.url]
    assert h["upstreams"][0].get("healthy") is True, h["upstreams"]


def test_admin_is_not_on_the_client_port(main_edge: Edge) -> None:
    """/healthz on the client port is just a path, sent to the origin: never the admin API."""
    status, _, body = request(main_edge.port, "GET", "/healthz")
    assert status == 404
    assert b'"state"' not in body
    status, _, _ = request(main_edge.port, "POST", "/purge", body=b"{}")
    assert status == 405


# -- /metrics --------------------------------------------------------------------------------------


def _settled(e: Edge) -> str:
    """Metrics once two scrapes a publish period apart agree on the request count."""
    last = ""

    def stable() -> str | None:
        nonlocal last
        text = e.metrics()
        a = value(text, "cdnlab_requests_total")
        b = value(last, "cdnlab_requests_total") if last else -1
        last = text
        return text if a == b else None

    return wait_until(stable, 8, 1.2)  # type: ignore[return-value]


def test_metrics_names_types_and_values(main_edge: Edge, origin: Nginx) -> None:
    path = "/admin/metrics.bin"
    data = origin.put(path, 100_000)
    before = _settled(main_edge)
    with RawConn(main_edge.port) as c:
        assert_miss_stored(c.get(path).headers)
        main_edge.wait_stored(path)
        for _ in range(3):
            assert_hit(c.get(path).headers)
    request(main_edge.port, "DELETE", path)

    def after_all() -> str | None:
        t = main_edge.metrics()
        done = value(t, "cdnlab_requests_total") - value(before, "cdnlab_requests_total")
        return t if done >= 5 else None

    after = wait_until(after_all, 5, 0.3)
    assert isinstance(after, str)
    t = types(after)
    for name, kind in {
        "cdnlab_requests": "counter",
        "cdnlab_response_bytes": "counter",
        "cdnlab_upstream_fetches": "counter",
        "cdnlab_request_duration_seconds": "histogram",
        "cdnlab_upstream_duration_seconds": "histogram",
        "cdnlab_disk_used_bytes": "gauge",
        "cdnlab_disk_capacity_bytes": "gauge",
        "cdnlab_disk_objects": "gauge",
        "cdnlab_disk_failed": "gauge",
        "cdnlab_connections_active": "gauge",
        "cdnlab_draining": "gauge",
    }.items():
        # the TYPE line names the family; exposition format 0.0.4 writes counters with _total
        declared = t.get(name) or t.get(f"{name}_total")
        assert declared == kind, (name, declared)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(after, "cdnlab_requests_total") - value(before, "cdnlab_requests_total") == 5
    assert delta("cdnlab_requests_total", status="200", cache_status="hit") == 3
    assert delta("cdnlab_requests_total", status="200", cache_status="miss") == 1
    assert delta("cdnlab_requests_total", status="405") == 1
    for n, lab, _ in samples(after):
        if n == "cdnlab_requests_total":
            assert set(lab) == {"status", "cache_status"} and lab["cache_status"] in CACHE_STATUS_LABELS, lab
        if n == "cdnlab_response_bytes_total":
            assert lab["tier"] in TIER_LABELS, lab
        if n == "cdnlab_upstream_fetches_total":
            assert lab["result"] in {"ok", "error", "timeout", "truncated"}, lab
    # bytes: the miss came from upstream, the three hits from disk (100 kB > ram_object_max: flash)
    assert len(data) <= delta("cdnlab_response_bytes_total", tier="upstream") < len(data) + 2000
    assert 3 * len(data) <= delta("cdnlab_response_bytes_total", tier="flash") < 3 * len(data) + 6000
    assert delta("cdnlab_upstream_fetches_total", upstream=origin.url, result="ok") == 1
    # histograms: cumulative buckets, +Inf equals _count, count grew with the requests
    for h in ("cdnlab_request_duration_seconds", "cdnlab_upstream_duration_seconds"):
        buckets = [(float(lab["le"]), v) for n, lab, v in samples(after) if n == f"{h}_bucket"]
        assert buckets and buckets == sorted(buckets)
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)
        assert buckets[-1][0] == float("inf") and buckets[-1][1] == value(after, f"{h}_count")
        assert value(after, f"{h}_sum") > 0
    assert delta("cdnlab_request_duration_seconds_count") == 5
    assert delta("cdnlab_upstream_duration_seconds_count") == 1
    disks = {lab["kind"]: lab for n, lab, _ in samples(after) if n == "cdnlab_disk_capacity_bytes"}
    assert value(after, "cdnlab_disk_capacity_bytes", kind="ram") == 64 * 1024 * 1024
    assert value(after, "cdnlab_disk_capacity_bytes", kind="flash") == 2 * 1024**3
    assert disks["flash"]["disk"] == str(main_edge.store / "flash0")
    assert value(after, "cdnlab_disk_used_bytes", kind="flash") >= len(data)
    assert value(after, "cdnlab_disk_objects", kind="flash") >= 1
    assert value(after, "cdnlab_disk_failed") == 0
    assert value(after, "cdnlab_draining") == 0
    assert value(after, "cdnlab_connections_active") >= 0


# -- /inventory ------------------------------------------------------------------------------------


def test_inventory_lists_stored_objects_with_sha256(main_edge: Edge, origin: Nginx) -> None:
    objs = {f"/admin/inv/{i}.bin": origin.put(f"/admin/inv/{i}.bin", 1000 * (i + 1) ** 3) for i in range(4)}
    for path in objs:
        assert request(main_edge.port, "GET", path)[0] == 200
    for path in objs:
        main_edge.wait_stored(path)
    inv = main_edge.inventory()
    assert inv["id"] == "edge-main"
    assert isinstance(inv["generation"], int)
    listed = {o["key"]: o for o in inv["objects"]}
    for path, data in objs.items():
        o = listed[path]
        assert o == {"key": path, "size": len(data), "sha256": sha256(data), "tier": o["tier"]}
        assert o["tier"] == ("ram" if len(data) <= 64 * 1024 else "flash")
    assert len(listed) == len(inv["objects"]), "a key listed twice"


# -- /purge ----------------------------------------------------------------------------------------


@pytest.fixture
def purge_objects(main_edge: Edge, origin: Nginx) -> dict[str, bytes]:
    objs = {
        p: origin.put(p, 3000 + i)
        for i, p in enumerate(("/purge/a.bin", "/purge/dir/b.bin", "/purge/dir/c.bin", "/purge/dirx/d.bin"))
    }
    for p in objs:
        request(main_edge.port, "GET", p)
    for p in objs:
        main_edge.wait_stored(p)
    return objs


def _hmac(body: bytes, key: str = PURGE_HMAC_KEY) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def test_purge_refused_without_valid_auth(main_edge: Edge, origin: Nginx, purge_objects: dict) -> None:
    body = json.dumps({"prefix": "/purge/"}).encode()
    for hdrs in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {PURGE_TOKEN}"},
        {"Authorization": PURGE_TOKEN},
        {"X-Cdnlab-Signature": _hmac(body, "wrong-key")},
        {"X-Cdnlab-Signature": _hmac(b'{"prefix": "/other/"}')},
        {"X-Cdnlab-Signature": ""},
    ):
        status, resp = main_edge.post("/purge", body, hdrs)
        assert status == 401, (hdrs, status, resp)
    keys = main_edge.inventory_keys()
    assert set(purge_objects) <= set(keys)
    with RawConn(main_edge.port) as c:
        for p, data in purge_objects.items():
            r = c.get(p)
            assert r.body == data
            assert_hit(r.headers)
    for p in purge_objects:
        assert origin.fetches(p) == 1


def test_purge_exact_key_with_token(main_edge: Edge, origin: Nginx, purge_objects: dict) -> None:
    auth = {"Authorization": f"Bearer {PURGE_TOKEN}"}
    assert main_edge.post("/purge", json.dumps({"key": "/purge/dir"}).encode(), auth) == (200, {"purged": 0})
    assert main_edge.post("/purge", json.dumps({"key": "/purge/a.bin"}).encode(), auth) == (
        200,
        {"purged": 1},
    )
    keys = main_edge.inventory_keys()
    assert "/purge/a.bin" not in keys
    assert {"/purge/dir/b.bin", "/purge/dir/c.bin", "/purge/dirx/d.bin"} <= set(keys)
    with RawConn(main_edge.port) as c:
        r = c.get("/purge/a.bin")
        assert r.body == purge_objects["/purge/a.bin"]
        assert_miss_stored(r.headers)
        assert_hit(c.get("/purge/dir/b.bin").headers)
    assert origin.fetches("/purge/a.bin") == 2


def test_purge_prefix_with_hmac(main_edge: Edge, origin: Nginx, purge_objects: dict) -> None:
    body = json.dumps({"prefix": "/purge/dir/"}).encode()
    status, resp = main_edge.post("/purge", body, {"X-Cdnlab-Signature": _hmac(body)})
    assert (status, resp) == (200, {"purged": 2})
    keys = main_edge.inventory_keys()
    assert "/purge/dir/b.bin" not in keys and "/purge/dir/c.bin" not in keys
    assert "/purge/dirx/d.bin" in keys and "/purge/a.bin" in keys
    with RawConn(main_edge.port) as c:
        assert_miss_stored(c.get("/purge/dir/b.bin").headers)
        assert_hit(c.get("/purge/dirx/d.bin").headers)
    assert origin.fetches("/purge/dir/b.bin") == 2
    assert origin.fetches("/purge/dirx/d.bin") == 1


def test_purge_during_an_inflight_fetch_is_not_undone(main_edge: Edge, origin: Nginx) -> None:
    """A purge that lands while the object is still arriving: the fetch that began before it must
    not leave the object cached afterwards (a fill racing a purge would undo it)."""
    path = "/slow/purge-inflight.bin"
    data = origin.put(path, 900 * 1024)  # ~1 s
    auth = {"Authorization": f"Bearer {PURGE_TOKEN}"}
    with RawConn(main_edge.port, timeout=15) as c:
        c.send(build_request("GET", path))
        assert c.sock.recv(1, socket.MSG_PEEK)  # streaming has begun
        status, body = main_edge.post("/purge", json.dumps({"key": path}).encode(), auth)
        assert status == 200, body
        r = c.reader.read_response()
        assert r.status == 200 and sha256(r.body) == sha256(data)  # the client in flight is served
    time.sleep(0.5)
    assert path not in main_edge.inventory_keys(), "the purged object was stored by the racing fill"
    with RawConn(main_edge.port) as c:
        assert ours(c.get(path).headers).get("fwd") == "miss"
    assert origin.fetches(path) == 2


def test_purge_before_the_upstream_answers_refuses_the_fill(
    tmp_path: Path, scripted: ScriptedUpstream
) -> None:
    """The purge lands after the request went upstream but before any byte came back: the bytes
    that then arrive may be the very ones the purge was about, so they are served, not stored."""
    path = "/late/40000/purge-before-answer.bin"
    cfg = config_toml(admin='purge_token = "late-token"', limits="upstream_read_timeout = 30.0")
    with edge(tmp_path, [scripted.url], config=cfg) as e:
        scripted.release.clear()
        got: list[tuple[int, dict[str, str], bytes]] = []
        client = threading.Thread(target=lambda: got.append(request(e.port, "GET", path)))
        client.start()
        try:
            wait_until(lambda: scripted.count(path) == 1, timeout=10)
            auth = {"Authorization": "Bearer late-token"}
            status, body = e.post("/purge", json.dumps({"key": path}).encode(), auth)
            assert (status, body) == (200, {"purged": 0})
        finally:
            scripted.release.set()
            client.join(15)
        assert got and got[0][0] == 200 and got[0][2] == content_bytes(path, 40000)
        time.sleep(0.5)  # the commit, had it been allowed, is done by now
        assert path not in e.inventory_keys(), "the purge was undone by a fill already under way"


def test_purge_bad_bodies(main_edge: Edge) -> None:
    auth = {"Authorization": f"Bearer {PURGE_TOKEN}"}
    for body in (b"not json", b"[]", b'{"key": 5}', b'{"prefix": "no-slash"}', b"{}"):
        status, _ = main_edge.post("/purge", body, auth)
        assert status == 400, body


# -- /drain ----------------------------------------------------------------------------------------


@pytest.fixture
def drain_edge(tmp_path: Path, origin: Nginx) -> Iterator[Edge]:
    with edge(tmp_path / "drain", [origin.url]) as e:
        yield e


def test_drain_lets_open_connections_finish(drain_edge: Edge, origin: Nginx) -> None:
    e = drain_edge
    slow = origin.put("/slow/admin-drain.bin", 1024 * 1024)  # ~2 s at 512 KiB/s
    quick = origin.put("/admin/drain-idle.bin", 1000)
    idle = RawConn(e.port)
    streaming = RawConn(e.port, timeout=15)
    try:
        assert idle.get("/admin/drain-idle.bin").body == quick
        result: dict[str, RawResponse | BaseException] = {}

        def stream() -> None:
            try:
                result["r"] = streaming.reader.read_response()
            except BaseException as exc:
                result["r"] = exc

        streaming.send(build_request("GET", "/slow/admin-drain.bin"))
        assert streaming.sock.recv(1, socket.MSG_PEEK)  # the response has begun
        t = threading.Thread(target=stream)
        t.start()
        status, body = e.post("/drain")
        assert status == 200 and body.get("state") == "draining", body
        status, _, hb = request(e.admin_port, "GET", "/healthz")
        assert status == 503 and json.loads(hb)["state"] == "draining"
        assert "cdnlab_draining 1.0" in e.metrics()
        # an idle keep-alive connection is let go; new connections are not accepted
        assert idle.closed_by_peer(3.0)
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", e.port), timeout=2) as s:
            s.sendall(build_request("GET", "/admin/drain-idle.bin"))
            if not s.recv(1):
                raise ConnectionResetError("closed without an answer")
        t.join(15)
        assert not t.is_alive()
        r = result["r"]
        assert isinstance(r, RawResponse), r
        assert r.status == 200 and sha256(r.body) == sha256(slow)
        assert streaming.closed_by_peer(3.0), "keep-alive went on while draining"
        # drained once no client connection is left
        wait_until(lambda: e.health()["state"] == "drained", 10)
        status, _, hb = request(e.admin_port, "GET", "/healthz")
        assert status == 503 and json.loads(hb)["state"] == "drained"
        # and back
        status, body = e.post("/drain?cancel=1")
        assert status == 200 and body.get("state") == "serving"
        wait_until(lambda: _serves(e), 15, 0.2)
        # once the workers listen again /healthz says serving (200)
        wait_until(lambda: request(e.admin_port, "GET", "/healthz")[0] == 200, 5, 0.1)
        assert e.health()["state"] == "serving"
        r2 = RawConn(e.port)
        got = r2.get("/admin/drain-idle.bin")
        r2.close()
        assert got.body == quick and ours(got.headers) == {"hit": True}
    finally:
        idle.close()
        streaming.close()


def _serves(e: Edge) -> bool:
    try:
        return request(e.port, "GET", "/admin/drain-idle.bin", timeout=2)[0] == 200
    except OSError:
        return False
