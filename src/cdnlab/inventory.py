"""What an appliance holds: the report format shared by the edge (which sends it) and the control
plane (which steers by it). Imports neither ``edge`` nor ``control``.

An appliance POSTs a *full* report (every object) when it starts and *deltas* (added, removed)
after; ``generation`` grows with every change so the receiver can tell a gap and ask for a full
report again. The same objects appear in the admin API's ``GET /inventory``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Tier = Literal["ram", "flash", "hdd"]

CONTENT_PREFIX = "/content/"


class InventoryObject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=4096, description="the cache key: the URL path")
    size: int = Field(ge=0)
    sha256: str = Field(default="", max_length=64, description="hex digest of the body, if known")
    tier: Tier = "flash"


class InventoryReport(BaseModel):
    """``{appliance_id, generation, full, objects}`` or ``{…, full: false, added, removed}``."""

    model_config = ConfigDict(extra="forbid")

    appliance_id: str = Field(min_length=1, max_length=128)
    generation: int = Field(ge=0)
    full: bool
    objects: list[InventoryObject] | None = None
    added: list[InventoryObject] | None = None
    removed: list[str] | None = None

    @model_validator(mode="after")
    def _shape(self) -> InventoryReport:
        if self.full:
            if self.objects is None:
                raise ValueError("a full report needs 'objects'")
            if self.added is not None or self.removed is not None:
                raise ValueError("a full report carries 'objects' only, not 'added'/'removed'")
        elif self.objects is not None:
            raise ValueError("a delta report carries 'added'/'removed', not 'objects'")
        return self


class EdgeInventory(BaseModel):
    """The body of the admin API's ``GET /inventory``."""

    id: str
    generation: int = 0
    objects: list[InventoryObject] = Field(default_factory=list)

    def as_report(self) -> InventoryReport:
        return InventoryReport(
            appliance_id=self.id, generation=self.generation, full=True, objects=self.objects
        )


def title_of(key: str) -> str | None:
    """The title a key belongs to: ``/content/{title}/…`` → ``title``; None for anything else.

    ``/content/t0001/1080p/seg-00001.m4s`` and ``/content/t0001/manifest.mpd`` are both ``t0001``.
    A query string (if a key ever carries one) is ignored.
    """
    if not key.startswith(CONTENT_PREFIX):
        return None
    rest = key[len(CONTENT_PREFIX) :]
    title, sep, tail = rest.partition("/")
    if not sep or not title or not tail or "?" in title:
        return None
    return title


def title_prefix(title: str) -> str:
    """The key prefix of every object of a title (what a purge by title would use)."""
    return f"{CONTENT_PREFIX}{title}/"
