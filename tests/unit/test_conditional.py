"""Conditional requests: RFC 9110 §13.1 fields, §13.2.2 evaluation order, §8.8.3.2 comparison."""

from __future__ import annotations

import calendar

import pytest

from cdnlab.edge.conditional import evaluate_preconditions, if_range_allows, parse_etag_list

LM = float(calendar.timegm((1994, 11, 6, 8, 49, 37, 0, 0, 0)))
LM_DATE = "Sun, 06 Nov 1994 08:49:37 GMT"
EARLIER = "Sun, 06 Nov 1994 08:49:36 GMT"
LATER = "Sun, 06 Nov 1994 08:49:38 GMT"
ETAG = '"xyzzy"'


def pre(
    *,
    method: str = "GET",
    if_match: str | None = None,
    if_none_match: str | None = None,
    if_modified_since: str | None = None,
    if_unmodified_since: str | None = None,
    etag: str | None = ETAG,
    last_modified: float | None = LM,
) -> int | None:
    return evaluate_preconditions(
        method, if_match, if_none_match, if_modified_since, if_unmodified_since, etag, last_modified
    )


def test_no_preconditions_proceeds() -> None:
    assert pre() is None
    assert pre(etag=None, last_modified=None) is None


# --- §8.8.3.2: the weak/strong comparison table ---

COMPARISON_TABLE = [
    # (ETag 1, ETag 2, strong comparison, weak comparison)
    ('W/"1"', 'W/"1"', False, True),
    ('W/"1"', 'W/"2"', False, False),
    ('W/"1"', '"1"', False, True),
    ('"1"', '"1"', True, True),
]


@pytest.mark.parametrize(("a", "b", "strong", "weak"), COMPARISON_TABLE)
def test_rfc9110_8_8_3_2_if_match_uses_strong_comparison(a: str, b: str, strong: bool, weak: bool) -> None:
    # Either side may be the client's: the table is symmetric.
    for header, ours in ((a, b), (b, a)):
        assert pre(if_match=header, etag=ours) == (None if strong else 412)


@pytest.mark.parametrize(("a", "b", "strong", "weak"), COMPARISON_TABLE)
def test_rfc9110_8_8_3_2_if_none_match_uses_weak_comparison(a: str, b: str, strong: bool, weak: bool) -> None:
    for header, ours in ((a, b), (b, a)):
        assert pre(if_none_match=header, etag=ours) == (304 if weak else None)


# --- §13.1.1 If-Match ---


@pytest.mark.parametrize(
    "header",
    ['"xyzzy"', '"xyzzy", "r2d2xxxx", "c3piozzzz"', '"r2d2xxxx", "xyzzy"', "*", '"a",  "xyzzy" ,"b"'],
)
def test_rfc9110_13_1_1_if_match_examples_pass(header: str) -> None:
    assert pre(if_match=header) is None


@pytest.mark.parametrize("header", ['"r2d2xxxx"', '"r2d2xxxx", "c3piozzzz"', 'W/"xyzzy"', '"XYZZY"'])
def test_rfc9110_13_1_1_if_match_mismatch_is_412(header: str) -> None:
    assert pre(if_match=header) == 412


def test_if_match_star_needs_only_a_current_representation() -> None:
    # "*" is true if the origin server has a current representation; we are serving one.
    assert pre(if_match="*", etag=None) is None


def test_if_match_list_without_an_etag_fails() -> None:
    assert pre(if_match='"xyzzy"', etag=None) == 412


def test_if_match_with_our_weak_etag_always_fails() -> None:
    assert pre(if_match='W/"xyzzy"', etag='W/"xyzzy"') == 412
    assert pre(if_match='"xyzzy"', etag='W/"xyzzy"') == 412


@pytest.mark.parametrize("header", ["xyzzy", '"xyzzy', '"a" "xyzzy"', 'w/"xyzzy"', '*, "xyzzy"'])
def test_malformed_if_match_fails_safe(header: str) -> None:
    assert pre(if_match=header) == 412


# --- §13.1.2 If-None-Match ---


@pytest.mark.parametrize(
    "header",
    [
        '"xyzzy"',
        'W/"xyzzy"',
        '"xyzzy", "r2d2xxxx", "c3piozzzz"',
        'W/"xyzzy", W/"r2d2xxxx", W/"c3piozzzz"',
        "*",
    ],
)
def test_rfc9110_13_1_2_if_none_match_examples_give_304(header: str) -> None:
    assert pre(if_none_match=header) == 304
    assert pre(method="HEAD", if_none_match=header) == 304


