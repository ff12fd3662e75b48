"""Stack settings: the ``cdnlab:*`` configuration of a stack, typed and validated in one place.

Read through ``pulumi.Config`` so the same values work under ``pulumi up`` and under the mock
runtime used by the tests and by ``infra.apply``. A bad value names its key (``cdnlab:<key>``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import pulumi
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTINENTS = ("AF", "AN", "AS", "EU", "NA", "OC", "SA")
_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class SettingsError(ValueError):
    """One line naming the offending ``cdnlab:`` key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _region(v: str) -> str:
    if not _REGION.match(v):
        raise ValueError(f"{v!r} is not an AWS region name")
    return v


class GeoEndpoints(_Strict):
    """Where one continent's (or the default) record points: the steering endpoints' addresses."""

    ips: list[str] = Field(min_length=1, max_length=8)

    @field_validator("ips")
    @classmethod
    def _ips(cls, v: list[str]) -> list[str]:
        for ip in v:
            if not _IPV4.match(ip):
                raise ValueError(f"{ip!r} is not an IPv4 address")
        return v


class Settings(_Strict):
    domain: str = Field(pattern=r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$")
    bucket_prefix: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,30}[a-z0-9]$")
    primary_region: str = "us-east-1"
    replica_region: str = "us-west-2"
    shield_region: str = "us-east-1"
    cdn_name: str = "cdn"
    geo_name: str = "play"
    geo: dict[str, GeoEndpoints]
    health_path: str = "/healthz"
    health_port: int = Field(default=443, ge=1, le=65535)
    health_type: Literal["HTTPS", "HTTP"] = "HTTPS"
    waf_rate_limit: int = Field(default=2000, ge=10, le=2_000_000_000)
    alarm_email: str | None = None
    certificate_arn: str | None = None
    cors_origins: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    appliance_inventory: str | None = "inventories/lab/appliances.toml"
    log_retention_days: int = Field(default=90, ge=1)
    noncurrent_version_days: int = Field(default=30, ge=1)

    _regions = field_validator("primary_region", "replica_region", "shield_region")(
        classmethod(lambda cls, v: _region(v))
    )

    @field_validator("geo")
    @classmethod
    def _geo(cls, v: dict[str, GeoEndpoints]) -> dict[str, GeoEndpoints]:
        if "default" not in v:
            raise ValueError("needs a 'default' entry (the record for locations no continent matches)")
        for key in v:
            if key != "default" and key not in CONTINENTS:
                raise ValueError(f"{key!r} is not a continent code ({', '.join(CONTINENTS)}) or 'default'")
        return v

    @property
    def cdn_fqdn(self) -> str:
        return f"{self.cdn_name}.{self.domain}"

    @property
    def geo_fqdn(self) -> str:
        return f"{self.geo_name}.{self.domain}"

    def inventory_path(self) -> Path | None:
        if not self.appliance_inventory:
            return None
        p = Path(self.appliance_inventory)
        return p if p.is_absolute() else REPO_ROOT / p


_FIELDS = {
    "domain": "domain",
    "bucketPrefix": "bucket_prefix",
    "primaryRegion": "primary_region",
    "replicaRegion": "replica_region",
    "shieldRegion": "shield_region",
    "cdnName": "cdn_name",
    "geoName": "geo_name",
    "geo": "geo",
    "healthPath": "health_path",
    "healthPort": "health_port",
    "healthType": "health_type",
    "wafRateLimit": "waf_rate_limit",
    "alarmEmail": "alarm_email",
    "certificateArn": "certificate_arn",
    "corsOrigins": "cors_origins",
    "applianceInventory": "appliance_inventory",
    "logRetentionDays": "log_retention_days",
    "noncurrentVersionDays": "noncurrent_version_days",
}
_CONFIG_KEY = {v: k for k, v in _FIELDS.items()}
_STRUCTURED = {"geo", "corsOrigins"}
_INTS = {"healthPort", "wafRateLimit", "logRetentionDays", "noncurrentVersionDays"}


def from_mapping(data: dict[str, Any]) -> Settings:
    """Validate camelCase config keys (as written in Pulumi.<stack>.yaml, without the namespace)."""
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise SettingsError(f"cdnlab:{unknown[0]}: unknown key")
    try:
        return Settings.model_validate({_FIELDS[k]: v for k, v in data.items()})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        key = "cdnlab:" + ".".join([_CONFIG_KEY.get(loc[0], loc[0]), *loc[1:]]) if loc else "cdnlab"
        msg = "required key is missing" if err["type"] == "missing" else str(err["msg"])
        raise SettingsError(f"{key}: {msg.removeprefix('Value error, ')}") from None


def from_config(config: pulumi.Config | None = None) -> Settings:
    """The stack's settings (all but the signing keys, which stay a secret: see ``signing_keys``)."""
    config = config or pulumi.Config("cdnlab")
    data: dict[str, Any] = {}
    for key in _FIELDS:
        raw = config.get(key)
        if raw is None:
            continue
        if key in _STRUCTURED:
            try:
                data[key] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise SettingsError(f"cdnlab:{key}: not valid JSON/YAML structure: {exc.msg}") from None
        elif key in _INTS:
            data[key] = int(raw) if raw.lstrip("-").isdigit() else raw
        else:
            data[key] = raw
    return from_mapping(data)


def check_signing_keys(keys: Any) -> dict[str, str]:
    """kid -> HMAC key, the very keys the control plane signs with; raises naming the bad entry."""
    if not isinstance(keys, dict) or not keys:
        raise SettingsError("cdnlab:signingKeys: expected a non-empty map of key id to key")
    for kid, key in keys.items():
        if not isinstance(kid, str) or not _KID.match(kid):
            raise SettingsError(f"cdnlab:signingKeys.{kid}: key ids use 1-32 of A-Z a-z 0-9 _ -")
        if not isinstance(key, str) or len(key) < 16:
            raise SettingsError(f"cdnlab:signingKeys.{kid}: keys must be strings of 16 characters or more")
    return dict(keys)


def signing_keys(config: pulumi.Config | None = None) -> pulumi.Output[dict[str, str]]:
    """The signing keys as a secret Output (``pulumi config set --secret --path signingKeys.k1 ...``)."""
    config = config or pulumi.Config("cdnlab")
    return config.require_secret_object("signingKeys").apply(check_signing_keys)
