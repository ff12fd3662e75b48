"""JSON access log, one line per request, written off the event loop.

Lines are buffered in memory and handed in batches to a single writer thread, which appends them
with one ``write`` on an ``O_APPEND`` descriptor, so lines from several workers never interleave.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_BATCH = 256


class AccessLog:
    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
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

    def flush(self) -> None:
        if self._buf:
            data = "".join(self._buf).encode("utf-8", "replace")
            self._buf.clear()
            self._pool.submit(os.write, self._fd, data)

    def close(self) -> None:
        self.flush()
        self._pool.shutdown(wait=True)
        os.close(self._fd)
