"""Integrity (issue 6 item 6): digests sent by the upstream are checked before anything is served
or stored; the scrubber finds a flipped byte at rest, drops the object, and the next request
refetches it."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import Edge, Nginx, edge, request, sha256, wait_until

from .edgecheck import config_toml


class DigestOrigin:
    """An origin whose objects carry whatever digest headers the test sets (right or wrong)."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.hits: dict[str, int] = {}
        origin = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                origin.hits[path] = origin.hits.get(path, 0) + 1
                if path not in origin.objects:
                    self.send_error(404)
                    return
                body, headers = origin.objects[path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "max-age=3600")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


STORAGE = '[storage]\nscrub_rate = "64M"\nscrub_pause = 0.2\n'


@pytest.fixture(scope="module")
def digest_origin() -> Iterator[DigestOrigin]:
    o = DigestOrigin()
    yield o
    o.close()


@pytest.fixture(scope="module")
def scrub_edge(tmp_path_factory: pytest.TempPathFactory, digest_origin: DigestOrigin) -> Iterator[Edge]:
    tiers = (
        '[[tiers]]\npath = "{store}/ram0"\nkind = "ram"\ncapacity = "8M"\n\n'
        '[[tiers]]\npath = "{store}/flash0"\nkind = "flash"\ncapacity = "64M"\n'
    )
    cfg = config_toml(tiers=tiers, limits='ram_object_max = "16K"', extra=STORAGE)
    with edge(tmp_path_factory.mktemp("scrub"), [digest_origin.url], config=cfg) as e:
        yield e


def metric(e: Edge, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", e.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def integrity(e: Edge, where: str) -> float:
    return metric(e, "cdnlab_integrity_failures_total", f'{{where="{where}"}}')


@pytest.mark.parametrize(
    "header",
    [
        lambda d: {"Content-Digest": f"sha-256=:{b64(d)}:"},
        lambda d: {
            "Repr-Digest": f"sha-512=:{base64.b64encode(hashlib.sha512(d).digest()).decode()}:, "
            f"sha-256=:{b64(d)}:"
        },
        lambda d: {"x-amz-checksum-sha256": b64(d)},
        lambda d: {"x-amz-meta-sha256": hashlib.sha256(d).hexdigest()},
    ],
    ids=["content-digest", "repr-digest", "amz-checksum", "amz-meta"],
)
def test_a_matching_upstream_digest_is_served_and_stored(
    scrub_edge: Edge, digest_origin: DigestOrigin, header, request_id: str = ""
) -> None:
    data = hashlib.sha256(repr(header).encode()).digest() * 4000
    path = f"/scrub/good-{abs(hash(repr(header)))}.bin"
    digest_origin.objects[path] = (data, header(data))
    status, _, body = request(scrub_edge.port, "GET", path)
    assert status == 200 and body == data
    assert scrub_edge.wait_stored(path)["sha256"] == sha256(data)


@pytest.mark.parametrize(
    "name, value",
    [
        ("Content-Digest", "sha-256=:{}:"),
        ("Repr-Digest", "sha-256=:{}:"),
        ("x-amz-checksum-sha256", "{}"),
        ("x-amz-meta-sha256", "{}"),
    ],
)
def test_a_wrong_upstream_digest_is_a_502_never_stored(
    scrub_edge: Edge, digest_origin: DigestOrigin, name: str, value: str
) -> None:
    data = name.encode() * 30000
    wrong = b64(data + b"x")
    if name == "x-amz-meta-sha256":
        wrong = hashlib.sha256(data + b"x").hexdigest()
    path = f"/scrub/bad-{name}.bin"
    digest_origin.objects[path] = (data, {name: value.format(wrong)})
    before = integrity(scrub_edge, "upstream")
    status, _, body = request(scrub_edge.port, "GET", path)
    assert status == 502, (status, len(body))
    assert data not in body
    assert path not in scrub_edge.inventory_keys()
    wait_until(lambda: integrity(scrub_edge, "upstream") == before + 1, timeout=5)  # published each second
    # Fixed upstream: the next request fetches again and is served.
    digest_origin.objects[path] = (
        data,
        {name: value.format(b64(data) if "meta" not in name else sha256(data))},
    )
    status, _, body = request(scrub_edge.port, "GET", path)
    assert status == 200 and body == data


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def _file_of(e: Edge, sha: str, tier: str) -> Path:
    for p in (e.store / tier / "objects").rglob("*"):
        if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == sha:
            return p
    raise AssertionError(f"no file with {sha} under {tier}")


@pytest.mark.parametrize("size, tier", [(200_000, "flash0"), (5_000, "ram0")])
def test_scrubber_finds_a_flipped_byte_and_the_next_request_refetches(
    scrub_edge: Edge, digest_origin: DigestOrigin, size: int, tier: str
) -> None:
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    path = f"/scrub/rot-{size}.bin"
    digest_origin.objects[path] = (data, {})
    assert request(scrub_edge.port, "GET", path)[2] == data
    entry = scrub_edge.wait_stored(path)
    assert entry["tier"] == tier.rstrip("0")
    before = integrity(scrub_edge, "scrub")
    _flip(_file_of(scrub_edge, entry["sha256"], tier), size // 3)
    wait_until(lambda: path not in scrub_edge.inventory_keys(), timeout=20)
    assert integrity(scrub_edge, "scrub") >= before + 1
    assert not any(  # the bad file is gone from disk too
        p.is_file() and p.stat().st_size == size for p in (scrub_edge.store / tier / "objects").rglob("*")
    )
    hits = digest_origin.hits[path]
    status, _, body = request(scrub_edge.port, "GET", path)
    assert status == 200 and body == data  # never the flipped bytes
    assert digest_origin.hits[path] == hits + 1  # refetched from upstream
    assert scrub_edge.wait_stored(path)["sha256"] == sha256(data)
    assert metric(scrub_edge, "cdnlab_scrub_objects_total") > 0
    assert metric(scrub_edge, "cdnlab_scrub_passes_total") > 0


def test_scrub_rate_is_bounded(tmp_path: Path, origin: Nginx) -> None:
    """At 1 MB/s the scrubber cannot have read much more than ~1 MB a second."""
    cfg = config_toml(extra='[storage]\nscrub_rate = "1M"\nscrub_pause = 0\n')
    with edge(tmp_path, [origin.url], config=cfg) as e:
        for i in range(6):
            origin.put(f"/scrub/rate-{i}.bin", 1_000_000)
            assert request(e.port, "GET", f"/scrub/rate-{i}.bin")[0] == 200
        e.wait_stored("/scrub/rate-5.bin")
        start = metric(e, "cdnlab_scrub_bytes_total")
        import time

        t0 = time.monotonic()
        time.sleep(2.0)
        got = metric(e, "cdnlab_scrub_bytes_total") - start
        elapsed = time.monotonic() - t0
        assert got <= 1_000_000 * (elapsed + 1.5), got  # rate plus one object and the burst
        assert metric(e, "cdnlab_scrub_bytes_total") > 0
