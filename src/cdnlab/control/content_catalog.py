"""A seeded synthetic content catalog with the features seed 003 §2.3 lists for prediction:
release date, type, genre, runtime, cast popularity, marketing, language, licensing regions and a
bitrate ladder. Days are integers counted from the start of the viewing history."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GENRES = ("drama", "comedy", "action", "kids", "documentary", "thriller", "holiday")
TYPES = ("movie", "series")
# Profile name, bits per second: the ladder every title is encoded in.
LADDER = (
    ("240p", 300_000),
    ("480p", 1_000_000),
    ("720p", 3_000_000),
    ("1080p", 5_000_000),
    ("4k", 15_000_000),
)
SEGMENT_SECONDS = 4.0


@dataclass(frozen=True)
class Region:
    name: str
    language: str
    weight: float  # relative audience size
    holidays: tuple[int, ...]  # days (in the history's numbering) that are public holidays


@dataclass(frozen=True)
class Title:
    id: str
    type: str
    genre: str
    language: str
    runtime_min: int
    release_day: int
    cast_popularity: float  # 0..1
    marketing: float  # 0..1
    regions: frozenset[str]  # licensed in

    def size_bytes(self, profile_bps: int) -> int:
        return int(profile_bps / 8 * self.runtime_min * 60)

    @property
    def total_bytes(self) -> int:
        return sum(self.size_bytes(bps) for _, bps in LADDER)

    def segments(self) -> int:
        return int(np.ceil(self.runtime_min * 60 / SEGMENT_SECONDS))


def default_regions(days: int) -> list[Region]:
    """Four regions with their own language and holidays inside the history."""
    return [
        Region("us", "en", 1.0, (days // 3, days - 5)),
        Region("de", "de", 0.5, (days // 2, days - 3)),
        Region("br", "pt", 0.6, (days // 4, days - 2)),
        Region("jp", "ja", 0.5, (2 * days // 3, days - 4)),
    ]


def generate_catalog(seed: int, n_titles: int, regions: list[Region], days: int) -> list[Title]:
    """Most titles are released before the history starts; a tenth during it (release spikes)."""
    rng = np.random.default_rng(seed)
    langs = [r.language for r in regions]
    out: list[Title] = []
    for i in range(n_titles):
        lang = "en" if rng.random() < 0.45 else str(rng.choice(langs))
        release = int(rng.integers(8, days)) if rng.random() < 0.12 else int(rng.integers(-720, 0))
        kind = str(rng.choice(TYPES, p=(0.6, 0.4)))
        # Licensing: most titles everywhere; some withheld from a region or two.
        licensed = frozenset(r.name for r in regions if rng.random() < 0.85 or r.language == lang)
        out.append(
            Title(
                id=f"t{i:05d}",
                type=kind,
                genre=str(rng.choice(GENRES, p=(0.22, 0.2, 0.18, 0.12, 0.1, 0.13, 0.05))),
                language=lang,
                runtime_min=int(rng.integers(80, 150)) if kind == "movie" else int(rng.integers(300, 600)),
                release_day=release,
                cast_popularity=float(rng.beta(2, 5)),
                marketing=float(rng.beta(2, 6)),
                regions=licensed,
            )
        )
    return out
