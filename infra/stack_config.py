"""Read a ``Pulumi.<stack>.yaml`` into the flat ``namespace:key -> string`` map the runtime uses.

Structured values (maps, lists) become JSON strings, as ``pulumi config`` hands them to programs.
Secure (encrypted) values cannot be read without the Pulumi CLI; they must be overridden.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from infra.settings import REPO_ROOT


class StackConfigError(ValueError):
    pass


def _flat(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def stack_file(stack: str, root: Path = REPO_ROOT) -> Path:
    return root / f"Pulumi.{stack}.yaml"


def load(stack: str, overrides: Iterable[str] = (), root: Path = REPO_ROOT) -> dict[str, str]:
    """The stack's config with ``KEY=VALUE`` overrides applied (VALUE may be JSON)."""
    path = stack_file(stack, root)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise StackConfigError(f"{path}: cannot read: {exc.strerror}") from None
    config: dict[str, str] = {}
    for key, value in (doc.get("config") or {}).items():
        if isinstance(value, dict) and "secure" in value:
            continue  # encrypted: needs the CLI's secrets provider; see the check below
        config[key] = _flat(value)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or ":" not in key:
            raise StackConfigError(f"--set {item!r}: expected NAMESPACE:KEY=VALUE")
        config[key] = value
    secure = [k for k, v in (doc.get("config") or {}).items() if isinstance(v, dict) and "secure" in v]
    missing = [k for k in secure if k not in config]
    if missing:
        raise StackConfigError(f"{missing[0]}: encrypted in {path.name}; pass it with --set {missing[0]}=...")
    return config
