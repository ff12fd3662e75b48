"""Predicting tomorrow's top N titles per region (seed 003 §2.3 names a random forest), against
a baseline of decayed recent counts, on held-out days.

Features are what is known at the end of day d about day d+1: recent counts (yesterday, the
same weekday last week, the week, a decayed sum), the title's features from the catalog, the
release calendar (days since release tomorrow: a release is announced in advance), tomorrow's
weekday and holidays, the region, its language, and how the title does elsewhere.

The release calendar is also turned into what a title without history can be judged by (seed 003
§2.3: "similar_content_performance", language match, regional trends): days until release,
"released tomorrow", how the region's earlier releases did at the same age, and how the title's
language and genre do in the region this week. Without them a title released tomorrow looks
like any title with no views (counts all zero), and with a few dozen releases among the training
rows the forest rates them low (``BASE_FEATURES``: the feature set before them, kept to report
the difference).

Two forests: a classifier of "in tomorrow's top N" (the evaluation's task) and a regressor of
tomorrow's log views (``predict_views``: the planner needs how many views, not a rank).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdnlab.control.content_catalog import GENRES, Region, Title
from cdnlab.control.viewing_history import WEEKEND, History, top_n

HISTORY_DAYS = 7  # the first day with a full week behind it
HALF_LIVES = (0.5, 1.0, 2.0, 4.0, 7.0)
RELEASE_AGES = 14  # ages (days since release) over which earlier releases are compared


def decayed(views: np.ndarray, d: int, half_life: float) -> np.ndarray:
    """Σ_k views[d-k] · 2^(-k/half_life) over the days up to d: [region, title]."""
    k = np.arange(d + 1)[::-1]
    w = np.power(0.5, k / half_life)
    return np.tensordot(w, views[: d + 1], axes=(0, 0))


def _language(t: Title, r: Region) -> int:
    return 2 if t.language == r.language else 1 if t.language == "en" else 0


def features(h: History, d: int) -> np.ndarray:
    """Rows for every (region, title), region-major: the state at the end of day d
    (``FEATURE_NAMES``; the first ``BASE_FEATURES`` are the set before the calendar ones)."""
    return np.concatenate([_base_features(h, d), _calendar_features(h, d)], axis=1)


def _per_title_mean(week: np.ndarray, group: np.ndarray, present: np.ndarray) -> np.ndarray:
    """[region, title]: the week's views per present title of the title's group, in the region."""
    out = np.zeros(week.shape)
    for g in np.unique(group):
        m = group == g
        n = (present[:, m]).sum(axis=1)
        out[:, m] = ((week[:, m] * present[:, m]).sum(axis=1) / np.maximum(1, n))[:, None]
    return out


def release_curve(h: History, d: int) -> np.ndarray:
    """[region, age 0..RELEASE_AGES]: mean log views of the region's releases (licensed there,
    released inside the history) at each age, over those old enough by the end of day d; 0
    where none is."""
    nr = h.views.shape[1]
    out = np.zeros((nr, RELEASE_AGES + 1))
    ages = np.arange(RELEASE_AGES + 1)
    for ri, r in enumerate(h.regions):
        js = np.array([j for j, t in enumerate(h.titles) if t.release_day >= 0 and r.name in t.regions], int)
        if js.size == 0:
            continue
        day = np.array([h.titles[j].release_day for j in js])[:, None] + ages[None, :]
        seen = day <= d
        vals = np.log1p(h.views[np.minimum(day, h.days - 1), ri, js[:, None]].astype(float))
        n = seen.sum(axis=0)
        out[ri] = np.where(n > 0, (vals * seen).sum(axis=0) / np.maximum(n, 1), 0.0)
    return out


def _calendar_features(h: History, d: int) -> np.ndarray:
    nr, nt = h.views.shape[1], h.views.shape[2]
    release = np.array([t.release_day for t in h.titles])
    age = d + 1 - release  # tomorrow's
    licensed = np.array([[r.name in t.regions for t in h.titles] for r in h.regions])
    present = licensed & (release <= d)[None, :]
    week = h.views[max(0, d - 6) : d + 1].sum(axis=0).astype(float)
    language = np.array([t.language for t in h.titles])
    genre = np.array([t.genre for t in h.titles])
    curve = release_curve(h, d)
    similar = np.where((age >= 0) & (age <= RELEASE_AGES), curve[:, np.clip(age, 0, RELEASE_AGES)], 0.0)
    cols = [
        np.broadcast_to(np.clip(-age, 0, 30).astype(float), (nr, nt)),
        np.broadcast_to((age == 0).astype(float), (nr, nt)),
        similar,
        np.log1p(_per_title_mean(week, language, present)),
        np.log1p(_per_title_mean(week, genre, present)),
    ]
    return np.stack(cols, axis=-1).reshape(nr * nt, -1)


def _base_features(h: History, d: int) -> np.ndarray:
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
    # The same forest on BASE_FEATURES only (the model before the calendar features).
    model_before: Scores
    model_before_release: Scores
    views_model: Scores  # the regressor of tomorrow's views, top N by predicted views
    # The releases themselves: each (region, day, title released that day there) is one case,
    # "predicted" if in the predictor's top N and "true" if in the real top N; precision and
    # recall over those cases (``days`` = number of cases).
    releases: dict[str, Scores]


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
    # the release calendar made usable for titles without history
    "days_until_release",
    "released_tomorrow",
    "similar_releases_at_age",  # earlier releases' mean log views at tomorrow's age
    "language_views_per_title",  # the region's week, per title in this language
    "genre_views_per_title",
)
BASE_FEATURES = 19  # the feature set before the calendar features (reported as "before")


def _released(h: History, day: int) -> np.ndarray:
    """[region]: a licensed title is released on this day there."""
    return np.array([any(t.release_day == day and r.name in t.regions for t in h.titles) for r in h.regions])


def _fit(x: np.ndarray, y: np.ndarray, trees: int, seed: int, regress: bool):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    kind = RandomForestRegressor if regress else RandomForestClassifier
    forest = kind(
        n_estimators=trees,
        min_samples_leaf=5,
        max_features=0.5,
        max_samples=0.25,
        n_jobs=2,
        random_state=seed,
    )
    forest.fit(x, y)
    return forest


def available(h: History, d: int) -> np.ndarray:
    """[region, title]: watchable on day d+1 (licensed there, released by then). The others have
    no views tomorrow, known from the catalog: they are predicted 0 and not trained on, so the
    few releases are not lost among titles that cannot be watched."""
    return np.array([[r.name in t.regions and t.release_day <= d + 1 for t in h.titles] for r in h.regions])


def _rows(h: History, targets: range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of the available rows of each target day, with the day and the row index."""
    xs, ts, idx = [], [], []
    for t in targets:
        live = available(h, t - 1).reshape(-1)
        xs.append(features(h, t - 1)[live])
        ts.append(np.full(int(live.sum()), t))
        idx.append(np.flatnonzero(live))
    return np.concatenate(xs), np.concatenate(ts), np.concatenate(idx)


