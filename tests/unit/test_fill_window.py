"""The appliance side of fill, pure parts: the fill window (local time, wrapping midnight) and
partial downloads kept only for keys still planned."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from cdnlab.edge.fill import Partials
from cdnlab.edge.fillrun import in_window, parse_window, until_open


def at(hh: int, mm: int) -> dt.datetime:
    return dt.datetime(2026, 11, 23, hh, mm)


def test_window_parsing() -> None:
    assert parse_window("02:00-06:00") == (120, 360)
    assert parse_window(" 23:30-01:15 ") == (1410, 75)
    for bad in ("2:00-6:00", "02:00", "24:00-01:00", "02:60-03:00", "02:00_06:00", ""):
        with pytest.raises(ValueError, match="HH:MM-HH:MM"):
            parse_window(bad)


def test_in_window_and_wrap() -> None:
    w = parse_window("02:00-06:00")
    assert in_window(w, at(2, 0)) and in_window(w, at(5, 59))
    assert not in_window(w, at(6, 0)) and not in_window(w, at(1, 59)) and not in_window(w, at(14, 0))
    night = parse_window("23:00-01:00")
    assert in_window(night, at(23, 30)) and in_window(night, at(0, 30))
    assert not in_window(night, at(1, 0)) and not in_window(night, at(22, 59))
    assert in_window(parse_window("00:00-00:00"), at(13, 13))  # start == end: all day


def test_until_open() -> None:
    w = parse_window("02:00-06:00")
    assert until_open(w, at(3, 0)) == 0
    assert until_open(w, at(1, 0)) == 3600
    assert until_open(w, at(22, 0)) == 4 * 3600  # the next night


def test_partials_prune_and_drop(tmp_path: Path) -> None:
    parts = Partials(tmp_path)
    for key in ("/content/a/1.m4s", "/content/b/2.m4s"):
        part, _ = parts.paths(key)
        part.write_bytes(b"x" * 10)
        parts.save_meta(key, {"key": key, "sha256": "0" * 64, "validator": '"e"'})
    assert parts.bytes() == 20
    assert parts.meta("/content/a/1.m4s")["validator"] == '"e"'
    assert parts.prune({"/content/a/1.m4s"}) == 1
    assert sorted(p.suffix for p in parts.dir.iterdir()) == [".json", ".part"]
    parts.drop("/content/a/1.m4s")
    assert list(parts.dir.iterdir()) == []
    assert parts.meta("/content/a/1.m4s") == {}
