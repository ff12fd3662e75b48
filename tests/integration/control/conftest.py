"""Fixtures shared by the control plane's integration suites."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_e2e import free_port, wait_http


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto server on loopback (the emulated AWS that boto3 reaches through AWS_ENDPOINT_URL)."""
    moto_bin = Path(sys.executable).parent / "moto_server"
    if not moto_bin.exists():
        pytest.skip("moto_server not installed (dev dependency moto[server])")
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    p = subprocess.Popen(
        [str(moto_bin), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/moto-api/", timeout=30, ok=(200,))
        yield url
    finally:
        p.terminate()
        p.wait(10)
        log.close()
