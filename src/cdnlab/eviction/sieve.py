"""SIEVE (Zhang et al., NSDI '24), after libCacheSim's ``Sieve.c``.

One FIFO list, new objects at the head, one "visited" bit per object set by a hit. A hand walks
from the tail toward the head: a visited object keeps its place and loses its bit, the first
unvisited one is evicted, and the hand stays where it stopped for the next eviction (wrapping
to the tail). Unlike CLOCK, survivors are never moved, so new objects are judged quickly.
"""

from __future__ import annotations

from cdnlab.eviction.base import EvictionPolicy, Key


class _Node:
    __slots__ = ("key", "newer", "older", "size", "visited")

    def __init__(self, key: Key, size: int) -> None:
        self.key = key
        self.size = size
        self.visited = False
        self.newer: _Node | None = None  # toward the head
        self.older: _Node | None = None  # toward the tail


class Sieve(EvictionPolicy):
    name = "sieve"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._nodes: dict[Key, _Node] = {}
        self._head: _Node | None = None  # newest
        self._tail: _Node | None = None  # oldest
        self._hand: _Node | None = None  # None: start from the tail

    def contains(self, key: Key) -> bool:
        return key in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def on_hit(self, key: Key, now: float) -> None:
        self._nodes[key].visited = True

    def admit(self, key: Key, size: int, now: float) -> bool:
        return size <= self.capacity

    def on_insert(self, key: Key, size: int, now: float) -> None:
        if key in self._nodes:
            self.on_remove(key)
        node = _Node(key, size)
        node.older = self._head
        if self._head is not None:
            self._head.newer = node
        else:
            self._tail = node
        self._head = node
        self._nodes[key] = node
        self.used += size

    def _unlink(self, node: _Node) -> None:
        if node is self._hand:
            self._hand = node.newer
        if node.newer is not None:
            node.newer.older = node.older
        else:
            self._head = node.older
        if node.older is not None:
            node.older.newer = node.newer
        else:
            self._tail = node.newer
        del self._nodes[node.key]
        self.used -= node.size

    def on_remove(self, key: Key) -> None:
        node = self._nodes.get(key)
        if node is not None:
            self._unlink(node)

    def evict(self, bytes_needed: int, now: float) -> list[Key]:
        victims: list[Key] = []
        limit = self.capacity - bytes_needed
        while self.used > limit and self._nodes:
            node = self._hand or self._tail
            assert node is not None
            while node.visited:
                node.visited = False
                node = node.newer or self._tail
                assert node is not None
            self._hand = node.newer
            self._unlink(node)
            victims.append(node.key)
        return victims

    def hand_key(self) -> Key | None:
        """Where the next eviction starts looking (None: at the tail). For tests and curiosity."""
        return self._hand.key if self._hand is not None else None
