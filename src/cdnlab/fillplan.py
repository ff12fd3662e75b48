"""The fill plan on the wire: what the control plane's ``GET /v1/fill/plan?appliance=ID`` returns
and an appliance's ``cdnlab fill run`` executes, and the progress report it sends back
(``POST /v1/fill/progress``). Shared by ``control`` and ``edge``; imports neither."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FillTier = Literal["flash", "hdd"]
SHA256_HEX = r"^[0-9a-f]{64}$"


def _key(v: str) -> str:
    if not v.startswith("/") or "?" in v or "#" in v or "/../" in v + "/" or "//" in v:
        raise ValueError(f"{v!r} is not a clean absolute path")
    return v


class PlanObject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=2, max_length=4096, description="URL path of the object")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256_HEX)
    tier: FillTier = "flash"
    title: str | None = None
    profile: str | None = Field(default=None, description="the DASH Representation id, for media")

    _k = field_validator("key")(classmethod(lambda cls, v: _key(v)))


class PlanRemoval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str | None = None
    prefix: str | None = None


class PlanPeer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    url: str
    admin_url: str


class FillPlanDoc(BaseModel):
    """One appliance's plan: ``objects`` to hold (in priority order, manifests first), ``remove``
    what it should no longer hold, ``peers`` the other appliances of its site."""

    model_config = ConfigDict(extra="forbid")

    appliance_id: str
    site: str
    generated_at: float
    window: str | None = Field(default=None, description="suggested local fill window, HH:MM-HH:MM")
    objects: list[PlanObject] = Field(default_factory=list)
    remove: list[PlanRemoval] = Field(default_factory=list)
    peers: list[PlanPeer] = Field(default_factory=list)
    bytes_to_fetch: int = 0
    budget: dict[str, int] = Field(default_factory=dict, description="bytes per tier the plan may use")


class TierUsage(BaseModel):
    kind: str
    capacity: int
    used: int
    objects: int
    failed: int = 0


class FillProgress(BaseModel):
    """What a fill run reports (at start, every few seconds, at the end)."""

    model_config = ConfigDict(extra="forbid")

    appliance_id: str = Field(min_length=1, max_length=128)
    state: Literal["waiting", "running", "done", "failed", "interrupted"]
    started_at: float
    updated_at: float
    objects_total: int = 0
    objects_done: int = 0  # stored or already held
    objects_skipped: int = 0  # already held
    objects_failed: int = 0
    bytes_total: int = 0
    bytes_fetched: int = 0
    rate_cap_bps: float = 0  # bytes/s; 0 = none
    rate_bps: float = 0
    by_source: dict[str, int] = Field(default_factory=dict, description="bytes per source kind")
    removed: int = 0
    errors: list[str] = Field(default_factory=list)
    storage: list[TierUsage] = Field(default_factory=list)
    health: dict = Field(default_factory=dict, description="the daemon's /healthz, if it answered")
