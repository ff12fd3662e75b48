"""The small title catalog steering needs: title → tracks (profile, bandwidth, segments).

Loaded from TOML or JSON::

    [titles.t0001]
    tracks = [
      {profile = "1080p", bandwidth = 5000000, segments = 30, segment_duration = 4.0},
      {profile = "480p", bandwidth = 1000000, segments = 30, segment_duration = 4.0},
    ]

``segment_pattern`` (default ``seg-{n:05d}.m4s``, numbering from 1) names the segments, so a key is
``/content/{title}/{profile}/seg-00001.m4s``. A later issue grows a full catalog; anything with
``get(title)`` can replace this one.
"""

from __future__ import annotations

import json
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class CatalogError(ValueError):
    pass


class Track(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    bandwidth: int = Field(gt=0, description="bits per second")
    segments: int = Field(gt=0, le=100_000)
    segment_duration: float = Field(gt=0)
    segment_pattern: str = "seg-{n:05d}.m4s"
    first_segment: int = Field(default=1, ge=0)

    @field_validator("segment_pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        try:
            name = v.format(n=1)
        except (KeyError, IndexError, ValueError):
            raise ValueError("segment_pattern must use only {n}, e.g. 'seg-{n:05d}.m4s'") from None
        if name == v or "/" in name or "?" in name:
            raise ValueError("segment_pattern must contain {n} and no '/' or '?'")
        return v

    @cached_property
    def segment_names(self) -> tuple[str, ...]:
        return tuple(
            self.segment_pattern.format(n=i)
            for i in range(self.first_segment, self.first_segment + self.segments)
        )


class Title(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tracks: list[Track] = Field(min_length=1)

    def track(self, profile: str) -> Track | None:
        return next((t for t in self.tracks if t.profile == profile), None)


class CatalogSource(Protocol):
    def get(self, title: str) -> Title | None: ...


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    titles: dict[str, Title] = Field(default_factory=dict)

    def get(self, title: str) -> Title | None:
        return self.titles.get(title)

    @classmethod
    def load(cls, path: Path) -> Catalog:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise CatalogError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise CatalogError(f"{path}: cannot parse: {exc}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise CatalogError(f"{path}: {key}: {err['msg']}") from None
