"""HTTP caching rules for a shared cache: RFC 9111 (storing §3, freshness §4.2, validation §4.3,
directives §5.2, Expires §5.3, Pragma §5.4), RFC 5861 (stale-while-revalidate, stale-if-error),
RFC 8246 (immutable), and the policy catalog's TTL classes applied as CloudFront does."""

from __future__ import annotations

import json

import pytest

from cdnlab.edge.freshness import (
    DELTA_MAX,
    ERROR_TTL,
    HEURISTIC_MAX,
    Freshness,
    compute_freshness,
    conditional_headers,
    delta_seconds,
    headers_to_store,
    merge_304,
    parse_cache_control,
    parse_request_cache_control,
    refresh_applies,
    request_allows_stored,
    storable,
)
from cdnlab.edge.httpdate import format_http_date
from cdnlab.policy import TtlClass, classify

T0 = 1_700_000_000.0  # the daemon's clock when the response arrived
DAY = 86400.0


def d(ts: float) -> str:
    return format_http_date(ts)


def fresh(headers: dict[str, str], *, status: int = 200, ttl_class: TtlClass | None = None) -> Freshness:
    """Freshness of a response that took no time to arrive, received at T0."""
    return compute_freshness(headers, T0, T0, ttl_class, status=status)


def store(
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    status: int = 200,
    request_cc: str | None = None,
    auth: bool = False,
    ttl_class: TtlClass | None = None,
) -> tuple[bool, str]:
    headers = headers or {}
    cc = parse_cache_control(headers.get("Cache-Control"))
    return storable(method, status, parse_cache_control(request_cc), cc, headers, auth, ttl_class=ttl_class)


def ttl_class(
    min_ttl: int = 0,
    default_ttl: int = 300,
    max_ttl: int = 600,
    *,
    swr: int = 0,
    must_revalidate: bool = False,
    immutable: bool = False,
    cacheable: bool = True,
) -> TtlClass:
    cc = [f"max-age={default_ttl}"]
    if swr:
        cc.append(f"stale-while-revalidate={swr}")
    if must_revalidate:
        cc.append("must-revalidate")
    if immutable:
        cc.append("immutable")
    return TtlClass(
        name="t",
        patterns=["/t/*"],
        min_ttl=min_ttl,
        default_ttl=default_ttl,
        max_ttl=max_ttl,
        cache_control=", ".join(cc),
        stale_while_revalidate=swr,
        must_revalidate=must_revalidate,
        immutable=immutable,
        cacheable=cacheable,
    )


# --- §5.2 Cache-Control syntax ------------------------------------------------------------------


def test_5_2_directive_names_are_case_insensitive() -> None:
    assert parse_cache_control("Max-Age=60, NO-STORE, Public") == {
        "max-age": "60",
        "no-store": None,
        "public": None,
    }


def test_5_2_arguments_accept_token_and_quoted_string_forms() -> None:
    # "recipients ought to accept both forms, even if a specific form is required for generation"
    assert parse_cache_control('max-age="60"') == {"max-age": "60"}
    assert fresh({"Cache-Control": 'max-age="60"'}).lifetime == 60
    assert parse_cache_control("private=Set-Cookie") == {"private": "Set-Cookie"}


def test_5_2_quoted_string_keeps_commas_and_resolves_quoted_pairs() -> None:
    cc = parse_cache_control('no-cache="Set-Cookie, X-User", max-age=60, x-ext="a\\"b", private')
    assert cc == {"no-cache": "Set-Cookie, X-User", "max-age": "60", "x-ext": 'a"b', "private": None}


def test_4_2_1_duplicate_directive_first_occurrence_wins() -> None:
    # §4.2.1: "either the first occurrence should be used or the response should be considered stale"
    assert parse_cache_control("max-age=60, max-age=10")["max-age"] == "60"
    assert parse_cache_control('no-cache="a", no-cache')["no-cache"] == "a"
    assert fresh({"Cache-Control": "max-age=60, MAX-AGE=10"}).lifetime == 60


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, {}),
        ("", {}),
        (" , ,, ", {}),
        (",,max-age=5,,=x, private ,", {"max-age": "5", "private": None}),
        ("max-age = 60", {"max-age": "60"}),
        ("max-age=60 junk", {"max-age": "60 junk"}),
        ('no-cache="a, b', {"no-cache": "a, b"}),  # unterminated quote runs to the end
        ('private="a"junk, public', {"private": "a", "public": None}),
        ("\tno-cache\t,\tpublic", {"no-cache": None, "public": None}),
    ],
)
def test_5_2_garbage_is_tolerated(value: str | None, expected: dict[str, str | None]) -> None:
    assert parse_cache_control(value) == expected


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("0", 0),
        ("60", 60),
        ("007", 7),
        (None, None),
        ("", None),
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1.5", None),
        ("1_0", None),
        ("six", None),
        ("٣", None),  # a digit to str.isdigit, not to HTTP
        ("2147483648", DELTA_MAX),
        ("99999999999999999999", DELTA_MAX),  # §1.2.2: too large means 2**31
        ("9" * 5000, DELTA_MAX),  # int() would refuse this many digits
    ],
)
def test_1_2_2_delta_seconds(arg: str | None, expected: int | None) -> None:
    assert delta_seconds(arg) == expected


