"""The appliance inventory: ISP sites and their cache appliances, published as DNS records.

Format: ``inventories/lab/appliances.toml`` (documented at the top of that file).
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class InventoryError(ValueError):
    """One line naming the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Appliance(_Strict):
    name: str = Field(pattern=_LABEL)
    ipv4: str
    ipv6: str | None = None

    @field_validator("ipv4")
    @classmethod
    def _v4(cls, v: str) -> str:
        return str(ipaddress.IPv4Address(v))

    @field_validator("ipv6")
    @classmethod
    def _v6(cls, v: str | None) -> str | None:
        return None if v is None else str(ipaddress.IPv6Address(v))


class Site(_Strict):
    name: str = Field(pattern=_LABEL)
    isp: str = ""
    appliances: list[Appliance] = Field(alias="appliance", min_length=1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _unique(self) -> Site:
        names = [a.name for a in self.appliances]
        if len(set(names)) != len(names):
            raise ValueError("appliance: duplicate appliance name in this site")
        return self


class Inventory(_Strict):
    sites: list[Site] = Field(alias="site", default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _unique(self) -> Inventory:
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError("site: duplicate site name")
        return self


def load(path: Path) -> Inventory:
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Inventory.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"])
        raise InventoryError(f"{path}: {key}: {msg.removeprefix('Value error, ')}") from None
