"""Predicting tomorrow's top N titles per region (seed 003 §2.3 names a random forest), against
a baseline of decayed recent counts, on held-out days.

Features are what is known at the end of day d about day d+1: recent counts (yesterday, the
same weekday last week, the week, a decayed sum), the title's features from the catalog, the
release calendar (days since release tomorrow: a release is announced in advance), tomorrow's
weekday and holidays, the region, its language, and how the title does elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdnlab.control.content_catalog import GENRES, Region, Title
from cdnlab.control.viewing_history import WEEKEND, History, top_n

HISTORY_DAYS = 7  # the first day with a full week behind it
HALF_LIVES = (0.5, 1.0, 2.0, 4.0, 7.0)


def decayed(views: np.ndarray, d: int, half_life: float) -> np.ndarray:
    """Σ_k views[d-k] · 2^(-k/half_life) over the days up to d: [region, title]."""
    k = np.arange(d + 1)[::-1]
    w = np.power(0.5, k / half_life)
    return np.tensordot(w, views[: d + 1], axes=(0, 0))


def _language(t: Title, r: Region) -> int:
    return 2 if t.language == r.language else 1 if t.language == "en" else 0


def features(h: History, d: int) -> np.ndarray:
    """Rows for every (region, title), region-major: the state at the end of day d."""
    v = h.views.astype(float)
    nr, nt = v.shape[1], v.shape[2]
    tomorrow = d + 1
    week = v[max(0, d - 6) : d + 1].sum(axis=0)
    cols: list[np.ndarray] = [
        np.log1p(v[d]),
        np.log1p(v[d - 1]),
        np.log1p(v[d - 6]),  # same weekday as tomorrow
        np.log1p(week),
        np.log1p(decayed(h.views, d, 2.0)),
        np.log1p(v[d].sum(axis=0, keepdims=True) - v[d]),  # the title elsewhere today
    ]
    title_rows = np.array(
        [
            [
                np.clip(tomorrow - t.release_day, -30, 400),
                t.type == "series",
                GENRES.index(t.genre),
                t.runtime_min,
                t.cast_popularity,
                t.marketing,
            ]
            for t in h.titles
        ],
        dtype=float,
    )
    cols += [np.broadcast_to(title_rows[:, i], (nr, nt)) for i in range(title_rows.shape[1])]
    region_rows = np.array(
        [[_language(t, r) for t in h.titles] + [r.name in t.regions for t in h.titles] for r in h.regions],
        dtype=float,
    )
    cols += [region_rows[:, :nt], region_rows[:, nt:]]
    cols += [
        np.broadcast_to(np.arange(nr)[:, None], (nr, nt)).astype(float),
        np.full((nr, nt), tomorrow % 7, dtype=float),
        np.full((nr, nt), float(tomorrow % 7 in WEEKEND)),
        np.broadcast_to(
            np.array([tomorrow in r.holidays for r in h.regions], dtype=float)[:, None], (nr, nt)
        ),
        np.broadcast_to(np.log1p(v[d].sum(axis=1))[:, None], (nr, nt)),
    ]
    return np.stack([np.asarray(c, dtype=float).reshape(nr, nt) for c in cols], axis=-1).reshape(nr * nt, -1)


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    days: int


def _pr(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    hit = float((pred & truth).sum())
    return hit / max(1.0, float(pred.sum())), hit / max(1.0, float(truth.sum()))


def _mean(pairs: list[tuple[float, float]]) -> Scores:
    if not pairs:
        return Scores(float("nan"), float("nan"), 0)
    a = np.array(pairs)
    return Scores(float(a[:, 0].mean()), float(a[:, 1].mean()), len(pairs))


def _top_by_score(score: np.ndarray, n: int) -> np.ndarray:
    return top_n(score, n)


@dataclass(frozen=True)
class Evaluation:
    top: int
    train_days: tuple[int, int]
    test_days: tuple[int, int]
    baseline_half_life: float
    model: Scores  # the forest's top N by probability
    model_threshold: Scores  # the forest's "probability ≥ 0.5" set (sizes differ from N)
    baseline: Scores  # top N by decayed count
    model_release: Scores  # only region-days on which a licensed title is released
    baseline_release: Scores
    importances: dict[str, float]


FEATURE_NAMES = (
    "log_views_today",
    "log_views_yesterday",
    "log_views_week_ago",
    "log_views_week",
    "log_decayed",
    "log_views_elsewhere",
    "days_since_release",
    "series",
    "genre",
    "runtime",
    "cast_popularity",
    "marketing",
    "language_match",
    "licensed",
    "region",
    "weekday",
    "weekend",
    "holiday",
    "log_region_views",
)


def _released(h: History, day: int) -> np.ndarray:
    """[region]: a licensed title is released on this day there."""
    return np.array([any(t.release_day == day and r.name in t.regions for t in h.titles) for r in h.regions])


def train(h: History, top: int, targets: range, trees: int = 60, seed: int = 0):  # -> RandomForestClassifier
    """The forest fitted on the given target days (each predicted from the day before)."""
    from sklearn.ensemble import RandomForestClassifier

    x = np.concatenate([features(h, t - 1) for t in targets])
    y = np.concatenate([top_n(h.views[t], top).reshape(-1) for t in targets])
    forest = RandomForestClassifier(
        n_estimators=trees,
        min_samples_leaf=5,
        max_features=0.5,
        max_samples=0.25,
        n_jobs=2,
        random_state=seed,
    )
    forest.fit(x, y)
    return forest


def predict_tomorrow(h: History, top: int, trees: int = 60, seed: int = 0) -> np.ndarray:
    """[region, title]: the probability of being in the top N on the day after the history,
    from a forest trained on all of it."""
    forest = train(h, top, range(HISTORY_DAYS + 1, h.days), trees, seed)
    nr, nt = h.views.shape[1], h.views.shape[2]
    return forest.predict_proba(features(h, h.days - 1))[:, 1].reshape(nr, nt)


def evaluate(h: History, top: int, test_days: int, trees: int = 100, seed: int = 0) -> Evaluation:
    first_test = h.days - test_days  # the first target day held out
    train_targets = range(HISTORY_DAYS + 1, first_test)
    test_targets = range(first_test, h.days)
    if len(train_targets) < 7 or test_days < 1:
        raise ValueError("need at least a week of training days and one test day")
    nr, nt = h.views.shape[1], h.views.shape[2]

    # Baseline: the half-life that ranks best on the training days (fair to it).
    def base_pairs(hl: float, targets: range) -> list[tuple[np.ndarray, np.ndarray, int]]:
        return [(_top_by_score(decayed(h.views, t - 1, hl), top), top_n(h.views[t], top), t) for t in targets]

    best_hl = max(
        HALF_LIVES, key=lambda hl: np.mean([_pr(p, y)[0] for p, y, _ in base_pairs(hl, train_targets)])
    )

    forest = train(h, top, train_targets, trees, seed)

    model, model_thr, base, model_rel, base_rel = [], [], [], [], []
    for p_base, truth, t in base_pairs(best_hl, test_targets):
        prob = forest.predict_proba(features(h, t - 1))[:, 1].reshape(nr, nt)
        p_model = _top_by_score(prob, top)
        released = _released(h, t)
        for ri in range(nr):
            m, b = _pr(p_model[ri], truth[ri]), _pr(p_base[ri], truth[ri])
            model.append(m)
            base.append(b)
            model_thr.append(_pr(prob[ri] >= 0.5, truth[ri]))
            if released[ri]:
                model_rel.append(m)
                base_rel.append(b)
    return Evaluation(
        top=top,
        train_days=(train_targets.start, train_targets.stop - 1),
        test_days=(test_targets.start, test_targets.stop - 1),
        baseline_half_life=best_hl,
        model=_mean(model),
        model_threshold=_mean(model_thr),
        baseline=_mean(base),
        model_release=_mean(model_rel),
        baseline_release=_mean(base_rel),
        importances=dict(zip(FEATURE_NAMES, map(float, forest.feature_importances_), strict=True)),
    )
