"""Byte ranges (RFC 9110 §14; issue 2, daemon point 3) on a cached object and on a cold one."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator

import pytest

from helpers import Edge, Nginx, RawConn, RawResponse, http_date, sha256

from .edgecheck import assert_common, assert_hit, assert_miss_stored

SIZE = 10_000
PATH = "/ranges/obj.bin"
MTIME = 1_700_000_000.0


@pytest.fixture(scope="module")
def obj(main_edge: Edge, origin: Nginx) -> bytes:
    data = origin.put(PATH, SIZE)
    with RawConn(main_edge.port) as c:
        assert c.get(PATH).status == 200
    main_edge.wait_stored(PATH)
    return data


@pytest.fixture
def conn(main_edge: Edge) -> Iterator[RawConn]:
    with RawConn(main_edge.port) as c:
        yield c


def multipart(resp: RawResponse) -> list[tuple[str, str, bytes]]:
    """(Content-Type, Content-Range, bytes) of each part, parsed with the email package."""
    ctype = resp.headers["content-type"]
    assert ctype.startswith("multipart/byteranges; boundary="), ctype
    msg = email.message_from_bytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + resp.body, policy=email.policy.HTTP
    )
    assert msg.is_multipart()
    parts = []
    for part in msg.iter_parts():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parts.append((str(part["Content-Type"]), str(part["Content-Range"]), payload))
    return parts


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=0-0", 0, 0),
        ("bytes=9999-9999", 9999, 9999),
        ("bytes=1234-", 1234, SIZE - 1),
        ("bytes=-500", SIZE - 500, SIZE - 1),
        ("bytes=-1", SIZE - 1, SIZE - 1),
        ("bytes=-20000", 0, SIZE - 1),  # suffix longer than the object: all of it
        ("bytes=9000-123456", 9000, SIZE - 1),  # last-pos past the end is clipped
        ("BYTES=5-9", 5, 9),  # the unit is case-insensitive (§14.1)
        ("bytes=9500-, 20000-30000", 9500, SIZE - 1),  # one satisfiable spec among others
    ],
)
def test_single_range(obj: bytes, conn: RawConn, spec: str, start: int, end: int) -> None:
    r = conn.get(PATH, {"Range": spec})
    assert r.status == 206, (spec, r.status)
    assert r.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert r.headers["content-length"] == str(end - start + 1)
    assert r.body == obj[start : end + 1]
    assert r.headers["content-type"] == "application/octet-stream"
    assert_common(r)
    assert_hit(r.headers)


def test_multipart_byteranges(obj: bytes, conn: RawConn) -> None:
    r = conn.get(PATH, {"Range": "bytes=0-9,100-199,-10"})
    assert r.status == 206
    assert "content-range" not in r.headers
    assert_common(r)
    parts = multipart(r)
    want = [(0, 9), (100, 199), (SIZE - 10, SIZE - 1)]
    assert len(parts) == len(want)
    for (ctype, crange, payload), (a, b) in zip(parts, want, strict=True):
        assert ctype == "application/octet-stream"
        assert crange == f"bytes {a}-{b}/{SIZE}"
        assert payload == obj[a : b + 1]


def test_multipart_out_of_order_keeps_request_order(obj: bytes, conn: RawConn) -> None:
    r = conn.get(PATH, {"Range": "bytes=5000-5099, 0-49"})
    assert r.status == 206
    parts = multipart(r)
    assert [c for _, c, _ in parts] == [f"bytes 5000-5099/{SIZE}", f"bytes 0-49/{SIZE}"]
    assert [p for _, _, p in parts] == [obj[5000:5100], obj[0:50]]


def test_small_overlapping_ranges_serve_exactly_the_bytes_asked(obj: bytes, conn: RawConn) -> None:
    """Overlapping ranges may be coalesced (§14.3); whatever the shape, every byte must be right and
    the union of what was asked must be covered."""
    r = conn.get(PATH, {"Range": "bytes=0-100,50-150"})
    assert r.status == 206
    if r.headers["content-type"].startswith("multipart/"):
        parts = [(c, p) for _, c, p in multipart(r)]
    else:
        parts = [(r.headers["content-range"], r.body)]
    covered: set[int] = set()
    for crange, payload in parts:
        a, b = (int(x) for x in crange.removeprefix("bytes ").split("/")[0].split("-"))
        assert crange.endswith(f"/{SIZE}")
        assert payload == obj[a : b + 1]
        covered.update(range(a, b + 1))
    assert covered == set(range(0, 151))


@pytest.mark.parametrize(
    "spec",
    [
        ",".join(f"{i * 10}-{i * 10}" for i in range(50)),  # many small ranges
        "0-,0-,0-,0-",  # the whole object again and again (CVE-2011-3192)
        "0-5999,1000-6999",  # overlapping, more bytes than the object
        "1-2,3-4,5-6,7-8,9-10,11-12,13-14,15-16,17-18,19-20,21-22,23-24,25-26,27-28,29-30,31-32,33-34",
    ],
    ids=["50-ranges", "whole-x4", "overlap-oversum", "17-ranges"],
)
def test_abusive_range_sets_get_the_full_200(obj: bytes, conn: RawConn, spec: str) -> None:
    r = conn.get(PATH, {"Range": f"bytes={spec}"})
    assert r.status == 200
    assert "content-range" not in r.headers
    assert r.body == obj
    assert_common(r)


@pytest.mark.parametrize("spec", ["bytes=10000-", "bytes=20000-30000", "bytes=-0", "bytes=10000-,12000-"])
def test_unsatisfiable_gives_416_with_length(obj: bytes, conn: RawConn, spec: str) -> None:
    r = conn.get(PATH, {"Range": spec})
    assert r.status == 416
    assert r.headers["content-range"] == f"bytes */{SIZE}"
    assert_common(r)
    # The connection is still good.
    assert conn.get(PATH).body == obj


@pytest.mark.parametrize("spec", ["bytes=abc", "items=0-9", "bytes=9-5", "bytes 0-9", "bytes=--5"])
def test_invalid_range_is_ignored(obj: bytes, conn: RawConn, spec: str) -> None:
    r = conn.get(PATH, {"Range": spec})
    assert r.status == 200 and r.body == obj


def test_if_range(obj: bytes, conn: RawConn, origin: Nginx) -> None:
    etag = origin.etag(PATH)
    rng = {"Range": "bytes=100-199"}
    cases = [
        (etag, 206),
        ('"something-else"', 200),
        (f"W/{etag}", 200),  # If-Range needs a strong match (§13.1.5)
        (http_date(MTIME), 206),  # exactly Last-Modified
        (http_date(MTIME - 3600), 200),
        (http_date(MTIME + 3600), 200),
    ]
    for value, want in cases:
        r = conn.get(PATH, {**rng, "If-Range": value})
        assert r.status == want, (value, r.status)
        assert r.body == (obj[100:200] if want == 206 else obj), value


def test_head_ignores_range(obj: bytes, conn: RawConn) -> None:
    """RFC 9110 §14.2: GET is the only method for which range handling is defined; a server MUST
    ignore Range on other methods, so HEAD answers as a plain 200."""
    r = conn.get(PATH, {"Range": "bytes=0-9"}, method="HEAD")
    assert r.status == 200, r.head
    assert r.headers["content-length"] == str(SIZE)
    assert "content-range" not in r.headers


def test_range_on_cold_object_then_whole_object_is_a_hit(main_edge: Edge, origin: Nginx) -> None:
    path = "/ranges/cold.bin"
    data = origin.put(path, 400_000)
    with RawConn(main_edge.port) as c:
        r = c.get(path, {"Range": "bytes=300000-300999"})
        assert r.status == 206
        assert r.headers["content-range"] == f"bytes 300000-300999/{len(data)}"
        assert r.body == data[300000:301000]
        assert_miss_stored(r.headers)
        entry = main_edge.wait_stored(path)
        assert entry["size"] == len(data) and entry["sha256"] == sha256(data)
        full = c.get(path)
        assert full.status == 200 and full.body == data
        assert_hit(full.headers)
        tail = c.get(path, {"Range": "bytes=-10"})
        assert tail.body == data[-10:]
    assert origin.fetches(path) == 1


def test_multipart_on_cold_object(main_edge: Edge, origin: Nginx) -> None:
    path = "/ranges/cold-multi.bin"
    data = origin.put(path, 300_000)
    with RawConn(main_edge.port) as c:
        r = c.get(path, {"Range": "bytes=0-999,250000-250999"})
    assert r.status == 206
    parts = multipart(r)
    assert [(c, p) for _, c, p in parts] == [
        (f"bytes 0-999/{len(data)}", data[:1000]),
        (f"bytes 250000-250999/{len(data)}", data[250000:251000]),
    ]
    assert origin.fetches(path) == 1
