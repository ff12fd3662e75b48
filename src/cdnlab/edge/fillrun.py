"""``cdnlab fill run``: the appliance pulls its fill plan from the control plane and executes it.

A separate process beside the running daemon, writing into the same store through its public
API (SQLite WAL and record locks already let several processes share it; the daemon's workers
are told of replaced and removed keys through the shared invalidation segment, as with
``cdnlab edge scrub``). So the daemon keeps serving while the fill runs.

- Inside the fill window (local time, ``HH:MM-HH:MM``, may wrap midnight) unless ``--now``;
  when the window closes, the run stops and keeps its partial downloads for the next one.
- Removals first (``Store.purge_prefix``/``purge``), then manifests, init segments, media.
- ``--parallel`` streams, all under one token bucket of ``--rate`` bytes/s.
- Sources per object, in order: a peer of the same site that already holds it (its admin
  ``/inventory`` lists the key with the plan's SHA-256), then the configured upstreams (the
  shield tier, then the origin). A source that fails or sends the wrong bytes is skipped; no
  fill master is elected (DESIGN.md).
- Progress and storage per tier go to ``POST /v1/fill/progress`` every few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdnlab.fillplan import FillPlanDoc, FillProgress, PlanObject, TierUsage

log = logging.getLogger("cdnlab.edge.fill")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
DEFAULT_WINDOW = "02:00-06:00"
PROGRESS_EVERY = 2.0


def _timeout(seconds: float) -> Any:
    import aiohttp

    return aiohttp.ClientTimeout(total=seconds)


def parse_window(text: str) -> tuple[int, int]:
    """``HH:MM-HH:MM`` → (start, end) in minutes after local midnight; start == end is all day."""
    m = _WINDOW.match(text.strip())
    if not m:
        raise ValueError(f"fill window {text!r} is not HH:MM-HH:MM (24-hour, local time)")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    return h1 * 60 + m1, h2 * 60 + m2


def in_window(window: tuple[int, int], now: dt.datetime) -> bool:
    start, end = window
    t = now.hour * 60 + now.minute
    if start == end:
        return True
    return start <= t < end if start < end else (t >= start or t < end)


def until_open(window: tuple[int, int], now: dt.datetime) -> float:
    """Seconds until the window next opens (0 inside it)."""
    if in_window(window, now):
        return 0.0
    t = now.hour * 60 + now.minute + now.second / 60
    return ((window[0] - t) % (24 * 60)) * 60


class FillRun:
    def __init__(
        self,
        config: Any,
        control: str,
        *,
        token: str | None,
        rate: float,
        parallel: int,
        window: tuple[int, int] | None,
        sources: list[Any],
        use_peers: bool = True,
        clock: Callable[[], dt.datetime] = dt.datetime.now,
    ) -> None:
        self.config = config
        self.control = control.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.rate = rate
        self.parallel = parallel
        self.window = window
        self.sources = sources
        self.use_peers = use_peers
        self.clock = clock
        now = time.time()
        self.progress = FillProgress(
            appliance_id=config.id, state="running", started_at=now, updated_at=now, rate_cap_bps=rate
        )
        self.results: dict[str, str] = {}  # key -> stored|held|failed|rejected
        self.store: Any = None

    # -- plumbing ------------------------------------------------------------------------------

    def _open_store(self) -> None:
        from cdnlab.edge.shm import SharedState
        from cdnlab.edge.store import Store
        from cdnlab.edge.worker import run_dir

        shm_path = run_dir(self.config) / "shared"
        self.shm = SharedState(shm_path, create=False) if shm_path.exists() else None
        self.store = Store(
            list(self.config.tiers),
            self.config.state_dir,
            ram_object_max=self.config.limits.ram_object_max,
            on_invalidate=self.shm.invalidate if self.shm is not None else None,
        )
        self.store.open(reconcile=False)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        if getattr(self, "shm", None) is not None:
            self.shm.close()

    def _partial_root(self) -> Path:
        tiers = [t for t in self.config.tiers if t.kind != "ram"] or list(self.config.tiers)
        return Path(tiers[0].path)

    def _storage(self) -> list[TierUsage]:
        out: dict[str, TierUsage] = {}
        for d in self.store.usage():
            u = out.setdefault(d.kind, TierUsage(kind=d.kind, capacity=0, used=0, objects=0))
            u.capacity += d.capacity
            u.used += d.used
            u.objects += d.objects
            u.failed += int(d.failed)
        return list(out.values())

    async def _report(self, session: Any, final: bool = False) -> None:
        p = self.progress
        p.updated_at = time.time()
        p.rate_bps = p.bytes_fetched / max(1e-3, p.updated_at - p.started_at)
        loop = asyncio.get_running_loop()
        p.storage = await loop.run_in_executor(None, self._storage)
        admin = self.config.admin.listen
        with contextlib.suppress(Exception):
            async with session.get(f"http://{admin}/healthz", timeout=_timeout(2)) as resp:
                h = await resp.json(content_type=None)
                p.health = {k: h[k] for k in ("state", "storage", "disks") if k in h}
        try:
            async with session.post(
                f"{self.control}/v1/fill/progress",
                data=p.model_dump_json(),
                headers={"Content-Type": "application/json", **self.headers},
            ) as resp:
                if resp.status >= 300:
                    log.warning("progress report refused: %s", resp.status)
        except Exception as exc:  # the fill goes on without the control plane
            log.warning("progress report failed: %s", exc)
        if final:
            log.info("fill %s: %s", p.state, p.model_dump_json(exclude={"storage", "health"}))

    async def report_waiting(self, seconds: float) -> None:
        """Tell the control plane the run waits for its window (no store opened, nothing fetched)."""
        import aiohttp

        p = self.progress
        p.state = "waiting"
        p.updated_at = time.time()
        p.errors = [f"outside the fill window; it opens in {seconds / 60:.0f} min"]
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
                s.post(
                    f"{self.control}/v1/fill/progress",
                    data=p.model_dump_json(),
                    headers={"Content-Type": "application/json", **self.headers},
                ),
            ):
                pass
        except Exception as exc:  # informative only
            log.warning("progress report failed: %s", exc)
        p.state, p.errors = "running", []

    async def _reporter(self, session: Any) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            await self._report(session)

    async def fetch_plan(self, session: Any) -> FillPlanDoc:
        url = f"{self.control}/v1/fill/plan"
        async with session.get(url, params={"appliance": self.config.id}, headers=self.headers) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"control plane answered {resp.status} for the plan: {body[:300]}")
        return FillPlanDoc.model_validate_json(body)

    async def _peer_holdings(self, session: Any, plan: FillPlanDoc) -> dict[str, list[Any]]:
        """key -> peers (Source) that hold it with the plan's SHA-256, from their admin /inventory."""
        from cdnlab.edge.fill import Source

        want = {o.key: o.sha256 for o in plan.objects}
        out: dict[str, list[Any]] = {}
        for peer in plan.peers:
            try:
                async with session.get(f"{peer.admin_url}/inventory", timeout=_timeout(10)) as resp:
                    inv = await resp.json(content_type=None) if resp.status == 200 else {}
            except Exception as exc:
                log.info("peer %s: inventory unavailable (%s)", peer.id, exc)
                continue
            src = Source("peer", peer.url, peer.id, self._signer())
            for o in inv.get("objects", []):
                if isinstance(o, dict) and want.get(o.get("key", "")) == o.get("sha256"):
                    out.setdefault(o["key"], []).append(src)
        return out

    def _signer(self) -> Callable[[str], str] | None:
        keys = dict(self.config.signing.keys)
        if not keys:
            return None
        from cdnlab.signing import sign_path

        kid, key = sorted(keys.items())[0]
        return lambda path: sign_path(path, kid, key, int(time.time()) + 3600)

    def _window_open(self) -> bool:
        return self.window is None or in_window(self.window, self.clock())

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> int:
        import aiohttp

        from cdnlab.edge.fill import Partials, TokenBucket

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._open_store)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
        conn = aiohttp.TCPConnector(limit=max(4, self.parallel * 2))
        async with aiohttp.ClientSession(timeout=timeout, connector=conn) as session:
            plan = await self.fetch_plan(session)
            p = self.progress
            p.objects_total = len(plan.objects)
            p.bytes_total = sum(o.size for o in plan.objects)
            partials = Partials(self._partial_root())
            await loop.run_in_executor(None, partials.prune, {o.key for o in plan.objects})
            p.removed = await loop.run_in_executor(None, self._remove, plan)
            peers = await self._peer_holdings(session, plan) if self.use_peers else {}
            bucket = TokenBucket(self.rate)
            reporter = asyncio.create_task(self._reporter(session))
            await self._report(session)
            try:
                p.state = await self._execute(session, plan, partials, bucket, peers)
            except asyncio.CancelledError:
                p.state = "interrupted"
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
            await self._report(session, final=True)
        return {"done": 0, "interrupted": 3}.get(p.state, 1)

    def _remove(self, plan: FillPlanDoc) -> int:
        n = 0
        for r in plan.remove:
            if r.prefix:
                n += self.store.purge_prefix(r.prefix)
            elif r.key:
                n += self.store.purge(r.key)
        return n

    async def _execute(self, session: Any, plan: FillPlanDoc, partials: Any, bucket: Any, peers: dict) -> str:
        from cdnlab.edge.fill_check import PlaybackCheck, is_manifest

        check = PlaybackCheck(self.store, plan.objects)

        def phase(o: PlanObject) -> int:
            if is_manifest(o.key):
                return 0
            return 1 if o.key.rsplit("/", 1)[-1].startswith("init") else 2

        for ph in (0, 1, 2):
            todo = [o for o in plan.objects if phase(o) == ph]
            queue: asyncio.Queue[PlanObject] = asyncio.Queue()
            for o in todo:
                queue.put_nowait(o)
            stopped = asyncio.Event()

            async def stream() -> None:
                while not queue.empty() and not stopped.is_set():  # noqa: B023 - one phase at a time
                    if not self._window_open():
                        stopped.set()  # noqa: B023
                        return
                    o = queue.get_nowait()  # noqa: B023
                    await self._one(session, o, partials, bucket, peers.get(o.key, []), check)

            await asyncio.gather(*(stream() for _ in range(max(1, self.parallel))))
            if stopped.is_set():
                return "interrupted"
        p = self.progress
        return "done" if p.objects_failed == 0 else "failed"

    async def _one(
        self, session: Any, o: PlanObject, partials: Any, bucket: Any, peer_sources: list, check: Any
    ) -> None:
        from cdnlab.edge.fill import FillError, Rejected, commit_partial, download, file_sha256

        loop = asyncio.get_running_loop()
        p = self.progress
        # A purge from here on refuses this object's commit (the download may take a while).
        since_purge = await loop.run_in_executor(None, self.store.index.purge_seq)
        entry = await loop.run_in_executor(None, self.store.lookup, o.key)
        if entry is not None and entry.sha256 == o.sha256:
            self.results[o.key] = "held"
            p.objects_done += 1
            p.objects_skipped += 1
            return
        tiers = [t for t in self.config.tiers if t.kind != "ram"] or list(self.config.tiers)
        largest = max(t.capacity for t in tiers)
        if o.size > largest:  # refuse before downloading: the partial would fill a disk for nothing
            self._fail(o, "failed", f"{o.key}: {o.size} bytes is more than any disk holds ({largest})")
            return
        errors: list[str] = []
        part, _ = partials.paths(o.key)
        for src in [*peer_sources, *self.sources]:

            def counted(n: int, kind: str = src.kind) -> None:
                p.bytes_fetched += n
                p.by_source[kind] = p.by_source.get(kind, 0) + n

            try:
                kept = await download(session, src, o, partials, bucket, counted)
                digest = await loop.run_in_executor(None, file_sha256, part)
                if digest != o.sha256:
                    await loop.run_in_executor(None, partials.drop, o.key)
                    raise FillError(f"{src.kind} sent bytes with SHA-256 {digest}, the plan says {o.sha256}")
                await loop.run_in_executor(None, check.check, o, part)
                await loop.run_in_executor(None, commit_partial, self.store, o, partials, kept, since_purge)
            except FillError as exc:
                errors.append(str(exc))
                continue
            except Rejected as exc:
                await loop.run_in_executor(None, partials.drop, o.key)
                self._fail(o, "rejected", str(exc))
                return
            except Exception as exc:  # the store refused (disk, purge meanwhile): not stored
                await loop.run_in_executor(None, partials.drop, o.key)
                self._fail(o, "failed", f"{o.key}: not stored: {exc}")
                return
            self.results[o.key] = f"stored:{src.kind}"
            p.objects_done += 1
            return
        # A partial that merely stopped (connection lost) is kept for the next run; one whose
        # source sent wrong bytes was dropped above.
        self._fail(o, "failed", f"{o.key}: every source failed: {'; '.join(errors) or 'no source'}")

    def _fail(self, o: PlanObject, how: str, msg: str) -> None:
        self.results[o.key] = how
        self.progress.objects_failed += 1
        if len(self.progress.errors) < 50:
            self.progress.errors.append(msg)
        log.warning("%s", msg)


