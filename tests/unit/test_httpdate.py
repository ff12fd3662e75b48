"""HTTP-date (RFC 9110 §5.6.7) and the Date header cache.

Expected timestamps come from calendar.timegm and email.utils, not from the code under test.
"""

from __future__ import annotations

import calendar
import email.utils
import random
import time

import pytest

from cdnlab.edge.httpdate import DateCache, format_http_date, parse_http_date

# RFC 9110 §5.6.7: "Sun, 06 Nov 1994 08:49:37 GMT" in its three spellings.
NOV_6_1994 = calendar.timegm((1994, 11, 6, 8, 49, 37, 0, 0, 0))
NOW_2026 = float(calendar.timegm((2026, 5, 1, 12, 0, 0, 0, 0, 0)))


# --- formatting: IMF-fixdate is the only format a sender generates (§5.6.7) ---


def test_rfc9110_5_6_7_imf_fixdate_example() -> None:
    assert format_http_date(NOV_6_1994) == "Sun, 06 Nov 1994 08:49:37 GMT"


def test_format_epoch_and_leap_day() -> None:
    assert format_http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert format_http_date(calendar.timegm((2000, 2, 29, 23, 59, 59, 0, 0, 0))) == (
        "Tue, 29 Feb 2000 23:59:59 GMT"
    )


def test_format_drops_fractions_of_a_second() -> None:
    assert format_http_date(NOV_6_1994 + 0.999) == "Sun, 06 Nov 1994 08:49:37 GMT"


def test_format_matches_email_utils_for_random_times() -> None:
    rng = random.Random(5607)
    for _ in range(2000):
        ts = rng.randrange(0, 253402300799)  # up to 9999-12-31
        assert format_http_date(ts) == email.utils.formatdate(ts, usegmt=True)


# --- parsing: a recipient MUST accept all three formats (§5.6.7) ---


@pytest.mark.parametrize(
    "text",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850 format
        "Sun Nov  6 08:49:37 1994",  # ANSI C's asctime() format
    ],
)
def test_rfc9110_5_6_7_three_formats(text: str) -> None:
    assert parse_http_date(text, now=NOW_2026) == NOV_6_1994


def test_asctime_day_forms() -> None:
    # date3 = month SP ( 2DIGIT / ( SP DIGIT ) )
    assert parse_http_date("Sun Nov 06 08:49:37 1994") == NOV_6_1994
    assert parse_http_date("Wed Nov 16 08:49:37 1994") == NOV_6_1994 + 10 * 86400


def test_rfc9111_4_2_cache_matches_case_insensitively() -> None:
    assert parse_http_date("sun, 06 nov 1994 08:49:37 gmt") == NOV_6_1994
    assert parse_http_date("SUNDAY, 06-NOV-94 08:49:37 GMT", now=NOW_2026) == NOV_6_1994
    assert parse_http_date("SUN NOV  6 08:49:37 1994") == NOV_6_1994


def test_surrounding_ows_is_tolerated() -> None:
    assert parse_http_date("  Sun, 06 Nov 1994 08:49:37 GMT\t") == NOV_6_1994


@pytest.mark.parametrize(
    ("yy", "year"),
    [
        ("94", 1994),
        ("26", 2026),
        ("76", 2076),  # exactly 50 years ahead: not "more than 50 years in the future"
        ("77", 1977),  # 51 years ahead: the most recent past year ending in 77
        ("00", 2000),
        ("99", 1999),
    ],
)
def test_rfc9110_5_6_7_two_digit_year_rule(yy: str, year: int) -> None:
    expected = calendar.timegm((year, 11, 6, 8, 49, 37, 0, 0, 0))
    # The day name is not cross-checked against the date, so "Sunday" serves for every year.
    assert parse_http_date(f"Sunday, 06-Nov-{yy} 08:49:37 GMT", now=NOW_2026) == expected


def test_leap_second_is_accepted() -> None:
    # time-of-day 00:00:00 - 23:59:60 (leap second)
    base = calendar.timegm((2016, 12, 31, 23, 59, 59, 0, 0, 0))
    assert parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT") == base + 1


