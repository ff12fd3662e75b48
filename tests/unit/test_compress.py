"""cdnlab.edge.compress and cdnlab.edge.imageopt as pure functions: negotiation among the offered
codings, what counts as text, ETags per representation, JSON minification, image optimisation."""

from __future__ import annotations

import gzip
import io
import json

import brotli
import pytest
from PIL import Image

from cdnlab.edge import compress, imageopt
from cdnlab.edge.meta import ObjectMeta
from cdnlab.policy import ImageOpt


@pytest.mark.parametrize(
    ("ae", "offered", "want"),
    [
        (None, ("br", "gzip"), "identity"),
        ("gzip, br", ("br", "gzip"), "br"),
        ("gzip, br", ("gzip",), "gzip"),  # br not offered: the next best
        ("br", ("gzip",), "identity"),
        ("br, gzip;q=0.5", ("gzip",), "gzip"),
        ("*", ("gzip",), "gzip"),  # "*" covers gzip once br is out
        ("br;q=1, *;q=0.3", ("gzip",), "gzip"),
        ("br, identity;q=0.9, gzip;q=0.5", ("gzip",), "identity"),
        ("gzip", (), "identity"),
        ("gzip", ("br",), "identity"),
        ("x-gzip", ("gzip",), "gzip"),
        ("identity;q=0, br;q=0, gzip;q=0", ("br", "gzip"), "identity"),
    ],
)
def test_negotiate_among_offered(ae: str | None, offered: tuple[str, ...], want: str) -> None:
    assert compress.negotiate(ae, offered) == want


@pytest.mark.parametrize(
    ("ctype", "path", "want"),
    [
        ("text/html; charset=utf-8", "/", True),
        ("text/css", "/a.css", True),
        ("application/javascript", "/a.js", True),
        ("application/json", "/a", True),
        ("application/problem+json", "/a", True),
        ("application/dash+xml", "/t.mpd", True),
        ("application/vnd.apple.mpegurl", "/t.m3u8", True),
        ("image/svg+xml", "/l.svg", True),
        ("application/octet-stream", "/t.m3u8", True),  # untyped manifest: by suffix
        ("application/octet-stream", "/blob.bin", False),
        ("", "/x", False),
        ("video/mp4", "/v.mp4", False),
        ("audio/mp4", "/a.m4a", False),
        ("image/jpeg", "/p.jpg", False),
        ("image/png", "/p.png", False),
        ("font/woff2", "/f.woff2", False),
        ("application/zip", "/z.zip", False),
        ("text/event-stream", "/s", False),
    ],
)
def test_compressible(ctype: str, path: str, want: bool) -> None:
    assert compress.compressible(ctype, path) is want


def test_suffixed_etag() -> None:
    assert compress.suffixed_etag('"abc"', "gzip") == '"abc-gzip"'
    assert compress.suffixed_etag('W/"abc"', "br") == 'W/"abc-br"'
    assert compress.suffixed_etag('"6553f100-2a"', "min") == '"6553f100-2a-min"'


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_encode_round_trip_and_deterministic(coding: str) -> None:
    data = b"".join(b"line %d of some text\n" % i for i in range(2000))
    out = compress.encode(data, coding)
    assert out == compress.encode(data, coding)
    assert len(out) < len(data) // 4
    assert (gzip.decompress(out) if coding == "gzip" else brotli.decompress(out)) == data
    with pytest.raises(ValueError):
        compress.encode(data, "zstd")


def test_minify_json_keeps_strings_and_numbers_exact() -> None:
    src = (
        b'{\n  "a b" : "x  y\\"  z\\n",\n  "n": [1.10, 1e5, -0.0, 12345678901234567890123],\n  "t": true\n}\n'
    )
    out = compress.minify_json(src)
    assert out == b'{"a b":"x  y\\"  z\\n","n":[1.10,1e5,-0.0,12345678901234567890123],"t":true}'
    assert json.loads(out) == json.loads(src)


def test_minify_json_unicode() -> None:
    doc = {"name": "Amélie  — 映画", "k": ["\t", " "]}
    src = json.dumps(doc, indent=2, ensure_ascii=False).encode()
    out = compress.minify_json(src)
    assert out is not None and json.loads(out) == doc and len(out) < len(src)


@pytest.mark.parametrize(
    "bad",
    [
        b'{"a": 1,}',
        b'{"a": NaN  }',
        b"[Infinity ]",
        b'{"a": "unterminated   }',
        b'\xef\xbb\xbf{ "a": 1 }',  # a BOM is not JSON (RFC 8259 §8.1)
        '{ "a": 1 }'.encode("utf-16"),
        b"\xff\xfe not utf-8",
        b"",
        b"[" * 100000 + b"]" * 100000,  # too deep for the parser: left alone, never an error
    ],
)
def test_invalid_json_left_alone(bad: bytes) -> None:
    assert compress.minify_json(bad) is None


