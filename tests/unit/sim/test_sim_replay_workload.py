"""Replay counts and the seeded workload generators."""

from __future__ import annotations

import gc
from collections import Counter

import pytest

from cdnlab.eviction import get_policy
from cdnlab.sim.replay import replay
from cdnlab.sim.trace import Trace
from cdnlab.sim.workload import (
    IMAGE_SIZES,
    PRESETS,
    CdnParams,
    ScanParams,
    cdn_workload,
    generate,
    scan_workload,
)


def test_replay_counts_objects_and_bytes() -> None:
    trace = Trace([0, 1, 2, 3], ["a", "b", "a", "c"], [100, 50, 100, 10])
    r = replay(get_policy("lru", 1000), trace)
    assert (r.requests, r.hits, r.bytes, r.hit_bytes) == (4, 1, 260, 100)
    assert r.object_miss_ratio == pytest.approx(0.75)
    assert r.byte_miss_ratio == pytest.approx(160 / 260)
    assert r.as_dict() == {"object_miss_ratio": 0.75, "byte_miss_ratio": pytest.approx(160 / 260)}


@pytest.mark.parametrize("enabled", [True, False])
def test_replay_pauses_the_cyclic_gc_and_restores_the_callers_setting(enabled: bool) -> None:
    seen: list[bool] = []
    trace = Trace([float(i) for i in range(70_000)], list(range(70_000)), [10] * 70_000)
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        replay(get_policy("default", 5000), trace, progress=lambda n: seen.append(gc.isenabled()))
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [False, False]  # two chunks, both replayed without the collector


SMALL = CdnParams(requests=30_000, days=2, titles=60, releases_per_day=4, segments_mean=30)


def test_cdn_workload_is_seeded_and_well_formed() -> None:
    a, b = cdn_workload(SMALL), cdn_workload(SMALL)
    assert (a.times, a.keys, a.sizes) == (b.times, b.keys, b.sizes)
    other = cdn_workload(CdnParams(**{**SMALL.__dict__, "seed": 99}))
    assert other.keys != a.keys
    assert len(a) == SMALL.requests
    assert a.times == sorted(a.times)
    assert a.times[0] >= 0 and a.times[-1] <= SMALL.days * 86400 + 3600
    sizes: dict[int, int] = {}
    for k, s in zip(a.keys, a.sizes, strict=True):
        assert sizes.setdefault(k, s) == s  # an object's size never changes


def test_cdn_workload_mixes_segments_images_and_releases() -> None:
    t = cdn_workload(SMALL)
    images = [s for k, s in zip(t.keys, t.sizes, strict=True) if (k >> 20) & 15 == 15]
    segments = [s for k, s in zip(t.keys, t.sizes, strict=True) if (k >> 20) & 15 != 15]
    assert 0.03 < len(images) / len(t) < 0.3
    assert max(images) <= max(IMAGE_SIZES) * 1.4 < min(segments) * 10
    assert len({(k >> 20) & 15 for k in t.keys}) == 6  # five bitrate profiles and artwork
    titles = {k >> 24 for k in t.keys}
    assert any(title >= SMALL.titles for title in titles)  # daily releases got watched
    # Zipf: the most requested title draws far more than the median one
    per_title = sorted(Counter(k >> 24 for k in t.keys).values(), reverse=True)
    assert per_title[0] > 5 * per_title[len(per_title) // 2]


def test_release_days_bring_new_titles() -> None:
    t = cdn_workload(SMALL)
    day2 = {k >> 24 for k, ts in zip(t.keys, t.times, strict=True) if ts >= 86400 + 9 * 3600}
    assert any(SMALL.titles + SMALL.releases_per_day <= title for title in day2)
    day1 = {k >> 24 for k, ts in zip(t.keys, t.times, strict=True) if ts < 86400}
    assert all(title < SMALL.titles + SMALL.releases_per_day for title in day1)


def test_scan_workload_has_one_hit_wonders_and_scans() -> None:
    p = ScanParams(requests=20_000, objects=2000, scan_every=5000, scan_length=1000)
    t = scan_workload(p)
    assert len(t) == p.requests
    counts = Counter(t.keys)
    once = sum(1 for k in t.keys if counts[k] == 1)
    assert once / len(t) > p.one_hit_share
    run = t.keys[5000:6000]
    assert run == list(range(run[0], run[0] + 1000))  # a sequential scan
    assert scan_workload(p).keys == t.keys


def test_presets() -> None:
    assert set(PRESETS) == {"cdn", "cdn-releases", "cdn-longtail", "scan"}
    t = generate("cdn-releases", requests=5000)
    assert len(t) == 5000
    assert generate("scan", seed=5, requests=1000).keys != generate("scan", requests=1000).keys
    with pytest.raises(ValueError, match="unknown workload"):
        generate("nope")
