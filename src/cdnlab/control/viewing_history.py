"""A seeded generator of daily views per (region, title), with the structure a popularity model
should be able to learn and a count-based baseline partly cannot: release spikes (the release
calendar is known in advance), a weekly rhythm that differs by genre, regional language
preference, licensing, and holidays that lift family content. Each title also has a hidden
appeal and every cell day-to-day noise, so history matters and nothing is exactly predictable."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdnlab.control.content_catalog import Region, Title

WEEKEND = (5, 6)  # day % 7


@dataclass(frozen=True)
class History:
    titles: list[Title]
    regions: list[Region]
    views: np.ndarray  # int64 [day, region, title]

    @property
    def days(self) -> int:
        return int(self.views.shape[0])


def language_factor(title: Title, region: Region) -> float:
    if title.language == region.language:
        return 1.0
    return 0.6 if title.language == "en" else 0.08


def weekday_factor(day: int, genre: str) -> float:
    if day % 7 not in WEEKEND:
        return 1.0 if genre != "documentary" else 1.1
    return {"kids": 2.0, "comedy": 1.6, "documentary": 0.8}.get(genre, 1.25)


def holiday_factor(day: int, region: Region, genre: str) -> float:
    if day not in region.holidays:
        return 1.0
    return {"kids": 3.0, "holiday": 4.0, "comedy": 1.8}.get(genre, 1.3)


def age_factor(age: np.ndarray, title: Title) -> np.ndarray:
    """Zero before release; a spike at release decaying over days (slower for series, which are
    binged), on top of a slow decline of interest over months."""
    spike = 6.0 + 30.0 * title.marketing
    tau = 2.5 if title.type == "movie" else 5.0
    a = np.maximum(age, 0).astype(float)
    f = (0.25 + 0.75 * np.exp(-a / 180.0)) * (1.0 + spike * np.exp(-a / tau))
    return np.where(age >= 0, f, 0.0)


def generate_history(
    titles: list[Title], regions: list[Region], days: int, seed: int, views_per_region: float = 20_000
) -> History:
    rng = np.random.default_rng(seed)
    n = len(titles)
    appeal = np.array(
        [np.exp(2.0 * t.cast_popularity + 1.0 * t.marketing + rng.normal(0, 0.9)) for t in titles]
    )
    appeal *= views_per_region / appeal.sum()
    day_idx = np.arange(days)
    views = np.zeros((days, len(regions), n), dtype=np.int64)
    for j, t in enumerate(titles):
        age = age_factor(day_idx - t.release_day, t)
        for ri, r in enumerate(regions):
            if r.name not in t.regions:
                continue
            week = np.array([weekday_factor(d, t.genre) for d in day_idx])
            hol = np.array([holiday_factor(d, r, t.genre) for d in day_idx])
            lam = r.weight * appeal[j] * language_factor(t, r) * week * hol * age
            lam *= rng.lognormal(0.0, 0.35, size=days)  # day-to-day noise
            views[:, ri, j] = rng.poisson(lam)
    return History(titles, regions, views)


def top_n(views_day: np.ndarray, n: int) -> np.ndarray:
    """Boolean mask [region, title] of each region's top n titles that day (ties by title order)."""
    out = np.zeros(views_day.shape, dtype=bool)
    for ri in range(views_day.shape[0]):
        order = np.lexsort((np.arange(views_day.shape[1]), -views_day[ri]))
        out[ri, order[:n]] = True
    return out
