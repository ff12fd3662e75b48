"""Fill execution end to end, everything real on loopback: nginx as the origin (its access log
counts requests and bytes), three ``cdnlab edge serve`` daemons (e1, e2 in site-a, e3 alone in
site-b), ``cdnlab control serve``, DASH content made by ffmpeg (the lab's recipe), and
``cdnlab fill publish`` / ``cdnlab fill run`` as an operator would run them."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from control_e2e import CDNLAB, Proc, free_port, get_json, start, wait_http, wait_tcp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from helpers import NGINX, Nginx, nginx

pytestmark = [
    pytest.mark.skipif(
        shutil.which("nginx") is None and not Path(NGINX).exists(), reason="needs nginx (Debian)"
    ),
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (Debian) for the DASH content"),
]

BIG = "/content/t0009/bin/big.bin"
BIG_SIZE = 3 * 1024 * 1024
CORRUPT = "/content/t0007/480p/seg-00002.m4s"  # changed at the origin after publishing
UNPLAYABLE = "/content/t0006/480p/seg-00003.m4s"  # published as is: right SHA-256, broken boxes
_LOG = re.compile(r'"(\w+) (\S+) HTTP/[\d.]+" (\d{3}) (\d+)')


@dataclass
class Box:
    id: str
    site: str
    url: str
    admin_url: str
    config: Path
    store: Path
    proc: Proc


@dataclass
class Fleet:
    root: Path
    www: Path
    origin: Nginx
    control: str
    edges: dict[str, Box]

    def origin_log(self) -> list[tuple[str, str, int, int]]:
        if not self.origin.access_log.exists():
            return []
        out = []
        for line in self.origin.access_log.read_text().splitlines():
            m = _LOG.search(line)
            if m:
                out.append((m.group(1), m.group(2), int(m.group(3)), int(m.group(4))))
        return out

    def fill(self, edge: str, *args: str, timeout: float = 120) -> tuple[int, dict | str]:
        e = self.edges[edge]
        cmd = [CDNLAB, "fill", "run", "--config", str(e.config), "--control", self.control, *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        try:
            return p.returncode, json.loads(p.stdout)
        except ValueError:
            return p.returncode, p.stdout + p.stderr


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def _inventory(e: Box) -> dict[str, dict]:
    return {o["key"]: o for o in get_json(f"{e.admin_url}/inventory")["objects"]}


def _break_trun(data: bytes) -> bytes:
    """The same segment with one trun sample size off by one: boxes parse, sizes do not add up."""
    i = data.index(b"trun")
    flags = int.from_bytes(data[i + 5 : i + 8], "big")
    assert flags & 0x200, "expected per-sample sizes"
    first = i + 8 + 4 + (4 if flags & 1 else 0) + (4 if flags & 4 else 0) + (4 if flags & 0x100 else 0)
    size = int.from_bytes(data[first : first + 4], "big")
    return data[:first] + (size + 1).to_bytes(4, "big") + data[first + 4 :]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    from cdnlab.lab.content import ensure_content

    root = tmp_path_factory.mktemp("fill")
    content = ensure_content(titles=2, seconds=8, cache_dir=root.parent / "fill-content-cache")
    www = root / "www"
    shutil.copytree(content.root / "content", www / "content")
    for t in ("t0006", "t0007"):  # site-b only (licensing): the bad-source cases
        shutil.copytree(www / "content/t0001", www / "content" / t)
    bad = www / UNPLAYABLE.lstrip("/")
    bad.write_bytes(_break_trun(bad.read_bytes()))
    (www / BIG.lstrip("/")).parent.mkdir(parents=True)
    (www / BIG.lstrip("/")).write_bytes(os.urandom(BIG_SIZE))
    for p in www.rglob("*"):
        if p.name in ("track.mpd", "ffmpeg.log"):
            p.unlink()
    procs: list[Proc] = []
    with nginx(root / "nginx", root=www) as origin:
        try:
            port = free_port()
            (root / "control.toml").write_text(
                f'listen = "127.0.0.1:{port}"\ndatabase = "sqlite:///{root / "control.db"}"\n'
                'default_site = "site-a"\n[signing]\nkid = "k1"\nkey = "fill-test-key"\n'
                "[health]\ninterval = 0.5\ntimeout = 0.4\n"
            )
            procs.append(start("control", [CDNLAB, "control", "serve", "--config", "control.toml"], root))
            control = f"http://127.0.0.1:{port}"
            wait_http(f"{control}/healthz", ok=(200,))
            edges = {}
            for eid, site in (("e1", "site-a"), ("e2", "site-a"), ("e3", "site-b")):
                p, a = free_port(), free_port()
                store = root / eid
                cfg = root / f"{eid}.toml"
                cfg.write_text(
                    f'id = "{eid}"\nsite = "{site}"\nlisten = ["127.0.0.1:{p}"]\n'
                    f'upstreams = ["{origin.url}"]\nstate_dir = "{store / "state"}"\n'
                    f'[[tiers]]\npath = "{store / "flash0"}"\nkind = "flash"\ncapacity = "256M"\n'
                    f'[admin]\nlisten = "127.0.0.1:{a}"\n[signing]\nrequired = false\n'
                    f'[control]\nurl = "{control}"\nreport_interval = 0.5\n'
                )
                proc = start(eid, [CDNLAB, "edge", "serve", "--config", str(cfg)], root)
                procs.append(proc)
                e = Box(eid, site, f"http://127.0.0.1:{p}", f"http://127.0.0.1:{a}", cfg, store, proc)
                wait_http(f"{e.admin_url}/healthz")
                wait_tcp("127.0.0.1", p)
                body = {
                    "id": eid,
                    "site": site,
                    "url": e.url,
                    "admin_url": e.admin_url,
                    "tiers": [{"kind": "flash", "capacity_bytes": 256 * 2**20}],
                }
                req = urllib.request.Request(
                    f"{control}/v1/appliances",
                    json.dumps(body).encode(),
                    {"Content-Type": "application/json"},
                )
                assert urllib.request.urlopen(req, timeout=5).status == 201
                edges[eid] = e
            pop = {"t0009": 100, "t0001": 10, "t0002": 9, "t0006": 1, "t0007": 1}
            (root / "pop.json").write_text(json.dumps(pop))
            pub = subprocess.run(
                [CDNLAB, "fill", "publish", str(www), "--control", control,
                 "--popularity", str(root / "pop.json"), "--hot", "3", "--json"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert pub.returncode == 0, pub.stdout + pub.stderr
            # Licensing is not in the tree: put it with the same content set.
            objs = json.loads(urllib.request.urlopen(f"{control}/v1/fill/content").read())
            assert objs["titles"] == 5
            _relicense(control, www, pop)
            (www / CORRUPT.lstrip("/")).write_bytes(b"\0" * (www / CORRUPT.lstrip("/")).stat().st_size)
            yield Fleet(root, www, origin, control, edges)
        finally:
            for p in reversed(procs):
                p.stop()


def _relicense(control: str, www: Path, pop: dict) -> None:
    objects = [
        {"key": "/" + p.relative_to(www).as_posix(), "size": p.stat().st_size, "sha256": _sha(p.read_bytes())}
        for p in sorted(www.rglob("*"))
        if p.is_file()
    ]
    site_b_only = ["site-b"]
    body = {
        "objects": objects,
        "popularity": pop,
        "hot": 3,
        "licensing": {"t0001": ["site-a", "site-b"], "t0002": ["site-a", "site-b"], "t0006": site_b_only,
                      "t0007": site_b_only, "t0009": site_b_only},
    }  # fmt: skip
    req = urllib.request.Request(
        f"{control}/v1/fill/content",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
        method="PUT",
    )
    assert urllib.request.urlopen(req, timeout=10).status == 200


def _window_excluding_now() -> str:
    start_at = datetime.now() + timedelta(hours=2)
    end_at = start_at + timedelta(hours=1)
    return f"{start_at:%H:%M}-{end_at:%H:%M}"


def _window_around_now() -> str:
    return f"{datetime.now() - timedelta(hours=1):%H:%M}-{datetime.now() + timedelta(hours=1):%H:%M}"


def test_plan_endpoint_and_window(fleet: Fleet) -> None:
    plan = get_json(f"{fleet.control}/v1/fill/plan?appliance=e1")
    keys = [o["key"] for o in plan["objects"]]
    assert keys and all(k.startswith(("/content/t0001/", "/content/t0002/")) for k in keys)  # licensing
    assert keys.index("/content/t0001/manifest.mpd") < keys.index("/content/t0001/480p/init.m4s")
    assert [p["id"] for p in plan["peers"]] == ["e2"]
    before = len(fleet.origin_log())
    code, out = fleet.fill("e1", "--window", _window_excluding_now())
    assert code == 0 and "outside the fill window" in str(out)
    assert len(fleet.origin_log()) == before
    assert _inventory(fleet.edges["e1"]) == {}
    assert get_json(f"{fleet.control}/v1/fill/status?appliance=e1")[0]["state"] == "waiting"


def test_fill_rate_capped_verified_and_serving(fleet: Fleet) -> None:
    e2 = fleet.edges["e2"]
    plan = get_json(f"{fleet.control}/v1/fill/plan?appliance=e2")
    total = sum(o["size"] for o in plan["objects"])
    rate = 1_000_000
    want_body = (fleet.www / "content/t0002/240p/seg-00001.m4s").read_bytes()
    served: list[int] = []
    stop = threading.Event()

    def client() -> None:  # the daemon keeps serving while the fill writes into its store
        while not stop.is_set() and len(served) < 500:
            status, _, body = _get(f"{e2.url}/content/t0002/240p/seg-00001.m4s")
            served.append(status if body == want_body else -1)
            time.sleep(0.05)

    t = threading.Thread(target=client)
    t.start()
    t0 = time.monotonic()
    try:
        code, out = fleet.fill("e2", "--now", "--rate", str(rate), "--parallel", "3", "--json")
    finally:
        elapsed = time.monotonic() - t0
        stop.set()
        t.join(10)
    assert code == 0, out
    assert isinstance(out, dict) and out["state"] == "done"
    assert out["by_source"].get("upstream", 0) >= total * 0.9
    # Rate cap: never above it (the bucket's burst is a tenth of a second), not far below; by the
    # run's own clock (its start to its last report), so process start-up on a loaded box is out.
    run_seconds = out["updated_at"] - out["started_at"]
    assert 0 < run_seconds <= elapsed
    measured = out["bytes_fetched"] / run_seconds
    assert out["bytes_fetched"] >= total * 0.9
    assert measured <= rate * 1.1, (measured, rate)
    assert measured >= rate * 0.4, (measured, rate)
    assert len(served) >= 10 and set(served) == {200}, served[:20]
    inv = _inventory(e2)
    for o in plan["objects"]:
        assert inv[o["key"]]["sha256"] == o["sha256"]
    status, headers, _ = _get(f"{e2.url}/content/t0001/720p/seg-00002.m4s")
    assert status == 200 and "hit" in headers["cache-status"]
    st = get_json(f"{fleet.control}/v1/fill/status?appliance=e2")
    assert st[0]["state"] == "done" and st[0]["storage"][0]["used"] > 0


def test_peer_preferred(fleet: Fleet) -> None:
    """e2 holds the site's titles (previous test): e1 takes them from e2, not the origin."""
    plan = get_json(f"{fleet.control}/v1/fill/plan?appliance=e1")
    keys = {o["key"] for o in plan["objects"]}
    before = len(fleet.origin_log())
    code, out = fleet.fill("e1", "--window", _window_around_now(), "--json")  # open: no --now needed
    assert code == 0, out
    assert isinstance(out, dict)
    assert set(out["by_source"]) == {"peer"}, out["by_source"]
    assert not [r for r in fleet.origin_log()[before:] if r[1] in keys]
    assert all(out["results"][k] == "stored:peer" for k in keys)
    assert keys <= set(_inventory(fleet.edges["e1"]))


