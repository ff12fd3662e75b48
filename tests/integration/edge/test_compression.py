"""Compression and image optimisation, end to end against a real nginx origin (docs/edge.md,
"Compression and image optimisation"): gzip/br negotiation, each variant stored once, ranges and
validators per variant, media and pre-encoded bodies left alone, JSON minified and images resized
when stored (per the policy catalog, here a copy with image optimisation switched on)."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import brotli
import pytest
from PIL import Image

from helpers import Edge, Nginx, edge, nginx, request, simultaneous, wait_until

from .edgecheck import config_toml, ours

ORIGIN = """
        location /cmp/pre/ { add_header Content-Encoding gzip; }
        location /cmp/short/ { add_header Cache-Control "max-age=1"; }
        location /cmp/swr/ { add_header Cache-Control "max-age=1, stale-while-revalidate=60"; }
        location /cmp/change/ { open_file_cache off; add_header Cache-Control "max-age=3"; }
        location /cmp/keep/ { add_header Cache-Control "public, max-age=600, no-transform"; }
        location /api/cmp/keep/ { add_header Cache-Control "public, max-age=600, no-transform"; }
        location /cmp/svg/ { types { image/svg+xml svg; } }
        location /cmp/xml/ { types { application/xml xml; } }
        location /cmp/hls/ { types { application/vnd.apple.mpegurl m3u8; } }
"""

CATALOG = Path(__file__).resolve().parents[3] / "src/cdnlab/policy/catalog.toml"
TEXT = ("".join(f".rule-{i} {{ color: #{i:06x}; margin: {i % 17}px; }}\n" for i in range(600))).encode()


@pytest.fixture(scope="module")
def cmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Nginx, Edge]]:
    base = tmp_path_factory.mktemp("compression")
    # The packaged catalog with image optimisation switched on for the image class.
    cat = CATALOG.read_text().replace(
        'patterns = ["/images/*"]\n',
        'patterns = ["/images/*"]\nimage = { max_width = 64, quality = 70 }\n',
        1,
    )
    assert "max_width = 64" in cat
    (base / "catalog.toml").write_text(cat)
    cfg = config_toml(
        workers=2,
        tiers='[[tiers]]\npath = "{store}/ram0"\nkind = "ram"\ncapacity = "64M"\n'
        '[[tiers]]\npath = "{store}/flash0"\nkind = "flash"\ncapacity = "1G"\n',
        limits='ram_object_max = "64K"',
        admin='purge_token = "cmp-token"',
    )
    old = os.environ.get("CDNLAB_CATALOG")
    os.environ["CDNLAB_CATALOG"] = str(base / "catalog.toml")
    try:
        with (
            nginx(base / "origin", extra=ORIGIN) as origin,
            edge(base / "edge", [origin.url], config=cfg) as e,
        ):
            if old is None:
                os.environ.pop("CDNLAB_CATALOG")
            else:
                os.environ["CDNLAB_CATALOG"] = old
            yield origin, e
    finally:
        if old is None:
            os.environ.pop("CDNLAB_CATALOG", None)


def get(e: Edge, path: str, ae: str | None = None, **headers: str) -> tuple[int, dict[str, str], bytes]:
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    if ae is not None:
        h["Accept-Encoding"] = ae
    return request(e.port, "GET", path, headers=h)


def decode(headers: dict[str, str], body: bytes) -> bytes:
    ce = headers.get("content-encoding")
    if ce == "gzip":
        return gzip.decompress(body)
    if ce == "br":
        return brotli.decompress(body)
    assert ce is None, ce
    return body


def warm(origin: Nginx, e: Edge, path: str, data: bytes) -> None:
    """Put ``path`` on the origin and have the edge store it (one miss)."""
    origin.put(path, data)
    status, h, body = get(e, path)
    assert status == 200 and body == data, (status, h)
    e.wait_stored(path)


def counter(e: Edge, name: str, **labels: str) -> float:
    sel = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}\{{{sel}\}} (\S+)$", e.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def settled(e: Edge, name: str, **labels: str) -> float:
    """A counter once the workers' published snapshots (once a second) have caught up."""
    last = counter(e, name, **labels)
    for _ in range(10):
        time.sleep(1.1)
        now = counter(e, name, **labels)
        if now == last:
            return now
        last = now
    return last


