"""End to end on loopback with real edge daemons: location, health-driven steering, signed URLs
checked by the edge, an appliance killed mid-session, drain. Clients are told apart by the
loopback source address they bind (127.0.0.2 is in site-a's prefix, 127.0.1.2 in site-b's)."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from control_e2e import CDNLAB, KEY, SEGMENTS, Lab, post

from cdnlab.client.player import Options, Player
from cdnlab.signing import sign_path

pytestmark = pytest.mark.slow

SITE_A_CLIENT = "127.0.0.2"
SITE_B_CLIENT = "127.0.1.2"
INTERVAL = 0.5


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("cdn"))
    try:
        lab.make_origin()
        lab.start_control(interval=INTERVAL)
        for eid, site in (("edge-a1", "site-a"), ("edge-a2", "site-a"), ("edge-b1", "site-b")):
            lab.add_edge(eid, site)
            lab.register(lab.edges[eid], capacity_bps=10_000_000_000)
        lab.wait_available(3)
        # Warm the first segment everywhere, so the player's HEAD probes measure the path and
        # not one appliance's first fill from the origin (ties then go by steering's rank).
        m = lab.steer(SITE_A_CLIENT)
        for i in range(len(m["endpoints"]) - 1):
            for t in range(len(m["video_tracks"])):
                assert _fetch(_first_segment_url(m, endpoint=i, track=t))[0] == 200
        mb = lab.steer(SITE_B_CLIENT)
        for t in range(len(mb["video_tracks"])):
            assert _fetch(_first_segment_url(mb, endpoint=0, track=t))[0] == 200
        yield lab
    finally:
        lab.close()
        for p in lab.procs:
            if p.popen.returncode not in (0, -15, -9, None):
                print(p.log.read_text()[-2000:])


def _fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    try:
        conn.request("GET", f"{u.path}?{u.query}" if u.query else u.path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def _first_segment_url(m: dict, endpoint: int = 0, track: int = 0, seg: int = 0) -> str:
    t = m["video_tracks"][track]
    return t["cdn_urls"][endpoint] + t["segments"][seg]


def _ids(m: dict) -> list[str | None]:
    return [e["appliance_id"] for e in m["endpoints"]]


def _wait_until(pred: Callable[[], bool], timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout}s")


def test_client_from_prefix_is_sent_to_its_site(lab: Lab) -> None:
    m = lab.steer(SITE_B_CLIENT)
    assert m["client"] == {
        "address": SITE_B_CLIENT,
        "site": "site-b",
        "matched_by": "coverage-zone",
        "prefix": "127.0.1.0/24",
    }
    assert m["endpoints"][0]["appliance_id"] == "edge-b1"
    assert m["endpoints"][-1]["kind"] == "cloudfront"
    m = lab.steer(SITE_A_CLIENT)
    assert m["client"]["site"] == "site-a"
    assert {m["endpoints"][0]["appliance_id"], m["endpoints"][1]["appliance_id"]} == {"edge-a1", "edge-a2"}
    # Each title lands on the same appliance first (consistent hashing within the site).
    assert all(lab.steer(SITE_A_CLIENT)["endpoints"][0]["appliance_id"] == _ids(m)[0] for _ in range(5))
    # The signed URL is served by the edge it names, through the origin.
    status, headers, body = _fetch(_first_segment_url(m))
    assert status == 200 and len(body) == 400_000 * 0.5 / 8 and "cdnlab" in headers["cache-status"]


def test_edge_refuses_forged_and_expired_urls(lab: Lab) -> None:
    m = lab.steer(SITE_A_CLIENT)
    url = _first_segment_url(m, seg=1)
    u = urlsplit(url)
    params = dict(parse_qsl(u.query))
    assert _fetch(url)[0] == 200
    forged = {**params, "sig": ("0" if params["sig"][0] != "0" else "1") + params["sig"][1:]}
    status, _, body = _fetch(f"{u.scheme}://{u.netloc}{u.path}?{urlencode(forged)}")
    assert status == 403 and b"bad signature" in body
    # Another segment's signature does not open this one.
    other = dict(parse_qsl(urlsplit(_first_segment_url(m, seg=2)).query))
    assert _fetch(f"{u.scheme}://{u.netloc}{u.path}?{urlencode(other)}")[0] == 403
    expired = sign_path(u.path, "k1", KEY, int(time.time()) - 10)
    status, _, body = _fetch(f"{u.scheme}://{u.netloc}{expired}")
    assert status == 403 and b"expired" in body
    status, _, body = _fetch(f"{u.scheme}://{u.netloc}{u.path}")
    assert status == 403 and b"missing" in body


def test_player_plays_and_reports_qoe_cli(lab: Lab, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            CDNLAB,
            "play",
            "--control",
            lab.control_url,
            "--title",
            "t0001",
            "--speed",
            "20",
            "--json",
            "--source-address",
            SITE_B_CLIENT,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    q = json.loads(out.stdout)
    assert q["completed"] and q["segments_played"] == SEGMENTS and q["client_site"] == "site-b"
    assert q["endpoints_used"][0] == "edge-b1" and q["failovers"] == 0
    assert q["startup_time_s"] < 2 and q["avg_bitrate_bps"] >= 400_000
    assert sum(q["bytes_per_endpoint"].values()) > 0


def test_killed_appliance_leaves_manifest_and_player_carries_on(lab: Lab) -> None:
    first = lab.steer(SITE_A_CLIENT)["endpoints"][0]["appliance_id"]
    assert first in ("edge-a1", "edge-a2")
    player = Player(lab.control_url, "t0001", Options(speed=4.0, fail_ttl=300), source_address=SITE_A_CLIENT)
    result: dict = {}

    def play() -> None:
        result["qoe"] = asyncio.run(player.run())

    t = threading.Thread(target=play)
    t.start()
    # Let it start on the first appliance, then kill that appliance (SIGKILL, workers included).
    _wait_until(lambda: player.qoe.segments_played >= 3, timeout=15)
    assert player.current is not None and player.current.appliance_id == first
    killed_at = time.monotonic()
    lab.edges[first].proc.kill()
    took = _wait_until(lambda: first not in _ids(lab.steer(SITE_A_CLIENT)), timeout=5)
    assert took <= INTERVAL + 0.4 + 0.3, f"steering still offered the dead appliance after {took:.2f}s"
    t.join(60)
    q = result["qoe"]
    assert q.completed and q.segments_played == SEGMENTS, q.errors
    assert q.failovers >= 1 and q.endpoints_used[0] == first and len(q.endpoints_used) >= 2
    assert first not in q.endpoints_used[1:]
    print(
        f"steering dropped the killed appliance {took:.2f}s after SIGKILL "
        f"(poll interval {INTERVAL}s); player: {q.failovers} failover(s), {q.rebuffer_count} rebuffer(s), "
        f"{time.monotonic() - killed_at:.1f}s to finish"
    )


def test_drain_moves_traffic_away(lab: Lab) -> None:
    alive = [e for e in ("edge-a1", "edge-a2") if lab.edges[e].proc.popen.poll() is None]
    assert alive, "the kill test left no site-a edge"
    target = alive[0]
    assert target in _ids(lab.steer(SITE_A_CLIENT))
    status, _ = post(f"{lab.control_url}/v1/appliances/{target}/drain")
    assert status == 200
    _wait_until(lambda: target not in _ids(lab.steer(SITE_A_CLIENT)), timeout=INTERVAL + 2)
    st = json.loads(urlsplit_get(f"{lab.control_url}/v1/appliances/{target}"))
    assert st["appliance"]["drain_state"] in ("draining", "drained") and not st["available"]
    player = Player(lab.control_url, "t0001", Options(speed=20), source_address=SITE_A_CLIENT)
    q = asyncio.run(player.run())
    assert q.completed and target not in q.bytes_per_endpoint
    # Undrain: it comes back within an interval.
    post(f"{lab.control_url}/v1/appliances/{target}/drain?cancel=true")
    _wait_until(lambda: target in _ids(lab.steer(SITE_A_CLIENT)), timeout=INTERVAL + 2)


def urlsplit_get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def test_analytics_from_real_edges(lab: Lab) -> None:
    """After the plays above, the fleet figures come from the edges' own /metrics."""

    def ready() -> bool:
        a = json.loads(urlsplit_get(f"{lab.control_url}/v1/analytics"))
        return bool(a["global"] and a["global"]["requests"] > 0 and a["sites"].get("site-b"))

    # A forged URL at edge-b1 (still running): the 4xx shows up in the site's figures.
    m = lab.steer(SITE_B_CLIENT)
    url = _first_segment_url(m)
    assert _fetch(url.replace("sig=", "sig=0"))[0] == 403
    _wait_until(ready, timeout=5)
    _wait_until(
        lambda: (
            (
                json.loads(urlsplit_get(f"{lab.control_url}/v1/analytics"))["sites"]["site-b"][
                    "error_rate_4xx"
                ]
                or 0
            )
            > 0
        ),
        timeout=5,
    )
    a = json.loads(urlsplit_get(f"{lab.control_url}/v1/analytics"))
    g = a["global"]
    assert 0 <= g["hit_ratio"] <= 1 and g["bytes"] > 0 and g["p95_response_time_ms"] is not None
    metrics = urlsplit_get(f"{lab.control_url}/metrics")
    assert 'cdnlab_control_site_hit_ratio{site="site-b"}' in metrics