def test_if_none_match_miss_proceeds() -> None:
    assert pre(if_none_match='"r2d2xxxx", "c3piozzzz"') is None


def test_if_none_match_for_other_methods_is_412() -> None:
    # §13.2.2 step 3: "if false for other methods, respond 412 (Precondition Failed)"
    assert pre(method="POST", if_none_match=ETAG) == 412
    assert pre(method="DELETE", if_none_match="*") == 412


def test_if_none_match_star_without_etag() -> None:
    assert pre(if_none_match="*", etag=None) == 304
    assert pre(if_none_match='"xyzzy"', etag=None) is None


@pytest.mark.parametrize("header", ["xyzzy", '"xyzzy', '"a" "xyzzy"'])
def test_malformed_if_none_match_does_not_match(header: str) -> None:
    assert pre(if_none_match=header) is None


# --- commas inside quoted entity-tags (etagc includes ",") ---


def test_commas_inside_entity_tags() -> None:
    tag = '"a,b"'
    assert pre(if_none_match='"a,b"', etag=tag) == 304
    assert pre(if_none_match='"x", "a,b"', etag=tag) == 304
    assert pre(if_none_match='"a", "b"', etag=tag) is None
    assert pre(if_none_match='"a"', etag=tag) is None
    assert pre(if_match='"x,y", "a,b"', etag=tag) is None
    assert pre(if_match='"a", "b"', etag=tag) == 412
    assert pre(if_match='"a,b"', etag='"a"') == 412


def test_parse_etag_list() -> None:
    assert parse_etag_list('"a", W/"b,c" ,"d"') == [(False, '"a"'), (True, '"b,c"'), (False, '"d"')]
    assert parse_etag_list('"", ,"x"') == [(False, '""'), (False, '"x"')]  # empty list elements
    assert parse_etag_list("") == []
    assert parse_etag_list('"a"b') is None
    assert parse_etag_list("W/") is None


# --- §13.1.3 If-Modified-Since ---


def test_rfc9110_13_1_3_if_modified_since() -> None:
    assert pre(if_modified_since=LM_DATE) == 304  # not modified since (equal)
    assert pre(if_modified_since=LATER) == 304
    assert pre(if_modified_since=EARLIER) is None  # modified after the date
    assert pre(method="HEAD", if_modified_since=LM_DATE) == 304


def test_if_modified_since_in_obsolete_formats() -> None:
    # §5.6.7: recipients MUST accept all three formats.
    assert pre(if_modified_since="Sunday, 06-Nov-94 08:49:37 GMT") == 304
    assert pre(if_modified_since="Sun Nov  6 08:49:37 1994") == 304


@pytest.mark.parametrize("value", ["yesterday", "", "784111777", f"{LM_DATE}, {LATER}"])
def test_if_modified_since_invalid_date_is_ignored(value: str) -> None:
    # "A recipient MUST ignore the If-Modified-Since header field if the received field value
    # is not a valid HTTP-date, [...] or if the request method is neither GET nor HEAD."
    assert pre(if_modified_since=value) is None


def test_if_modified_since_ignored_for_other_methods() -> None:
    assert pre(method="POST", if_modified_since=LATER) is None


def test_if_modified_since_ignored_when_if_none_match_present() -> None:
    # §13.1.3: "A recipient MUST ignore If-Modified-Since if the request contains an
    # If-None-Match header field"
    assert pre(if_none_match='"other"', if_modified_since=LATER) is None
    assert pre(if_none_match=ETAG, if_modified_since=EARLIER) == 304


def test_if_modified_since_without_last_modified_is_ignored() -> None:
    assert pre(if_modified_since=LATER, last_modified=None) is None


# --- §13.1.4 If-Unmodified-Since ---


def test_rfc9110_13_1_4_if_unmodified_since() -> None:
    assert pre(if_unmodified_since=LM_DATE) is None  # earlier or equal: true
    assert pre(if_unmodified_since=LATER) is None
    assert pre(if_unmodified_since=EARLIER) == 412


def test_if_unmodified_since_ignored_when_if_match_present() -> None:
    # "A recipient MUST ignore If-Unmodified-Since if the request contains an If-Match header
    # field"
    assert pre(if_match=ETAG, if_unmodified_since=EARLIER) is None


