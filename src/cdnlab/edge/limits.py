"""Per-client-address caps (DDoS defences): connections like nginx ``limit_conn``, request rate
as a token bucket with a burst like ``limit_req``, and an allow-list exempt from both.

Kept off the hot path: a connection learns on accept whether it is limited at all (``Conn.limit``
is None otherwise), so an unlimited request costs one attribute test. Limited requests cost one
dict lookup and a little float arithmetic. State is per worker: with N workers a client may get up
to N times the configured figures, as with nginx zones that are not shared.
"""

from __future__ import annotations

import ipaddress
import resource
from typing import TYPE_CHECKING

from cdnlab.edge.config import LimitsConfig

if TYPE_CHECKING:
    from cdnlab.edge.conn import Conn

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_CONNECTIONS = 16384  # what the open-file limit is raised for when worker_connections is 0


def fd_reserve(limits: LimitsConfig) -> int:
    """Descriptors a worker needs besides client sockets: cached object files (each may be open
    twice while replaced), listeners, the index, upstream sockets, logs."""
    return limits.open_files_cache * 2 + 1024


def connection_cap(limits: LimitsConfig) -> int:
    """The most client connections this process can hold under its open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = (1 << 30) if soft == resource.RLIM_INFINITY else max(0, soft - fd_reserve(limits))
    return min(limits.worker_connections or room, room)


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class Limiter:
    def __init__(self, limits: LimitsConfig) -> None:
        self.conn_cap = limits.conn_per_client
        self.rate = limits.rate_per_client
        self.burst = float(limits.rate_burst)
        self.retry_after = f"Retry-After: {limits.retry_after}\r\n".encode()
        self.allow: list[_Net] = [ipaddress.ip_network(c, strict=False) for c in limits.allow]
        self.enabled = bool(self.conn_cap or self.rate)
        self.conns: dict[str, int] = {}
        self.buckets: dict[str, _Bucket] = {}
        self._allowed: dict[str, bool] = {}  # address -> on the allow-list (bounded below)

    def allowed(self, client: str) -> bool:
        hit = self._allowed.get(client)
        if hit is None:
            try:
                addr = ipaddress.ip_address(client)
            except ValueError:
                hit = False  # a Unix socket or something odd: limited like anyone
            else:
                hit = any(addr in net for net in self.allow)
            if len(self._allowed) >= 65536:
                self._allowed.clear()
            self._allowed[client] = hit
        return hit

    def on_accept(self, client: str) -> tuple[bool, str | None]:
        """(limited, refusal): whether the connection is subject to the caps, and the reason to
        refuse its requests if it is over the connection cap (it then does not count)."""
        if not self.enabled or self.allowed(client):
            return False, None
        if self.conn_cap:
            n = self.conns.get(client, 0)
            if n >= self.conn_cap:
                return True, "conn"
            self.conns[client] = n + 1
        return True, None

    def on_close(self, client: str) -> None:
        n = self.conns.get(client, 0) - 1
        if n > 0:
            self.conns[client] = n
        else:
            self.conns.pop(client, None)

    def take(self, client: str, now: float) -> bool:
        """One request's token; False when the client's bucket is empty."""
        if not self.rate:
            return True
        b = self.buckets.get(client)
        if b is None:
            self.buckets[client] = _Bucket(self.burst - 1.0, now)
            return True
        b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
        b.stamp = now
        if b.tokens < 1.0:
            return False
        b.tokens -= 1.0
        return True

    def prune(self, now: float) -> None:
        """Forget buckets that have refilled (called once a second): memory stays bounded by the
        clients active in the last burst/rate seconds."""
        if self.rate and self.buckets:
            full = self.burst / self.rate
            for client in [c for c, b in self.buckets.items() if now - b.stamp > full]:
                del self.buckets[client]

    def admit(self, conn: Conn, now: float) -> tuple[int, str] | None:
        """None to serve the request, else (status, reason) to refuse it."""
        if conn.refusal is not None:
            return 503, conn.refusal
        if not self.take(conn.client, now):
            return 429, "rate"
        return None