def test_1_2_2_huge_max_age_is_capped() -> None:
    assert fresh({"Cache-Control": "max-age=99999999999999"}).lifetime == DELTA_MAX


@pytest.mark.parametrize("arg", ["abc", "-1", "", "1.5", "60s"])
def test_4_2_1_invalid_max_age_makes_the_response_stale(arg: str) -> None:
    # §4.2.1: "Caches are encouraged to consider responses that have invalid freshness information
    # (e.g., a max-age directive with non-integer content) to be stale." Invalid is not absent:
    # neither Expires nor the heuristic may take over.
    f = fresh(
        {
            "Cache-Control": f"max-age={arg}",
            "Date": d(T0),
            "Expires": d(T0 + DAY),
            "Last-Modified": d(T0 - 100 * DAY),
        }
    )
    assert f.lifetime == 0
    assert not f.is_fresh(T0)
    assert fresh({"Cache-Control": "max-age"}).lifetime == 0  # argument missing altogether


def test_4_2_1_invalid_s_maxage_wins_over_a_valid_max_age_and_is_stale() -> None:
    assert fresh({"Cache-Control": "s-maxage=x, max-age=600"}).lifetime == 0


def test_5_4_pragma_no_cache_only_without_cache_control() -> None:
    assert parse_request_cache_control(None, "no-cache") == {"no-cache": None}
    assert parse_request_cache_control(None, "No-Cache, x=1") == {"no-cache": None}
    assert parse_request_cache_control("max-age=5", "no-cache") == {"max-age": "5"}
    assert parse_request_cache_control(None, "x-other") == {}
    assert parse_request_cache_control(None, None) == {}


# --- §3 storing, for a shared cache -------------------------------------------------------------


def test_3_plain_200_is_heuristically_storable() -> None:
    assert store() == (True, "heuristic")
    assert store(method="HEAD") == (True, "heuristic")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get"])
def test_3_only_understood_methods_are_stored(method: str) -> None:
    assert store({"Cache-Control": "max-age=60"}, method=method) == (False, "method")


@pytest.mark.parametrize("status", [100, 101, 103, 304])
def test_3_interim_and_304_are_not_stored(status: int) -> None:
    # §3: "the response status code is final"; a 304 refreshes, it is never stored itself.
    assert store({"Cache-Control": "max-age=60"}, status=status) == (False, "status")


def test_3_partial_content_is_not_stored() -> None:
    # §3.3 allows storing incomplete responses; our store keeps whole representations only.
    assert store({"Cache-Control": "max-age=60"}, status=206) == (False, "partial-content")