def variant_keys(e: Edge, path: str) -> list[str]:
    return [k for k in e.inventory_keys() if k.startswith(path + "\x00")]


MATRIX = [
    (None, None),
    ("", None),
    ("gzip", "gzip"),
    ("br", "br"),
    ("gzip, br", "br"),  # equal weights: br
    ("gzip, deflate, br, zstd", "br"),
    ("br;q=0.5, gzip", "gzip"),
    ("x-gzip", "gzip"),
    ("GZIP;Q=0.8", "gzip"),
    ("deflate", None),
    ("identity", None),
    ("*", "br"),
    ("*;q=0, gzip", "gzip"),
    ("br;q=0, gzip;q=0", None),
    ("identity;q=0, gzip;q=0.1", "gzip"),
    ("identity;q=0", None),  # nothing acceptable: identity anyway (RFC 9110 §12.5.3 allows it)
    ("br;q=0, *", "gzip"),
    ("gzip;q=1.5, br;q=0.4", "br"),  # a malformed qvalue drops that member
]


@pytest.mark.parametrize(("ae", "want"), MATRIX)
def test_negotiation_matrix(cmp: tuple[Nginx, Edge], ae: str | None, want: str | None) -> None:
    origin, e = cmp
    path = "/cmp/matrix.css"
    if not (origin.root / path.lstrip("/")).exists():
        warm(origin, e, path, TEXT)
    for _ in range(2):  # the first may build the variant; both must be right
        status, h, body = get(e, path, ae)
        assert status == 200
        assert h.get("content-encoding") == want, (ae, h)
        assert "accept-encoding" in h["vary"].lower()
        assert decode(h, body) == TEXT
        assert int(h["content-length"]) == len(body)
        etag = h["etag"]
        if want is None:
            assert not etag.endswith(('-gzip"', '-br"'))
        else:
            assert etag.endswith(f'-{want}"')
        assert ours(h) == {"hit": True}
    assert origin.fetches(path) == 1


def test_each_variant_stored_once(cmp: tuple[Nginx, Edge]) -> None:
    origin, e = cmp
    path = "/cmp/once.js"
    data = TEXT.replace(b".rule", b"var x")
    origin.put(path, data)
    built = settled(e, "cdnlab_compression_variants_built_total", coding="gzip")
    # The miss that wants gzip waits for the commit and gets the variant made from the stored body.
    status, h, body = get(e, path, "gzip")
    assert status == 200 and h["content-encoding"] == "gzip" and gzip.decompress(body) == data
    assert ours(h) == {"fwd": "miss", "stored": True}
    assert "accept-encoding" in h["vary"].lower()
    e.wait_stored(path)
    for _ in range(4):
        status, h, body = get(e, path, "gzip")
        assert status == 200 and h["content-encoding"] == "gzip"
        assert ours(h) == {"hit": True}
        assert gzip.decompress(body) == data
        assert len(body) < len(data) // 3
    assert origin.fetches(path) == 1
    keys = variant_keys(e, path)
    assert len(keys) == 1 and keys[0].endswith("gzip"), keys
    stored = e.inventory_keys()[keys[0]]
    assert stored["size"] == len(body)
    assert settled(e, "cdnlab_compression_variants_built_total", coding="gzip") == built + 1
    assert counter(e, "cdnlab_compression_variants_served_total", coding="gzip") >= 5
    assert counter(e, "cdnlab_compression_bytes_saved_total", coding="gzip") >= 5 * (len(data) - len(body))