def test_minify_json_already_minimal() -> None:
    assert compress.minify_json(b'{"a":[1,2]}') is None


def _meta(ctype: str, size: int, **headers: str) -> ObjectMeta:
    return ObjectMeta(
        size=size,
        etag='"e"',
        last_modified=0.0,
        content_type=ctype,
        stored_at=0.0,
        headers=dict(headers),
        sha256="ab",
    )


def test_plan_by_catalog_and_type() -> None:
    p = compress.plan_for("/app/site.css", _meta("text/css", 5000))
    assert p.codings == ("br", "gzip") and p.rewrite == ""
    # Segments are never compressed (catalog), whatever the type says.
    assert compress.plan_for("/t/1/seg-1.m4s", _meta("text/plain", 5000)).codings == ()
    assert compress.plan_for("/a.css", _meta("text/css", 100)).codings == ()  # under MIN_SIZE
    assert compress.plan_for("/a.css", _meta("text/css", 5000, **{"content-encoding": "gzip"})).codings == ()
    assert compress.plan_for("/a.bin", _meta("application/octet-stream", 5000)).codings == ()
    # /api/ minifies JSON (packaged catalog).
    p = compress.plan_for("/api/v1/titles", _meta("application/json", 5000))
    assert p.rewrite == "minify" and p.codings == ("br", "gzip")
    done = _meta("application/json", 5000)
    done.etag = '"e-min"'
    assert compress.plan_for("/api/v1/titles", done).rewrite == ""
    # Image optimisation is off in the packaged catalog.
    assert compress.plan_for("/images/a.jpg", _meta("image/jpeg", 5000)).rewrite == ""


def _image(fmt: str, size: tuple[int, int], mode: str = "RGB") -> bytes:
    img = Image.new(mode, size, (200, 30, 60) if mode == "RGB" else (200, 30, 60, 128))
    for x in range(0, size[0], 5):
        img.putpixel((x, x * size[1] // size[0]), (0, 0, 0) if mode == "RGB" else (0, 0, 0, 255))
    out = io.BytesIO()
    img.save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def test_image_resized_and_recompressed() -> None:
    data = _image("JPEG", (1000, 500))
    out, ctype = imageopt.optimise(data, ImageOpt(max_width=200, quality=60)) or (b"", "")
    assert ctype == "image/jpeg"
    with Image.open(io.BytesIO(out)) as img:
        assert img.size == (200, 100) and img.format == "JPEG"


def test_image_to_webp_and_png_alpha_to_jpeg() -> None:
    data = _image("PNG", (300, 300), "RGBA")
    out, ctype = imageopt.optimise(data, ImageOpt(max_width=100, format="webp")) or (b"", "")
    assert ctype == "image/webp"
    with Image.open(io.BytesIO(out)) as img:
        assert img.format == "WEBP" and img.size == (100, 100)
    out, ctype = imageopt.optimise(data, ImageOpt(max_width=100, format="jpeg")) or (b"", "")
    with Image.open(io.BytesIO(out)) as img:
        assert ctype == "image/jpeg" and img.mode == "RGB"


def test_narrow_image_only_kept_if_smaller() -> None:
    data = _image("PNG", (20, 20))
    opt = ImageOpt(max_width=100)
    first = imageopt.optimise(data, opt)
    if first is not None:  # re-encoded smaller: optimising it again gains nothing
        assert len(first[0]) < len(data)
        data = first[0]
    assert imageopt.optimise(data, opt) is None


@pytest.mark.parametrize(
    "bad",
    [b"", b"not an image at all", _image("JPEG", (100, 100))[:300], b"\x89PNG\r\n\x1a\n" + b"\x00" * 100],
)
def test_corrupt_image_raises_image_error(bad: bytes) -> None:
    with pytest.raises(imageopt.ImageError):
        imageopt.optimise(bad, ImageOpt(max_width=10))


def test_decompression_bomb_refused() -> None:
    img = Image.new("1", (10000, 10000))
    out = io.BytesIO()
    img.save(out, "PNG")
    with pytest.raises(imageopt.ImageError):
        imageopt.optimise(out.getvalue(), ImageOpt(max_width=10))


def test_content_only_drops_variants() -> None:
    from cdnlab.edge.vary import variant_key

    base = "/content/t1/manifest.mpd"
    snap = {
        base: (100, "a", "ram"),
        variant_key(base, ("accept-encoding",), {"accept-encoding": "gzip"}): (40, "b", "ram"),
        "/content/t1/seg-00001.m4s": (9, "c", "flash"),
    }
    assert compress.content_only(snap) == {
        base: (100, "a", "ram"),
        "/content/t1/seg-00001.m4s": (9, "c", "flash"),
    }
