"""The daemon's configuration: a TOML file or the quick command-line form, validated at start.

A wrong key or value is reported as one line naming the key (``ConfigError``), and the CLI exits 2.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cdnlab.configfile import first_error, read_toml
from cdnlab.sizes import parse_size

Size = Annotated[int, BeforeValidator(parse_size)]


class ConfigError(Exception):
    """One line naming the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


class TierConfig(_Strict):
    """One disk (mount point) of a tier: one directory per disk, no RAID."""

    path: Path
    kind: Literal["ram", "flash", "hdd"]
    capacity: Size = Field(gt=0)


class SigningConfig(_Strict):
    keys: dict[str, str] = Field(default_factory=dict)
    # With keys configured, unsigned requests are refused unless required is false.
    required: bool = True


class AdminConfig(_Strict):
    listen: str = "127.0.0.1:8081"
    purge_token: str | None = None
    purge_hmac_key: str | None = None

    _hp = field_validator("listen")(classmethod(lambda cls, v: _check_hostport(v)))


class ControlConfig(_Strict):
    """Where to report inventory (the control plane); without a url nothing is reported."""

    url: str | None = None
    report_interval: float = Field(default=10.0, gt=0)
    token: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, got {v!r}")
        return v


class LimitsConfig(_Strict):
    max_header_bytes: Size = 16384
    max_headers: int = Field(default=100, gt=0)
    header_timeout: float = Field(default=10.0, gt=0)
    keepalive_timeout: float = Field(default=75.0, gt=0)
    send_timeout: float = Field(default=60.0, gt=0)
    max_ranges: int = Field(default=16, gt=0)
    upstream_connect_timeout: float = Field(default=5.0, gt=0)
    upstream_read_timeout: float = Field(default=30.0, gt=0)
    upstream_probe_interval: float = Field(default=5.0, gt=0)
    ram_object_max: Size = 256 * 1024
    # Per-worker memory for small objects served straight from RAM (verified when loaded).
    hot_cache_bytes: Size = 64 * 1024 * 1024
    open_files_cache: int = Field(default=4096, gt=0)
    cache_lock_timeout: float = Field(default=30.0, gt=0)
    drain_timeout: float = Field(default=300.0, gt=0)
    # Time a request body may take once its headers are in (GET/HEAD bodies are read and dropped).
    body_timeout: float = Field(default=10.0, gt=0)
    # Client connections per worker the open-file limit must allow (checked at start, exit 1 with
    # a clear line if it cannot); 0 sizes it from the limit. Beyond it new connections get a 503.
    worker_connections: int = Field(default=0, ge=0)
    # DDoS caps; 0 turns each off. Per client address and per worker (as nginx zones per worker).
    conn_per_client: int = Field(default=0, ge=0)
    rate_per_client: float = Field(default=0.0, ge=0)  # requests per second (token refill)
    rate_burst: int = Field(default=50, gt=0)  # bucket size: requests allowed back to back
    max_upstream_fetches: int = Field(default=0, ge=0)  # concurrent fetches per worker
    retry_after: int = Field(default=1, ge=0)  # seconds, in every 429/503 refusal
    # CIDRs exempt from the per-client caps (health checkers, fill servers).
    allow: list[str] = Field(default_factory=list)

    @field_validator("allow")
    @classmethod
    def _allow(cls, v: list[str]) -> list[str]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"not an address or CIDR: {cidr!r}") from None
        return v


class Watermarks(_Strict):
    """A tier passing ``high`` (fraction of its capacity) is evicted or demoted down to ``low``."""

    high: float = Field(gt=0, le=1)
    low: float | None = Field(default=None, gt=0, le=1)  # default: 5 points under high

    @model_validator(mode="after")
    def _order(self) -> Watermarks:
        if self.low is None:
            object.__setattr__(self, "low", round(max(self.high - 0.05, self.high / 2), 4))
        elif self.low > self.high:
            raise ValueError(f"low ({self.low}) must not be above high ({self.high})")
        return self


