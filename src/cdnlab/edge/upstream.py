"""The ordered upstream list: failover, health marks and recovery probes.

An upstream that fails (connect error, timeout, 5xx) is skipped until a background probe gets any
HTTP answer from it, as nginx's ``proxy_next_upstream`` plus an active check would do. When every
upstream is marked down they are all tried anyway, so a recovered origin is found without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from cdnlab.edge.upclient import BodyError, Client, Response

log = logging.getLogger("cdnlab.edge.upstream")

# Headers never copied from the client to the upstream: hop-by-hop ones and those that could make
# the upstream answer differently from what the cache key says (RFC 9110 §7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)


class UpstreamError(Exception):
    """No upstream could answer. ``status`` is what the client gets: 502 or 504."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upstream:
    url: str
    healthy: bool = True
    failures: int = 0
    probing: asyncio.Task[None] | None = field(default=None, repr=False)


class UpstreamPool:
    def __init__(
        self,
        urls: list[str],
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        probe_interval: float = 5.0,
    ) -> None:
        self.upstreams = [Upstream(u.rstrip("/")) for u in urls]
        self.client = Client(connect_timeout, read_timeout)
        self._probe_interval = probe_interval

    async def close(self) -> None:
        for up in self.upstreams:
            if up.probing:
                up.probing.cancel()
        self.client.close()

    def candidates(self) -> list[Upstream]:
        healthy = [u for u in self.upstreams if u.healthy]
        return healthy or list(self.upstreams)

    def mark_down(self, up: Upstream, why: str) -> None:
        up.failures += 1
        if up.healthy:
            log.warning("upstream %s marked down: %s", up.url, why)
        up.healthy = False
        if up.probing is None or up.probing.done():
            up.probing = asyncio.get_running_loop().create_task(self._probe(up))

    async def _probe(self, up: Upstream) -> None:
        while not up.healthy:
            await asyncio.sleep(self._probe_interval)
            try:
                resp = await self.client.request(up.url, "/", {"User-Agent": "cdnlab"}, method="HEAD")
            except (BodyError, TimeoutError, OSError):
                continue
            resp.release()
            if resp.status < 500:
                up.healthy = True
                up.failures = 0
                log.warning("upstream %s is back (probe answered %d)", up.url, resp.status)

    async def open(
        self,
        target: str,
        headers: dict[str, str],
        failures: list[tuple[str, str, float]] | None = None,
    ) -> tuple[Upstream, Response]:
        """GET ``target`` (path and query) from the first upstream that answers without a 5xx.

        The caller must release the response. A 5xx from the last candidate is returned as is, so
        the client sees the origin's own error rather than a made-up one. Each upstream that
        failed on the way is appended to ``failures`` as (url, "timeout" | "error", seconds), so
        the caller can count it (``upstream_fetches_total{result}``).
        """
        last_error: UpstreamError | None = None
        cands = self.candidates()
        for i, up in enumerate(cands):
            started = time.monotonic()
            try:
                resp = await self.client.request(up.url, target, headers)
            except TimeoutError:
                self.mark_down(up, "timeout")
                last_error = UpstreamError(504, f"upstream {up.url} timed out")
                if failures is not None:
                    failures.append((up.url, "timeout", time.monotonic() - started))
                continue
            except (BodyError, OSError) as exc:
                self.mark_down(up, str(exc) or type(exc).__name__)
                last_error = UpstreamError(502, f"upstream {up.url} failed: {exc or type(exc).__name__}")
                if failures is not None:
                    failures.append((up.url, "error", time.monotonic() - started))
                continue
            if resp.status >= 500 and i < len(cands) - 1:
                self.mark_down(up, f"answered {resp.status}")
                resp.release()
                if failures is not None:
                    failures.append((up.url, "error", time.monotonic() - started))
                continue
            return up, resp
        assert last_error is not None
        raise last_error
