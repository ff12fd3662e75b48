"""The appliance's master process: prepares the store, runs the workers, serves the admin API.

Start-up order matters: the store is reconciled with the disks before any worker exists, so no
worker ever sees an index row whose file is half-written. Workers are separate processes started
fresh (not forked from a running event loop); one that dies is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

from aiohttp import web

from cdnlab import __version__
from cdnlab.edge.admin import build_app
from cdnlab.edge.background import Background
from cdnlab.edge.config import EdgeConfig
from cdnlab.edge.limits import DEFAULT_CONNECTIONS, fd_reserve
from cdnlab.edge.shm import SharedState
from cdnlab.edge.stats import merge
from cdnlab.edge.store import Store
from cdnlab.edge.worker import bind, run_dir

log = logging.getLogger("cdnlab.edge.master")

# A worker needs a descriptor per client connection, per open object file and per upstream socket.
FDS_PER_WORKER_MIN = 1024
STARTUP_TIMEOUT = 30.0
LOCK_FILE = "edge.lock"  # in state_dir: held by the running master


class StartupError(Exception):
    """A problem found before serving: one clear line, exit code 1."""


def check_fd_limit(config: EdgeConfig) -> int:
    """Raise the soft open-file limit toward what the workers need (they inherit it); refuse to
    start, naming the figures, when it cannot cover an explicit ``limits.worker_connections``."""
    lim = config.limits
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(FDS_PER_WORKER_MIN, fd_reserve(lim) + (lim.worker_connections or DEFAULT_CONNECTIONS))
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft < FDS_PER_WORKER_MIN or (lim.worker_connections and soft < want):
        need = want if lim.worker_connections else FDS_PER_WORKER_MIN
        raise StartupError(
            f"open-file limit is {soft} (hard limit {hard}); cdnlab needs {need} per worker "
            f"(limits.worker_connections {lim.worker_connections} + {fd_reserve(lim)} for "
            "limits.open_files_cache and the rest): raise LimitNOFILE in the service unit or "
            "`ulimit -n`, or lower limits.worker_connections"
        )
    return soft


class Master:
    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.state = "serving"
        self.rundir = run_dir(config)
        self.store: Store | None = None
        self.shm: SharedState | None = None
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._retired: list[dict[str, Any]] = []
        self._stopping = False
        self._rate: tuple[float, int, int] | None = None
        self._rates = (0.0, 0.0)
        self.reporter: Any = None
        self.background: Background | None = None  # tier mover, scrubber, disk monitor threads
        self._lock_fd: int | None = None  # held for life: this master owns state_dir and rundir

    # start -----------------------------------------------------------------------------------

    def _lock_state_dir(self) -> None:
        """One daemon per state_dir: a second would reset the first's shared state and counters
        (both would start in the same run directory) and race it on the store."""
        state = self.config.state_dir
        try:
            state.mkdir(parents=True, exist_ok=True)
            fd = os.open(state / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StartupError(f"state_dir {exc.filename or state}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise StartupError(f"state_dir {state} is in use by another cdnlab edge (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd  # released by the kernel when this process ends, however it ends

    def prepare(self) -> dict[str, Any]:
        cfg = self.config
        check_fd_limit(cfg)
        self._lock_state_dir()
        try:
            self.rundir.mkdir(parents=True, exist_ok=True)
            for stale in self.rundir.glob("stats-*.json"):
                stale.unlink()
        except OSError as exc:
            raise StartupError(f"state_dir {cfg.state_dir}: {exc.strerror}") from None
        for addr in (*cfg.listen, *cfg.tls.listen, cfg.admin.listen):
            try:
                bind(addr).close()
            except OSError as exc:
                raise StartupError(f"cannot listen on {addr}: {exc.strerror}") from None
        self.shm = SharedState(self.rundir / "shared", create=True)
        try:
            self.store = Store(
                list(cfg.tiers),
                cfg.state_dir,
                ram_object_max=cfg.limits.ram_object_max,
                on_invalidate=self.shm.invalidate,
            )
            report = self.store.open(reconcile=True)
        except OSError as exc:  # the state directory (index) itself is unusable: nothing to serve from
            where = exc.filename or cfg.state_dir
            raise StartupError(f"cannot open the store: {where}: {exc.strerror or exc}") from None
        self.background = Background(self.store, cfg)
        (self.rundir / "config.json").write_text(cfg.model_dump_json())
        return asdict(report)

    def _spawn(self, index: int) -> None:
        cmd = [sys.executable, "-m", "cdnlab.edge.worker_entry", str(self.rundir / "config.json"), str(index)]
        self.procs[index] = subprocess.Popen(cmd, close_fds=True)

    def spawn_all(self) -> None:
        for i in range(self.config.workers):
            if i not in self.procs or self.procs[i].poll() is not None:
                self._spawn(i)

    def workers_alive(self) -> int:
        return sum(1 for p in self.procs.values() if p.poll() is None)

    # stats -----------------------------------------------------------------------------------

    def _snapshots(self) -> list[dict[str, Any]]:
        snaps = list(self._retired)
        for i in self.procs:
            path = self.rundir / f"stats-{i}.json"
            try:
                snaps.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return snaps

    def totals(self) -> dict[str, Any]:
        return merge(self._snapshots())

    def _retire_stats(self, index: int) -> None:
        """Keep a dead worker's counters so the fleet's counters never go backwards."""
        path = self.rundir / f"stats-{index}.json"
        try:
            snap = json.loads(path.read_text())
            path.unlink()
        except (OSError, ValueError):
            return
        snap["connections"] = 0
        snap["upstream_health"] = {}  # a dead worker has no say in health
        self._retired.append(snap)

    # admin operations ------------------------------------------------------------------------

    def disks(self) -> list[dict[str, Any]]:
        assert self.store is not None
        return [
            {
                "id": d.id,
                "path": d.path,
                "kind": d.kind,
                "capacity_bytes": d.capacity,
                "used_bytes": d.used,
                "objects": d.objects,
                "failed": d.failed,
                "reason": d.reason,
            }
            for d in self.store.usage()
        ]

    def health(self) -> dict[str, Any]:
        totals = self.totals()
        req_total = sum(totals["requests"].values())
        bytes_total = sum(totals["bytes_by_tier"].values())
        return {
            "id": self.config.id,
            "site": self.config.site,
            "role": self.config.role,
            "version": __version__,
            "state": self.public_state(),
            "workers": self.workers_alive(),
            "disks": self.disks(),
            "storage": None if self.background is None else self.background.counters(),
            "load": {
                "connections": totals["connections"],
                "requests_total": req_total,
                "bytes_total": bytes_total,
                "requests_per_s": round(self._rates[0], 2),
                "bytes_per_s": round(self._rates[1], 1),
            },
            "inventory_report": None
            if self.reporter is None
            else {
                "control": self.config.control.url,
                "generation": self.reporter.generation,
                "error": self.reporter.last_error,
            },
            "upstreams": [
                {"url": u, "healthy": totals["upstream_health"].get(u)} for u in self.config.upstreams
            ],
        }

    def _update_rates(self) -> None:
        totals = self.totals()
        now = time.monotonic()
        req = sum(totals["requests"].values())
        byt = sum(totals["bytes_by_tier"].values())
        if self._rate is not None:
            t0, r0, b0 = self._rate
            dt = max(now - t0, 1e-6)
            self._rates = (max(0, req - r0) / dt, max(0, byt - b0) / dt)
        self._rate = (now, req, byt)

    def snapshot(self) -> dict[str, tuple[int, str, str]]:
        """What the store holds: key -> (size, sha256, tier)."""
        assert self.store is not None
        return {e.key: (e.size, e.sha256, e.tier) for e in self.store.iter_entries()}

    def inventory(self) -> dict[str, Any]:
        assert self.shm is not None
        objects = [{"key": k, "size": v[0], "sha256": v[1], "tier": v[2]} for k, v in self.snapshot().items()]
        return {"id": self.config.id, "generation": self.shm.seq, "objects": objects}

    def ready(self) -> bool:
        """Every worker is listening (each publishes its counters once its sockets are bound)."""
        return all((self.rundir / f"stats-{i}.json").exists() for i in range(self.config.workers))

    async def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return True
            if self.procs and all(p.poll() is not None for p in self.procs.values()):
                return False  # every worker died
            await asyncio.sleep(0.02)
        return self.ready()

    def public_state(self) -> str:
        if self.state == "serving" and not self.ready():
            return "starting"
        return self.state

    def purge(self, key: str | None, prefix: str | None) -> int:
        assert self.store is not None and self.shm is not None
        # The store tells every worker (on_invalidate) before it unlinks anything.
        if key is None:
            return self.store.purge_prefix(prefix or "")
        n = self.store.purge(key)
        self.store.purge_prefix(key + "\x00")  # its gzip/br variants (cdnlab.edge.compress) go too
        return n

    def drain(self) -> None:
        if self.state != "serving":
            return
        self.state = "draining"
        assert self.shm is not None
        self.shm.draining = True
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGUSR1)

    def reload(self) -> None:
        """SIGHUP: every worker reloads its TLS certificates and reopens the access log."""
        log.info("SIGHUP: workers reload TLS certificates and reopen the access log")
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGHUP)

    def undrain(self) -> None:
        if self.state == "serving":
            return
        assert self.shm is not None
        self.shm.draining = False
        self.state = "serving"
        self.spawn_all()

    def cleanup(self) -> None:
        """Leave nothing behind in the run directory (it lives on tmpfs)."""
        if self.shm is not None:
            self.shm.close()
            self.shm = None
        if self._lock_fd is not None:  # never another instance's: it is ours only under the lock
            shutil.rmtree(self.rundir, ignore_errors=True)

    # supervision -----------------------------------------------------------------------------

    async def supervise(self) -> None:
        tick = 0
        while not self._stopping:
            await asyncio.sleep(0.25)
            tick += 1
            for i, p in list(self.procs.items()):
                if p.poll() is None:
                    continue
                self._retire_stats(i)
                if self.state == "serving" and not self._stopping:
                    log.error("worker %d exited with %s; restarting it", i, p.returncode)
                    await asyncio.sleep(0.2)
                    self._spawn(i)
                else:
                    del self.procs[i]
            if self.state == "draining" and self.workers_alive() == 0:
                self.state = "drained"
                log.warning("drained: no client connections left")
            if tick % 4 == 0:
                self._update_rates()

    async def stop(self) -> None:
        self._stopping = True
        if self.background is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.background.close)
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.limits.drain_timeout + 5
        while any(p.poll() is None for p in self.procs.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()


def serve(config: EdgeConfig) -> int:
    """Run an appliance until SIGTERM/SIGINT. Returns the process exit code."""
    import uvloop

    master = Master(config)
    try:
        report = master.prepare()
    except StartupError as exc:
        master.cleanup()
        print(f"cdnlab edge: {exc}", file=sys.stderr)
        return 1
    log.info("store reconciled: %s", report)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, master.reload)
        master.spawn_all()
        runner = web.AppRunner(build_app(master), access_log=None)
        try:
            await _serve(master, runner, stop)
        finally:  # whatever ended it: workers stopped, the admin port closed, the run dir gone
            await master.stop()
            await runner.cleanup()
            master.cleanup()

    uvloop.run(main())
    return 0


async def _serve(master: Master, runner: web.AppRunner, stop: asyncio.Event) -> None:
    """Open the admin API once the workers listen, then run until ``stop``."""
    config = master.config
    loop = asyncio.get_running_loop()
    # The admin API opens only once every worker listens, so "admin answers" means "serving".
    if not await master.wait_ready(STARTUP_TIMEOUT):
        print("cdnlab edge: workers did not start listening (see the log above)", file=sys.stderr)
        raise SystemExit(1)
    await runner.setup()
    host, _, port = config.admin.listen.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]"), int(port), reuse_address=True)
    try:
        await site.start()
    except OSError as exc:  # taken since prepare() checked it
        print(f"cdnlab edge: cannot listen on {config.admin.listen}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(1) from None
    print(
        f"cdnlab edge {config.id} ({config.role}) serving {', '.join(config.listen)} "
        f"with {config.workers} worker(s); admin on {config.admin.listen}",
        file=sys.stderr,
        flush=True,
    )
    sup = loop.create_task(master.supervise())
    if master.background is not None:
        master.background.start()
    if config.control.url:
        from cdnlab.edge.compress import content_only
        from cdnlab.edge.reporter import InventoryReporter

        reporter = InventoryReporter(
            config.id,
            config.control.url,
            config.control.report_interval,
            lambda: content_only(master.snapshot()),  # no gzip/br variants for the control plane
            config.control.token,
        )
        master.reporter = reporter
        report_task = loop.create_task(reporter.run())
    await stop.wait()
    sup.cancel()
    if config.control.url:
        report_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sup
