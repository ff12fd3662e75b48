"""HTTP-date formatting and parsing (RFC 9110 §5.6.7) and a per-second Date header cache.

Pure functions over strings and floats (POSIX seconds, UTC). Parsing avoids regexes and
``time.strptime`` (locale-dependent and slow): the three formats have fixed layouts, so fixed
offsets and ``str.isdigit`` on ASCII slices do the work.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["DateCache", "format_http_date", "parse_http_date"]

# time.gmtime's tm_wday is 0 for Monday.
_WKDAY = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Lower-cased lookups: RFC 9110 §5.6.7 calls HTTP-date case-sensitive, but RFC 9111 §4.2 asks a
# cache recipient to match it case-insensitively, and this daemon is a cache.
_MONTH_NUM = {m.lower(): i for i, m in enumerate(_MONTHS, 1)}
_SHORT_DAYS = frozenset(d.lower() for d in _WKDAY)
_LONG_DAYS = frozenset(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def format_http_date(ts: float) -> str:
    """IMF-fixdate for a POSIX timestamp, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``.

    Fractions of a second are dropped (gmtime floors), matching how Last-Modified is compared.
    Built by hand rather than with strftime so the locale can never change the names.
    """
    t = time.gmtime(ts)
    return (
        f"{_WKDAY[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def _num(s: str) -> int:
    """Non-negative int from ASCII digits only, else -1 (int() would accept '+1', ' 1', '1_0')."""
    return int(s) if s.isascii() and s.isdigit() else -1


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).

    Plain arithmetic: unlike calendar.timegm it needs no datetime object and has no year limits.
    """
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _to_timestamp(year: int, month: int, day: int, clock: str) -> float | None:
    # clock is "HH:MM:SS"; second 60 is allowed for leap seconds (RFC 9110 §5.6.7) and simply
    # rolls into the next minute.
    if len(clock) != 8 or clock[2] != ":" or clock[5] != ":":
        return None
    hh, mm, ss = _num(clock[0:2]), _num(clock[3:5]), _num(clock[6:8])
    if not (0 <= hh <= 23 and 0 <= mm <= 59 and 0 <= ss <= 60):
        return None
    if year < 0 or not 1 <= month <= 12 or day < 1:
        return None
    dim = _DAYS_IN_MONTH[month]
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        dim = 29
    if day > dim:
        return None
    return float(_days_from_civil(year, month, day) * 86400 + hh * 3600 + mm * 60 + ss)


def parse_http_date(s: str, *, now: float | None = None) -> float | None:
    """POSIX timestamp for an HTTP-date in any of the three RFC 9110 §5.6.7 formats, else None.

    - IMF-fixdate:  ``Sun, 06 Nov 1994 08:49:37 GMT``
    - rfc850-date:  ``Sunday, 06-Nov-94 08:49:37 GMT`` (two-digit year: a date more than 50 years
      in the future means the most recent past year with those digits; ``now`` sets "today"
      for that rule and defaults to the wall clock)
    - asctime-date: ``Sun Nov  6 08:49:37 1994``

    Names match case-insensitively (RFC 9111 §4.2). The day name must be a real day name but is
    not checked against the date (like nginx and most parsers; it carries no information).
    Leading and trailing OWS are tolerated; no other extra whitespace is.
    """
    s = s.strip(" \t")
    n = len(s)
    if n == 29:
        # IMF-fixdate: fixed offsets "Sun, 06 Nov 1994 08:49:37 GMT"
        if (
            s[3:5] != ", "
            or s[7] != " "
            or s[11] != " "
            or s[16] != " "
            or s[25:].lower() != " gmt"
            or s[0:3].lower() not in _SHORT_DAYS
        ):
            return None
        day = _num(s[5:7])
        month = _MONTH_NUM.get(s[8:11].lower(), 0)
        year = _num(s[12:16])
        return _to_timestamp(year, month, day, s[17:25])
    if n == 24:
        # asctime-date: "Sun Nov  6 08:49:37 1994"; the day is 2DIGIT or SP DIGIT.
        if s[3] != " " or s[7] != " " or s[10] != " " or s[19] != " " or s[0:3].lower() not in _SHORT_DAYS:
            return None
        day = _num(s[9]) if s[8] == " " else _num(s[8:10])
        month = _MONTH_NUM.get(s[4:7].lower(), 0)
        year = _num(s[20:24])
        return _to_timestamp(year, month, day, s[11:19])
    # rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT" (the day name varies in length)
    comma = s.find(", ")
    if comma < 0 or s[:comma].lower() not in _LONG_DAYS:
        return None
    rest = s[comma + 2 :]
    if len(rest) != 22 or rest[2] != "-" or rest[6] != "-" or rest[9] != " " or rest[18:].lower() != " gmt":
        return None
    day = _num(rest[0:2])
    month = _MONTH_NUM.get(rest[3:6].lower(), 0)
    yy = _num(rest[7:9])
    if yy < 0:
        return None
    this_year = time.gmtime(time.time() if now is None else now).tm_year
    year = this_year - this_year % 100 + yy
    if year > this_year + 50:
        year -= 100
    return _to_timestamp(year, month, day, rest[10:18])


class DateCache:
    """The current IMF-fixdate as bytes, rebuilt at most once per second.

    ``get()`` costs one clock read and a float comparison on the hot path; the string is only
    reformatted when the clock crosses into a new second (or steps backwards).
    """

    __slots__ = ("_clock", "_hi", "_line", "_lo", "_value")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lo = 0.0
        self._hi = -1.0  # forces a refresh on the first call
        self._value = b""
        self._line = b""

    def _refresh(self, now: float) -> None:
        sec = float(int(now // 1))
        self._lo, self._hi = sec, sec + 1.0
        self._value = format_http_date(sec).encode("ascii")
        self._line = b"Date: " + self._value + b"\r\n"

    def get(self) -> bytes:
        """Value bytes for the Date header, e.g. ``b"Sun, 06 Nov 1994 08:49:37 GMT"``."""
        now = self._clock()
        if not self._lo <= now < self._hi:
            self._refresh(now)
        return self._value

    def header_line(self) -> bytes:
        """The whole header line, ``b"Date: <IMF-fixdate>\\r\\n"``, ready to append to a head."""
        now = self._clock()
        if not self._lo <= now < self._hi:
            self._refresh(now)
        return self._line