def test_miss_without_a_coding_streams_identity(cmp: tuple[Nginx, Edge]) -> None:
    origin, e = cmp
    path = "/cmp/plainmiss.css"
    origin.put(path, TEXT)
    status, h, body = get(e, path)
    assert status == 200 and body == TEXT and "content-encoding" not in h
    assert ours(h) == {"fwd": "miss", "stored": True}
    assert "accept-encoding" in h["vary"].lower()


def test_concurrent_misses_one_fetch_one_variant(cmp: tuple[Nginx, Edge]) -> None:
    origin, e = cmp
    path = "/cmp/rush.css"
    data = TEXT * 3
    origin.put(path, data)
    results = simultaneous(e.port, [(path, {"Accept-Encoding": "gzip"})] * 16)
    for r in results:
        assert not isinstance(r, Exception), r
        assert r.status == 200 and decode(r.headers, r.body) == data
    assert origin.fetches(path) == 1  # the other worker waits on the fetch lock
    e.wait_stored(path)
    assert len(variant_keys(e, path)) == 1


def test_concurrent_requests_build_one_variant(cmp: tuple[Nginx, Edge]) -> None:
    origin, e = cmp
    path = "/cmp/many.html"
    data = b"<html><body>" + TEXT * 20 + b"</body></html>"
    warm(origin, e, path, data)
    built = settled(e, "cdnlab_compression_variants_built_total", coding="br")
    results = simultaneous(e.port, [(path, {"Accept-Encoding": "br, gzip"})] * 32)
    coded = 0
    for r in results:
        assert not isinstance(r, Exception), r
        assert r.status == 200
        h = r.headers
        # The worker that loses the race for the build lock answers identity meanwhile.
        assert h.get("content-encoding") in ("br", None)
        assert decode(h, r.body) == data
        coded += h.get("content-encoding") == "br"
    assert coded >= 1
    assert settled(e, "cdnlab_compression_variants_built_total", coding="br") == built + 1
    assert len(variant_keys(e, path)) == 1
    assert origin.fetches(path) == 1


def test_media_small_and_binary_not_compressed(cmp: tuple[Nginx, Edge]) -> None:
    origin, e = cmp
    for path, data in (
        ("/cmp/clip.mp4", TEXT),  # compressible bytes, but video/mp4
        ("/cmp/blob.bin", TEXT),  # application/octet-stream
        ("/cmp/photo.png", TEXT),  # image/png
        ("/cmp/tiny.css", b"a { color: red }\n" * 10),  # under 256 bytes
    ):
        warm(origin, e, path, data)
        for _ in range(2):
            status, h, body = get(e, path, "gzip, br")
            assert status == 200 and body == data, path
            assert "content-encoding" not in h, path
            assert "vary" not in h, path
        assert variant_keys(e, path) == []


def test_already_encoded_upstream_not_compressed_again(cmp: tuple[Nginx, Edge]) -> None:
    origin, e = cmp
    path = "/cmp/pre/data.js"
    encoded = gzip.compress(TEXT, mtime=0)
    origin.put(path, encoded)
    for ae in ("gzip, br", "br", "gzip, br"):
        status, h, body = get(e, path, ae)
        assert status == 200
        assert h["content-encoding"] == "gzip"
        assert body == encoded  # as the upstream sent it, not gzip of gzip, not br of gzip
    e.wait_stored(path)
    assert variant_keys(e, path) == []
    assert origin.fetches(path) == 1


def test_revalidated_object_keeps_its_variant(cmp: tuple[Nginx, Edge]) -> None:
    """A 304 refreshes the identity without changing its bytes: the stored variant still serves."""
    origin, e = cmp
    path = "/cmp/short/app.js"
    origin.put(path, TEXT)
    _, h, first = get(e, path, "gzip")
    assert h["content-encoding"] == "gzip"
    e.wait_stored(path)
    time.sleep(1.5)
    status, h, body = get(e, path, "gzip")
    assert status == 200 and h["content-encoding"] == "gzip" and body == first
    assert ours(h).get("fwd") == "stale" and ours(h).get("fwd-status") == "304", h["cache-status"]
    assert origin.fetches(path) == 2
    assert len(variant_keys(e, path)) == 1