def test_feb_29_only_in_leap_years() -> None:
    assert parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT") == calendar.timegm((2000, 2, 29, 0, 0, 0))
    assert parse_http_date("Thu, 29 Feb 1900 00:00:00 GMT") is None  # 1900 is not a leap year
    assert parse_http_date("Sun, 29 Feb 2023 00:00:00 GMT") is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "yesterday",
        "784111777",
        "Sun, 06 Nov 1994 08:49:37 UTC",  # HTTP-date is always GMT
        "Sun, 06 Nov 1994 08:49:37 +0000",
        "Sun, 6 Nov 1994 08:49:37 GMT",  # IMF-fixdate day is 2DIGIT
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun,  06 Nov 1994 08:49:37 GMT",  # no extra whitespace (§5.6.7)
        "Sun, 06  Nov 1994 08:49:37 GMT",
        "Sun 06 Nov 1994 08:49:37 GMT",
        "Sun, 06-Nov-1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Sun, 06 Nov 1994 08:49 GMT",
        "Sun, 06 Nov 1994 08-49-37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06-Nov-94 08:49:37 GMT",  # rfc850 needs the long day name
        "Sunday, 06-Nov-94 08:49:37",
        "Sunday, 6-Nov-94 08:49:37 GMT",
        "Sunnyday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",  # asctime single-digit day needs SP DIGIT
        "Sun Nov  6 08:49:37 94",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 31 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, +6 Nov 1994 08:49:37 GMT",  # int() would accept these
        "Sun, 06 Nov 1_94 08:49:37 GMT",
        "Sun, ٠٦ Nov 1994 08:49:37 GMT",  # non-ASCII digits
        "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",  # a list of dates
    ],
)
def test_garbage_is_none(text: str) -> None:
    assert parse_http_date(text, now=NOW_2026) is None


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def test_round_trip_random_in_all_three_formats() -> None:
    rng = random.Random(9110)
    for _ in range(3000):
        ts = rng.randrange(-(10**10), 253402300799)
        assert parse_http_date(format_http_date(ts)) == ts
        t = time.gmtime(ts)
        clock = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        asc = f"{_DAYS[t.tm_wday]} {_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {clock} {t.tm_year:04d}"
        assert parse_http_date(asc) == ts
        if 1977 <= t.tm_year <= 2076:  # the window the two-digit year rule maps to, from 2026
            rfc850 = f"{_LONG[t.tm_wday]}, {t.tm_mday:02d}-{_MONTHS[t.tm_mon - 1]}-{t.tm_year % 100:02d} "
            assert parse_http_date(rfc850 + clock + " GMT", now=NOW_2026) == ts


# --- DateCache ---


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_date_cache_value_and_line() -> None:
    clock = FakeClock(NOV_6_1994 + 0.25)
    cache = DateCache(clock)
    assert cache.get() == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert cache.header_line() == b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"


def test_date_cache_recomputes_at_most_once_per_second() -> None:
    clock = FakeClock(NOV_6_1994 + 0.0)
    cache = DateCache(clock)
    first = cache.get()
    for frac in (0.1, 0.5, 0.999):
        clock.t = NOV_6_1994 + frac
        assert cache.get() is first  # the very same object: nothing was rebuilt
    clock.t = NOV_6_1994 + 1.0
    second = cache.get()
    assert second == b"Sun, 06 Nov 1994 08:49:38 GMT"
    assert cache.get() is second


def test_date_cache_follows_clock_stepping_back() -> None:
    clock = FakeClock(NOV_6_1994 + 10.5)
    cache = DateCache(clock)
    assert cache.get() == b"Sun, 06 Nov 1994 08:49:47 GMT"
    clock.t = NOV_6_1994 + 0.5
    assert cache.get() == b"Sun, 06 Nov 1994 08:49:37 GMT"


def test_date_cache_default_clock_is_now() -> None:
    got = parse_http_date(DateCache().get().decode())
    assert got is not None
    assert abs(got - time.time()) < 5
