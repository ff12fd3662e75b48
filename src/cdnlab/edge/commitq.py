"""Group commit: one thread per worker commits finished fills in batches.

Committing an object means fsync, rename, fsync of its directory and an index row. Done one by
one on a pool of threads, every object paid for its own journal commits and every thread fought
the event loop for the GIL. Here the fills that finish while a batch is being committed wait and
go together in the next one (``store.commit_group``): writeback starts for all files before the
first fsync, each directory is fsynced once, and the index rows are written back to back by one
thread. Each object keeps the guarantee of ``Writer.commit``: durable before it is indexed, and
never served from the store before it is indexed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from cdnlab.edge.store import CommitArgs, Writer, commit_group

log = logging.getLogger("cdnlab.edge.commitq")

MAX_BATCH = 64
# Fills waiting for their commit (queued or being committed) beyond which new fills are served but
# not stored: when the disk cannot keep up, a growing backlog only adds memory and latency (Apache
# Traffic Server drops cache writes past its aggregation write backlog the same way).
MAX_BACKLOG = 256
# Store threads run at a lower CPU priority than the event loop: when the cores are busy, clients
# are served first and commits (which no client waits for) catch up.
STORE_NICE = 10
SYNC_THREADS = 8  # fsyncs of one group in flight together (each waits on a device flush)


class GroupCommitter:
    def __init__(self, max_batch: int = MAX_BATCH, sync_threads: int = SYNC_THREADS) -> None:
        self._max = max_batch
        self._sync_threads = sync_threads
        self._pool: ThreadPoolExecutor | None = None
        self._queue: deque[tuple[Writer, CommitArgs, Future[Any]]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.batches = 0  # groups committed (for tests and metrics)
        self.objects = 0
        self._inflight = 0

    @property
    def backlog(self) -> int:
        """Fills queued or being committed."""
        return len(self._queue) + self._inflight

    def submit(self, writer: Writer, args: CommitArgs) -> Future[Any]:
        """Queue ``writer`` for commit; the future gets its Entry or the exception that refused it."""
        fut: Future[Any] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("group committer is closed")
            self._queue.append((writer, args, fut))
            if self._thread is None:
                if self._sync_threads > 1:
                    self._pool = ThreadPoolExecutor(
                        self._sync_threads, thread_name_prefix="store-fsync", initializer=lower_priority
                    )
                self._thread = threading.Thread(target=self._run, name="store-commit", daemon=True)
                self._thread.start()
            self._cond.notify()
        return fut

    def close(self, timeout: float | None = None) -> None:
        """Commit what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        lower_priority()
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    if self._pool is not None:
                        self._pool.shutdown(wait=False)
                    return
                n = min(len(self._queue), self._max)
                batch = [self._queue.popleft() for _ in range(n)]
                self._inflight = n
            try:
                results = commit_group([(w, a) for w, a, _ in batch], self._pool)
            except BaseException as exc:  # a bug: refuse the whole group rather than hang its fills
                log.exception("group commit failed")
                results = [exc] * len(batch)
                for w, _, _ in batch:
                    w.abort()
            self.batches += 1
            self.objects += len(batch)
            self._inflight = 0
            for (_, _, fut), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)


def lower_priority() -> None:
    """Make the calling thread yield the CPU to the event loop (Linux: nice is per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), STORE_NICE)
    except OSError as exc:  # not allowed (a container without CAP_SYS_NICE raising it is fine)
        log.debug("cannot lower a store thread's priority: %s", exc)
