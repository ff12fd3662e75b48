"""Stack settings, stack files and the appliance inventory: bad values name their key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra import inventory, stack_config
from infra.settings import SettingsError, check_signing_keys, from_mapping

GOOD = {
    "domain": "example.com",
    "bucketPrefix": "example-cdn",
    "geo": {"NA": {"ips": ["198.51.100.1"]}, "default": {"ips": ["198.51.100.1"]}},
}


def test_good_settings_and_derived_names() -> None:
    s = from_mapping(GOOD)
    assert (s.cdn_fqdn, s.geo_fqdn, s.shield_region, s.waf_rate_limit) == (
        "cdn.example.com",
        "play.example.com",
        "us-east-1",
        2000,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"geo": {"NA": {"ips": ["198.51.100.1"]}}}, "cdnlab:geo: needs a 'default' entry"),
        (
            {"geo": {"XX": {"ips": ["1.2.3.4"]}, "default": {"ips": ["1.2.3.4"]}}},
            "cdnlab:geo: 'XX'",
        ),
        ({"geo": {"default": {"ips": ["1.2.3"]}}}, "cdnlab:geo.default.ips:"),
        ({"replicaRegion": "mars-1"}, "cdnlab:replicaRegion:"),
        ({"bucketPrefix": "Bad_Prefix"}, "cdnlab:bucketPrefix:"),
        ({"wafRateLimit": 5}, "cdnlab:wafRateLimit:"),
        ({"shieldRegions": "us-east-1"}, "cdnlab:shieldRegions: unknown key"),
    ],
)
def test_bad_settings_name_the_key(change: dict, message: str) -> None:
    with pytest.raises(SettingsError) as err:
        from_mapping({**GOOD, **change})
    assert str(err.value).replace("Value error, ", "").startswith(message.replace("Value error, ", "")), str(
        err.value
    )


def test_missing_domain() -> None:
    with pytest.raises(SettingsError, match="cdnlab:domain: required key is missing"):
        from_mapping({k: v for k, v in GOOD.items() if k != "domain"})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, "non-empty map"),
        ({"bad kid": "0123456789abcdef"}, "signingKeys.bad kid"),
        ({"k1": "short"}, "16 characters"),
    ],
)
def test_signing_keys(keys: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        check_signing_keys(keys)
    assert check_signing_keys({"k1": "0123456789abcdef"}) == {"k1": "0123456789abcdef"}


def test_stack_file_flattening_and_secure_values(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.t.yaml").write_text(
        "config:\n"
        "  aws:region: eu-west-1\n"
        "  cdnlab:geo:\n    default:\n      ips: [192.0.2.1]\n"
        "  cdnlab:signingKeys:\n    secure: AAABAJZ1aGVsbG8=\n"
    )
    with pytest.raises(
        stack_config.StackConfigError, match=r"cdnlab:signingKeys: encrypted in Pulumi\.t\.yaml"
    ):
        stack_config.load("t", root=tmp_path)
    cfg = stack_config.load("t", ['cdnlab:signingKeys={"k1": "0123456789abcdef"}'], root=tmp_path)
    assert json.loads(cfg["cdnlab:geo"]) == {"default": {"ips": ["192.0.2.1"]}}
    assert cfg["aws:region"] == "eu-west-1"
    with pytest.raises(stack_config.StackConfigError, match="expected NAMESPACE:KEY=VALUE"):
        stack_config.load("t", ["nonsense"], root=tmp_path)


def test_lab_inventory() -> None:
    inv = inventory.load(Path(__file__).resolve().parents[2] / "inventories/lab/appliances.toml")
    assert [s.name for s in inv.sites] == ["isp-a-nyc", "isp-b-fra"]
    assert inv.sites[0].appliances[0].ipv6 == "2001:db8:a::11"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[site]]\nname = "a"\n[[site.appliance]]\nname = "o"\nipv4 = "300.1.1.1"\n',
            "site.0.appliance.0.ipv4:",
        ),
        ('[[site]]\nname = "A B"\n[[site.appliance]]\nname = "o"\nipv4 = "1.1.1.1"\n', "site.0.name:"),
        (
            '[[site]]\nname = "a"\ncolour = 1\n[[site.appliance]]\nname = "o"\nipv4 = "1.1.1.1"\n',
            "unknown key",
        ),
        ('[[site]]\nname = "a"\n', "site.0.appliance:"),
    ],
)
def test_bad_inventory(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "inv.toml"
    p.write_text(text)
    with pytest.raises(inventory.InventoryError, match=message.replace(".", r"\.")):
        inventory.load(p)