# -- CLI ---------------------------------------------------------------------------------------

_EXAMPLE = """examples:
  cdnlab fill run --config /etc/cdnlab/edge.toml --control http://control:8900            # in the window
  cdnlab fill run --config edge.toml --control http://127.0.0.1:8900 --now --rate 50M --parallel 4
  cdnlab fill run --config edge.toml --control URL --window 01:30-05:30 --wait   # sleep until it opens

exit status: 0 all stored (or outside the window), 1 some objects failed, 2 bad arguments,
3 interrupted (window closed or signal; partial downloads resume next time)"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="pull this appliance's fill plan and execute it (rate-capped, resumable, verified)",
        description="Executes the control plane's plan for the appliance of --config into its store, "
        "beside the running daemon: removals, then manifests, init and media segments from a peer of "
        "the site that holds them, else the upstreams (shield, origin); SHA-256 and an fMP4 playback "
        "check before anything is stored.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="EDGE.toml", help="the daemon's config file")
    p.add_argument("--control", default=None, help="control plane URL (default: [control] url of the config)")
    p.add_argument("--token", default=None, help="control plane token (default: [control] token)")
    p.add_argument("--now", action="store_true", help="fill now, ignoring the window (the lab does)")
    p.add_argument(
        "--window", default=None, help=f"local HH:MM-HH:MM (default: the plan's, else {DEFAULT_WINDOW})"
    )
    p.add_argument("--wait", action="store_true", help="outside the window, sleep until it opens")
    p.add_argument("--rate", default="0", help="cap in bytes/s for the whole run, e.g. 50M (0: none)")
    p.add_argument("--parallel", type=int, default=4, help="concurrent downloads (default 4)")
    p.add_argument(
        "--shield", action="append", default=[], metavar="URL", help="shield tier URL (repeatable)"
    )
    p.add_argument("--origin", action="append", default=[], metavar="URL", help="origin URL (repeatable)")
    p.add_argument("--no-peers", action="store_true", help="never fill from peers")
    p.add_argument("--json", action="store_true", help="print the final report as one line of JSON")
    p.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    from cdnlab.edge.config import ConfigError, load
    from cdnlab.edge.fill import Source
    from cdnlab.sizes import parse_size

    logging.basicConfig(level=logging.INFO, format="%(asctime)s fill %(levelname)s: %(message)s")
    try:
        config = load(args.config)
        rate = parse_size(args.rate)
        if args.parallel < 1 or args.parallel > 256:
            raise ValueError("--parallel must be 1..256")
        window = parse_window(args.window) if args.window else None
    except (ConfigError, ValueError) as exc:
        print(f"cdnlab fill run: {exc}", file=sys.stderr)
        return 2
    control = args.control or config.control.url
    if not control:
        print("cdnlab fill run: no --control and no [control] url in the config", file=sys.stderr)
        return 2
    sources = [Source("shield", u) for u in args.shield] + [Source("origin", u) for u in args.origin]
    if not sources:
        sources = [Source("upstream", u) for u in config.upstreams]
    run = FillRun(
        config,
        control,
        token=args.token or config.control.token,
        rate=rate,
        parallel=args.parallel,
        window=None,
        sources=sources,
        use_peers=not args.no_peers,
    )
    return asyncio.run(_main(run, args, window))


async def _main(run: FillRun, args: argparse.Namespace, window: tuple[int, int] | None) -> int:
    import aiohttp

    if not args.now:
        if window is None:
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
                    plan = await run.fetch_plan(s)
            except Exception as exc:
                print(f"cdnlab fill run: {exc}", file=sys.stderr)
                return 1
            window = parse_window(plan.window or DEFAULT_WINDOW)
        run.window = window
        wait = until_open(window, run.clock())
        if wait > 0:
            await run.report_waiting(wait)
        if wait > 0 and not args.wait:
            print(
                f"outside the fill window {args.window or _fmt(window)} (local time {run.clock():%H:%M}); "
                f"it opens in {wait / 3600:.1f} h: nothing done (--now fills anyway, --wait sleeps)"
            )
            return 0
        if wait > 0:
            await asyncio.sleep(wait)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        if task is not None:
            loop.add_signal_handler(sig, task.cancel)
    try:
        code = await run.run()
    except asyncio.CancelledError:
        code = 3
    except Exception as exc:
        print(f"cdnlab fill run: {exc}", file=sys.stderr)
        code = 1
    finally:
        run.close()
    if args.json:
        print(json.dumps({**run.progress.model_dump(), "results": run.results}))  # one line
    else:
        p = run.progress
        print(
            f"fill {p.state}: {p.objects_done}/{p.objects_total} objects ({p.objects_skipped} already held), "
            f"{p.objects_failed} failed, {p.bytes_fetched:,} bytes fetched at {p.rate_bps:,.0f} B/s, "
            f"{p.removed} removed"
        )
    return code


def _fmt(window: tuple[int, int]) -> str:
    return f"{window[0] // 60:02d}:{window[0] % 60:02d}-{window[1] // 60:02d}:{window[1] % 60:02d}"