@pytest.mark.parametrize("status", [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
def test_rfc9110_15_1_heuristically_cacheable_statuses(status: int) -> None:
    assert store(status=status) == (True, "heuristic")


@pytest.mark.parametrize("status", [201, 202, 205, 302, 303, 307, 400, 403, 429, 500, 502, 503, 504])
def test_3_other_statuses_need_explicit_freshness_or_public(status: int) -> None:
    assert store(status=status) == (False, "no-freshness")
    assert store({"Cache-Control": "max-age=60"}, status=status) == (True, "explicit")
    assert store({"Cache-Control": "s-maxage=60"}, status=status) == (True, "explicit")
    assert store({"Expires": d(T0 + 60)}, status=status) == (True, "explicit")
    assert store({"Expires": "0"}, status=status) == (True, "explicit")  # stored, already stale
    assert store({"Cache-Control": "public"}, status=status) == (True, "public")


def test_5_2_2_5_response_no_store() -> None:
    assert store({"Cache-Control": "public, max-age=60, no-store"}) == (False, "no-store")
    assert store({"Cache-Control": "No-Store"}) == (False, "no-store")


def test_5_2_1_5_request_no_store_forbids_storing_the_response() -> None:
    assert store({"Cache-Control": "public, max-age=60"}, request_cc="no-store") == (
        False,
        "request-no-store",
    )


def test_5_2_2_7_private_is_not_stored_by_a_shared_cache() -> None:
    assert store({"Cache-Control": "private, max-age=60"}) == (False, "private")
    assert store({"Cache-Control": 'private=""'}) == (False, "private")  # empty list: unqualified


def test_5_2_2_7_qualified_private_stores_the_rest() -> None:
    # "a shared cache MUST NOT store the listed header fields ... but MAY store the remainder"
    h = {"Cache-Control": 'private="X-User", max-age=60', "X-User": "alice", "X-Other": "1"}
    assert store(h) == (True, "explicit")
    kept = headers_to_store(h)
    assert "x-user" not in kept and kept["x-other"] == "1"


def test_5_2_2_3_must_understand() -> None:
    # A cache that understands the status ignores the no-store sent with must-understand...
    assert store({"Cache-Control": "must-understand, no-store, max-age=60"}) == (True, "explicit")
    # ...and one that does not must not store it.
    assert store({"Cache-Control": "must-understand, no-store, max-age=60"}, status=299) == (False, "status")
    assert store({"Cache-Control": "must-understand, max-age=60"}, status=599) == (False, "status")


@pytest.mark.parametrize(
    ("cache_control", "expected"),
    [
        (None, (False, "authorization")),
        ("max-age=60", (False, "authorization")),  # max-age alone does not allow it
        ("proxy-revalidate, max-age=60", (False, "authorization")),  # not in §3.5's list
        ("must-revalidate, max-age=60", (True, "explicit")),
        ("public", (True, "public")),
        ("public, max-age=60", (True, "explicit")),
        ("s-maxage=60", (True, "explicit")),
        ("private, public", (False, "private")),
    ],
)
def test_3_5_authorization_needs_must_revalidate_public_or_s_maxage(
    cache_control: str | None, expected: tuple[bool, str]
) -> None:
    headers = {"Cache-Control": cache_control} if cache_control else {}
    assert store(headers, auth=True) == expected
    # Without Authorization the same response is storable unless private.
    assert store(headers)[0] == (expected[1] != "private")


@pytest.mark.parametrize("vary", ["*", "Accept-Encoding, *", " * ", "*,Origin", "User Agent"])
def test_4_1_vary_star_is_never_stored(vary: str) -> None:
    assert store({"Cache-Control": "public, max-age=60", "Vary": vary}) == (False, "vary-star")
    assert store({"Cache-Control": "max-age=60", "vary": vary}) == (False, "vary-star")


def test_4_1_vary_on_fields_is_stored() -> None:
    assert store({"Cache-Control": "max-age=60", "Vary": "Accept-Encoding, Origin"}) == (True, "explicit")


def test_set_cookie_is_refused_unless_the_origin_names_it_private_or_no_cache() -> None:
    # Our rule (RFC 9111 allows storing Set-Cookie): one user's cookie must not reach others.
    assert store({"Cache-Control": "public, max-age=60", "Set-Cookie": "sid=1"}) == (False, "set-cookie")
    assert store({"set-cookie": "sid=1"}) == (False, "set-cookie")
    assert store({"Cache-Control": 'private="X-Other"', "Set-Cookie": "sid=1"}) == (False, "set-cookie")
    for cc in ('private="Set-Cookie", max-age=60', 'no-cache="set-cookie", max-age=60'):
        h = {"Cache-Control": cc, "Set-Cookie": "sid=1", "Content-Type": "text/html"}
        assert store(h) == (True, "explicit")
        assert "set-cookie" not in headers_to_store(h)


def test_class_that_is_not_cacheable_refuses() -> None:
    dynamic = ttl_class(0, 0, 0, cacheable=False)
    assert store({"Cache-Control": "public, max-age=60"}, ttl_class=dynamic) == (False, "policy")
    assert store({"Cache-Control": "public, max-age=60"}, ttl_class=classify("/dynamic/index.html")) == (
        False,
        "policy",
    )


def test_3_1_headers_to_store() -> None:
    h = {
        "Content-Type": "text/css",
        "X-Unrecognised": "kept",  # "including unrecognized ones"
        "Connection": "close, X-Hop",
        "X-Hop": "1",
        "Keep-Alive": "timeout=5",
        "Transfer-Encoding": "chunked",
        "Proxy-Authenticate": "Basic",
        "Proxy-Authentication-Info": "x",
        "Set-Cookie": "a=b",
        "Cache-Control": 'no-cache="X-Secret", max-age=60',
        "X-Secret": "s",
    }
    assert headers_to_store(h) == {
        "content-type": "text/css",
        "x-unrecognised": "kept",
        "cache-control": 'no-cache="X-Secret", max-age=60',
    }


# --- §4.2.1 freshness lifetime ------------------------------------------------------------------


def test_4_2_1_s_maxage_beats_max_age_beats_expires() -> None:
    base = {"Date": d(T0), "Expires": d(T0 + 1000)}
    assert fresh({**base, "Cache-Control": "max-age=60, s-maxage=120"}).lifetime == 120
    assert fresh({**base, "Cache-Control": "max-age=60, s-maxage=120"}).source == "s-maxage"
    # §5.3: "If a response includes a Cache-Control header field with the max-age directive, a
    # recipient MUST ignore the Expires header field."
    f = fresh({**base, "Cache-Control": "max-age=60"})
    assert (f.lifetime, f.source) == (60, "max-age")
    f = fresh(base)
    assert (f.lifetime, f.source) == (1000, "expires")


def test_5_3_expires_minus_date_uses_the_origins_clock() -> None:
    # The origin's clock is an hour behind ours: Expires - Date is still ten minutes.
    f = fresh({"Date": d(T0 - 3600), "Expires": d(T0 - 3600 + 600)})
    assert f.lifetime == 600


def test_5_3_expires_in_the_past_is_stale() -> None:
    f = fresh({"Date": d(T0), "Expires": d(T0 - 60)})
    assert f.lifetime == 0 and not f.is_fresh(T0)


@pytest.mark.parametrize("expires", ["0", "-1", "garbage", "", "Thu, 01 Jan 1970 00:00:00 GMT, x"])
def test_5_3_invalid_expires_means_already_expired(expires: str) -> None:
    # "A cache recipient MUST interpret invalid date formats, especially the value "0", as
    # representing a time in the past (i.e., "already expired")." No heuristic takes over.
    f = fresh({"Date": d(T0), "Expires": expires, "Last-Modified": d(T0 - 100 * DAY)})
    assert (f.lifetime, f.source) == (0, "expires")


def test_5_3_two_expires_lines_joined_are_already_expired() -> None:
    f = fresh({"Date": d(T0), "Expires": f"{d(T0 + 60)}, {d(T0 + 120)}"})
    assert f.lifetime == 0


def test_5_3_expires_without_date_counts_from_the_response_time() -> None:
    # RFC 9110 §6.6.1: a response without Date gets the time it was received.
    assert fresh({"Expires": d(T0 + 300)}).lifetime == 300
    assert fresh({"Expires": d(T0 + 300), "Date": "not a date"}).lifetime == 300


def test_5_3_expires_accepts_the_obsolete_date_formats() -> None:
    assert (
        fresh({"Date": "Sun, 06 Nov 1994 08:49:37 GMT", "Expires": "Sun Nov  6 08:59:37 1994"}).lifetime
        == 600
    )


# --- §4.2.2 heuristic freshness -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("modified_ago", "expected"),
    [
        (1000.0, 100.0),  # 10% of the time since Last-Modified
        (10 * DAY, DAY),
        (100 * DAY, HEURISTIC_MAX),  # capped at a day
        (0.0, 0.0),  # modified just now: nothing to extrapolate from
        (-60.0, 0.0),  # Last-Modified after Date: ignored
    ],
)
def test_4_2_2_heuristic_is_ten_percent_of_the_age_of_last_modified(
    modified_ago: float, expected: float
) -> None:
    f = fresh({"Date": d(T0), "Last-Modified": d(T0 - modified_ago)})
    assert (f.lifetime, f.source) == (expected, "heuristic")


def test_4_2_2_heuristic_needs_last_modified() -> None:
    assert fresh({"Date": d(T0)}).lifetime == 0
    assert fresh({"Date": d(T0), "Last-Modified": "yesterday"}).lifetime == 0


def test_4_2_2_heuristic_only_without_explicit_expiration() -> None:
    # "a cache MUST NOT use heuristics to determine freshness when an explicit expiration time is
    # present in the stored response"
    lm = {"Date": d(T0), "Last-Modified": d(T0 - 100 * DAY)}
    assert fresh({**lm, "Cache-Control": "max-age=0"}).lifetime == 0
    assert fresh({**lm, "Expires": d(T0)}).lifetime == 0
    assert fresh({**lm, "Cache-Control": "s-maxage=5"}).lifetime == 5


def test_4_2_2_heuristic_only_for_heuristically_cacheable_statuses_or_public() -> None:
    lm = {"Date": d(T0), "Last-Modified": d(T0 - 1000)}
    assert fresh(lm, status=404).lifetime == 100
    assert fresh(lm, status=302).lifetime == 0
    assert fresh(lm, status=500).lifetime == 0
    # §5.2.2.9: "If a response with the public directive has no explicit freshness information,
    # it is heuristically cacheable."
    assert fresh({**lm, "Cache-Control": "public"}, status=302).lifetime == 100


# --- §4.2.3 age ---------------------------------------------------------------------------------


def test_4_2_3_response_delay_counts_against_the_response() -> None:
    # The request left at T0-2 and the answer came at T0: the response may be 2 s older than Age
    # says ("a cache MUST interpret this value relative to the time the request was initiated").
    f = compute_freshness({"Date": d(T0), "Cache-Control": "max-age=60"}, T0 - 2, T0)
    assert f.corrected_initial_age == 2
    f = compute_freshness({"Date": d(T0), "Age": "100", "Cache-Control": "max-age=600"}, T0 - 2, T0)
    assert f.corrected_initial_age == 102
    assert f.age(T0 + 10) == 112
    assert f.fresh_until() == T0 - 102 + 600


def test_4_2_3_apparent_age_from_a_date_behind_our_clock() -> None:
    # The origin's clock is an hour behind (or the response really is an hour old): without a
    # trustworthy Age, apparent_age = response_time - Date wins, the conservative answer.
    f = fresh({"Date": d(T0 - 3600), "Cache-Control": "max-age=600"})
    assert f.corrected_initial_age == 3600
    assert not f.is_fresh(T0)


def test_4_2_3_date_ahead_of_our_clock_gives_no_negative_age() -> None:
    # apparent_age = max(0, response_time - date_value)
    f = compute_freshness({"Date": d(T0 + 3600), "Age": "5", "Cache-Control": "max-age=60"}, T0 - 1, T0)
    assert f.corrected_initial_age == 6
    assert f.is_fresh(T0 + 50)
    assert not f.is_fresh(T0 + 54)


def test_4_2_3_age_larger_than_apparent_age_wins() -> None:
    # Behind an HTTP/1.1 cache chain: Age 500 beats a Date only 10 s old.
    f = fresh({"Date": d(T0 - 10), "Age": "500", "Cache-Control": "max-age=600"})
    assert f.corrected_initial_age == 500


@pytest.mark.parametrize(("age", "expected"), [("10, 20", 10), ("abc", 0), ("-5", 0), ("", 0), (" 7 ", 7)])
def test_5_1_age_field(age: str, expected: float) -> None:
    # §5.1: a list-valued Age uses its first member; an invalid one is ignored.
    assert fresh({"Date": d(T0), "Age": age}).corrected_initial_age == expected


def test_4_2_3_request_time_after_response_time_is_no_negative_delay() -> None:
    assert compute_freshness({"Date": d(T0)}, T0 + 5, T0).corrected_initial_age == 0


def test_4_2_age_now_and_freshness_boundary() -> None:
    f = fresh({"Date": d(T0), "Cache-Control": "max-age=60"})
    assert f.age(T0) == 0 and f.is_fresh(T0)
    assert f.is_fresh(T0 + 59.999)
    # "response_is_fresh = (freshness_lifetime > current_age)": stale at exactly the lifetime.
    assert not f.is_fresh(T0 + 60)
    assert f.fresh_until() == T0 + 60
    assert f.ttl(T0 + 20) == 40 and f.ttl(T0 + 70) == -10
    assert f.staleness(T0 + 20) == 0 and f.staleness(T0 + 70) == 10


def test_4_2_3_clock_stepping_back_never_makes_a_response_younger() -> None:
    f = compute_freshness({"Date": d(T0), "Age": "30", "Cache-Control": "max-age=60"}, T0, T0)
    assert f.age(T0 - 1000) == 30


# --- the catalog's TTL classes (CloudFront semantics) -------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "expected", "source"),
    [
        (None, 2592000, "default"),  # no origin directive: default_ttl
        ("max-age=60", 3600, "max-age"),  # below min_ttl: raised
        ("max-age=86400", 86400, "max-age"),  # within: kept
        ("max-age=999999999", 31536000, "max-age"),  # above max_ttl: lowered
        ("s-maxage=10, max-age=99999", 3600, "s-maxage"),
        ("max-age=bogus", 3600, "max-age"),  # invalid is 0, then raised to min_ttl
    ],
)
def test_class_clamps_explicit_lifetimes_and_defaults_otherwise(
    cache_control: str | None, expected: int, source: str
) -> None:
    image = ttl_class(3600, 2592000, 31536000)
    headers = {"Date": d(T0)}
    if cache_control:
        headers["Cache-Control"] = cache_control
    f = fresh(headers, ttl_class=image)
    assert (f.lifetime, f.source) == (expected, source)


