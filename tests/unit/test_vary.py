"""Vary: RFC 9110 §12.5.5 (the field), RFC 9111 §4.1 (matching stored responses), and
Accept-Encoding negotiation (RFC 9110 §12.5.3, §12.4.2 qvalues, §8.4.1.3 x-gzip)."""

from __future__ import annotations

import itertools

import pytest

from cdnlab.edge.vary import normalise_accept_encoding, normalise_field_value, parse_vary, variant_key


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ("", ()),
        (" , ,", ()),  # empty list members are skipped (RFC 9110 §5.6.1.2)
        ("Accept-Encoding", ("accept-encoding",)),
        ("Origin, accept-encoding, ORIGIN", ("accept-encoding", "origin")),
        ("\tAccept ,Accept-Language", ("accept", "accept-language")),
        ("*", None),  # §12.5.5: unlimited variance
        ("Accept, *", None),
        ("User Agent", None),  # not a field name: we cannot know what it varies on
        ("Accept;q=1", None),
    ],
)
def test_parse_vary(value: str | None, expected: tuple[str, ...] | None) -> None:
    assert parse_vary(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "identity"),  # absent: we serve identity
        ("", "identity"),  # §12.5.3: an empty value means identity only
        ("gzip", "gzip"),
        ("br", "br"),
        ("gzip, br", "br"),  # equal weights: the smaller coding
        ("gzip, deflate, br, zstd", "br"),
        ("deflate", "identity"),  # nothing we offer: identity is acceptable by default
        ("GZIP", "gzip"),  # codings compare case-insensitively
        ("x-gzip", "gzip"),  # §8.4.1.3
        ("gzip;q=1.0, br;q=0.9", "gzip"),
        ("br;q=0, gzip", "gzip"),  # q=0: "not acceptable"
        ("gzip;Q=0.5, br;q=0.4", "gzip"),
        ("gzip ; q=0.5 , br ; q=0.6", "br"),
        ("br;q=0.001", "br"),
        ("gzip;q=0.5, identity;q=0.8", "identity"),
        ("gzip;q=0.8, identity;q=0.8", "gzip"),
        ("gzip;q=0.1", "gzip"),  # an unlisted identity ranks below any listed coding
        ("gzip;q=0.001", "gzip"),
        ("*", "br"),  # any coding
        ("*;q=0.5, gzip", "gzip"),
        ("*, br;q=0", "gzip"),
        ("*;q=0", "identity"),  # nothing acceptable at all: §12.5.3 lets us disregard the field
        ("*;q=0, identity", "identity"),
        ("*;q=0, gzip", "gzip"),
        ("identity;q=0, gzip;q=0.5", "gzip"),
        ("identity;q=0", "identity"),  # identity excluded and nothing else offered
        ("compress, gzip;q=0", "identity"),
        ("br;level=5;q=0.3, gzip;q=0.2", "br"),  # other parameters are skipped
        ("br, br;q=0", "br"),  # a repeated coding keeps its first weight
        # Malformed qvalues: the member is ignored.
        ("br;q=1.5, gzip", "gzip"),
        ("br;q=2, gzip;q=0.1", "gzip"),
        ("br;q=0.0001, gzip;q=0.1", "gzip"),
        ("br;q=abc", "identity"),
        ("br;q=, gzip;q=0.1", "gzip"),
        ("br;q=1.000, gzip", "br"),
        ("br;q=1.001, gzip;q=0.1", "gzip"),
        ("br;q=0., gzip;q=0.", "identity"),
    ],
)
def test_rfc9110_12_5_3_accept_encoding(value: str | None, expected: str) -> None:
    assert normalise_accept_encoding(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", "a"),
        (" a , b ", "a,b"),
        ("a,b", "a,b"),
        ("a,\t b", "a,b"),
        ("text/html;  q=0.9", "text/html; q=0.9"),
        ('"a  , b", c', '"a  , b",c'),  # quoted strings are kept as sent
        ('x, "a\\"  b"  ,  y', 'x,"a\\"  b",y'),
        ("a\xa0b", "a\xa0b"),  # only SP and HTAB are whitespace
        ("a\x1fb", "a\x1fb"),
    ],
)
def test_4_1_whitespace_normalisation(value: str, expected: str) -> None:
    assert normalise_field_value(value) == expected


BASE = "/t/1/main.mpd?profile=hd"


def test_no_vary_keeps_the_base_key() -> None:
    assert variant_key(BASE, (), {"accept-encoding": "gzip"}) == BASE


def test_4_1_accept_encoding_variants_share_a_key_by_selected_coding() -> None:
    ae = ("accept-encoding",)

    def key(v: str | None) -> str:
        return variant_key(BASE, ae, {} if v is None else {"accept-encoding": v})

    assert key("gzip, br") == key("br;q=1, gzip;q=0.5") == key("*")
    assert key("gzip") == key("x-gzip") == key("br;q=0, gzip")
    assert key(None) == key("identity") == key("deflate")
    assert len({key("br"), key("gzip"), key("identity")}) == 3
    assert key("br").startswith(BASE + "\x00")


def test_4_1_absent_field_only_matches_absent() -> None:
    # "If (after any normalization) the header field is absent from a request, it can only match
    # another request if it is also absent there."
    f = ("origin",)
    assert variant_key(BASE, f, {}) != variant_key(BASE, f, {"origin": ""})
    assert variant_key(BASE, f, {}) == variant_key(BASE, f, {"other": "x"})


def test_4_1_whitespace_and_case_of_names() -> None:
    f = ("accept-language", "origin")
    a = variant_key(BASE, f, {"accept-language": "en, fr", "origin": "https://a.example"})
    b = variant_key(BASE, f, {"Accept-Language": " en ,fr ", "ORIGIN": "https://a.example"})
    c = variant_key(BASE, f, {"accept-language": "en, de", "origin": "https://a.example"})
    assert a == b != c
    # Values are case-sensitive unless the field says otherwise.
    assert a != variant_key(BASE, f, {"accept-language": "EN, fr", "origin": "https://a.example"})


def test_variant_key_is_deterministic_and_field_specific() -> None:
    h = {"origin": "x", "accept": "y"}
    assert variant_key(BASE, ("accept", "origin"), h) == variant_key(BASE, ("accept", "origin"), dict(h))
    # The same value under a different field name is a different variant.
    assert variant_key(BASE, ("accept",), {"accept": "v"}) != variant_key(BASE, ("origin",), {"origin": "v"})
    assert variant_key("/a", ("origin",), {"origin": "v"}) != variant_key("/b", ("origin",), {"origin": "v"})


def test_variant_key_is_collision_free_for_hostile_values() -> None:
    # Every combination of two fields over values made of the separators themselves: keys are
    # equal exactly when the normalised values are.
    alphabet = ["", "-", "1", "\x1f", "\x00", "a\x1f1\x1fb", "1\x1fx", "x", " x", "\x1f-", "b\x1f-"]
    values: list[str | None] = [
        None,
        *alphabet,
        *("".join(p) for p in itertools.product(alphabet[1:5], repeat=2)),
    ]
    fields = ("a", "b")
    seen: dict[str, tuple[str | None, ...]] = {}
    for va, vb in itertools.product(values, repeat=2):
        headers = {k: v for k, v in zip(fields, (va, vb), strict=True) if v is not None}
        key = variant_key(BASE, fields, headers)
        norm = tuple(None if v is None else normalise_field_value(v) for v in (va, vb))
        assert seen.setdefault(key, norm) == norm, (key, norm, seen[key])
    assert len(seen) > 100