def test_changed_content_after_purge_gets_a_new_variant(cmp: tuple[Nginx, Edge]) -> None:
    origin, e = cmp
    path = "/cmp/purged/app.css"
    warm(origin, e, path, TEXT)
    _, _, old = get(e, path, "gzip")
    assert gzip.decompress(old) == TEXT
    # Same size (nginx's open_file_cache keeps the old length for a minute); nginx may even keep
    # the old ETag: the variant is tied to the identity's SHA-256, not to the ETag.
    new = TEXT.replace(b"margin", b"MARGIN")
    origin.put(path, new, mtime=1_800_000_000.0)
    auth = {"Authorization": "Bearer cmp-token"}
    assert e.post("/purge", json.dumps({"key": path}).encode(), auth) == (200, {"purged": 1})
    assert variant_keys(e, path) == []  # a key's variants go with it
    for _ in range(2):
        status, h, body = get(e, path, "gzip")
        assert status == 200 and h["content-encoding"] == "gzip"
        assert gzip.decompress(body) == new  # never the variant of the old bytes
    assert len(variant_keys(e, path)) == 1
    # A purge by prefix takes the variants along.
    assert e.post("/purge", json.dumps({"prefix": "/cmp/purged/"}).encode(), auth)[0] == 200
    assert variant_keys(e, path) == [] and path not in e.inventory_keys()


def test_stale_while_revalidate_answers_with_the_variant(cmp: tuple[Nginx, Edge]) -> None:
    origin, e = cmp
    path = "/cmp/swr/app.css"
    origin.put(path, TEXT)
    _, h, first = get(e, path, "br")
    assert h["content-encoding"] == "br"
    e.wait_stored(path)
    time.sleep(1.5)
    status, h, body = get(e, path, "br")
    assert status == 200 and h["content-encoding"] == "br" and body == first
    assert ours(h) == {"hit": True, "detail": "stale-while-revalidate"}, h["cache-status"]
    assert "accept-encoding" in h["vary"].lower()


def test_changed_upstream_bytes_never_get_the_old_variant(cmp: tuple[Nginx, Edge]) -> None:
    """The identity is refetched with new bytes (200 to the revalidation): the stored variant, made
    from the old bytes, is never served; a new one is made from the new bytes."""
    origin, e = cmp
    path = "/cmp/change/app.css"
    origin.put(path, TEXT)
    _, h, old = get(e, path, "gzip")
    assert gzip.decompress(old) == TEXT
    e.wait_stored(path)
    new = TEXT.replace(b"margin", b"padding")
    origin.put(path, new, mtime=1_800_000_000.0)
    time.sleep(3.5)  # stale; the refetched copy then stays fresh for 3 s, time for a loaded CI box
    for _ in range(2):
        status, h2, body = get(e, path, "gzip")
        assert status == 200 and h2["content-encoding"] == "gzip"
        assert gzip.decompress(body) == new
        assert h2["etag"] != h["etag"]
    assert origin.fetches(path) == 2
    assert len(variant_keys(e, path)) == 1


def test_no_transform_respected(cmp: tuple[Nginx, Edge]) -> None:
    """RFC 9110 §7.7: Cache-Control: no-transform forbids compressing or rewriting the content."""
    origin, e = cmp
    pretty = json.dumps({"a": list(range(200))}, indent=4).encode()
    for path, data in (("/cmp/keep/style.css", TEXT), ("/api/cmp/keep/doc.json", pretty)):
        warm(origin, e, path, data)
        for _ in range(2):
            status, h, body = get(e, path, "gzip, br")
            assert status == 200 and body == data and "content-encoding" not in h, path
        assert variant_keys(e, path) == []