def test_class_clamps_expires_too() -> None:
    manifest = ttl_class(0, 300, 600)
    assert fresh({"Date": d(T0), "Expires": d(T0 + 3600)}, ttl_class=manifest).lifetime == 600
    image = ttl_class(3600, 2592000, 31536000)
    assert fresh({"Date": d(T0), "Expires": "0"}, ttl_class=image).lifetime == 3600


def test_class_default_replaces_the_heuristic() -> None:
    f = fresh({"Date": d(T0), "Last-Modified": d(T0 - 100 * DAY)}, ttl_class=ttl_class(0, 300, 600))
    assert (f.lifetime, f.source) == (300, "default")


def test_class_never_overrides_origin_no_cache() -> None:
    # CloudFront would keep it for min_ttl; RFC 9111 §5.2.2.4 says it MUST NOT be reused unvalidated.
    f = fresh({"Cache-Control": "no-cache, max-age=600"}, ttl_class=ttl_class(3600, 2592000, 31536000))
    assert f.lifetime == 0 and f.no_cache and f.source == "no-cache"


def test_class_errors_are_not_raised_to_min_ttl() -> None:
    image = ttl_class(3600, 2592000, 31536000)
    f = fresh({"Date": d(T0)}, status=404, ttl_class=image)
    assert (f.lifetime, f.source) == (ERROR_TTL, "error")  # negative caching, not a year
    assert fresh({"Cache-Control": "max-age=0"}, status=404, ttl_class=image).lifetime == 0
    assert fresh({"Cache-Control": "max-age=99999999"}, status=404, ttl_class=image).lifetime == 31536000
    assert fresh({"Cache-Control": "max-age=60"}, status=500, ttl_class=image).lifetime == 60
    assert fresh({}, status=500, ttl_class=image).lifetime == 0
    assert fresh({}, status=404, ttl_class=ttl_class(0, 0, 0, cacheable=False)).lifetime == 0


