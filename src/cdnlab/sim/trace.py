"""Request traces: CSV ``timestamp,key,size`` and libCacheSim's ``oracleGeneral`` binary.

oracleGeneral (libCacheSim ``traceReader/customizedReader/oracle/oracleGeneralBin.h``) is a flat
array of little-endian 24-byte records ``uint32 time, uint64 obj_id, uint32 size, int64
next_access_vtime`` (-1: never again). The reader keeps the first three; the simulator computes
next accesses itself, so files from other tools need not fill that field in correctly. Requests
of size 0 are skipped, as libCacheSim does by default. A ``.gz`` suffix is read through gzip.
"""

from __future__ import annotations

import csv
import gzip
import io
import struct
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ORACLE_RECORD = struct.Struct("<IQIq")


@dataclass
class Trace:
    """Parallel lists, one entry per request, in time order."""

    times: list[float] = field(default_factory=list)
    keys: list[Hashable] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def append(self, time: float, key: Hashable, size: int) -> None:
        self.times.append(time)
        self.keys.append(key)
        self.sizes.append(size)

    def unique_bytes(self) -> int:
        """Bytes of the distinct objects (the working set), last size seen per key."""
        return sum(dict(zip(self.keys, self.sizes, strict=True)).values())

    def total_bytes(self) -> int:
        return sum(self.sizes)


def _open(path: str | Path, mode: str) -> IO:
    if str(path).endswith(".gz"):
        return gzip.open(path, mode)
    return open(path, mode)


def _key(text: str) -> Hashable:
    # Numeric ids stay ints (cheaper to hash, and round-trip with oracleGeneral).
    return int(text) if text.isdigit() else text


def read_csv(path: str | Path) -> Trace:
    """``timestamp,key,size`` rows; a first row that is not numeric is taken as a header."""
    trace = Trace()
    with _open(path, "rb") as raw:
        rows = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        for n, row in enumerate(rows, 1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{n}: expected timestamp,key,size, got {row!r}")
            try:
                t, size = float(row[0]), int(row[-1])
            except ValueError:
                if n == 1:
                    continue  # header
                raise ValueError(f"{path}:{n}: bad timestamp or size in {row!r}") from None
            if size > 0:
                # a key may itself contain commas: everything between the first and last field
                trace.append(t, _key(",".join(row[1:-1])), size)
    return trace


def write_csv(trace: Trace, path: str | Path) -> None:
    with _open(path, "wb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("timestamp", "key", "size"))
        for t, k, s in zip(trace.times, trace.keys, trace.sizes, strict=True):
            w.writerow((f"{t:g}" if t != int(t) else int(t), k, s))


def read_oracle(path: str | Path) -> Trace:
    with _open(path, "rb") as f:
        data = f.read()
    if len(data) % ORACLE_RECORD.size:
        raise ValueError(f"{path}: size {len(data)} is not a multiple of {ORACLE_RECORD.size}-byte records")
    trace = Trace()
    times, keys, sizes = trace.times, trace.keys, trace.sizes
    for t, obj, size, _next in ORACLE_RECORD.iter_unpack(data):
        if size:
            times.append(t)
            keys.append(obj)
            sizes.append(size)
    return trace


def next_accesses(keys: list[Hashable]) -> list[int]:
    """For each request, the index of the next request for the same key (-1: none)."""
    nxt = [-1] * len(keys)
    seen: dict[Hashable, int] = {}
    for i in range(len(keys) - 1, -1, -1):
        k = keys[i]
        nxt[i] = seen.get(k, -1)
        seen[k] = i
    return nxt


def write_oracle(trace: Trace, path: str | Path) -> None:
    """Write oracleGeneral records (keys must be ints < 2**64; times are truncated to whole
    seconds), with next_access_vtime filled in as libCacheSim's tools do."""
    pack = ORACLE_RECORD.pack
    nxt = next_accesses(trace.keys)
    with _open(path, "wb") as f:
        f.write(
            b"".join(
                pack(int(t), k, s, n)  # type: ignore[arg-type]
                for t, k, s, n in zip(trace.times, trace.keys, trace.sizes, nxt, strict=True)
            )
        )


def is_oracle(path: str | Path) -> bool:
    name = str(path).lower().removesuffix(".gz")
    return name.endswith((".bin", ".oraclegeneral")) or "oraclegeneral" in name


def read_trace(path: str | Path, fmt: str = "auto") -> Trace:
    """Read PATH as FMT: ``csv``, ``oracle``, or ``auto`` (oracleGeneral for ``*.bin`` and names
    containing ``oracleGeneral``, CSV otherwise)."""
    if fmt == "auto":
        fmt = "oracle" if is_oracle(path) else "csv"
    if fmt == "oracle":
        return read_oracle(path)
    if fmt == "csv":
        return read_csv(path)
    raise ValueError(f"unknown trace format {fmt!r} (csv, oracle)")
