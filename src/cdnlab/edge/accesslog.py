"""JSON access log, one line per request, written off the event loop.

Lines are buffered in memory and handed in batches to a single writer thread, which appends them
with one ``write`` on an ``O_APPEND`` descriptor, so lines from several workers never interleave.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_BATCH = 256


class AccessLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd = self._open()
        self._buf: list[str] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="accesslog")

    def log(
        self,
        client: str,
        method: str,
        path: str,
        range_: str,
        status: int,
        nbytes: int,
        cache_status: str,
        tier: str,
        seconds: float,
    ) -> None:
        now = time.time()
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
            "client": client,
            "method": method,
            "path": path,
            "range": range_ or None,
            "status": status,
            "bytes": nbytes,
            "cache_status": cache_status,
            "tier": tier,
            "duration_ms": round(seconds * 1000, 3),
        }
        self._buf.append(json.dumps(record, separators=(",", ":")) + "\n")
        if len(self._buf) >= _BATCH:
            self.flush()

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def reopen(self) -> None:
        """Open the path again (SIGHUP after logrotate moved the file); lines already buffered
        go to the old file, later ones to the new. The swap runs on the writer thread, in order
        with the writes, so no line is lost or written to a closed descriptor."""
        self.flush()
        self._pool.submit(self._swap)

    def _swap(self) -> None:
        try:
            fd = self._open()
        except OSError as exc:
            logging.getLogger("cdnlab.edge.accesslog").error("cannot reopen %s: %s", self.path, exc.strerror)
            return
        old, self._fd = self._fd, fd
        os.close(old)

    def _write(self, data: bytes) -> None:
        os.write(self._fd, data)

    def flush(self) -> None:
        if self._buf:
            data = "".join(self._buf).encode("utf-8", "replace")
            self._buf.clear()
            self._pool.submit(self._write, data)

    def close(self) -> None:
        self.flush()
        self._pool.shutdown(wait=True)
        os.close(self._fd)