def test_class_not_cacheable_has_no_lifetime() -> None:
    assert (
        fresh({"Cache-Control": "max-age=600"}, ttl_class=ttl_class(0, 0, 0, cacheable=False)).lifetime == 0
    )


def test_class_flags_and_windows() -> None:
    api = ttl_class(0, 300, 900, swr=60)
    assert fresh({}, ttl_class=api).stale_while_revalidate == 60
    # The response's own directive wins over the class; an invalid one is 0.
    assert fresh({"Cache-Control": "stale-while-revalidate=5"}, ttl_class=api).stale_while_revalidate == 5
    assert fresh({"Cache-Control": "stale-while-revalidate=x"}, ttl_class=api).stale_while_revalidate == 0
    assert fresh({}, ttl_class=ttl_class(must_revalidate=True)).must_revalidate
    assert fresh({}, ttl_class=ttl_class(immutable=True)).immutable
    assert not fresh({}, ttl_class=api).must_revalidate


def test_packaged_catalog_classes_from_issue_6() -> None:
    # Static assets a year immutable; manifests 5 min; API 5 min + swr 60; user content 1 h
    # must-revalidate; dynamic never stored.
    f = fresh({}, ttl_class=classify("/app.3f2a.js"))
    assert f.lifetime == 31536000 and f.immutable
    assert fresh({}, ttl_class=classify("/t/1/main.mpd")).lifetime == 300
    f = fresh({}, ttl_class=classify("/api/v1/titles"))
    assert f.lifetime == 300 and f.stale_while_revalidate == 60
    f = fresh({}, ttl_class=classify("/uploads/a.bin"))
    assert f.lifetime == 3600 and f.must_revalidate
    assert not classify("/dynamic/cart").cacheable and classify("/").cacheable


