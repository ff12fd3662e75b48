"""The control plane's API and registry models (pydantic): appliances, health, inventory summaries."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cdnlab.inventory import Tier

# Traffic Control's server statuses: ONLINE and OFFLINE are not polled and are taken as configured;
# REPORTED is polled and health decides; ADMIN_DOWN is polled (for statistics) but never steered to.
AdminState = Literal["online", "offline", "reported", "admin-down"]
DrainState = Literal["serving", "draining", "drained"]


def _url(v: str) -> str:
    if not (v.startswith("http://") or v.startswith("https://")) or v.endswith("://"):
        raise ValueError(f"expected an http:// or https:// URL, got {v!r}")
    return v.rstrip("/")


class TierInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Tier
    capacity_bytes: int = Field(ge=0)


class ApplianceBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: str = Field(min_length=1, max_length=128)
    isp: str | None = Field(default=None, max_length=128)
    asn: int | None = Field(default=None, ge=0, le=4294967295)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    url: str = Field(description="client-facing base URL, e.g. http://127.0.0.1:8080")
    admin_url: str = Field(description="admin API base URL (/healthz, /metrics, /inventory)")
    capacity_bps: int = Field(default=10_000_000_000, gt=0, description="network capacity, bits/s")
    tiers: list[TierInfo] = Field(default_factory=list)
    admin_state: AdminState = "reported"

    _u = field_validator("url", "admin_url")(classmethod(lambda cls, v: _url(v)))


class ApplianceIn(ApplianceBase):
    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")


class AppliancePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: str | None = None
    isp: str | None = None
    asn: int | None = None
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    url: str | None = None
    admin_url: str | None = None
    capacity_bps: int | None = Field(default=None, gt=0)
    tiers: list[TierInfo] | None = None
    admin_state: AdminState | None = None

    @field_validator("url", "admin_url")
    @classmethod
    def _u(cls, v: str | None) -> str | None:
        return _url(v) if v is not None else v


class Appliance(ApplianceIn):
    drain_state: DrainState = "serving"
    updated_at: float = 0.0


class HealthView(BaseModel):
    """One monitor's view of one appliance after its last poll."""

    monitor_id: str
    appliance_id: str
    available: bool
    reasons: list[str] = Field(default_factory=list)
    checked_at: float
    drain_state: DrainState | None = None
    measurements: dict[str, float] = Field(default_factory=dict)
    # Analytics over the window (counter deltas, histogram bucket deltas): see analytics.py.
    stats: dict = Field(default_factory=dict)


class ApplianceStatus(BaseModel):
    appliance: Appliance
    available: bool = Field(description="what steering uses: admin state and every live monitor combined")
    reason: str
    views: list[HealthView] = Field(default_factory=list)
    inventory_generation: int | None = None
    titles: int = 0


class InventorySummary(BaseModel):
    appliance_id: str
    generation: int | None
    objects: int
    bytes: int
    titles: list[str]
    reported_at: float | None
    source: str | None


class InventoryResult(BaseModel):
    appliance_id: str
    generation: int
    applied: bool
    objects: int
    detail: str = ""