def _default_watermarks() -> dict[str, Watermarks]:
    # High marks from seed 003 ("Flash: 95%, HDD: 85%"); RAM like flash.
    return {
        "ram": Watermarks(high=0.95, low=0.90),
        "flash": Watermarks(high=0.95, low=0.90),
        "hdd": Watermarks(high=0.85, low=0.80),
    }


class StorageConfig(_Strict):
    """Tiers, eviction, integrity and disk health (docs/edge.md, "Tiers, integrity and disk failure")."""

    # An eviction policy from cdnlab.eviction ("default" = the simulator's default).
    eviction_policy: str = "default"
    watermarks: dict[Literal["ram", "flash", "hdd"], Watermarks] = Field(default_factory=_default_watermarks)
    mover_interval: float = Field(default=1.0, gt=0)  # seconds between tier passes
    move_rate: Size = 64 * 1024 * 1024  # bytes/s copied by promotions and demotions
    promote_hits: int = Field(default=2, ge=1)  # recent hits that make a lower-tier object hot
    demote_min_hits: int = Field(default=1, ge=0)  # victims with fewer hits are deleted, not demoted
    scrub_rate: Size = 8 * 1024 * 1024  # bytes/s re-read by the scrubber; 0 turns it off
    scrub_pause: float = Field(default=60.0, ge=0)  # seconds between full passes
    disk_probe_interval: float = Field(default=2.0, gt=0)

    @field_validator("eviction_policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        from cdnlab.eviction import get_policy

        get_policy(v, 1)  # ValueError naming the known policies
        return v

    @field_validator("watermarks")
    @classmethod
    def _marks(cls, v: dict[str, Watermarks]) -> dict[str, Watermarks]:
        return {**_default_watermarks(), **v}


class LogConfig(_Strict):
    access_log: Path | None = None
    level: Literal["debug", "info", "warning", "error"] = "info"


class TLSCertificate(_Strict):
    """One certificate chain and its key; chosen when the client's SNI matches ``server_names``."""

    cert: Path
    key: Path
    # Exact names or "*.example.com"; empty: the DNS names of the certificate's subjectAltName.
    server_names: list[str] = Field(default_factory=list)
    default: bool = False  # for clients without SNI or with an unknown name (else: the first pair)

    @field_validator("cert", "key")
    @classmethod
    def _exists(cls, v: Path) -> Path:
        if not v.is_file():
            raise ValueError(f"no such file: {str(v)!r}")
        return v

    @model_validator(mode="after")
    def _loads(self) -> TLSCertificate:
        from cdnlab.edge.tls import check_pair

        check_pair(self.cert, self.key)  # ValueError naming the file and what is wrong
        return self


class TLSConfig(_Strict):
    """HTTPS on listeners of its own (docs/edge.md, "TLS"); plain HTTP stays on ``listen``."""

    listen: list[str] = Field(default_factory=list)
    certificates: list[TLSCertificate] = Field(default_factory=list)
    min_version: Literal["1.2", "1.3"] = "1.2"
    # TLS 1.2 suites (OpenSSL syntax); TLS 1.3 suites are all AEAD and left to OpenSSL.
    ciphers: str = "ECDHE+AESGCM:ECDHE+CHACHA20"
    session_tickets: bool = True
    # Tickets sent after a TLS 1.3 handshake (each lets the client resume once).
    tls13_tickets: int = Field(default=2, ge=0, le=16)
    # Time a client has to finish its handshake.
    handshake_timeout: float = Field(default=10.0, gt=0)
    # Plaintext handed to OpenSSL per write (nginx's ssl_buffer_size): a stalled client holds this
    # much plus OpenSSL's record buffer; larger is fewer calls per byte for bulk bodies.
    buffer_size: Size = Field(default=16 * 1024, ge=4096, le=1024 * 1024)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: list[str]) -> list[str]:
        return [_check_hostport(x) for x in v]

    @field_validator("ciphers")
    @classmethod
    def _ciphers(cls, v: str) -> str:
        from cdnlab.edge.tls import check_ciphers

        check_ciphers(v)
        return v

    @model_validator(mode="after")
    def _pairs(self) -> TLSConfig:
        if self.listen and not self.certificates:
            raise ValueError("tls.listen needs at least one [[tls.certificates]] pair")
        if self.certificates and not self.listen:
            raise ValueError("[[tls.certificates]] need a tls.listen address")
        if sum(c.default for c in self.certificates) > 1:
            raise ValueError("only one certificate may be the default")
        return self


