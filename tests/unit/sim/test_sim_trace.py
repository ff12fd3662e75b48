"""Trace readers: libCacheSim oracleGeneral (written here with struct, byte for byte) and CSV."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest

from cdnlab.sim.trace import Trace, next_accesses, read_csv, read_oracle, read_trace, write_csv, write_oracle


def test_oracle_general_records_read_back(tmp_path: Path) -> None:
    # uint32 time, uint64 obj_id, uint32 size, int64 next_access_vtime, little-endian, 24 bytes
    records = [(10, 1, 4096, 2), (11, 2**63 + 5, 100, -1), (12, 1, 4096, -1), (13, 7, 0, -1)]
    path = tmp_path / "t.oracleGeneral.bin"
    path.write_bytes(b"".join(struct.pack("<IQIq", *r) for r in records))
    assert path.stat().st_size == 24 * len(records)
    trace = read_trace(path)  # chosen by name
    assert trace.times == [10, 11, 12]  # the size-0 request is skipped, as libCacheSim does
    assert trace.keys == [1, 2**63 + 5, 1]
    assert trace.sizes == [4096, 100, 4096]


def test_oracle_round_trip_fills_next_access(tmp_path: Path) -> None:
    trace = Trace([0, 1, 2, 3], [5, 6, 5, 5], [10, 20, 10, 10])
    path = tmp_path / "t.bin"
    write_oracle(trace, path)
    raw = [struct.unpack_from("<IQIq", path.read_bytes(), 24 * i) for i in range(4)]
    assert [r[3] for r in raw] == [2, -1, 3, -1]
    back = read_oracle(path)
    assert (back.times, back.keys, back.sizes) == (trace.times, trace.keys, trace.sizes)
    assert next_accesses(trace.keys) == [2, -1, 3, -1]


def test_oracle_rejects_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(b"\0" * 30)
    with pytest.raises(ValueError, match="multiple of 24"):
        read_oracle(path)


def test_csv_round_trip_with_header_string_keys_and_gzip(tmp_path: Path) -> None:
    trace = Trace([0.5, 1, 2], ["/content/1/seg,1.m4s", "42", "/art/1.jpg"], [1000, 20, 3])
    for name in ("t.csv", "t.csv.gz"):
        path = tmp_path / name
        write_csv(trace, path)
        back = read_csv(path)
        assert back.times == [0.5, 1.0, 2.0]
        assert back.keys == ["/content/1/seg,1.m4s", 42, "/art/1.jpg"]  # numeric keys become ints
        assert back.sizes == [1000, 20, 3]
    with gzip.open(tmp_path / "t.csv.gz", "rt") as f:
        assert f.readline().strip() == "timestamp,key,size"


def test_csv_without_header_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("1,a,10\n2,b,0\n# a comment\n3,a,10\n")
    trace = read_trace(path)
    assert trace.keys == ["a", "a"]  # the size-0 row is skipped
    path.write_text("1,a,10\n2,b,ten\n")
    with pytest.raises(ValueError, match=r"plain\.csv:2"):
        read_csv(path)


def test_working_set() -> None:
    trace = Trace([0, 1, 2], ["a", "b", "a"], [10, 5, 10])
    assert trace.unique_bytes() == 15 and trace.total_bytes() == 25
