"""Fixtures for the control plane: configs, a coverage zone file, a catalog, and the database
backends (SQLite in a temp dir; PostgreSQL from Debian in a throwaway cluster)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_fixtures import CATALOG, CZF, SIGNING_KEY


@pytest.fixture
def czf_path(tmp_path: Path) -> Path:
    p = tmp_path / "czf.json"
    p.write_text(json.dumps(CZF))
    return p


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    p = tmp_path / "catalog.toml"
    p.write_text(CATALOG)
    return p


@pytest.fixture
def control_cfg(tmp_path: Path, czf_path: Path, catalog_path: Path):
    from cdnlab.control.config import from_mapping

    return from_mapping(
        {
            "database": f"sqlite:///{tmp_path / 'control.db'}",
            "coverage_zone_file": str(czf_path),
            "catalog_file": str(catalog_path),
            "default_site": "site-c",
            "trusted_proxies": ["127.0.0.0/8"],
            "signing": {"kid": "k1", "key": SIGNING_KEY, "ttl": "6h"},
            "steering": {"cloudfront_url": "https://d111.cloudfront.net"},
            "health": {"interval": 0.5, "timeout": 1.0},
        }
    )


# -- PostgreSQL ---------------------------------------------------------------------------------


def _pg_bindir() -> str | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(d, "initdb"), os.X_OK) and os.access(os.path.join(d, "pg_ctl"), os.X_OK):
            return d
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a loopback port; yields its admin URL."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (Debian package 'postgresql')")
    base = Path(tempfile.mkdtemp(prefix="cdnlab-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()
    subprocess.run(
        [
            *run_as,
            f"{bindir}/initdb",
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
    subprocess.run(
        [
            *run_as,
            f"{bindir}/pg_ctl",
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(base / "log"),
            "-w",
            "-t",
            "30",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*run_as, f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One fresh database per test, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    server = request.getfixturevalue("postgres_server")
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(
        server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True
    ) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"
