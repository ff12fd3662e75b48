"""Invalidation targets: wildcard translation, deduplication, cascade rules, staging, backoff."""

from __future__ import annotations

import pytest

from cdnlab.control.config import ConfigError, from_mapping
from cdnlab.control.invalidation import InvalidationRequest, backoff, stages
from cdnlab.control.models import Appliance
from cdnlab.control.purge_targets import (
    CascadeRule,
    Target,
    classify,
    cloudfront_paths,
    edge_bodies,
    expand,
    literal_prefix,
)


def test_wildcards_become_their_literal_prefix() -> None:
    assert literal_prefix("/content/t1/*/seg-0000?.m4s") == "/content/t1/"
    assert literal_prefix("/content/t1/seg-[0-9].m4s") == "/content/t1/seg-"
    assert literal_prefix("/a/b") == "/a/b"
    assert Target("wildcard", "/content/t1/1080p/*.m4s").edge_body() == {"prefix": "/content/t1/1080p/"}


def test_classify() -> None:
    assert classify("/a/") == Target("prefix", "/a/")
    assert classify("/a/*.mpd") == Target("wildcard", "/a/*.mpd")
    assert classify("/a/b.mpd") == Target("key", "/a/b.mpd")


def test_shorter_prefixes_cover_keys_and_longer_prefixes() -> None:
    targets = [
        Target("key", "/content/t1/1080p/seg-00001.m4s"),
        Target("prefix", "/content/t1/"),
        Target("wildcard", "/content/t1/480p/*"),
        Target("key", "/content/t2/manifest.json"),
    ]
    assert edge_bodies(targets) == [{"prefix": "/content/t1/"}, {"key": "/content/t2/manifest.json"}]
    assert cloudfront_paths(targets) == ["/content/t1/*", "/content/t2/manifest.json"]


def test_cascade_manifest_to_segments_chains_and_stops() -> None:
    rules = [
        CascadeRule("/content/{title}/manifest.json", ("/content/{title}/",)),
        CascadeRule("/content/{title}/", ("/thumbs/{title}/*.jpg", "/content/{title}/")),  # self-loop
    ]
    out = expand([Target("key", "/content/t7/manifest.json")], rules)
    assert out == sorted(
        [
            Target("key", "/content/t7/manifest.json"),
            Target("prefix", "/content/t7/"),
            Target("wildcard", "/thumbs/t7/*.jpg"),
        ]
    )
    # A placeholder is one path segment: a deeper path does not match.
    assert expand([Target("key", "/content/a/b/manifest.json")], rules[:1]) == [
        Target("key", "/content/a/b/manifest.json")
    ]


def test_cascade_rules_are_checked_with_the_config() -> None:
    base = {"database": "sqlite://", "signing": {"key": "k" * 16}}
    cfg = from_mapping(
        base | {"invalidation": {"cascade": [{"match": "/c/{t}/m.json", "then": ["/c/{t}/"]}]}}
    )
    assert cfg.invalidation.cascade[0].then == ["/c/{t}/"]
    with pytest.raises(ConfigError, match=r"invalidation.cascade: .*cascade\[0\].*\['x'\]"):
        from_mapping(base | {"invalidation": {"cascade": [{"match": "/c/{t}/", "then": ["/d/{x}/"]}]}})


def test_request_validation() -> None:
    with pytest.raises(ValueError, match="at least one"):
        InvalidationRequest()
    with pytest.raises(ValueError, match="must start with /"):
        InvalidationRequest(paths=["content/x"])
    r = InvalidationRequest(paths=["/a"], patterns=["/b/*", "/plain"])
    assert r.targets() == [Target("key", "/a"), Target("wildcard", "/b/*"), Target("key", "/plain")]
    assert (
        r.fingerprint()
        == InvalidationRequest(request_id="x", paths=["/a"], patterns=["/b/*", "/plain"]).fingerprint()
    )


def _a(aid: str, site: str) -> Appliance:
    return Appliance(id=aid, site=site, url=f"http://{aid}", admin_url=f"http://{aid}:81")


def test_stages_priority_sites_first_then_batches() -> None:
    fleet = [_a("e5", "b"), _a("e1", "a"), _a("e2", "c"), _a("e3", "b"), _a("e4", "c")]
    got = [[a.id for a in s] for s in stages(fleet, ["c"], 2, staged=True)]
    assert got == [["e2", "e4"], ["e1", "e3"], ["e5"]]
    assert [[a.id for a in s] for s in stages(fleet, ["c"], 2, staged=False)] == [
        ["e1", "e3", "e5", "e2", "e4"]
    ]
    assert stages([], ["c"], 2, staged=True) == []


def test_backoff_doubles_to_the_cap() -> None:
    assert [backoff(n, 0.5, 3.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
