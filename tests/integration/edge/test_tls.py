"""HTTPS on the client port: SNI, versions and ciphers, the handler's features over TLS, bounded
memory for a slow TLS reader, session resumption, certificate reload and access-log reopen on
SIGHUP, and a bad certificate path refused at start."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from helpers import CDNLAB, Edge, Nginx, edge, free_port, sha256, wait_until

from .edgecheck import config_toml

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def make_cert(base: Path, name: str, *names: str) -> tuple[Path, Path]:
    """A self-signed EC certificate for ``name`` (and ``names``) with its key, made by openssl."""
    cert, key = base / f"{name}.crt", base / f"{name}.key"
    san = ",".join(f"DNS:{n}" for n in (name, *names))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName={san}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def client_ctx(**kw: object) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test compares the certificate itself (der)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def tls_connect(port: int, sni: str | None, ctx: ssl.SSLContext | None = None, **kw: object) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return (ctx or client_ctx()).wrap_socket(raw, server_hostname=sni, **kw)  # type: ignore[arg-type]


def https(
    port: int, sni: str | None = "a.test", ctx: ssl.SSLContext | None = None
) -> http.client.HTTPSConnection:
    ctx = ctx or client_ctx()
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=15)
    # Connected here, with the SNI we want rather than "127.0.0.1".
    raw = socket.create_connection(("127.0.0.1", port), timeout=15)
    conn.sock = ctx.wrap_socket(raw, server_hostname=sni)
    return conn


TLS_EXTRA = """
[log]
access_log = "{base}/access.jsonl"

[tls]
listen = ["127.0.0.1:{tls_port}"]

[[tls.certificates]]
cert = "{certs}/b.test.crt"
key = "{certs}/b.test.key"

[[tls.certificates]]
cert = "{certs}/a.test.crt"
key = "{certs}/a.test.key"
default = true
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("certs")
    make_cert(base, "a.test")
    make_cert(base, "b.test", "*.b.test")
    return base


@pytest.fixture(scope="module")
def tls_edge(tmp_path_factory: pytest.TempPathFactory, origin: Nginx, certs: Path) -> Iterator[Edge]:
    tls_port = free_port()
    extra = TLS_EXTRA.replace("{tls_port}", str(tls_port)).replace("{certs}", str(certs))
    cfg = config_toml(limits="header_timeout = 2.0\nsend_timeout = 30.0", extra=extra)
    base = tmp_path_factory.mktemp("tls-edge")
    with edge(base, [origin.url], config=cfg) as e:
        e.extra["tls_port"] = tls_port
        e.extra["base"] = base
        wait_until(lambda: _can_connect(tls_port), 10)
        yield e


