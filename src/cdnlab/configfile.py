"""Config files of every daemon: read TOML, and say what is wrong in one line naming the key.

Shared by the edge and the control plane (it imports neither), so both report errors alike.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError


def first_error(exc: ValidationError) -> str:
    """``key.path: message`` for the first problem pydantic found."""
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    return f"{key}: {msg}"


def read_toml(path: Path, error: type[Exception]) -> dict[str, Any]:
    """The file's TOML as a dict; an unreadable or invalid file raises ``error`` naming it."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None