class EdgeConfig(_Strict):
    role: Literal["edge", "shield"] = "edge"
    id: str = "edge-1"
    site: str = "default"
    # The cache's name in RFC 9211 Cache-Status members.
    cache_name: str = Field(default="cdnlab", pattern=r"^[A-Za-z0-9._-]+$")
    listen: list[str] = Field(default_factory=lambda: ["127.0.0.1:8080"], min_length=1)
    workers: int = Field(default=1, ge=1, le=256)
    upstreams: list[str] = Field(min_length=1)
    state_dir: Path
    tiers: list[TierConfig] = Field(min_length=1)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    signing: SigningConfig = Field(default_factory=SigningConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    tls: TLSConfig = Field(default_factory=TLSConfig)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: list[str]) -> list[str]:
        return [_check_hostport(x) for x in v]

    @model_validator(mode="after")
    def _tls_ports(self) -> EdgeConfig:
        clash = set(self.tls.listen) & {*self.listen, self.admin.listen}
        if clash:
            raise ValueError(f"tls.listen {sorted(clash)[0]} is also a plain or admin listener")
        # Every listener binds with SO_REUSEPORT, so the kernel would let the admin API share a
        # client port (and split connections between them): refuse it here.
        for addr in (*self.listen, *self.tls.listen):
            if _overlap(addr, self.admin.listen):
                raise ValueError(f"admin.listen {self.admin.listen} overlaps the client listener {addr}")
        return self

    @field_validator("upstreams")
    @classmethod
    def _upstreams(cls, v: list[str]) -> list[str]:
        for u in v:
            if not (u.startswith("http://") or u.startswith("https://")) or u[-3:] == "://":
                raise ValueError(f"upstream must be an http:// or https:// URL, got {u!r}")
        return [u.rstrip("/") for u in v]


def _overlap(a: str, b: str) -> bool:
    """Whether two HOST:PORT listeners would take the same connections (a wildcard host takes
    every address's)."""
    ha, _, pa = a.rpartition(":")
    hb, _, pb = b.rpartition(":")
    wild = {"0.0.0.0", "::", "[::]", ""}
    return pa == pb and (ha == hb or ha in wild or hb in wild)


def from_mapping(data: dict) -> EdgeConfig:
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(first_error(exc)) from None


def load(path: Path) -> EdgeConfig:
    data = read_toml(path, ConfigError)
    return from_mapping(data)


def quick(
    listen: str,
    admin_listen: str,
    store: Path,
    upstreams: list[str],
    *,
    role: str = "edge",
    workers: int = 1,
    capacity: str = "10G",
    tls: tuple[str, str, str] | None = None,
) -> EdgeConfig:
    """The quick form: one flash tier in STORE, the index beside it."""
    store = Path(store)
    return from_mapping(
        {
            "role": role,
            "listen": [listen],
            "workers": workers,
            "upstreams": upstreams,
            "state_dir": str(store / "state"),
            "tiers": [{"path": str(store / "flash0"), "kind": "flash", "capacity": capacity}],
            "admin": {"listen": admin_listen},
            # (listen, cert, key): one certificate, the default for every name.
            "tls": {"listen": [tls[0]], "certificates": [{"cert": tls[1], "key": tls[2]}]} if tls else {},
        }
    )
