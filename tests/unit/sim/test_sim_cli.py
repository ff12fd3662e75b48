"""``cdnlab sim``: the JSON shape, both trace formats, trace generation and clear errors."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from cdnlab.cli import main


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_generate_then_simulate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "cdn.csv"
    assert main(["sim", "generate", "--workload", "cdn", "--requests", "20000", "--out", str(trace)]) == 0
    assert trace.read_text().startswith("timestamp,key,size\n")
    argv = ["sim", "--trace", str(trace), "--cache-size", "5%", "--json"]
    out = _json(capsys, [*argv, "--policy", "lru", "--policy", "default", "--policy", "belady-bytes"])
    assert list(out) == ["lru", "default", "belady-bytes"]
    for ratios in out.values():
        assert set(ratios) == {"object_miss_ratio", "byte_miss_ratio"}
        assert 0.0 < ratios["object_miss_ratio"] <= 1.0 and 0.0 < ratios["byte_miss_ratio"] <= 1.0
    assert out["belady-bytes"]["byte_miss_ratio"] <= out["default"]["byte_miss_ratio"]
    assert out["default"]["byte_miss_ratio"] < out["lru"]["byte_miss_ratio"]
    everything = _json(capsys, argv)  # no --policy: every policy and both Belady variants
    assert {"lru", "sieve", "s3fifo", "alrfu", "belady", "belady-bytes"} <= set(everything)


def test_oracle_general_trace_and_byte_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.oracleGeneral.bin"
    keys = [1, 2, 3, 1, 2, 4, 1, 5, 1, 2]
    path.write_bytes(b"".join(struct.pack("<IQIq", i, k, 1000, -1) for i, k in enumerate(keys)))
    out = _json(capsys, ["sim", "--trace", str(path), "--cache-size", "2K", "--policy", "lru", "--json"])
    # LRU with room for two 1000-byte objects: the only hit is the 1 right after 5
    assert out["lru"]["object_miss_ratio"] == pytest.approx(0.9)
    generated = tmp_path / "scan.bin"
    assert main(["sim", "generate", "--workload", "scan", "--requests", "3000", "--out", str(generated)]) == 0
    assert generated.stat().st_size == 3000 * 24


def test_table_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.csv"
    path.write_text("0,a,10\n1,b,10\n2,a,10\n")
    assert main(["sim", "--trace", str(path), "--cache-size", "100", "--policy", "sieve"]) == 0
    out = capsys.readouterr().out
    assert "sieve" in out and "0.6667" in out and "3 requests" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sim"], "need --trace"),
        (["sim", "--trace", "x.csv", "--cache-size", "1G", "--policy", "nope"], "unknown policy 'nope'"),
        (["sim", "--trace", "/nonexistent.csv", "--cache-size", "1G"], "--trace"),
        (["sim", "generate", "--workload", "nope", "--out", "x.csv"], "unknown 'nope'"),
    ],
)
def test_errors_exit_2_with_one_clear_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_cache_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.csv"
    path.write_text("0,a,10\n")
    assert main(["sim", "--trace", str(path), "--cache-size", "lots"]) == 2
    assert "--cache-size" in capsys.readouterr().err


def test_the_installed_command(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("timestamp,key,size\n0,a,10\n1,b,10\n2,a,10\n")
    exe = Path(sys.executable).with_name("cdnlab")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cdnlab.cli"]
    proc = subprocess.run(
        [*cmd, "sim", "--trace", str(path), "--cache-size", "1K", "--policy", "default", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONHASHSEED": "random"},
    )
    assert proc.returncode == 0, proc.stderr
    expected = {
        "default": {"object_miss_ratio": pytest.approx(2 / 3), "byte_miss_ratio": pytest.approx(2 / 3)}
    }
    assert json.loads(proc.stdout) == expected