def train(
    h: History, top: int, targets: range, trees: int = 60, seed: int = 0, base_only: bool = False
):  # -> RandomForestClassifier
    """The forest fitted on the given target days (each predicted from the day before);
    ``base_only``: the model before the calendar features (those features left out, every row
    trained on), for comparison."""
    if base_only:
        x = np.concatenate([features(h, t - 1)[:, :BASE_FEATURES] for t in targets])
        y = np.concatenate([top_n(h.views[t], top).reshape(-1) for t in targets])
        return _fit(x, y, trees, seed, regress=False)
    x, ts, idx = _rows(h, targets)
    tops = {t: top_n(h.views[t], top).reshape(-1) for t in targets}
    y = np.array([tops[t][i] for t, i in zip(ts, idx, strict=True)])
    return _fit(x, y, trees, seed, regress=False)


def train_views(h: History, targets: range, trees: int = 60, seed: int = 0):  # -> RandomForestRegressor
    """A forest regressing log(1 + tomorrow's views) on the same features (available rows)."""
    x, ts, idx = _rows(h, targets)
    logs = {t: np.log1p(h.views[t].astype(float)).reshape(-1) for t in targets}
    y = np.array([logs[t][i] for t, i in zip(ts, idx, strict=True)])
    return _fit(x, y, trees, seed, regress=True)


