"""The policy catalog: TTL classes and cache-key rules shared by the edge daemon and ``infra/``.

>>> from cdnlab.policy import classify, cache_key_query
>>> classify("/title/1/seg-001.m4s").name
'segment'
>>> cache_key_query("sig=ab&version=3&profile=hd&x=1")
'profile=hd&version=3'
"""

from __future__ import annotations

import os
from functools import cache

from cdnlab.policy.catalog import (
    CODINGS,
    DEFAULT_PATH,
    Catalog,
    CatalogError,
    ImageOpt,
    TtlClass,
    from_mapping,
    load,
    pattern_regex,
)
from cdnlab.signing import SIGNATURE_PARAMS

__all__ = [
    "CATALOG_ENV",
    "CODINGS",
    "DEFAULT_PATH",
    "SIGNATURE_PARAMS",
    "Catalog",
    "CatalogError",
    "ImageOpt",
    "TtlClass",
    "cache_key_query",
    "classify",
    "default_catalog",
    "from_mapping",
    "load",
    "pattern_regex",
]


# A catalog file of the operator's own instead of the packaged one (daemon and infra/ alike).
CATALOG_ENV = "CDNLAB_CATALOG"


@cache
def default_catalog() -> Catalog:
    """The packaged catalog (or the file named by $CDNLAB_CATALOG), read and validated once per process."""
    return load(os.environ.get(CATALOG_ENV) or None)


def classify(path: str) -> TtlClass:
    """The TTL class of a request path under the packaged catalog."""
    return default_catalog().classify(path)


def cache_key_query(query: str) -> str:
    """The cache-key part of a query string under the packaged catalog (signature params dropped)."""
    return default_catalog().cache_key_query(query)