def test_resume_corrupt_and_unplayable(fleet: Fleet) -> None:
    e3 = fleet.edges["e3"]
    plan = {o["key"]: o for o in get_json(f"{fleet.control}/v1/fill/plan?appliance=e3")["objects"]}
    assert BIG in plan and CORRUPT in plan and UNPLAYABLE in plan
    partial = e3.store / "flash0/fill-partial" / (hashlib.sha256(BIG.encode()).hexdigest() + ".part")
    cmd = [CDNLAB, "fill", "run", "--config", str(e3.config), "--control", fleet.control, "--now",
           "--rate", "400K", "--parallel", "1"]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (partial.exists() and partial.stat().st_size > 300_000):
            time.sleep(0.05)
        assert partial.exists(), "the big object never started"
        p.send_signal(signal.SIGTERM)  # interrupted mid-object
        assert p.wait(20) == 3
    finally:
        if p.poll() is None:
            p.kill()
    have = partial.stat().st_size
    assert 0 < have < BIG_SIZE
    assert BIG not in _inventory(e3)
    before = len(fleet.origin_log())
    code, out = fleet.fill("e3", "--now", "--json")
    assert code == 1, out  # the corrupt and the unplayable object failed
    assert isinstance(out, dict)
    # Resumed: the second run asked for the rest only (206, exactly SIZE - HAVE bytes).
    big = [r for r in fleet.origin_log()[before:] if r[1] == BIG]
    assert big == [("GET", BIG, 206, BIG_SIZE - have)], big
    inv = _inventory(e3)
    assert inv[BIG]["sha256"] == plan[BIG]["sha256"]
    assert not partial.exists()
    # Corrupt source and unplayable segment: refused, no trace in the store.
    assert out["results"][CORRUPT] == "failed" and out["results"][UNPLAYABLE] == "rejected"
    assert CORRUPT not in inv and UNPLAYABLE not in inv
    assert list((e3.store / "flash0/fill-partial").iterdir()) == []
    assert list((e3.store / "flash0/tmp").iterdir()) == []
    _, headers, _ = _get(f"{e3.url}{CORRUPT}")
    assert "fwd=miss" in headers["cache-status"], headers  # fetched now, not served from a fill
    assert any("SHA-256" in e for e in out["errors"])
    assert any("not playable" in e and "trun" in e for e in out["errors"])
    ok = [k for k in plan if k not in (CORRUPT, UNPLAYABLE)]
    assert all(inv[k]["sha256"] == plan[k]["sha256"] for k in ok)


