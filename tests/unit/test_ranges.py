"""Byte ranges (RFC 9110 §14) and the CVE-2011-3192 defence as nginx applies it.

Property checks use an independent model: the set of byte offsets a range-spec names, computed
straight from the §14.1.2 definitions, and the stdlib email parser for multipart bodies.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import random
import re

import pytest

from cdnlab.edge.ranges import (
    ByteRange,
    RangeDecision,
    content_range,
    multipart_content_type,
    multipart_layout,
    new_boundary,
    parse_range,
    unsatisfied_range,
)

R = ByteRange


def partial(*pairs: tuple[int, int]) -> RangeDecision:
    return RangeDecision("partial", tuple(R(a, b) for a, b in pairs))


FULL = RangeDecision("full", ())
UNSAT = RangeDecision("unsatisfiable", ())


def test_byte_range_length_is_inclusive() -> None:
    assert R(0, 0).length == 1
    assert R(500, 999).length == 500


# --- RFC 9110 §14.1.2 examples, for a representation of length 10000 ---


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-499", partial((0, 499))),  # the first 500 bytes
        ("bytes=500-999", partial((500, 999))),  # the second 500 bytes
        ("bytes=-500", partial((9500, 9999))),  # the final 500 bytes
        ("bytes=9500-", partial((9500, 9999))),  # the final 500 bytes
        ("bytes=0-0,-1", partial((0, 0), (9999, 9999))),  # the first and last bytes only
        # "Other valid (but not canonical) specifications of the second 500 bytes": a server
        # MAY coalesce (§14.3), and we do.
        ("bytes=500-600,601-999", partial((500, 999))),
        ("bytes=500-700,601-999", partial((500, 999))),
    ],
)
def test_rfc9110_14_1_2_examples(header: str, expected: RangeDecision) -> None:
    assert parse_range(header, 10000) == expected


def test_rfc9110_14_1_2_last_pos_beyond_length_means_remainder() -> None:
    # "If the last-pos value is absent, or if the value is greater than or equal to the current
    # length of the representation data, the byte range is interpreted as the remainder"
    assert parse_range("bytes=9500-20000", 10000) == partial((9500, 9999))
    assert parse_range("bytes=9500-9999", 10000) == partial((9500, 9999))
    assert parse_range("bytes=0-", 10000) == partial((0, 9999))


def test_rfc9110_14_1_2_suffix_longer_than_representation_is_whole() -> None:
    # "If the selected representation is shorter than the specified suffix-length, the entire
    # representation is used." Still a 206 (the client asked for a range and got it).
    assert parse_range("bytes=-20000", 10000) == partial((0, 9999))
    assert parse_range("bytes=-10000", 10000) == partial((0, 9999))


# --- §14.1.1 satisfiability ---


@pytest.mark.parametrize(
    "header",
    [
        "bytes=10000-",  # first-pos not less than the length
        "bytes=10000-10005",
        "bytes=20000-30000",
        "bytes=-0",  # a suffix-range needs a non-zero suffix-length
        "bytes=10000-,-0,12000-12001",
    ],
)
def test_rfc9110_14_1_1_unsatisfiable(header: str) -> None:
    assert parse_range(header, 10000) == UNSAT


def test_unsatisfiable_specs_are_dropped_from_a_satisfiable_set() -> None:
    # "A byte-range-set is satisfiable if it contains any range-spec that is satisfiable"
    assert parse_range("bytes=20000-,0-9,-0", 10000) == partial((0, 9))


# --- §14.2: unknown units and invalid specifiers are ignored (full 200) ---


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes",
        "bytes=",
        "bytes=,",
        "bytes= , ",
        "items=0-1",  # a range unit we do not understand MUST be ignored (§14.2)
        "none",
        "bytes 0-1",
        "bytes =0-1",  # ranges-specifier = range-unit "=" range-set: no whitespace there
        "bytes= 0-1;",
        "bytes=1",
        "bytes=-",
        "bytes=--1",
        "bytes=1-2-3",
        "bytes=a-b",
        "bytes=0x10-0x20",
        "bytes=+1-2",
        "bytes=1-+2",
        "bytes=1 -2",  # no whitespace inside an int-range
        "bytes=1- 2",
        "bytes=1_0-20",  # int() would accept this
        "bytes=١-٢",  # non-ASCII digits
        "bytes=5-4",  # last-pos < first-pos makes the int-range invalid (§14.1.1)
        "bytes=0-1,5-4",  # ... and with it the whole header
        "bytes=0-1,junk",
        "bytes=0-1;2-3",
    ],
)
def test_invalid_or_foreign_range_is_ignored(header: str | None) -> None:
    assert parse_range(header, 10000) == FULL


def test_range_unit_is_case_insensitive() -> None:
    # §14.1: "Range unit names are case-insensitive"
    assert parse_range("Bytes=0-1", 10) == partial((0, 1))
    assert parse_range("BYTES=0-1", 10) == partial((0, 1))


def test_list_syntax_ows_and_empty_elements() -> None:
    # §5.6.1: OWS around the comma; recipients accept empty list elements (§5.6.1.2).
    expected = partial((0, 1), (5, 6))
    for header in (
        "bytes=0-1,5-6",
        "bytes=0-1 , 5-6",
        "bytes=0-1,\t5-6",
        "bytes=0-1,,5-6",
        "bytes=,0-1,5-6",
        "bytes=0-1,5-6,",
        "bytes=0-1 ,, , 5-6 ",
        "  bytes=0-1,5-6  ",
    ):
        assert parse_range(header, 10) == expected, header


# --- huge numbers ---


def test_forty_digit_numbers() -> None:
    forty = "9" * 40
    assert parse_range(f"bytes=0-{forty}", 100) == partial((0, 99))
    assert parse_range(f"bytes={forty}-", 100) == UNSAT
    assert parse_range(f"bytes={forty}-{forty}", 100) == UNSAT
    assert parse_range(f"bytes=-{forty}", 100) == partial((0, 99))
    assert parse_range(f"bytes=5-{'0' * 38}7", 100) == partial((5, 7))  # leading zeros
    assert parse_range(f"bytes={'0' * 40}-{forty}", 100) == partial((0, 99))
    assert parse_range(f"bytes=50-{'0' * 39}1", 100) == FULL  # 1 < 50: invalid


def test_absurdly_long_numbers_are_cheap() -> None:
    # Python refuses int() of more than 4300 digits; this must neither raise nor crawl.
    huge = "7" * 20000
    assert parse_range(f"bytes=0-{huge}", 100) == partial((0, 99))
    assert parse_range(f"bytes={huge}-", 100) == UNSAT


def test_offsets_beyond_2_63() -> None:
    size = 2**63 - 1
    assert parse_range(f"bytes={2**63}-", size) == UNSAT
    assert parse_range(f"bytes={size - 1}-", size) == partial((size - 1, size - 1))


# --- CVE-2011-3192: nginx's two refusals ---


def test_more_than_max_ranges_is_ignored() -> None:
    sixteen = ",".join(f"{i * 10}-{i * 10}" for i in range(16))
    assert parse_range("bytes=" + sixteen, 1000).status == "partial"
    assert len(parse_range("bytes=" + sixteen, 1000).ranges) == 16
    assert parse_range(f"bytes={sixteen},900-900", 1000) == FULL
    assert parse_range("bytes=0-0,5-5", 1000, max_ranges=1) == FULL
    assert parse_range("bytes=0-0", 1000, max_ranges=1) == partial((0, 0))


def test_max_ranges_zero_disables_ranges() -> None:
    assert parse_range("bytes=0-0", 1000, max_ranges=0) == FULL


def test_apache_killer_header_is_ignored() -> None:
    # The CVE-2011-3192 exploit: "bytes=0-,5-0,5-1,5-2,..." (hundreds of overlapping ranges).
    # Our parser already rejects "5-0" as invalid; the overlapping variant is refused too.
    attack = "bytes=0-," + ",".join(f"5-{i}" for i in range(1300))
    assert parse_range(attack, 10**6) == FULL
    overlapping = "bytes=" + ",".join(f"0-{i}" for i in range(1, 1300))
    assert parse_range(overlapping, 10**6) == FULL


def test_summed_lengths_beyond_size_is_ignored() -> None:
    # nginx: "if (size > content_length) return NGX_DECLINED" over the clipped ranges.
    assert parse_range("bytes=0-,0-", 10000) == FULL
    assert parse_range("bytes=-6000,0-5000", 10000) == FULL  # 6000 + 5001 > 10000
    assert parse_range("bytes=0-4999,5000-9999", 10000) == partial((0, 9999))  # exactly 10000
    assert parse_range("bytes=-1,-1", 1) == FULL  # 2 > 1


def test_sum_counts_clipped_lengths() -> None:
    # 0-99999 clips to 100 bytes, so 100 + 1 > 100 refuses, but one range alone is fine.
    assert parse_range("bytes=0-99999", 100) == partial((0, 99))
    assert parse_range("bytes=0-99999,0-0", 100) == FULL


# --- coalescing and order (§14.3 MAY coalesce, §14.6 SHOULD keep request order) ---


def test_overlapping_and_adjacent_ranges_coalesce() -> None:
    assert parse_range("bytes=0-99,50-149", 1000) == partial((0, 149))
    assert parse_range("bytes=0-99,100-199", 1000) == partial((0, 199))  # adjacent
    assert parse_range("bytes=100-199,0-99", 1000) == partial((0, 199))
    assert parse_range("bytes=10-20,10-20", 1000) == partial((10, 20))
    assert parse_range("bytes=0-9,3-4", 1000) == partial((0, 9))  # contained


def test_a_one_byte_gap_is_not_coalesced() -> None:
    assert parse_range("bytes=0-99,101-199", 1000) == partial((0, 99), (101, 199))


def test_request_order_is_kept() -> None:
    assert parse_range("bytes=500-599,0-99", 1000) == partial((500, 599), (0, 99))
    assert parse_range("bytes=-10,0-9", 1000) == partial((990, 999), (0, 9))


def test_coalesced_range_takes_the_place_of_its_earliest_member() -> None:
    assert parse_range("bytes=800-899,0-99,50-149", 1000) == partial((800, 899), (0, 149))
    assert parse_range("bytes=50-149,800-899,0-99", 1000) == partial((0, 149), (800, 899))
    assert parse_range("bytes=0-9,500-509,10-19,900-909", 1000) == partial((0, 19), (500, 509), (900, 909))


# --- empty and tiny objects ---


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # Names the first byte: a suffix-range with non-zero length is the only satisfiable form
        # on a zero-length representation (§14.1.1), and "0-" names byte 0. A 206 cannot describe
        # zero bytes, so the Range is ignored: full 200 with an empty body, as nginx does.
        ("bytes=-5", FULL),
        ("bytes=-1", FULL),
        ("bytes=0-", FULL),
        ("bytes=0-0", FULL),
        ("bytes=5-,0-", FULL),
        # Anything else is unsatisfiable: 416 with "bytes */0".
        ("bytes=5-", UNSAT),
        ("bytes=1-1", UNSAT),
        ("bytes=-0", UNSAT),
        # Invalid stays ignored.
        ("bytes=5-1", FULL),
        ("items=0-", FULL),
    ],
)
def test_empty_object(header: str, expected: RangeDecision) -> None:
    assert parse_range(header, 0) == expected


def test_one_byte_object() -> None:
    assert parse_range("bytes=0-0", 1) == partial((0, 0))
    assert parse_range("bytes=-1", 1) == partial((0, 0))
    assert parse_range("bytes=-5", 1) == partial((0, 0))
    assert parse_range("bytes=1-", 1) == UNSAT


# --- property check against an independent model ---


def _model_bytes(spec: tuple[str, int | None, int | None], size: int) -> set[int]:
    """Offsets a range-spec names, straight from the §14.1.2 definitions."""
    kind, a, b = spec
    if kind == "suffix":
        assert a is not None
        return set(range(max(size - a, 0), size))
    assert a is not None
    last = size - 1 if b is None else min(b, size - 1)
    return set(range(a, last + 1))


def _random_spec(rng: random.Random, size: int) -> tuple[str, tuple[str, int | None, int | None]]:
    k = rng.random()
    if k < 0.2:
        n = rng.randrange(0, size + 5)
        return f"-{n}", ("suffix", n, None)
    a = rng.randrange(0, size + 5)
    if k < 0.35:
        return f"{a}-", ("open", a, None)
    b = a + rng.randrange(0, 40)
    return f"{a}-{b}", ("int", a, b)


def test_property_against_model() -> None:
    rng = random.Random(14)
    for _ in range(3000):
        size = rng.randrange(1, 300)
        specs = [_random_spec(rng, size) for _ in range(rng.randrange(1, 6))]
        header = "bytes=" + rng.choice([",", ", ", " ,"]).join(text for text, _ in specs)
        got = parse_range(header, size)

        wanted = [_model_bytes(s, size) for _, s in specs]
        wanted = [w for w in wanted if w]
        total = sum(len(w) for w in wanted)
        if not wanted:
            assert got == UNSAT, header
            continue
        if total > size:
            assert got == FULL, header
            continue
        assert got.status == "partial", header
        covered: set[int] = set()
        for r in got.ranges:
            assert 0 <= r.start <= r.end < size
            part = set(range(r.start, r.end + 1))
            assert not (part & covered), header  # disjoint
            covered |= part
        assert covered == set().union(*wanted), header
        # Coalesced: no two output ranges touch.
        spans = sorted((r.start, r.end) for r in got.ranges)
        assert all(b0 + 1 < a1 for (_, b0), (a1, _) in itertools.pairwise(spans)), header
        # Request order: each part sits where its earliest requested member was.
        firsts = [min(i for i, w in enumerate(wanted) if r.start <= min(w) <= r.end) for r in got.ranges]
        assert firsts == sorted(firsts), header


# --- Content-Range (§14.4) ---


def test_rfc9110_14_4_content_range_examples() -> None:
    assert content_range(R(42, 1233), 1234) == "bytes 42-1233/1234"
    assert content_range(R(21010, 47021), 47022) == "bytes 21010-47021/47022"
    assert unsatisfied_range(1234) == "bytes */1234"  # §14.4 / §15.5.17 example
    assert unsatisfied_range(0) == "bytes */0"


# --- multipart/byteranges (§14.6) ---


def test_rfc9110_14_6_layout() -> None:
    parts, closing, length = multipart_layout(
        [R(500, 999), R(7000, 7999)], 8000, "application/pdf", "THIS_STRING_SEPARATES"
    )
    assert [r for _, r in parts] == [R(500, 999), R(7000, 7999)]
    assert parts[0][0] == (
        b"\r\n--THIS_STRING_SEPARATES\r\n"
        b"Content-Type: application/pdf\r\n"
        b"Content-Range: bytes 500-999/8000\r\n"
        b"\r\n"
    )
    assert parts[1][0] == (
        b"\r\n--THIS_STRING_SEPARATES\r\n"
        b"Content-Type: application/pdf\r\n"
        b"Content-Range: bytes 7000-7999/8000\r\n"
        b"\r\n"
    )
    assert closing == b"\r\n--THIS_STRING_SEPARATES--\r\n"
    assert length == len(parts[0][0]) + 500 + len(parts[1][0]) + 1000 + len(closing)
    assert multipart_content_type("THIS_STRING_SEPARATES") == (
        "multipart/byteranges; boundary=THIS_STRING_SEPARATES"
    )


def test_layout_without_content_type() -> None:
    parts, _, _ = multipart_layout([R(0, 0), R(2, 2)], 3, "", "b")
    assert parts[0][0] == b"\r\n--b\r\nContent-Range: bytes 0-0/3\r\n\r\n"


def _assemble(data: bytes, parts: list[tuple[bytes, ByteRange]], closing: bytes) -> bytes:
    out = bytearray()
    for head, r in parts:
        out += head
        out += data[r.start : r.end + 1]
    out += closing
    return bytes(out)


def test_property_content_length_and_parse_back() -> None:
    rng = random.Random(146)
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 "
    for _ in range(300):
        size = rng.randrange(2, 2000)
        data = bytes(rng.choice(alphabet) for _ in range(size))
        header = "bytes=" + ",".join(
            f"{a}-{a + rng.randrange(0, 50)}"
            for a in (rng.randrange(0, size) for _ in range(rng.randrange(2, 8)))
        )
        decision = parse_range(header, size)
        if decision.status != "partial" or len(decision.ranges) < 2:
            continue
        boundary = new_boundary()
        ctype = rng.choice(["video/mp4", "text/plain; charset=utf-8", "application/octet-stream"])
        parts, closing, length = multipart_layout(decision.ranges, size, ctype, boundary)
        body = _assemble(data, parts, closing)
        assert len(body) == length

        # Parse it back with the stdlib MIME parser (RFC 2046), an independent reader.
        head = f"Content-Type: {multipart_content_type(boundary)}\r\n\r\n".encode()
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(head + body)
        assert msg.is_multipart()
        got = msg.get_payload()
        assert isinstance(got, list)
        assert len(got) == len(decision.ranges)
        for part, r in zip(got, decision.ranges, strict=True):
            assert part["Content-Type"] == ctype
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", part["Content-Range"])
            assert m is not None
            assert (int(m[1]), int(m[2]), int(m[3])) == (r.start, r.end, size)
            assert part.get_payload(decode=True) == data[r.start : r.end + 1]


def test_property_content_length_binary_data() -> None:
    # Arbitrary bytes (CRLFs included): the length is what is actually sent.
    rng = random.Random(2046)
    for _ in range(200):
        size = rng.randrange(1, 5000)
        data = rng.randbytes(size)
        ranges = [
            R(a, min(a + rng.randrange(0, 300), size - 1)) for a in (rng.randrange(size) for _ in range(3))
        ]
        parts, closing, length = multipart_layout(ranges, size, "application/octet-stream", new_boundary())
        assert len(_assemble(data, parts, closing)) == length


@pytest.mark.parametrize(
    "ctype", ["text/html\r\nSet-Cookie: x=1", "text/html\nX: y", "text/\0html", "text/☃"]
)
def test_layout_refuses_header_injection_in_content_type(ctype: str) -> None:
    with pytest.raises(ValueError):
        multipart_layout([R(0, 0)], 1, ctype, "b")


@pytest.mark.parametrize("boundary", ["", "x" * 71, "bad\r\nboundary", "ends with space ", 'quo"te', "sem;i"])
def test_layout_refuses_invalid_boundary(boundary: str) -> None:
    # RFC 2046 §5.1.1: 1 to 70 bchars, not ending in a space.
    with pytest.raises(ValueError):
        multipart_layout([R(0, 0)], 1, "text/plain", boundary)


@pytest.mark.parametrize("r", [R(0, 10), R(-1, 2), R(5, 4), R(10, 10)])
def test_layout_refuses_ranges_outside_the_object(r: ByteRange) -> None:
    with pytest.raises(ValueError):
        multipart_layout([r], 10, "text/plain", "b")


def test_new_boundary_is_fresh_and_valid() -> None:
    seen = {new_boundary() for _ in range(1000)}
    assert len(seen) == 1000
    for b in list(seen)[:50]:
        assert 1 <= len(b) <= 70
        assert re.fullmatch(r"[0-9A-Za-z'()+_,\-./:=?]+", b)
        multipart_layout([R(0, 0)], 1, "x/y", b)  # accepted by the layout check
