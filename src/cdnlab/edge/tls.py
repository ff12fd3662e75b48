"""TLS contexts for the client port: one per certificate, chosen by SNI, rebuilt on SIGHUP.

Each worker builds its own contexts from the config (workers are spawned, not forked). A reload
builds a complete new set before swapping it in: a certificate that no longer loads leaves the old
set serving and logs why. Connections keep the context they were accepted with, so a reload never
touches a handshake already done.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cdnlab.edge.config import TLSCertificate, TLSConfig

log = logging.getLogger("cdnlab.edge.tls")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def check_pair(cert: Path, key: Path) -> None:
    """ValueError naming the file when the pair cannot serve (missing, unreadable, mismatched)."""
    for what, path in (("cert", cert), ("key", key)):
        if not Path(path).is_file():
            raise ValueError(f"{what} file {str(path)!r} does not exist")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"cannot load {str(cert)!r} with key {str(key)!r}: {_why(exc)}") from None


def check_ciphers(spec: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.set_ciphers(spec)
    except ssl.SSLError:
        raise ValueError(f"no usable cipher in {spec!r}") from None
    old = [c for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]
    weak = [c["name"] for c in old if not c["aead"] or c["kea"] not in ("kx-ecdhe", "kx-dhe")]
    if weak:
        raise ValueError(
            f"only forward-secret AEAD suites (ECDHE/DHE with GCM or ChaCha20) are allowed; "
            f"{spec!r} enables {', '.join(weak)}"
        )
    if not old:
        raise ValueError(f"{spec!r} leaves no TLS 1.2 suite")


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return getattr(exc, "strerror", None) or str(exc)


def cert_names(cert: Path) -> list[str]:
    """The DNS names of a certificate's subjectAltName (its CN when it has none)."""
    try:
        info = ssl._ssl._test_decode_cert(str(cert))  # type: ignore[attr-defined]
    except (ssl.SSLError, OSError, AttributeError):
        return []
    names = [v for k, v in info.get("subjectAltName", ()) if k == "DNS"]
    if not names:
        names = [v for rdn in info.get("subject", ()) for k, v in rdn if k == "commonName"]
    return [n.lower() for n in names]


def _context(cfg: TLSConfig, pair: TLSCertificate) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[cfg.min_version]
    ctx.set_ciphers(cfg.ciphers)
    # No client renegotiation (a CPU DoS lever); the server's cipher order wins.
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    if not cfg.session_tickets:
        ctx.options |= ssl.OP_NO_TICKET
    ctx.num_tickets = cfg.tls13_tickets if cfg.session_tickets else 0
    ctx.load_cert_chain(pair.cert, pair.key)
    return ctx


class TLSContexts:
    """The worker's current contexts: ``default`` answers the handshake and its SNI callback
    switches to the certificate the client named."""

    def __init__(self, cfg: TLSConfig) -> None:
        self.cfg = cfg
        self.default: ssl.SSLContext
        self._exact: dict[str, ssl.SSLContext] = {}
        self._wild: dict[str, ssl.SSLContext] = {}
        self.generation = 0
        self._build()

    def _build(self) -> None:
        cfg = self.cfg
        exact: dict[str, ssl.SSLContext] = {}
        wild: dict[str, ssl.SSLContext] = {}
        default: ssl.SSLContext | None = None
        for pair in cfg.certificates:
            ctx = _context(cfg, pair)
            for name in pair.server_names or cert_names(pair.cert):
                name = name.lower().rstrip(".")
                if name.startswith("*."):
                    wild.setdefault(name[2:], ctx)
                else:
                    exact.setdefault(name, ctx)
            if default is None or pair.default:
                default = ctx
        assert default is not None
        default.sni_callback = self._pick
        # Swap all at once: a handshake sees either the old set or the new one.
        self.default, self._exact, self._wild = default, exact, wild
        self.generation += 1

    def reload(self) -> bool:
        """Re-read every certificate and key; on failure keep serving the old ones."""
        try:
            self._build()
        except (ssl.SSLError, OSError, ValueError) as exc:
            log.error("TLS reload failed, keeping the current certificates: %s", _why(exc))
            return False
        log.info("TLS certificates reloaded (generation %d)", self.generation)
        return True

    def lookup(self, server_name: str | None) -> ssl.SSLContext | None:
        if not server_name:
            return None
        name = server_name.lower().rstrip(".")
        ctx = self._exact.get(name)
        if ctx is None:
            _, dot, parent = name.partition(".")
            if dot:
                ctx = self._wild.get(parent)
        return ctx

    def _pick(self, sslobj: ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        ctx = self.lookup(server_name)
        if ctx is not None and ctx is not sslobj.context:
            sslobj.context = ctx
        return None  # unknown names get the default certificate, as nginx's default_server
