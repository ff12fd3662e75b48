"""Shared formats (inventory report, title rule), coverage zones, thresholds, catalog, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from control_fixtures import CZF
from pydantic import ValidationError

from cdnlab.control.catalog import Catalog, CatalogError
from cdnlab.control.config import ConfigError, from_mapping, load
from cdnlab.control.coverage import CoverageZoneError, CoverageZones
from cdnlab.control.thresholds import parse_threshold, violations
from cdnlab.inventory import EdgeInventory, InventoryReport, title_of, title_prefix


@pytest.mark.parametrize(
    ("key", "title"),
    [
        ("/content/t0001/1080p/seg-00001.m4s", "t0001"),
        ("/content/t0001/manifest.mpd", "t0001"),
        ("/content/t0001/", None),
        ("/content/t0001", None),
        ("/content//x", None),
        ("/static/app.js", None),
        ("/contentx/t1/a", None),
    ],
)
def test_title_of(key: str, title: str | None) -> None:
    assert title_of(key) == title


def test_title_prefix_matches_rule() -> None:
    assert title_of(title_prefix("t9") + "x") == "t9"


def test_inventory_report_shapes() -> None:
    obj = {"key": "/content/t1/a/b", "size": 1, "sha256": "", "tier": "ram"}
    InventoryReport.model_validate({"appliance_id": "e", "generation": 1, "full": True, "objects": [obj]})
    InventoryReport.model_validate(
        {"appliance_id": "e", "generation": 2, "full": False, "added": [obj], "removed": []}
    )
    with pytest.raises(ValidationError):
        InventoryReport.model_validate({"appliance_id": "e", "generation": 1, "full": True})
    with pytest.raises(ValidationError):
        InventoryReport.model_validate(
            {"appliance_id": "e", "generation": 1, "full": False, "objects": [obj]}
        )
    with pytest.raises(ValidationError):
        InventoryReport.model_validate(
            {"appliance_id": "e", "generation": 1, "full": True, "objects": [], "added": []}
        )
    with pytest.raises(ValidationError):
        InventoryReport.model_validate(
            {"appliance_id": "e", "generation": 1, "full": True, "objects": [{**obj, "tier": "tape"}]}
        )
    inv = EdgeInventory.model_validate({"id": "edge-1", "generation": 42, "objects": [obj]})
    assert inv.as_report().full and inv.as_report().appliance_id == "edge-1"


def test_coverage_longest_prefix_v4_v6() -> None:
    z = CoverageZones.from_dict(CZF)
    assert z.prefix_count == 7
    assert z.lookup("10.1.7.7").site == "site-a"  # type: ignore[union-attr]
    hit = z.lookup("10.1.2.9")
    assert hit is not None and hit.site == "site-b" and hit.prefix == "10.1.2.0/24"  # /24 beats /16
    assert z.lookup("2001:db8:b::1").site == "site-b"  # type: ignore[union-attr]
    assert z.lookup("2001:db8:a:ffff::1").prefix == "2001:db8:a::/48"  # type: ignore[union-attr]
    assert z.lookup("::ffff:192.0.2.5").site == "site-a"  # type: ignore[union-attr]
    assert z.lookup("8.8.8.8") is None
    assert z.lookup("not-an-ip") is None
    assert z.coordinates["site-c"].latitude == 51.5
    assert z.sites == {"site-a", "site-b", "site-c"}


def test_coverage_host_bits_and_default_route() -> None:
    z = CoverageZones.from_dict(
        {"coverageZones": {"any": {"network": ["0.0.0.0/0"]}, "x": {"network": ["10.0.0.5/8"]}}}
    )
    assert z.lookup("10.200.1.1").site == "x"  # type: ignore[union-attr]
    assert z.lookup("1.2.3.4").site == "any"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"coverageZones": {"a": {"network": ["10.0.0.0/33"]}}},
        {"coverageZones": {"a": {"network": ["2001:db8::/32"]}}},
        {"coverageZones": {"a": {"network6": ["10.0.0.0/8"]}}},
        {"coverageZones": {"a": {"network": ["10.1/16"]}}},
        {"coverageZones": {"a": {"network": "10.0.0.0/8"}}},
        {"coverageZones": {"a": {"coordinates": {"latitude": "x"}}}},
    ],
)
def test_coverage_rejects(doc: dict) -> None:
    with pytest.raises(CoverageZoneError):
        CoverageZones.from_dict(doc)


def test_coverage_load_errors(tmp_path: Path) -> None:
    with pytest.raises(CoverageZoneError, match="cannot read"):
        CoverageZones.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CoverageZoneError, match="not valid JSON"):
        CoverageZones.load(tmp_path / "bad.json")


def test_thresholds_traffic_monitor_syntax() -> None:
    assert str(parse_threshold("1000")) == "<1000"
    assert parse_threshold(">1750000").healthy(2_000_000)
    assert not parse_threshold(">1750000").healthy(1_000_000)
    assert not parse_threshold("<0.9").healthy(0.95)
    with pytest.raises(ValueError):
        parse_threshold("~5")
    th = {"query_time_ms": parse_threshold("<100"), "error_rate": parse_threshold("<0.01")}
    assert violations(th, {"query_time_ms": 150.0}) == ["query_time_ms=150 breaks <100"]
    assert violations(th, {"query_time_ms": 5.0, "error_rate": 0.0}) == []


def test_catalog(tmp_path: Path, catalog_path: Path) -> None:
    cat = Catalog.load(catalog_path)
    t = cat.get("t0001")
    assert t is not None and [x.profile for x in t.tracks] == ["480p", "1080p"]
    assert t.tracks[0].segment_names[:2] == ("seg-00001.m4s", "seg-00002.m4s")
    assert cat.get("nope") is None
    (tmp_path / "c.json").write_text(json.dumps({"titles": {"x": {"tracks": []}}}))
    with pytest.raises(CatalogError, match=r"titles\.x\.tracks"):
        Catalog.load(tmp_path / "c.json")
    (tmp_path / "p.toml").write_text(
        '[titles.x]\ntracks = [{profile="a", bandwidth=1, segments=1, segment_duration=1, '
        'segment_pattern="s.m4s"}]'
    )
    with pytest.raises(CatalogError, match="segment_pattern"):
        Catalog.load(tmp_path / "p.toml")


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^signing: required key is missing$"):
        from_mapping({})
    with pytest.raises(ConfigError, match=r"^bogus: unknown key$"):
        from_mapping({"signing": {"key": "0123456789"}, "bogus": 1})
    with pytest.raises(ConfigError, match=r"^health\.thresholds: .*error_rate: threshold must be"):
        from_mapping({"signing": {"key": "0123456789"}, "health": {"thresholds": {"error_rate": "~1"}}})
    with pytest.raises(ConfigError, match=r"^health\.thresholds: .*loadavg: unknown measurement"):
        from_mapping({"signing": {"key": "0123456789"}, "health": {"thresholds": {"loadavg": "25"}}})
    cfg = from_mapping({"signing": {"key": "0123456789", "ttl": "6h"}, "health": {"interval": "500ms"}})
    assert cfg.signing.ttl == 21600 and cfg.health.interval == 0.5
    p = tmp_path / "c.toml"
    p.write_text('coverage_zone_file = "czf.json"\n[signing]\nkey = "0123456789"\n')
    assert load(p).coverage_zone_file == tmp_path / "czf.json"
    out = tmp_path / "stack.json"
    out.write_text(json.dumps({"cloudfront_domain": "d123.cloudfront.net"}))
    cfg = from_mapping({"signing": {"key": "0123456789"}, "steering": {"pulumi_stack_output": str(out)}})
    assert cfg.cloudfront_base() == "https://d123.cloudfront.net"
