"""The admin listener never shares a client port (issue 2, daemon point 7): checked in the config,
since every listener binds with SO_REUSEPORT and the kernel would allow it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdnlab.edge.config import ConfigError, quick


@pytest.mark.parametrize(
    ("listen", "admin"),
    [
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("0.0.0.0:8080", "127.0.0.1:8080"),  # the wildcard takes 127.0.0.1's connections too
        ("127.0.0.1:8080", "0.0.0.0:8080"),
        ("[::]:8080", "[::1]:8080"),
    ],
)
def test_admin_on_a_client_port_is_refused(tmp_path: Path, listen: str, admin: str) -> None:
    with pytest.raises(ConfigError, match=r"admin\.listen"):
        quick(listen, admin, tmp_path, ["http://127.0.0.1:1"])


@pytest.mark.parametrize(
    ("listen", "admin"),
    [
        ("127.0.0.1:8080", "127.0.0.1:8081"),
        ("127.0.0.1:8080", "127.0.0.2:8080"),
        ("0.0.0.0:80", "127.0.0.1:9000"),
    ],
)
def test_separate_listeners_are_accepted(tmp_path: Path, listen: str, admin: str) -> None:
    cfg = quick(listen, admin, tmp_path, ["http://127.0.0.1:1"])
    assert cfg.admin.listen == admin and cfg.listen == [listen]