@pytest.mark.parametrize("value", ["garbage", f"{EARLIER}, {EARLIER}", "Sun, 06 Nov 1994 08:49:36 UTC"])
def test_if_unmodified_since_invalid_date_is_ignored(value: str) -> None:
    # "MUST ignore [...] if the received field value is not a valid HTTP-date (including when
    # the field value appears to be a list of dates)"
    assert pre(if_unmodified_since=value) is None


def test_if_unmodified_since_without_last_modified_is_ignored() -> None:
    # "MUST ignore [...] if the resource does not have a modification date available"
    assert pre(if_unmodified_since=EARLIER, last_modified=None) is None


# --- one-second resolution ---


def test_dates_compare_at_one_second_resolution() -> None:
    # A file mtime of 08:49:37.9 is sent as Last-Modified 08:49:37 and compares as such.
    frac = LM + 0.9
    assert pre(if_modified_since=LM_DATE, last_modified=frac) == 304
    assert pre(if_unmodified_since=LM_DATE, last_modified=frac) is None
    assert pre(if_modified_since=EARLIER, last_modified=frac) is None
    assert pre(if_unmodified_since=EARLIER, last_modified=frac) == 412


# --- §13.2.2 evaluation order ---


def test_rfc9110_13_2_2_step1_if_match_before_if_none_match() -> None:
    assert pre(if_match='"other"', if_none_match=ETAG) == 412


def test_rfc9110_13_2_2_step2_before_step3() -> None:
    assert pre(if_unmodified_since=EARLIER, if_none_match=ETAG) == 412


def test_rfc9110_13_2_2_passing_if_match_then_if_none_match() -> None:
    assert pre(if_match=ETAG, if_none_match=ETAG) == 304
    assert pre(if_match=ETAG, if_none_match='"other"') is None


def test_rfc9110_13_2_2_step2_then_step4() -> None:
    assert pre(if_unmodified_since=LATER, if_modified_since=LM_DATE) == 304


def test_all_four_passing() -> None:
    assert (
        pre(if_match=ETAG, if_unmodified_since=EARLIER, if_none_match='"old"', if_modified_since=LM_DATE)
        is None
    )


def test_empty_fields_count_as_absent() -> None:
    # Our choice (see the module docstring): an empty value is a broken client, not a
    # zero-element list that could never match.
    assert pre(if_match="") is None
    assert pre(if_match=" ", if_unmodified_since=EARLIER) == 412  # so If-Unmodified-Since applies
    assert pre(if_none_match="", if_modified_since=LM_DATE) == 304  # and If-Modified-Since


# --- §13.1.5 If-Range ---


def test_if_range_absent_allows_range() -> None:
    assert if_range_allows(None, ETAG, LM) is True


def test_rfc9110_13_1_5_entity_tag_must_match_strongly() -> None:
    assert if_range_allows('"xyzzy"', '"xyzzy"', LM) is True
    assert if_range_allows(' "xyzzy" ', '"xyzzy"', LM) is True
    assert if_range_allows('"other"', '"xyzzy"', LM) is False
    assert if_range_allows('W/"xyzzy"', '"xyzzy"', LM) is False  # weak: never
    assert if_range_allows('"xyzzy"', 'W/"xyzzy"', LM) is False  # our weak tag: never
    assert if_range_allows('W/"xyzzy"', 'W/"xyzzy"', LM) is False
    assert if_range_allows('"xyzzy"', None, LM) is False
    assert if_range_allows('"xyzzy", "other"', '"xyzzy"', LM) is False  # one entity-tag, not a list


def test_rfc9110_13_1_5_date_must_equal_last_modified() -> None:
    assert if_range_allows(LM_DATE, ETAG, LM) is True
    assert if_range_allows(LM_DATE, ETAG, LM + 0.5) is True  # one-second resolution
    assert if_range_allows(EARLIER, ETAG, LM) is False
    assert if_range_allows(LATER, ETAG, LM) is False  # "exactly matches", not "not after"
    assert if_range_allows(LM_DATE, ETAG, None) is False
    assert if_range_allows("Sun Nov  6 08:49:37 1994", None, LM) is True


@pytest.mark.parametrize("value", ["", "  ", "garbage", "xyzzy", "784111777", "Sun, 06 Nov 1994"])
def test_if_range_anything_else_means_full_response(value: str) -> None:
    assert if_range_allows(value, ETAG, LM) is False