# --- response directive flags (§5.2.2) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "must_revalidate"),
    [
        ("max-age=60", False),
        ("max-age=60, must-revalidate", True),  # §5.2.2.2
        ("max-age=60, proxy-revalidate", True),  # §5.2.2.8, for shared caches
        ("s-maxage=60", True),  # §5.2.2.10 "incorporates the semantics of proxy-revalidate"
        ("max-age=60, Must-Revalidate", True),
    ],
)
def test_5_2_2_revalidation_flags(cache_control: str, must_revalidate: bool) -> None:
    assert fresh({"Cache-Control": cache_control}).must_revalidate is must_revalidate


def test_5_2_2_4_no_cache_with_and_without_field_names() -> None:
    f = fresh({"Cache-Control": "no-cache, max-age=600"})
    assert f.no_cache and f.lifetime == 0 and not f.is_fresh(T0)
    # Qualified: only the named fields need validation, and we never store those.
    f = fresh({"Cache-Control": 'no-cache="Set-Cookie", max-age=600'})
    assert not f.no_cache and f.lifetime == 600
    assert fresh({"Cache-Control": 'no-cache="", max-age=600'}).no_cache  # empty list: unqualified


def test_rfc8246_immutable() -> None:
    assert fresh({"Cache-Control": "max-age=31536000, immutable"}).immutable
    assert not fresh({"Cache-Control": "max-age=31536000"}).immutable


# --- RFC 5861 windows ---------------------------------------------------------------------------

SWR = {"Date": d(T0), "Cache-Control": "max-age=60, stale-while-revalidate=30, stale-if-error=600"}


def test_rfc5861_3_stale_while_revalidate_window() -> None:
    f = fresh(SWR)
    assert (f.stale_while_revalidate, f.stale_if_error) == (30, 600)
    assert not f.can_serve_stale_while_revalidate(T0 + 59)  # fresh: nothing to do
    assert f.can_serve_stale_while_revalidate(T0 + 60)
    assert f.can_serve_stale_while_revalidate(T0 + 90)  # "up to the indicated number of seconds"
    assert not f.can_serve_stale_while_revalidate(T0 + 90.5)
    assert not fresh({"Cache-Control": "max-age=60"}).can_serve_stale_while_revalidate(T0 + 61)


def test_rfc5861_4_stale_if_error_window() -> None:
    f = fresh(SWR)
    assert f.can_serve_stale_on_error(T0 + 30)  # still fresh
    assert f.can_serve_stale_on_error(T0 + 100)
    assert f.can_serve_stale_on_error(T0 + 660)
    assert not f.can_serve_stale_on_error(T0 + 661)
    assert not fresh({"Cache-Control": "max-age=60"}).can_serve_stale_on_error(T0 + 61)


@pytest.mark.parametrize("extra", ["must-revalidate", "proxy-revalidate", "s-maxage=60", "no-cache"])
def test_4_2_4_stale_is_never_served_when_a_directive_forbids_it(extra: str) -> None:
    # "A cache MUST NOT generate a stale response if it is prohibited by an explicit in-protocol
    # directive (e.g., by a no-cache response directive, a must-revalidate response directive, or
    # an applicable s-maxage or proxy-revalidate response directive)"
    f = fresh({"Date": d(T0), "Cache-Control": f"{SWR['Cache-Control']}, {extra}"})
    for t in (T0 + 61, T0 + 80, T0 + 300):
        assert not f.can_serve_stale_while_revalidate(t)
        assert not f.can_serve_stale_on_error(t)


def test_4_3_3_fresh_must_revalidate_response_can_answer_when_a_forced_revalidation_fails() -> None:
    f = fresh({"Date": d(T0), "Cache-Control": "max-age=60, must-revalidate"})
    assert f.can_serve_stale_on_error(T0 + 30)
    assert not f.can_serve_stale_on_error(T0 + 61)


def test_stale_windows_respect_the_clients_directives() -> None:
    f = fresh(SWR)
    now = T0 + 80  # 20 s stale
    assert f.can_serve_stale_while_revalidate(now, {})
    for cc, allowed in (
        ("no-cache", False),
        ("max-age=3600", False),  # §5.2.1.1: no stale response wanted without max-stale
        ("min-fresh=1", False),
        ("max-stale=10", False),
        ("max-stale=30", True),
        ("max-stale", True),
        ("no-store", True),
    ):
        assert f.can_serve_stale_while_revalidate(now, parse_cache_control(cc)) is allowed, cc
        assert f.can_serve_stale_on_error(now, parse_cache_control(cc)) is allowed, cc


