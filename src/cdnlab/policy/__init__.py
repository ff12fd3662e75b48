"""The policy catalog: TTL classes and cache-key rules shared by the edge daemon and ``infra/``.

>>> from cdnlab.policy import classify, cache_key_query
>>> classify("/title/1/seg-001.m4s").name
'segment'
>>> cache_key_query("sig=ab&version=3&profile=hd&x=1")
'profile=hd&version=3'
"""

from __future__ import annotations

from functools import cache

from cdnlab.policy.catalog import (
    DEFAULT_PATH,
    Catalog,
    CatalogError,
    TtlClass,
    from_mapping,
    load,
    pattern_regex,
)
from cdnlab.signing import SIGNATURE_PARAMS

__all__ = [
    "DEFAULT_PATH",
    "SIGNATURE_PARAMS",
    "Catalog",
    "CatalogError",
    "TtlClass",
    "cache_key_query",
    "classify",
    "default_catalog",
    "from_mapping",
    "load",
    "pattern_regex",
]


@cache
def default_catalog() -> Catalog:
    """The packaged catalog, read and validated once per process."""
    return load()


def classify(path: str) -> TtlClass:
    """The TTL class of a request path under the packaged catalog."""
    return default_catalog().classify(path)


def cache_key_query(query: str) -> str:
    """The cache-key part of a query string under the packaged catalog (signature params dropped)."""
    return default_catalog().cache_key_query(query)
