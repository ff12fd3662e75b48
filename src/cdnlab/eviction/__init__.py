"""Eviction and admission policies: one interface (:class:`EvictionPolicy`), one module per
policy, built by name with :func:`get_policy`. The edge daemon and the simulator run this code."""

from cdnlab.eviction.base import EvictionPolicy, Key
from cdnlab.eviction.registry import DEFAULT_POLICY, get_policy, policy_names

__all__ = ["DEFAULT_POLICY", "EvictionPolicy", "Key", "get_policy", "policy_names"]
