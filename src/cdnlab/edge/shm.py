"""State shared by the master and the workers of one appliance through a small mmap'd file.

Workers keep per-process caches (open files, small bodies) for speed. When an object is purged,
evicted or replaced, the process that did it appends the key's hash to an invalidation ring; every
worker compares the ring's sequence number on each request (one memory read) and drops just those
keys, or everything if it fell more than a ring behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
from pathlib import Path

_MAGIC = 0x43444E4C41420001  # "CDNLAB" + layout version
_RING = 4096
# magic, seq, draining flag, reserved x5, then the ring of u64 key hashes
_HEADER = struct.Struct("<QQQ5Q")
_SIZE = _HEADER.size + 8 * _RING
_SEQ_OFF = 8
_DRAIN_OFF = 16


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest())


class SharedState:
    def __init__(self, path: Path, create: bool = False) -> None:
        self.path = Path(path)
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        self._fd = os.open(self.path, flags, 0o600)
        if create:
            os.ftruncate(self._fd, _SIZE)
            mm = mmap.mmap(self._fd, _SIZE)
            _HEADER.pack_into(mm, 0, _MAGIC, 0, 0, 0, 0, 0, 0, 0)
            mm.close()
        self._mm = mmap.mmap(self._fd, _SIZE)
        if struct.unpack_from("<Q", self._mm, 0)[0] != _MAGIC:
            raise RuntimeError(f"{self.path}: not a cdnlab shared-state file")
        self._seq_view = memoryview(self._mm)[_SEQ_OFF : _SEQ_OFF + 8].cast("Q")

    @property
    def seq(self) -> int:
        return self._seq_view[0]

    def invalidate(self, keys: list[str]) -> None:
        """Append key hashes to the ring (cross-process, serialised by a file lock)."""
        if not keys:
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            seq = self._seq_view[0]
            for key in keys:
                struct.pack_into("<Q", self._mm, _HEADER.size + 8 * (seq % _RING), key_hash(key))
                seq += 1
            self._seq_view[0] = seq
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def changes_since(self, seen: int) -> tuple[int, set[int] | None]:
        """(new seq, hashes changed since ``seen``) or (new seq, None) when a full flush is needed."""
        seq = self._seq_view[0]
        if seq - seen > _RING:
            return seq, None
        return seq, {
            struct.unpack_from("<Q", self._mm, _HEADER.size + 8 * (i % _RING))[0] for i in range(seen, seq)
        }

    @property
    def draining(self) -> bool:
        return bool(struct.unpack_from("<Q", self._mm, _DRAIN_OFF)[0])

    @draining.setter
    def draining(self, value: bool) -> None:
        struct.pack_into("<Q", self._mm, _DRAIN_OFF, int(value))

    def close(self) -> None:
        self._seq_view.release()
        self._mm.close()
        os.close(self._fd)
