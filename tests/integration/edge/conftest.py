"""Fixtures: one nginx origin and one main edge for the whole session; special edges per module.

Tests use their own object paths (``/<module>/<name>``) so that origin request counts taken from
nginx's access log belong to one test only.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from helpers import NGINX, Edge, Nginx, ScriptedUpstream, edge, nginx

from .edgecheck import config_toml

# /slow/ trickles (so misses are still in flight while more requests arrive);
# /nostore/ is marked uncacheable by the origin.
ORIGIN_EXTRA = """
        location /slow/ { limit_rate 512k; }
        location /nostore/ { add_header Cache-Control no-store; }
"""

MAIN_CONFIG = """
id = "edge-main"
site = "lab-1"
role = "edge"
listen = ["127.0.0.1:{port}"]
workers = 1
upstreams = {upstreams}
state_dir = "{store}/state"

[[tiers]]
path = "{store}/ram0"
kind = "ram"
capacity = "64M"

[[tiers]]
path = "{store}/flash0"
kind = "flash"
capacity = "2G"

[admin]
listen = "127.0.0.1:{admin}"
purge_token = "purge-token-123"
purge_hmac_key = "purge-hmac-key-456"

[limits]
max_header_bytes = 8192
max_headers = 40
header_timeout = 1.0
keepalive_timeout = 3.0
ram_object_max = "64K"

[log]
access_log = "{base}/access.jsonl"
"""

PURGE_TOKEN = "purge-token-123"
SCRIPTED_DISK = 20_000_000
PURGE_HMAC_KEY = "purge-hmac-key-456"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if shutil.which("nginx") is None and not Path(NGINX).exists():
        skip = pytest.mark.skip(reason="needs nginx from Debian")
        for item in items:
            if "integration/edge" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    base = tmp_path_factory.mktemp("origin")
    with nginx(base, workers=1, extra=ORIGIN_EXTRA) as n:
        yield n


@pytest.fixture(scope="session")
def main_edge(tmp_path_factory: pytest.TempPathFactory, origin: Nginx) -> Iterator[Edge]:
    """The shared edge: TOML config, RAM + flash tiers, purge auth, small header limits and
    timeouts, JSON access log at ``<base>/access.jsonl``."""
    base = tmp_path_factory.mktemp("main-edge")
    with edge(base, [origin.url], config=MAIN_CONFIG) as e:
        e.extra["access_log"] = base / "access.jsonl"
        yield e


@pytest.fixture(scope="session")
def scripted() -> Iterator[ScriptedUpstream]:
    """The misbehaving upstream (see helpers.ScriptedUpstream)."""
    with ScriptedUpstream() as s:
        yield s


@pytest.fixture(scope="session")
def scripted_edge(tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream) -> Iterator[Edge]:
    """An edge in front of the scripted upstream: 1 s upstream read timeout, 1.5 s send timeout, one
    small flash disk (SCRIPTED_DISK bytes) so that eviction happens."""
    cfg = config_toml(
        limits="upstream_read_timeout = 1.0\nupstream_probe_interval = 0.5\nsend_timeout = 1.5",
        admin='purge_token = "scripted-token"',
        tiers=f'[[tiers]]\npath = "{{store}}/flash0"\nkind = "flash"\ncapacity = {SCRIPTED_DISK}\n',
    )
    with edge(tmp_path_factory.mktemp("scripted"), [scripted.url], config=cfg) as e:
        yield e


@pytest.fixture(scope="session")
def shield(tmp_path_factory: pytest.TempPathFactory, origin: Nginx) -> Iterator[Edge]:
    """A shield started with the quick flags (role shield), in front of the origin."""
    with edge(tmp_path_factory.mktemp("shield"), [origin.url], role="shield") as e:
        yield e


@pytest.fixture(scope="session")
def tiered_edge(tmp_path_factory: pytest.TempPathFactory, shield: Edge) -> Iterator[Edge]:
    """An edge whose upstream is the shield: client -> edge -> shield -> origin."""
    with edge(tmp_path_factory.mktemp("tiered"), [shield.url], config=config_toml()) as e:
        yield e
