"""Fleet invalidation in the spirit of RFC 8007 (CDNI triggers): a request names exact paths,
prefixes and wildcard patterns; cascade rules add more; the result is sent to every registered
appliance's admin ``POST /purge`` and to CloudFront, in stages, with retries, and its status is
kept per appliance.

Invalidations live in this control node's memory (bounded by ``keep``): a restart forgets them
and another node behind the same database does not see them. A purge is harmless to repeat, so
the remedy for a lost one is to send it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cdnlab.control.cloudfront_invalidation import CloudFrontInvalidator
from cdnlab.control.config import InvalidationConfig
from cdnlab.control.models import Appliance
from cdnlab.control.purge_targets import (
    CascadeRule,
    Target,
    check_path,
    classify,
    cloudfront_paths,
    edge_bodies,
    expand,
)

log = logging.getLogger("cdnlab.control.invalidation")

State = Literal["scheduled", "running", "done", "failed"]
TargetState = Literal["pending", "running", "done", "failed"]


class InvalidationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="repeating a request with the same id (within the window) returns the same invalidation",
    )
    paths: list[str] = Field(default_factory=list, max_length=1000, description="exact paths")
    prefixes: list[str] = Field(default_factory=list, max_length=1000, description="path prefixes")
    patterns: list[str] = Field(
        default_factory=list, max_length=1000, description="wildcards: * any run, ? one character, [abc]"
    )
    not_before: datetime | None = Field(default=None, description="do not start before (ISO 8601 or epoch)")
    staged: bool = Field(default=True, description="priority sites first, then batches with a delay")
    cloudfront: bool = Field(default=True, description="also invalidate the CloudFront distribution")

    @field_validator("paths", "prefixes", "patterns")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        return [check_path(p) for p in v]

    @model_validator(mode="after")
    def _something(self) -> InvalidationRequest:
        if not (self.paths or self.prefixes or self.patterns):
            raise ValueError("name at least one of paths, prefixes, patterns")
        return self

    def targets(self) -> list[Target]:
        out = [Target("key", p) for p in self.paths]
        out += [Target("prefix", p) for p in self.prefixes]
        # A pattern without a wildcard character is just a path or a prefix.
        out += [classify(p) if classify(p).kind == "wildcard" else Target("key", p) for p in self.patterns]
        return out

    def fingerprint(self) -> str:
        body = self.model_dump(mode="json", exclude={"request_id"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class TargetStatus(BaseModel):
    name: str = Field(description="appliance id, or 'cloudfront'")
    kind: Literal["appliance", "cloudfront"]
    site: str | None = None
    stage: int
    state: TargetState = "pending"
    attempts: int = 0
    purged: int | None = Field(default=None, description="objects the appliance removed")
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    cloudfront_id: str | None = None
    cloudfront_status: str | None = None


class PurgeTarget(BaseModel):
    kind: Literal["key", "prefix", "wildcard"]
    path: str


class Invalidation(BaseModel):
    id: str
    request_id: str | None
    state: State
    created_at: float
    not_before: float | None
    started_at: float | None = None
    finished_at: float | None = None
    targets: list[PurgeTarget] = Field(description="what was asked plus what the cascade rules added")
    edge_purges: list[dict[str, str]] = Field(description="the bodies sent to each appliance's /purge")
    cloudfront_paths: list[str]
    appliances: list[TargetStatus]
    cloudfront: TargetStatus | None = None


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    return float(min(cap, base * 2 ** (attempt - 1)))


def stages(
    appliances: list[Appliance], priority_sites: list[str], batch_size: int, staged: bool
) -> list[list[Appliance]]:
    """Priority sites first (one stage), then the rest by site in batches; unstaged: one stage."""
    ordered = sorted(appliances, key=lambda a: (a.site, a.id))
    if not staged:
        return [ordered] if ordered else []
    first = [a for a in ordered if a.site in priority_sites]
    rest = [a for a in ordered if a.site not in priority_sites]
    out = [first] if first else []
    out += [rest[i : i + batch_size] for i in range(0, len(rest), batch_size)]
    return out


class Conflict(ValueError):
    """The request id was used for a different request within the window."""


class InvalidationManager:
    def __init__(
        self,
        cfg: InvalidationConfig,
        appliances: Callable[[], list[Appliance]],
        cloudfront: CloudFrontInvalidator | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.rules = [CascadeRule(r.match, tuple(r.then)) for r in cfg.cascade]
        self.appliances = appliances
        self.cloudfront = cloudfront
        self.clock = clock
        self.items: OrderedDict[str, Invalidation] = OrderedDict()
        self._seen: dict[str, tuple[str, str, float]] = {}  # key -> (id, fingerprint, created)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._session: object | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        self._stop.set()
        for t in list(self._tasks.values()):
            t.cancel()
        for t in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._session is not None:
            await self._session.close()  # type: ignore[attr-defined]

    def _http(self):  # -> aiohttp.ClientSession, made in the running loop
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.timeout))
        return self._session

    # -- requests ------------------------------------------------------------------------------

    def submit(self, req: InvalidationRequest) -> tuple[Invalidation, bool]:
        """(the invalidation, whether it is new). Must be called inside the event loop."""
        now = self.clock()
        fp = req.fingerprint()
        key = f"id:{req.request_id}" if req.request_id else f"body:{fp}"
        self._forget(now)
        seen = self._seen.get(key)
        prior = self.items.get(seen[0]) if seen is not None else None
        # Without a request id, a repeat joins the purge only while it is under way: once that
        # one finished, the content may have come back, so the same body purges again.
        if prior is not None and not req.request_id and prior.state in ("done", "failed"):
            prior = None
        if seen is not None and prior is not None:
            if seen[1] != fp:
                raise Conflict(f"request_id {req.request_id!r} was used for a different request")
            return self.items[seen[0]], False
        targets = expand(req.targets(), self.rules)
        inv_id = "inv-" + secrets.token_hex(6)
        plan = stages(self.appliances(), self.cfg.priority_sites, self.cfg.batch_size, req.staged)
        appl = [
            TargetStatus(name=a.id, kind="appliance", site=a.site, stage=i)
            for i, stage in enumerate(plan)
            for a in stage
        ]
        nb = None
        if req.not_before is not None:
            when = req.not_before
            # A time without a zone is taken as UTC, not as this server's local time.
            nb = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
        inv = Invalidation(
            id=inv_id,
            request_id=req.request_id,
            state="scheduled",
            created_at=now,
            not_before=nb,
            targets=[PurgeTarget(kind=t.kind, path=t.path) for t in targets],
            edge_purges=edge_bodies(targets),
            cloudfront_paths=cloudfront_paths(targets),
            appliances=appl,
            cloudfront=(
                TargetStatus(name="cloudfront", kind="cloudfront", stage=0)
                if req.cloudfront and self.cloudfront is not None
                else None
            ),
        )
        self.items[inv_id] = inv
        self._seen[key] = (inv_id, fp, now)
        urls = {a.id: a.admin_url for stage in plan for a in stage}
        self._tasks[inv_id] = asyncio.get_running_loop().create_task(self._run(inv, urls))
        return inv, True

    def get(self, inv_id: str) -> Invalidation | None:
        return self.items.get(inv_id)

    async def refreshed(self, inv_id: str) -> Invalidation | None:
        """The invalidation, with CloudFront's own status asked again while it is in progress."""
        inv = self.items.get(inv_id)
        cf = inv.cloudfront if inv else None
        if cf and cf.cloudfront_id and cf.cloudfront_status != "Completed" and self.cloudfront:
            with contextlib.suppress(Exception):
                cf.cloudfront_status = await asyncio.to_thread(self.cloudfront.status, cf.cloudfront_id)
        return inv

    def _forget(self, now: float) -> None:
        window = self.cfg.idempotency_window
        for k in [k for k, (_, _, t) in self._seen.items() if now - t > window]:
            del self._seen[k]
        while len(self.items) > self.cfg.keep:
            oldest = next(iter(self.items))
            if oldest in self._tasks:
                break  # still running: keep it
            del self.items[oldest]

    # -- execution -----------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, seconds))

    async def _run(self, inv: Invalidation, urls: dict[str, str]) -> None:
        try:
            if inv.not_before is not None:
                await self._sleep(inv.not_before - self.clock())
            if self._stop.is_set():
                return
            inv.state = "running"
            inv.started_at = self.clock()
            cf_task = asyncio.create_task(self._cloudfront(inv)) if inv.cloudfront else None
            sem = asyncio.Semaphore(self.cfg.concurrency)
            last = max((t.stage for t in inv.appliances), default=-1)
            for stage in range(last + 1):
                if stage:
                    await self._sleep(self.cfg.batch_delay)
                members = [t for t in inv.appliances if t.stage == stage]
                await asyncio.gather(*(self._appliance(inv, t, urls[t.name], sem) for t in members))
            if cf_task is not None:
                await cf_task
            everything = [*inv.appliances, *([inv.cloudfront] if inv.cloudfront else [])]
            inv.state = "done" if all(t.state == "done" for t in everything) else "failed"
            inv.finished_at = self.clock()
            log.info("invalidation %s %s in %.3fs", inv.id, inv.state, inv.finished_at - inv.started_at)
        finally:
            self._tasks.pop(inv.id, None)

    def _headers(self, body: bytes) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.cfg.purge_token:
            h["Authorization"] = f"Bearer {self.cfg.purge_token}"
        if self.cfg.purge_hmac_key:
            h["X-Cdnlab-Signature"] = hmac.new(
                self.cfg.purge_hmac_key.encode(), body, hashlib.sha256
            ).hexdigest()
        return h

    async def _appliance(
        self, inv: Invalidation, st: TargetStatus, admin_url: str, sem: asyncio.Semaphore
    ) -> None:
        remaining = list(inv.edge_purges)
        purged = 0
        st.state, st.started_at = "running", self.clock()
        for attempt in range(1, self.cfg.max_attempts + 1):
            st.attempts = attempt
            async with sem:
                for body in list(remaining):
                    raw = json.dumps(body).encode()
                    try:
                        async with self._http().post(
                            f"{admin_url}/purge", data=raw, headers=self._headers(raw)
                        ) as resp:
                            text = await resp.text()
                            if resp.status != 200:
                                raise RuntimeError(f"HTTP {resp.status}: {text[:200]}")
                            purged += int(json.loads(text).get("purged", 0))
                    except Exception as exc:
                        st.error = f"{type(exc).__name__}: {exc}"[:300]
                        break
                    remaining.remove(body)
            if not remaining:
                st.state, st.error, st.purged = "done", None, purged
                break
            if attempt < self.cfg.max_attempts and not self._stop.is_set():
                await self._sleep(backoff(attempt, self.cfg.retry_base, self.cfg.retry_max))
        else:
            st.state, st.purged = "failed", purged
        st.finished_at = self.clock()

    async def _cloudfront(self, inv: Invalidation) -> None:
        st, cf = inv.cloudfront, self.cloudfront
        assert st is not None and cf is not None
        st.state, st.started_at = "running", self.clock()
        for attempt in range(1, self.cfg.max_attempts + 1):
            st.attempts = attempt
            try:
                # The invalidation id as CallerReference: a retry cannot create a second one.
                st.cloudfront_id, st.cloudfront_status = await asyncio.to_thread(
                    cf.create, inv.cloudfront_paths, inv.id
                )
                st.state, st.error = "done", None
                break
            except Exception as exc:
                st.error = f"{type(exc).__name__}: {exc}"[:300]
                if attempt < self.cfg.max_attempts and not self._stop.is_set():
                    await self._sleep(backoff(attempt, self.cfg.retry_base, self.cfg.retry_max))
        else:
            st.state = "failed"
        st.finished_at = self.clock()
