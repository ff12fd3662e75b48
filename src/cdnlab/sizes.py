"""Human sizes ("512K", "10G", "1.5T") to bytes: one parser for config files and CLI flags."""

from __future__ import annotations

import re

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string like '10G'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"not a size: {value!r} (expected e.g. 512K, 10G, 2T)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])