def test_removals_are_purged(fleet: Fleet) -> None:
    """A title dropped from the content set is removed from the appliance by its next fill."""
    e1 = fleet.edges["e1"]
    assert any(k.startswith("/content/t0002/") for k in _inventory(e1))
    pop = {"t0009": 100, "t0001": 10, "t0006": 1, "t0007": 1}
    shutil.move(str(fleet.www / "content/t0002"), str(fleet.root / "t0002-retired"))
    try:
        _relicense(fleet.control, fleet.www, pop)
        deadline = time.monotonic() + 10  # the daemon's inventory report reaches the control plane
        while time.monotonic() < deadline:
            plan = get_json(f"{fleet.control}/v1/fill/plan?appliance=e1")
            if plan["remove"]:
                break
            time.sleep(0.2)
        assert {"key": None, "prefix": "/content/t0002/240p/"} in plan["remove"]
        assert {"key": "/content/t0002/manifest.mpd", "prefix": None} in plan["remove"]
        code, out = fleet.fill("e1", "--now", "--json")
        assert code == 0, out
        assert isinstance(out, dict) and out["removed"] >= 1
        assert not [k for k in _inventory(e1) if k.startswith("/content/t0002/")]
        assert any(k.startswith("/content/t0001/") for k in _inventory(e1))
    finally:
        shutil.move(str(fleet.root / "t0002-retired"), str(fleet.www / "content/t0002"))
