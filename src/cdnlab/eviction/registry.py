"""Policies by name, so the daemon's config, the simulator and the benchmark say the same thing.

``get_policy("lru", capacity)`` builds one; ``"NAME+tinylfu"`` puts the admission filter in
front of any of them; options are passed to the constructor (``age_out=…``, ``licensed=…``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cdnlab.eviction.admission import TinyLFUAdmission
from cdnlab.eviction.alrfu import ALRFU
from cdnlab.eviction.base import EvictionPolicy
from cdnlab.eviction.fifo import FIFO
from cdnlab.eviction.lru import LRU
from cdnlab.eviction.oca_lfu import OcaLFU
from cdnlab.eviction.s3fifo import S3FIFO
from cdnlab.eviction.sieve import Sieve
from cdnlab.eviction.wtinylfu import WTinyLFU

# Chosen on the benchmark's evidence (docs/benchmarks.md, "Eviction").
DEFAULT_POLICY = "alrfu"

POLICIES: dict[str, Callable[..., EvictionPolicy]] = {
    cls.name: cls for cls in (LRU, FIFO, Sieve, S3FIFO, OcaLFU, WTinyLFU, ALRFU)
}
FILTERS: dict[str, Callable[..., EvictionPolicy]] = {"tinylfu": TinyLFUAdmission}


def policy_names(with_filters: bool = True) -> list[str]:
    """Every name :func:`get_policy` accepts, besides ``"default"`` (with filters: every
    base policy behind every filter)."""
    names = list(POLICIES)
    if with_filters:
        names += [f"{p}+{f}" for p in POLICIES for f in FILTERS]
    return names


def get_policy(name: str, capacity: int, **opts: Any) -> EvictionPolicy:
    """Build policy NAME for a cache of CAPACITY bytes. With a filter (``"lru+tinylfu"``) the
    options go to the base policy; filter options are prefixed ``admission_`` (``admission_min_count=3``)."""
    if name.lower() == "default":
        name = DEFAULT_POLICY
    base, _, filt = name.lower().partition("+")
    if base not in POLICIES or (filt and filt not in FILTERS):
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(policy_names())}")
    filter_opts = {k[len("admission_") :]: opts.pop(k) for k in list(opts) if k.startswith("admission_")}
    policy = POLICIES[base](capacity, **opts)
    if filt:
        policy = FILTERS[filt](policy, **filter_opts)
    return policy