def test_rfc5861_4_request_stale_if_error_sets_the_window() -> None:
    no_window = fresh({"Date": d(T0), "Cache-Control": "max-age=60"})
    assert no_window.can_serve_stale_on_error(T0 + 100, parse_cache_control("stale-if-error=50"))
    assert not no_window.can_serve_stale_on_error(T0 + 100, parse_cache_control("stale-if-error=30"))
    assert not fresh(SWR).can_serve_stale_on_error(T0 + 100, parse_cache_control("stale-if-error=5"))
    must = fresh({"Date": d(T0), "Cache-Control": "max-age=60, must-revalidate"})
    assert not must.can_serve_stale_on_error(T0 + 100, parse_cache_control("stale-if-error=500"))


# --- persistence --------------------------------------------------------------------------------


def test_to_dict_round_trips_through_json() -> None:
    f = compute_freshness(
        {"Date": d(T0 - 5), "Age": "3", "Cache-Control": "s-maxage=60, immutable, stale-if-error=9"},
        T0 - 1.5,
        T0,
        ttl_class(swr=7),
    )
    g = Freshness.from_dict(json.loads(json.dumps(f.to_dict())))
    assert g == f
    assert g.to_dict() == f.to_dict()


def test_from_dict_tolerates_missing_optional_fields() -> None:
    f = Freshness.from_dict({"lifetime": 60, "corrected_initial_age": 0, "response_time": T0})
    assert f == Freshness(60.0, 0.0, T0)


# --- §5.2.1 request directives ------------------------------------------------------------------


def allows(request_cc: str | None, headers: dict[str, str], at: float, pragma: str | None = None) -> str:
    return request_allows_stored(parse_request_cache_control(request_cc, pragma), fresh(headers), at)


MAX60 = {"Date": d(T0), "Cache-Control": "max-age=60"}


def test_4_no_request_directives() -> None:
    assert allows(None, MAX60, T0 + 10) == "fresh"
    assert allows(None, MAX60, T0 + 60) == "revalidate"


def test_5_2_1_4_request_no_cache_revalidates_even_when_fresh() -> None:
    assert allows("no-cache", MAX60, T0 + 1) == "revalidate"
    assert allows(None, MAX60, T0 + 1, pragma="no-cache") == "revalidate"  # §5.4
    assert allows("max-age=600", MAX60, T0 + 1, pragma="no-cache") == "fresh"  # Pragma ignored


def test_5_2_1_5_request_no_store_does_not_stop_reuse() -> None:
    assert allows("no-store", MAX60, T0 + 10) == "fresh"


def test_5_2_1_1_request_max_age() -> None:
    assert allows("max-age=0", MAX60, T0) == "fresh"  # age 0 <= 0
    assert allows("max-age=0", MAX60, T0 + 5) == "revalidate"
    assert allows("max-age=10", MAX60, T0 + 10) == "fresh"
    assert allows("max-age=10", MAX60, T0 + 11) == "revalidate"
    assert allows("max-age=junk", MAX60, T0 + 1) == "revalidate"  # invalid reads as 0


def test_5_2_1_3_request_min_fresh() -> None:
    # "the client prefers a response whose freshness lifetime is no less than its current age plus
    # the specified time in seconds"
    assert allows("min-fresh=40", MAX60, T0 + 20) == "fresh"
    assert allows("min-fresh=41", MAX60, T0 + 20) == "revalidate"
    assert allows("min-fresh=x", MAX60, T0 + 59) == "fresh"  # invalid reads as 0
    assert allows("min-fresh=x", MAX60, T0 + 60) == "revalidate"


def test_5_2_1_2_request_max_stale() -> None:
    assert allows(None, MAX60, T0 + 70) == "revalidate"
    assert allows("max-stale", MAX60, T0 + 10_000) == "stale-ok"  # any staleness
    assert allows("max-stale=10", MAX60, T0 + 70) == "stale-ok"
    assert allows("max-stale=10", MAX60, T0 + 71) == "revalidate"
    assert allows("max-stale=ten", MAX60, T0 + 61) == "revalidate"
    assert allows("max-stale=10", MAX60, T0 + 30) == "fresh"


def test_5_2_1_request_max_age_and_max_stale_together() -> None:
    assert allows("max-age=600, max-stale", MAX60, T0 + 500) == "stale-ok"
    assert allows("max-age=600, max-stale", MAX60, T0 + 700) == "revalidate"
    assert allows("min-fresh=5, max-stale", MAX60, T0 + 70) == "revalidate"


@pytest.mark.parametrize("directive", ["must-revalidate", "proxy-revalidate", "s-maxage=60"])
def test_5_2_2_2_max_stale_cannot_override_must_revalidate(directive: str) -> None:
    # §5.2.2.2: "the cache MUST NOT use the response to satisfy subsequent requests without
    # successful validation on the origin server" once stale.
    h = {"Date": d(T0), "Cache-Control": f"max-age=60, {directive}"}
    assert allows("max-stale", h, T0 + 70) == "revalidate"
    assert allows("max-stale", h, T0 + 10) == "fresh"


def test_5_2_2_4_response_no_cache_always_revalidates() -> None:
    h = {"Date": d(T0), "Cache-Control": "no-cache, max-age=600"}
    assert allows(None, h, T0) == "revalidate"
    assert allows("max-stale", h, T0) == "revalidate"