def test_range_applies_to_the_gzip_variant(cmp: tuple[Nginx, Edge]) -> None:
    origin, e = cmp
    path = "/cmp/range.css"
    warm(origin, e, path, TEXT)
    _, h, whole = get(e, path, "gzip")
    assert h["content-encoding"] == "gzip"
    status, h, part = get(e, path, "gzip", Range="bytes=10-99")
    assert status == 206
    assert h["content-encoding"] == "gzip"
    assert h["content-range"] == f"bytes 10-99/{len(whole)}"
    assert part == whole[10:100]
    status, h, tail = get(e, path, "gzip", Range="bytes=-20")
    assert status == 206 and tail == whole[-20:]
    # If-Range with the identity ETag does not match the gzip representation: whole variant.
    _, hid, _ = get(e, path)
    status, h, body = get(e, path, "gzip", Range="bytes=0-9", If_Range=hid["etag"])
    assert status == 200 and body == whole
    status, h, body = get(e, path, "gzip", Range="bytes=0-9", If_Range=h["etag"])
    assert status == 206 and body == whole[:10]
    status, h, _ = get(e, path, "gzip", Range=f"bytes={len(whole)}-")
    assert status == 416 and h["content-range"] == f"bytes */{len(whole)}"


def test_etag_per_variant_and_if_none_match(cmp: tuple[Nginx, Edge]) -> None:
    origin, e = cmp
    path = "/cmp/etag.json"
    data = json.dumps({"k": list(range(300))}).encode()
    warm(origin, e, path, data)
    tags = {}
    for ae in (None, "gzip", "br"):
        _, h, _ = get(e, path, ae)
        tags[ae] = h["etag"]
    assert len(set(tags.values())) == 3
    assert tags["gzip"] == tags[None][:-1] + '-gzip"'
    assert tags["br"] == tags[None][:-1] + '-br"'
    status, h, body = get(e, path, "gzip", If_None_Match=tags["gzip"])
    assert status == 304 and body == b"" and h["etag"] == tags["gzip"]
    assert "accept-encoding" in h["vary"].lower()
    # The gzip validator does not match the br or identity representation.
    status, h, body = get(e, path, "br", If_None_Match=tags["gzip"])
    assert status == 200 and h["content-encoding"] == "br" and brotli.decompress(body) == data
    status, h, body = get(e, path, None, If_None_Match=tags["gzip"])
    assert status == 200 and body == data
    status, h, _ = get(e, path, None, If_None_Match=tags[None])
    assert status == 304
    status, h, _ = get(e, path, "gzip", If_None_Match=f'"nope", {tags["gzip"]}')
    assert status == 304


def test_head_gives_the_variant_length(cmp: tuple[Nginx, Edge]) -> None:
    origin, e = cmp
    path = "/cmp/head.css"
    warm(origin, e, path, TEXT)
    _, _, whole = get(e, path, "br")
    status, hh, body = request(e.port, "HEAD", path, headers={"Accept-Encoding": "br"})
    assert status == 200 and body == b""
    assert hh["content-encoding"] == "br" and int(hh["content-length"]) == len(whole)


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/cmp/title.mpd", "application/dash+xml"),
        ("/cmp/hls/master.m3u8", "application/vnd.apple.mpegurl"),
        ("/cmp/plain/master.m3u8", "application/octet-stream"),  # untyped manifest: by suffix
        ("/cmp/svg/logo.svg", "image/svg+xml"),
        ("/cmp/xml/feed.xml", "application/xml"),
        ("/cmp/page.html", "text/html"),
    ],
)
def test_text_types_are_compressed(cmp: tuple[Nginx, Edge], path: str, ctype: str) -> None:
    origin, e = cmp
    data = b"#EXTM3U\n" + b"".join(b"#EXTINF:4.0,\nseg-%05d.m4s\n" % i for i in range(200))
    warm(origin, e, path, data)
    status, h, body = get(e, path, "gzip")
    assert status == 200 and h["content-type"] == ctype
    assert h["content-encoding"] == "gzip" and gzip.decompress(body) == data


