"""Where a new object goes: which tier first, and which disk of a tier (pure functions).

Disks of a tier are ranked by rendezvous (highest-random-weight) hashing of the key with each
disk's id: stable across processes and restarts, and when a disk fails or is added only the keys
that ranked it first move. Python's hash() is salted per process, so blake2b is used instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

Kind = str  # "ram" | "flash" | "hdd"

_SMALL_ORDER = ("ram", "flash", "hdd")
_LARGE_ORDER = ("flash", "hdd")


def key_digest(key: str) -> bytes:
    """SHA-256 of the key: names its files and seeds placement (never the URL text itself)."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def tier_order(size: int | None, ram_object_max: int, kinds: Sequence[Kind]) -> list[Kind]:
    """Tier kinds to try, best first, among KINDS configured.

    Small objects (known size <= ram_object_max) prefer RAM; unknown sizes are treated as large.
    Large objects never go to RAM unless the appliance has nothing else (a RAM-only lab box).
    """
    present = set(kinds)
    small = size is not None and size <= ram_object_max
    order = [k for k in (_SMALL_ORDER if small else _LARGE_ORDER) if k in present]
    if not order and "ram" in present:
        order = ["ram"]
    return order


def score(digest: bytes, disk_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(digest + disk_id.encode(), digest_size=8).digest(), "big")


def rank(digest: bytes, disk_ids: Sequence[str]) -> list[str]:
    """DISK_IDS ordered by rendezvous weight for this key, best first."""
    return sorted(disk_ids, key=lambda d: score(digest, d), reverse=True)


def choose(digest: bytes, size: int, candidates: Sequence[tuple[str, int, int]]) -> list[str]:
    """Disks to try, in order, for an object of SIZE bytes (0 if unknown).

    CANDIDATES are (disk id, capacity, used bytes) of one tier's healthy disks. Disks with room
    come first in rendezvous order, then the full ones in rendezvous order (they will evict).
    Disks smaller than the object are left out.
    """
    fits = {d: cap - used >= size for d, cap, used in candidates if cap >= size}
    ranked = rank(digest, list(fits))
    return [d for d in ranked if fits[d]] + [d for d in ranked if not fits[d]]
