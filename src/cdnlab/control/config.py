"""The control plane's configuration: one TOML file, validated at start.

A wrong key or value is reported as one line naming the key (``ConfigError``) and the CLI exits 2,
as the edge daemon does.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from cdnlab.configfile import first_error, read_toml
from cdnlab.control.thresholds import HEALTH_MEASUREMENTS, Threshold, parse_threshold


class ConfigError(Exception):
    """One line naming the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _duration(value: object) -> float:
    """Seconds, or a string such as ``"6h"``, ``"30m"``, ``"5s"``."""
    if isinstance(value, bool):
        raise ValueError("expected seconds or a duration like '6h'")
    if isinstance(value, int | float):
        return float(value)
    s = str(value).strip().lower()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    for suffix in ("ms", "s", "m", "h", "d"):
        if s.endswith(suffix) and s[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(s[: -len(suffix)]) * units[suffix]
    if s.replace(".", "", 1).isdigit():
        return float(s)
    raise ValueError(f"not a duration: {value!r} (expected e.g. 6h, 30m, 5s)")


Duration = Annotated[float, BeforeValidator(_duration)]


def _check_hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


class SigningConfig(_Strict):
    kid: str = "k1"
    key: str = Field(min_length=8, description="HMAC key shared with the edges' [signing] keys")
    ttl: Duration = Field(default=6 * 3600.0, gt=0)
    # Expiries are rounded up to this bucket so signed lists can be cached and shared.
    bucket: Duration = Field(default=300.0, gt=0)


class WeightsConfig(_Strict):
    distance: float = Field(default=0.4, ge=0)
    load: float = Field(default=0.3, ge=0)
    performance: float = Field(default=0.3, ge=0)


class SteeringConfig(_Strict):
    weights: WeightsConfig = Field(default_factory=WeightsConfig)
    max_per_site: int = Field(default=2, ge=1)
    max_endpoints: int = Field(default=4, ge=1)
    cloudfront_url: str | None = None
    # `pulumi stack output --json` saved to a file; read when cloudfront_url is not set.
    pulumi_stack_output: Path | None = None
    pulumi_output_key: str = "cloudfront_domain"

    @field_validator("cloudfront_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {v!r}")
        return v.rstrip("/") if v else v


class HealthConfig(_Strict):
    interval: Duration = Field(default=5.0, gt=0)
    timeout: Duration = Field(default=2.0, gt=0)
    # A monitor whose last round is older than this many intervals no longer has a say.
    stale_intervals: float = Field(default=3.0, gt=1)
    concurrency: int = Field(default=64, ge=1)
    # Traffic Monitor style: NAME = "<N" or ">N" (bare N means "<N"): the healthy side.
    thresholds: dict[str, Threshold] = Field(
        default_factory=lambda: {
            "query_time_ms": parse_threshold("1000"),
            "bandwidth_utilization": parse_threshold("<0.95"),
            "error_rate": parse_threshold("<0.05"),
        }
    )
    analytics_window: Duration = Field(default=300.0, gt=0)

    @field_validator("thresholds", mode="before")
    @classmethod
    def _thresholds(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v
        out = {}
        for k, x in v.items():
            if k not in HEALTH_MEASUREMENTS:
                raise ValueError(
                    f"{k}: unknown measurement (known: {', '.join(sorted(HEALTH_MEASUREMENTS))})"
                )
            try:
                out[k] = parse_threshold(x) if isinstance(x, str | int | float) else x
            except ValueError as exc:
                raise ValueError(f"{k}: {exc}") from None
        return out


class CloudWatchConfig(_Strict):
    enabled: bool = False
    namespace: str = "cdnlab/CDN"
    distribution_id: str = "cdnlab-oca-fleet"
    region: str = "us-east-1"
    interval: Duration = Field(default=60.0, gt=0)


class CascadeConfig(_Strict):
    # e.g. match = "/content/{title}/manifest.json", then = ["/content/{title}/"]
    match: str
    then: list[str] = Field(min_length=1)


class InvalidationConfig(_Strict):
    # How the control plane authenticates to each appliance's POST /purge (the edges' [admin]).
    purge_token: str | None = None
    purge_hmac_key: str | None = None
    cascade: list[CascadeConfig] = Field(default_factory=list)
    # Staging: appliances in these sites first, then the rest in batches with a delay between.
    priority_sites: list[str] = Field(default_factory=list)
    batch_size: int = Field(default=20, ge=1)
    batch_delay: Duration = Field(default=10.0, ge=0)
    # Retries per appliance (and for CloudFront): exponential backoff from retry_base to retry_max.
    max_attempts: int = Field(default=5, ge=1, le=50)
    retry_base: Duration = Field(default=1.0, gt=0)
    retry_max: Duration = Field(default=30.0, gt=0)
    timeout: Duration = Field(default=5.0, gt=0)
    concurrency: int = Field(default=32, ge=1)
    # The same request id, or an identical body, within this window returns the same invalidation.
    idempotency_window: Duration = Field(default=600.0, ge=0)
    keep: int = Field(default=1000, ge=1, description="finished invalidations kept for status")
    # CloudFront: the distribution id, or the key in steering.pulumi_stack_output holding it.
    cloudfront_distribution_id: str | None = None
    pulumi_distribution_key: str = "cloudfront_distribution_id"
    cloudfront_region: str = "us-east-1"

    @field_validator("cascade")
    @classmethod
    def _rules(cls, v: list[CascadeConfig]) -> list[CascadeConfig]:
        from cdnlab.control.purge_targets import CascadeRule

        for i, r in enumerate(v):
            try:
                CascadeRule(r.match, tuple(r.then)).check()
            except ValueError as exc:
                raise ValueError(f"cascade[{i}]: {exc}") from None
        return v


class ControlConfig(_Strict):
    listen: str = "127.0.0.1:8900"
    database: str = "sqlite:///control.db"
    monitor_id: str = "control-1"
    coverage_zone_file: Path | None = None
    catalog_file: Path | None = None
    default_site: str | None = None
    # Peers allowed to set X-Forwarded-For (a load balancer in front of the control plane).
    trusted_proxies: list[str] = Field(default_factory=list)
    # Who may register appliances and post inventory; unset = no authentication (lab use).
    admin_token: str | None = None
    signing: SigningConfig
    steering: SteeringConfig = Field(default_factory=SteeringConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    cloudwatch: CloudWatchConfig = Field(default_factory=CloudWatchConfig)
    invalidation: InvalidationConfig = Field(default_factory=InvalidationConfig)

    _hp = field_validator("listen")(classmethod(lambda cls, v: _check_hostport(v)))

    @field_validator("trusted_proxies")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        for net in v:
            ipaddress.ip_network(net, strict=False)
        return v

    def cloudfront_base(self) -> str | None:
        """The CloudFront URL: from config, else from a saved Pulumi stack output."""
        if self.steering.cloudfront_url:
            return self.steering.cloudfront_url
        path = self.steering.pulumi_stack_output
        if path is None:
            return None
        try:
            outputs = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"steering.pulumi_stack_output: cannot read {path}: {exc}") from None
        value = outputs.get(self.steering.pulumi_output_key)
        if not value:
            raise ConfigError(
                f"steering.pulumi_output_key: {self.steering.pulumi_output_key!r} not in {path}"
            )
        value = str(value)
        return (value if "://" in value else f"https://{value}").rstrip("/")

    def cloudfront_distribution_id(self) -> str | None:
        """The distribution to invalidate: from config, else from the saved Pulumi stack output."""
        inv = self.invalidation
        if inv.cloudfront_distribution_id:
            return inv.cloudfront_distribution_id
        path = self.steering.pulumi_stack_output
        if path is None:
            return None
        try:
            outputs = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"steering.pulumi_stack_output: cannot read {path}: {exc}") from None
        value = outputs.get(inv.pulumi_distribution_key)
        return str(value) if value else None


def from_mapping(data: dict) -> ControlConfig:
    try:
        return ControlConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(first_error(exc)) from None


def load(path: Path) -> ControlConfig:
    data = read_toml(path, ConfigError)
    # Relative file names in the config are relative to the config file.
    for key in ("coverage_zone_file", "catalog_file"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str(Path(path).parent / data[key])
    return from_mapping(data)