def test_rfc8246_immutable_ignores_reload_max_age_but_not_no_cache() -> None:
    h = {"Date": d(T0), "Cache-Control": "max-age=600, immutable"}
    assert allows("max-age=0", h, T0 + 100) == "fresh"  # a reload
    assert allows("no-cache", h, T0 + 100) == "revalidate"  # a forced reload
    assert allows("max-age=0", h, T0 + 700) == "revalidate"  # stale: immutable no longer helps
    assert allows("min-fresh=600", h, T0 + 100) == "revalidate"


# --- §4.3 validation ----------------------------------------------------------------------------


def test_4_3_1_conditional_headers() -> None:
    # "MUST send the relevant entity tags ... SHOULD send the Last-Modified value"
    lm = "Sun, 06 Nov 1994 08:49:37 GMT"
    assert conditional_headers('"v1"', lm) == {"If-None-Match": '"v1"', "If-Modified-Since": lm}
    assert conditional_headers('W/"v1"', None) == {"If-None-Match": 'W/"v1"'}
    assert conditional_headers(None, lm) == {"If-Modified-Since": lm}
    assert conditional_headers(None, 784111777.9) == {"If-Modified-Since": lm}
    assert conditional_headers("", "") == {}
    assert conditional_headers(None, None) == {}


@pytest.mark.parametrize(
    ("stored_etag", "headers_304", "expected"),
    [
        ('"a"', {"ETag": '"a"'}, True),
        ('"a"', {"ETag": '"b"'}, False),
        ('W/"a"', {"ETag": '"a"'}, False),  # a strong validator needs a strong stored one
        ('W/"a"', {"ETag": 'W/"a"'}, True),  # weak validators: weak comparison
        ('"a"', {"etag": 'W/"a"'}, True),
        (None, {"ETag": '"a"'}, False),
        ('"a"', {}, True),  # no validator in the 304: it answers our own request
        ('"a"', {"Last-Modified": "Sun, 06 Nov 1994 08:49:37 GMT"}, True),
        ('"a"', {"Last-Modified": "Sun, 06 Nov 1994 08:49:38 GMT"}, False),
        ('"a"', {"Last-Modified": "garbage"}, True),
    ],
)
def test_4_3_4_selecting_the_stored_response_to_update(
    stored_etag: str | None, headers_304: dict[str, str], expected: bool
) -> None:
    assert refresh_applies(stored_etag, 784111777.5, headers_304) is expected


def test_4_3_4_last_modified_needs_a_stored_one() -> None:
    assert not refresh_applies(None, None, {"Last-Modified": "Sun, 06 Nov 1994 08:49:37 GMT"})


STORED = {
    "content-type": "text/html",
    "content-length": "1234",
    "content-encoding": "gzip",
    "cache-control": "max-age=60",
    "etag": '"v1"',
    "date": d(T0 - 120),
    "age": "50",
    "x-user": "alice",
}


def test_4_3_4_merge_304_updates_stored_fields() -> None:
    h304 = {
        "Date": d(T0),
        "Cache-Control": "max-age=120",
        "ETag": '"v1"',
        "X-New": "1",
        "Content-Length": "0",  # §3.2: never from the 304
        "Content-Encoding": "identity",  # the stored bytes are gzip
        "Content-Range": "bytes 0-1/2",
        "Connection": "close, X-Hop",
        "X-Hop": "y",
        "Keep-Alive": "timeout=5",
        "Transfer-Encoding": "chunked",
        "Proxy-Authenticate": "Basic",
        "Set-Cookie": "sid=1",
    }
    assert merge_304(STORED, h304) == {
        "content-type": "text/html",
        "content-length": "1234",
        "content-encoding": "gzip",
        "cache-control": "max-age=120",
        "etag": '"v1"',
        "date": d(T0),
        "x-user": "alice",
        "x-new": "1",
    }


def test_4_3_4_merge_304_age_comes_from_the_304() -> None:
    assert "age" not in merge_304(STORED, {"Date": d(T0)})
    assert merge_304(STORED, {"Age": "3"})["age"] == "3"


def test_4_3_4_merge_304_drops_fields_named_by_qualified_no_cache_or_private() -> None:
    merged = merge_304(STORED, {"Cache-Control": 'max-age=60, private="X-User"'})
    assert "x-user" not in merged
    merged = merge_304(STORED, {"Cache-Control": 'no-cache="x-user", max-age=60', "X-User": "bob"})
    assert "x-user" not in merged


def test_4_3_4_merge_304_is_case_insensitive() -> None:
    merged = merge_304({"Cache-Control": "max-age=1", "ETag": '"a"'}, {"cache-control": "max-age=2"})
    assert merged == {"cache-control": "max-age=2", "etag": '"a"'}


def test_4_3_4_refresh_makes_the_stored_response_fresh_again() -> None:
    # Stored at T0-120 with max-age=60: stale. The 304 at T0 carries a new Date.
    old = compute_freshness(STORED, T0 - 121, T0 - 120)
    assert not old.is_fresh(T0)
    merged = merge_304(STORED, {"Date": d(T0), "ETag": '"v1"'})
    new = compute_freshness(merged, T0 - 0.5, T0)
    assert new.corrected_initial_age == 0.5  # the stored Age 50 no longer counts
    assert new.is_fresh(T0 + 59)
    assert not new.is_fresh(T0 + 60)