def test_json_minified_when_stored(cmp: tuple[Nginx, Edge]) -> None:
    origin, e = cmp
    path = "/api/cmp/catalog.json"
    titles = [{"id": i, "name": f"Title  {i}", "tags": ["a b", "c\td"], "score": 0.1 + i} for i in range(50)]
    doc = {"titles": titles, "exact": 1.10, "big": 12345678901234567890}
    pretty = (json.dumps(doc, indent=4, ensure_ascii=False) + "\n").encode()
    warm(origin, e, path, pretty)
    # Rewritten in the background once stored, before anyone asks again.
    wait_until(lambda: e.inventory_keys()[path]["size"] < len(pretty))
    status, h, body = get(e, path)
    assert status == 200
    assert len(body) < len(pretty) * 0.8
    assert json.loads(body) == doc
    assert b"\n" not in body and b'"Title  3"' in body  # whitespace inside strings kept
    assert h["etag"].endswith('-min"')
    # Its compressed variants are made from the minified body.
    _, hz, z = get(e, path, "gzip")
    assert hz["content-encoding"] == "gzip" and gzip.decompress(z) == body
    assert origin.fetches(path) == 1
    wait_until(lambda: counter(e, "cdnlab_rewrites_total", kind="json", result="ok") >= 1)


def test_invalid_json_left_untouched(cmp: tuple[Nginx, Edge]) -> None:
    origin, e = cmp
    path = "/api/cmp/broken.json"
    bad = b'{"a": [1, 2,\n   3,  "unterminated' + b" " * 400
    warm(origin, e, path, bad)
    for _ in range(3):
        status, h, body = get(e, path)
        assert status == 200 and body == bad
        assert not h["etag"].endswith('-min"')


def _jpeg(width: int, height: int) -> bytes:
    img = Image.new("RGB", (width, height))
    for x in range(0, width, 8):
        for y in range(0, height, 8):
            img.paste((x % 256, y % 256, (x * y) % 256), (x, y, x + 8, y + 8))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=95)
    return out.getvalue()


def test_image_resized_when_stored(cmp: tuple[Nginx, Edge]) -> None:
    origin, e = cmp
    path = "/images/cmp/wide.jpg"
    original = _jpeg(400, 200)
    warm(origin, e, path, original)
    wait_until(lambda: e.inventory_keys()[path]["size"] < len(original))
    status, h, body = get(e, path, "gzip, br")
    assert status == 200 and h["content-type"] == "image/jpeg"
    assert "content-encoding" not in h  # JPEG is never recompressed
    with Image.open(io.BytesIO(body)) as img:
        assert img.format == "JPEG" and img.size == (64, 32)
    assert len(body) < len(original)
    assert h["etag"].endswith('-img"')
    assert origin.fetches(path) == 1
    # Narrow enough already: not scaled, only recompressed at the class's quality (never larger).
    small = "/images/cmp/narrow.jpg"
    data = _jpeg(48, 48)
    warm(origin, e, small, data)
    for _ in range(2):
        body = get(e, small)[2]
        with Image.open(io.BytesIO(body)) as img:
            assert img.size == (48, 48)
        assert len(body) <= len(data)


def test_corrupt_image_stored_unmodified(cmp: tuple[Nginx, Edge]) -> None:
    origin, e = cmp
    path = "/images/cmp/broken.jpg"
    bad = _jpeg(400, 200)[:600] + b"\x00" * 2000  # a JPEG header, then nothing decodable
    warm(origin, e, path, bad)
    for _ in range(3):
        status, _, body = get(e, path)
        assert status == 200 and body == bad
    assert path in e.inventory_keys()
    wait_until(lambda: counter(e, "cdnlab_rewrites_total", kind="image", result="corrupt") >= 1)
    assert "image left as stored" in e.log_text()
    assert origin.fetches(path) == 1


def test_zz_no_internal_errors_logged(cmp: tuple[Nginx, Edge]) -> None:
    """Last in this module: nothing above made a worker log a traceback."""
    _, e = cmp
    log = e.log_text()
    assert "Traceback" not in log and "compression job" not in log, log[-3000:]
