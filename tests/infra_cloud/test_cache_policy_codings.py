"""CloudFront's cache policy offers exactly the codings the catalog class offers."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cdnlab.policy import catalog as catalog_mod

pytest.importorskip("pulumi_aws")
from infra.cache_policies import cache_policy_args

CATALOG = Path(catalog_mod.__file__).with_name("catalog.toml")


@pytest.mark.parametrize(
    ("compress", "gzip", "br"),
    [(["gzip"], True, False), (["br"], False, True), (["br", "gzip"], True, True), (False, False, False)],
)
def test_codings_reach_the_cache_policy(compress, gzip: bool, br: bool) -> None:
    data = tomllib.loads(CATALOG.read_text())
    cls = next(c for c in data["class"] if c["name"] == "static")
    cls["compress"] = compress
    cat = catalog_mod.from_mapping(data)
    static = next(c for c in cat.classes if c.name == "static")
    params = cache_policy_args(static, cat, "t")["parameters_in_cache_key_and_forwarded_to_origin"]
    assert params["enable_accept_encoding_gzip"] is gzip
    assert params["enable_accept_encoding_brotli"] is br
