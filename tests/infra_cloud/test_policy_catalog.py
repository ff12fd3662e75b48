"""The policy catalog: the seed values, the matcher, the cache-key rule, and one-line errors."""

from __future__ import annotations

import tomllib

import pytest

from cdnlab.policy import (
    DEFAULT_PATH,
    SIGNATURE_PARAMS,
    CatalogError,
    cache_key_query,
    classify,
    default_catalog,
    from_mapping,
    load,
)

DAY = 86_400
YEAR = 31_536_000


def _raw() -> dict:
    return tomllib.loads(DEFAULT_PATH.read_text())


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/title/42/manifest.mpd", "manifest"),
        ("/title/42/master.m3u8", "manifest"),
        ("/title/42/video/1080p/seg-001.m4s", "segment"),
        ("/title/42/full.mp4", "segment"),
        ("/live/7/chunk.ts", "segment"),
        ("/images/poster/42.jpg", "image"),
        ("/api/v1/titles", "api"),
        ("/uploads/u1/avatar.png", "user"),
        ("/static/app.3f2a.js", "static"),
        ("/favicon.ico", "static"),
        ("/dynamic/cart", "dynamic"),
        ("/session/abc/state", "dynamic"),
        ("/", "default"),
        ("/images", "default"),
        ("/title/42/manifest.MPD", "default"),  # CloudFront patterns are case-sensitive
    ],
)
def test_classify(path: str, name: str) -> None:
    assert classify(path).name == name


def test_seed_values() -> None:
    c = default_catalog()
    manifest, segment, image = c.by_name("manifest"), c.by_name("segment"), c.by_name("image")
    assert manifest.patterns == ["*.mpd", "*.m3u8"] and manifest.default_ttl == 300
    assert image.patterns == ["/images/*"] and image.default_ttl == 30 * DAY
    assert (segment.default_ttl, segment.max_ttl) == (DAY, YEAR)
    assert segment.range and not segment.compress and segment.signed
    static = c.by_name("static")
    assert static.default_ttl == YEAR and static.immutable and "immutable" in static.cache_control
    api = c.by_name("api")
    assert api.default_ttl == 300 and api.stale_while_revalidate == 60
    user = c.by_name("user")
    assert user.default_ttl == 3600 and user.must_revalidate
    dynamic = c.by_name("dynamic")
    assert not dynamic.cacheable and "no-cache" in dynamic.cache_control
    assert c.default.name == "default" and c.default.cacheable and c.default.default_ttl == DAY
    assert c.cache_key.query_params == ["profile", "language", "version"]
    assert [x.name for x in c.classes if x.range] == ["segment"]


def test_cache_key_query_keeps_keyed_params_in_canonical_order() -> None:
    q = "sig=00ff&version=3&exp=99&profile=hd&utm=x&kid=k1&language=fr&profile=sd"
    assert cache_key_query(q) == "profile=hd&profile=sd&language=fr&version=3"
    assert not set(SIGNATURE_PARAMS) & {k.split("=")[0] for k in cache_key_query(q).split("&")}
    assert cache_key_query("") == ""


def test_key_for_uses_query_only_where_the_class_keys_on_it() -> None:
    c = default_catalog()
    assert c.key_for("/t/seg.m4s", "exp=1&kid=a&sig=b&language=fr") == "/t/seg.m4s?language=fr"
    assert c.key_for("/uploads/a.png", "version=2") == "/uploads/a.png"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["class"][1].update(default_ttl=5), "class[1].cache_control: max-age=86400 but"),
        (lambda d: d["class"][0].update(min_ttl=400), "class[0].default_ttl: must lie between"),
        (lambda d: d["class"][1].update(bogus=1), "class[1].bogus: unknown key"),
        (lambda d: d["class"][2].update(default_ttl="long"), "class[2].default_ttl:"),
        (lambda d: d["cache_key"].update(query_params=["profile", "sig"]), "cache_key.query_params:"),
        (lambda d: d["origin_request"].update(headers=["Range"]), "origin_request.headers:"),
        (lambda d: d["class"].pop(), "class: the last class must be the catch-all"),
        (lambda d: d["class"][5].update(patterns=[f"*.x{i}" for i in range(30)]), "class: more than 24"),
    ],
)
def test_bad_values_name_the_key(mutate, message: str) -> None:
    data = _raw()
    mutate(data)
    with pytest.raises(CatalogError) as err:
        from_mapping(data)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_load_reports_unreadable_and_bad_toml(tmp_path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[cache_key\n")
    with pytest.raises(CatalogError, match="not valid TOML"):
        load(bad)