def _predict_rows(h: History, d: int, fn) -> np.ndarray:
    nr, nt = h.views.shape[1], h.views.shape[2]
    live = available(h, d).reshape(-1)
    out = np.zeros(nr * nt)
    if live.any():
        out[live] = fn(features(h, d)[live])
    return out.reshape(nr, nt)


def prob_from(forest, h: History, d: int) -> np.ndarray:
    """[region, title]: the classifier's probability of "in the top N on day d+1" from the state
    at the end of day d (0 where the title cannot be watched tomorrow)."""
    if True not in forest.classes_:
        return np.zeros(h.views.shape[1:])
    col = list(forest.classes_).index(True)
    return _predict_rows(h, d, lambda x: forest.predict_proba(x)[:, col])


def views_from(forest, h: History, d: int) -> np.ndarray:
    """[region, title]: the regressor's views for day d+1 from the state at the end of day d
    (0 where the title cannot be watched tomorrow)."""
    return _predict_rows(h, d, lambda x: np.maximum(np.expm1(forest.predict(x)), 0.0))


def predict_tomorrow(h: History, top: int, trees: int = 60, seed: int = 0) -> np.ndarray:
    """[region, title]: the probability of being in the top N on the day after the history,
    from a forest trained on all of it."""
    forest = train(h, top, range(HISTORY_DAYS + 1, h.days), trees, seed)
    return prob_from(forest, h, h.days - 1)


def predict_views(h: History, trees: int = 60, seed: int = 0) -> np.ndarray:
    """[region, title]: the views expected on the day after the history, from the regressor
    trained on all of it (what the fill planner weighs titles by)."""
    forest = train_views(h, range(HISTORY_DAYS + 1, h.days), trees, seed)
    return views_from(forest, h, h.days - 1)


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
    before = train(h, top, train_targets, trees, seed, base_only=True)
    regressor = train_views(h, train_targets, trees, seed)

    names = ("model", "model_before", "views_model", "baseline")
    scores: dict[str, list[tuple[float, float]]] = {k: [] for k in names}
    scores_rel: dict[str, list[tuple[float, float]]] = {k: [] for k in names}
    model_thr: list[tuple[float, float]] = []
    cases: dict[str, list[tuple[bool, bool]]] = {k: [] for k in names}
    for p_base, truth, t in base_pairs(best_hl, test_targets):
        x = features(h, t - 1)
        prob = prob_from(forest, h, t - 1)
        picks = {
            "model": _top_by_score(prob, top),
            "model_before": _top_by_score(
                before.predict_proba(x[:, :BASE_FEATURES])[:, 1].reshape(nr, nt), top
            ),
            "views_model": _top_by_score(views_from(regressor, h, t - 1), top),
            "baseline": p_base,
        }
        released = _released(h, t)
        for ri, r in enumerate(h.regions):
            new = [j for j, ti in enumerate(h.titles) if ti.release_day == t and r.name in ti.regions]
            for k, pick in picks.items():
                pr = _pr(pick[ri], truth[ri])
                scores[k].append(pr)
                if released[ri]:
                    scores_rel[k].append(pr)
                cases[k] += [(bool(pick[ri, j]), bool(truth[ri, j])) for j in new]
            model_thr.append(_pr(prob[ri] >= 0.5, truth[ri]))
    return Evaluation(
        top=top,
        train_days=(train_targets.start, train_targets.stop - 1),
        test_days=(test_targets.start, test_targets.stop - 1),
        baseline_half_life=best_hl,
        model=_mean(scores["model"]),
        model_threshold=_mean(model_thr),
        baseline=_mean(scores["baseline"]),
        model_release=_mean(scores_rel["model"]),
        baseline_release=_mean(scores_rel["baseline"]),
        importances=dict(zip(FEATURE_NAMES, map(float, forest.feature_importances_), strict=True)),
        model_before=_mean(scores["model_before"]),
        model_before_release=_mean(scores_rel["model_before"]),
        views_model=_mean(scores["views_model"]),
        releases={k: _case_scores(v) for k, v in cases.items()},
    )


def _case_scores(cases: list[tuple[bool, bool]]) -> Scores:
    if not cases:
        return Scores(float("nan"), float("nan"), 0)
    a = np.array(cases, dtype=bool)
    return Scores(*_pr(a[:, 0], a[:, 1]), len(cases))
