"""Cross-process "one upstream fetch per key" (nginx ``proxy_cache_lock``) with POSIX record locks.

One lock file, one byte per key hash slot. Record locks vanish with the process that held them, so
a worker killed mid-fetch never leaves a key locked. Within a process the fetch table dedupes, so
the per-process semantics of POSIX locks do not matter.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from cdnlab.edge.shm import key_hash

_SLOTS = 1 << 24


class FetchLocks:
    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    @staticmethod
    def slot(key: str) -> int:
        return key_hash(key) % _SLOTS

    def try_acquire(self, key: str) -> bool:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self.slot(key))
        except (BlockingIOError, PermissionError):
            return False
        return True

    def release(self, key: str) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, self.slot(key))

    def close(self) -> None:
        os.close(self._fd)
