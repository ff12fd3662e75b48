"""The one interface every eviction/admission policy implements.

A policy object owns the eviction decisions for one cache (a disk or a tier) of ``capacity``
bytes. It never touches storage: it is told what happens (hits, inserts, removals) and answers
two questions, "store this object?" (:meth:`admit`) and "which objects go to make room?"
(:meth:`evict`). The daemon and the simulator drive the very same methods; :meth:`request` is
the simulator's composition of them and no policy overrides it.

How the daemon drives it, from the one process that owns a disk's eviction decisions::

    if policy.contains(key):          # or: its own index says it is stored
        policy.on_hit(key, now)
    elif policy.admit(key, size, now):
        for victim in policy.evict(size, now):   # make room for `size` more bytes
            delete_file(victim)
        store(key)
        policy.on_insert(key, size, now)
    ...
    policy.on_remove(key)             # purge, integrity failure, failed disk: gone externally

Byte accounting: ``used`` counts the bytes of objects inserted and not yet removed or returned as
victims. ``evict`` forgets its victims before returning them, so after the caller deletes them
``used`` already matches the disk. Not thread-safe: one owner per policy object.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable
from typing import ClassVar

Key = Hashable


class EvictionPolicy(ABC):
    """Base class: subclasses implement the six primitives and keep ``used`` exact."""

    name: ClassVar[str] = ""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0 bytes")
        self.capacity = int(capacity)
        self.used = 0

    # ---- the primitive event API (what the daemon calls) ----

    @abstractmethod
    def contains(self, key: Key) -> bool:
        """True if the policy tracks KEY as stored."""

    @abstractmethod
    def on_hit(self, key: Key, now: float) -> None:
        """KEY (stored) was served. NOW is in seconds (any epoch, monotonic per cache)."""

    def admit(self, key: Key, size: int, now: float) -> bool:
        """Should a missed object be stored? Called once per miss, before :meth:`evict`.
        Never True for an object larger than ``capacity``.

        Admission filters also count the request here, so the daemon should call it on every
        miss, even one it will not store anyway (``no-store``): the count still informs."""
        return size <= self.capacity

    @abstractmethod
    def on_insert(self, key: Key, size: int, now: float) -> None:
        """KEY of SIZE bytes is now stored (the caller made room with :meth:`evict` first).
        Inserting a key already present replaces it (a new version of the object)."""

    @abstractmethod
    def on_remove(self, key: Key) -> None:
        """KEY left the cache for a reason other than eviction (purge, failed disk). A key the
        policy does not hold is ignored."""

    @abstractmethod
    def evict(self, bytes_needed: int, now: float) -> list[Key]:
        """Choose victims until ``used + bytes_needed <= capacity`` and forget them.

        Returns them in eviction order; an empty list if there is room already. ``evict(0)``
        after lowering ``capacity`` brings the cache back under it (tier watermarks)."""

    # ---- helpers built on the primitives ----

    def request(self, key: Key, size: int, now: float) -> bool:
        """Simulate one request through the primitives, in the order the daemon calls them.
        Returns True on a hit. Never overridden, so the simulator runs the daemon's code."""
        if self.contains(key):
            self.on_hit(key, now)
            return True
        if self.admit(key, size, now):
            self.evict(size, now)
            self.on_insert(key, size, now)
        return False

    def restore(self, entries: Iterable[tuple[Key, int, float, int]]) -> list[Key]:
        """Warm start from a store's index: ENTRIES of (key, size, last_access, hits), oldest
        access first. Replays an insert and up to three hits each (enough for every policy here
        to see the object as reused) and returns what did not fit."""
        dropped: list[Key] = []
        for key, size, last_access, hits in entries:
            if size > self.capacity:
                dropped.append(key)
                continue
            dropped.extend(self.evict(size, last_access))
            self.on_insert(key, size, last_access)
            for _ in range(min(hits, 3)):
                self.on_hit(key, last_access)
        return dropped

    def __contains__(self, key: Key) -> bool:
        return self.contains(key)

    @abstractmethod
    def __len__(self) -> int:
        """Number of objects stored."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} used={self.used}/{self.capacity} objects={len(self)}>"