def _can_connect(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def metric(e: Edge, name: str) -> float:
    for line in e.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def metric_labeled(e: Edge, name: str, label: str) -> float:
    for line in e.metrics().splitlines():
        if line.startswith(f"{name}{{{label}}}"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sni_picks_the_certificate(tls_edge: Edge, certs: Path) -> None:
    port = tls_edge.extra["tls_port"]
    a, b = der(certs / "a.test.crt"), der(certs / "b.test.crt")
    cases = (("a.test", a), ("b.test", b), ("B.Test", b), ("x.b.test", b), ("other.test", a), (None, a))
    for sni, want in cases:
        with tls_connect(port, sni) as s:
            assert s.getpeercert(binary_form=True) == want, sni


def test_versions_and_ciphers(tls_edge: Edge) -> None:
    port = tls_edge.extra["tls_port"]
    before = metric_labeled(tls_edge, "cdnlab_tls_handshakes_total", 'result="failed"')
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated in Python too: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old = client_ctx(minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    old.set_ciphers("ALL:@SECLEVEL=0")  # the client would speak 1.0/1.1: the server must refuse
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        tls_connect(port, "a.test", old)
    cbc = client_ctx(maximum_version=ssl.TLSVersion.TLSv1_2)
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")  # no AEAD suite offered
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        tls_connect(port, "a.test", cbc)
    with tls_connect(port, "a.test", client_ctx(maximum_version=ssl.TLSVersion.TLSv1_2)) as s:
        assert s.version() == "TLSv1.2"
        name, _, _ = s.cipher()
        assert "GCM" in name or "CHACHA20" in name, name
    with tls_connect(port, "a.test") as s:
        assert s.version() == "TLSv1.3"
    name = "cdnlab_tls_handshakes_total"
    wait_until(lambda: metric_labeled(tls_edge, name, 'result="failed"') >= before + 2, 5)
    assert metric_labeled(tls_edge, name, 'result="ok"') >= 2


def test_get_range_head_conditional_over_tls(tls_edge: Edge, origin: Nginx) -> None:
    data = origin.put("/tls/seg.bin", 2 * 1024 * 1024 + 17)
    conn = https(tls_edge.extra["tls_port"])
    for expect in ("fwd=miss", "hit"):
        conn.request("GET", "/tls/seg.bin")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200 and sha256(body) == sha256(data)
        assert expect in r.getheader("Cache-Status", ""), r.getheader("Cache-Status")
        tls_edge.wait_stored("/tls/seg.bin")
    conn.request("GET", "/tls/seg.bin", headers={"Range": "bytes=100000-1200000"})
    r = conn.getresponse()
    assert r.status == 206 and r.read() == data[100000:1200001]
    assert r.getheader("Content-Range") == f"bytes 100000-1200000/{len(data)}"
    conn.request("HEAD", "/tls/seg.bin")
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b"" and int(r.getheader("Content-Length")) == len(data)
    etag = r.getheader("ETag")
    conn.request("GET", "/tls/seg.bin", headers={"If-None-Match": etag})
    r = conn.getresponse()
    assert r.status == 304 and r.read() == b""
    conn.request("GET", "/tls/seg.bin", headers={"Range": "bytes=-10"})  # still on the same connection
    r = conn.getresponse()
    assert r.status == 206 and r.read() == data[-10:]
    conn.close()
    plain = http.client.HTTPConnection("127.0.0.1", tls_edge.port, timeout=10)  # HTTP stays on its port
    plain.request("GET", "/tls/seg.bin", headers={"Range": "bytes=0-9"})
    r = plain.getresponse()
    assert r.status == 206 and r.read() == data[:10]
    plain.close()


def _worker_pids(master: int) -> list[int]:
    kids = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(k) for k in kids]


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_slow_tls_reader_bounded_memory(tls_edge: Edge, origin: Nginx) -> None:
    size = 48 * 1024 * 1024
    data = origin.put("/tls/big.bin", size)
    conn = https(tls_edge.extra["tls_port"])
    conn.request("GET", "/tls/big.bin")
    r = conn.getresponse()
    assert sha256(r.read()) == sha256(data)  # a miss, now stored
    conn.close()
    tls_edge.wait_stored("/tls/big.bin")
    (worker,) = _worker_pids(tls_edge.proc.pid)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    raw.settimeout(15)
    raw.connect(("127.0.0.1", tls_edge.extra["tls_port"]))
    s = client_ctx().wrap_socket(raw, server_hostname="a.test")
    s.sendall(b"GET /tls/big.bin HTTP/1.1\r\nHost: a.test\r\n\r\n")
    got = bytearray(s.recv(65536))
    time.sleep(0.5)
    base = _rss(worker)
    peak = base
    for _ in range(10):  # the client stalls: the daemon must not read the object ahead
        time.sleep(0.2)
        peak = max(peak, _rss(worker))
    assert peak - base < 4 * 1024 * 1024, f"worker grew {peak - base} bytes for one slow TLS reader"
    deadline = time.monotonic() + 60
    h = hashlib.sha256()
    head, _, rest = bytes(got).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    h.update(rest)
    n = len(rest)
    while n < size and time.monotonic() < deadline:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    s.close()
    assert n == size and h.hexdigest() == sha256(data)


def test_session_resumption(tls_edge: Edge, origin: Nginx) -> None:
    origin.put("/tls/small.txt", b"hello over tls\n")
    port = tls_edge.extra["tls_port"]
    before = metric(tls_edge, "cdnlab_tls_resumed_total")
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = client_ctx(maximum_version=version)
        with tls_connect(port, "a.test", ctx) as s:
            s.sendall(b"GET /tls/small.txt HTTP/1.1\r\nHost: a.test\r\n\r\n")
            assert b"hello over tls" in _read_response(s)
            session = s.session
            assert not s.session_reused
        assert session is not None
        with tls_connect(port, "a.test", ctx, session=session) as s:
            s.sendall(b"GET /tls/small.txt HTTP/1.1\r\nHost: a.test\r\n\r\n")
            assert b"hello over tls" in _read_response(s)
            assert s.session_reused, version
    wait_until(lambda: metric(tls_edge, "cdnlab_tls_resumed_total") >= before + 2, 5)


def _read_response(s: ssl.SSLSocket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, body = buf.partition(b"\r\n\r\n")
    fields = dict(ln.split(b":", 1) for ln in head.split(b"\r\n")[1:])
    length = int(next(v for k, v in fields.items() if k.lower() == b"content-length"))
    while len(body) < length:
        body += s.recv(65536)
    return body


def test_sighup_reloads_certificates_and_reopens_access_log(
    tls_edge: Edge, certs: Path, origin: Nginx
) -> None:
    origin.put("/tls/reload.txt", b"reload\n")
    port = tls_edge.extra["tls_port"]
    old = der(certs / "a.test.crt")
    held = tls_connect(port, "a.test")
    assert held.getpeercert(binary_form=True) == old
    held.sendall(b"GET /tls/reload.txt HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert _read_response(held) == b"reload\n"
    # logrotate: move the log away, then SIGHUP
    log = tls_edge.extra["base"] / "access.jsonl"
    wait_until(log.exists, 5)
    rotated = log.with_suffix(".jsonl.1")
    log.rename(rotated)
    fresh = certs / "new"
    fresh.mkdir(exist_ok=True)
    new_cert, new_key = make_cert(fresh, "a.test")
    shutil.copy(new_key, certs / "a.test.key.tmp")
    shutil.copy(new_cert, certs / "a.test.crt.tmp")
    os.replace(certs / "a.test.key.tmp", certs / "a.test.key")
    os.replace(certs / "a.test.crt.tmp", certs / "a.test.crt")
    workers = _worker_pids(tls_edge.proc.pid)
    try:
        os.kill(tls_edge.proc.pid, signal.SIGHUP)

        def sees_new() -> bool:
            with tls_connect(port, "a.test") as s:
                return s.getpeercert(binary_form=True) == der(new_cert)

        wait_until(sees_new, 10)
        # the connection opened before the reload carries on, with its certificate
        held.sendall(b"GET /tls/reload.txt?again=1 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert _read_response(held) == b"reload\n"
        assert held.getpeercert(binary_form=True) == old
        held.close()
        assert tls_edge.proc.poll() is None and _worker_pids(tls_edge.proc.pid) == workers  # none restarted
        wait_until(log.exists, 5)  # reopened at its path, and later requests land there
        wait_until(lambda: "/tls/reload.txt" in log.read_text(), 5)
        lines = [json.loads(x) for x in log.read_text().splitlines()]
        assert [x["path"] for x in lines] == ["/tls/reload.txt"]  # the request after the reopen
        assert "/tls/reload.txt" in rotated.read_text()  # the one before went to the old file
    finally:
        held.close()


def test_bad_certificate_path_exits_2(tmp_path: Path, certs: Path) -> None:
    cfg = config_toml(extra=TLS_EXTRA)
    cases = {
        "missing": cfg.replace("{certs}/b.test.crt", str(tmp_path / "nope.crt")),
        "mismatch": cfg.replace("{certs}/b.test.key", "{certs}/a.test.key"),
        "old-ciphers": cfg.replace("[tls]\n", '[tls]\nciphers = "AES128-SHA"\n'),
    }
    for what, text in cases.items():
        text = text.replace("{tls_port}", str(free_port())).replace("{certs}", str(certs))
        text = text.format(
            port=free_port(),
            admin=free_port(),
            store=tmp_path / "s",
            base=tmp_path,
            upstreams='["http://127.0.0.1:9"]',
        )
        path = tmp_path / f"{what}.toml"
        path.write_text(text)
        for cmd in ("check", "serve"):
            args = [*CDNLAB, "edge", cmd, "--config", str(path)]
            p = subprocess.run(args, capture_output=True, text=True, timeout=60)
            assert p.returncode == 2, (what, cmd, p.stderr)
            lines = p.stderr.strip().splitlines()
            assert len(lines) == 1 and "tls." in lines[0], (what, lines)
        if what == "missing":
            assert "tls.certificates.0.cert" in lines[0] and "nope.crt" in lines[0]


def test_quick_flags(tmp_path: Path, certs: Path, origin: Nginx) -> None:
    data = origin.put("/tls/quick.bin", 100_000)
    port = free_port()
    flags = ["--tls-listen", f"127.0.0.1:{port}", "--tls-cert", str(certs / "b.test.crt")]
    flags += ["--tls-key", str(certs / "b.test.key")]
    with edge(tmp_path / "quick", [origin.url], extra_args=flags) as e:
        wait_until(lambda: _can_connect(port), 10)
        conn = https(port, sni=None)
        conn.request("GET", "/tls/quick.bin")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == data
        assert conn.sock.getpeercert(binary_form=True) == der(certs / "b.test.crt")
        conn.close()
        assert e.proc.poll() is None
    args = ["edge", "check", "--listen", "127.0.0.1:1", "--admin-listen", "127.0.0.1:2"]
    args += ["--store", str(tmp_path / "s"), "--upstream", origin.url, "--tls-listen", "127.0.0.1:3"]
    p = subprocess.run(
        [*CDNLAB, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "--tls-cert" in p.stderr, p.stderr
