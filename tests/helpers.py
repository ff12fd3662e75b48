"""Real processes for tests: nginx from Debian as the origin, cdnlab edge daemons on loopback."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cdnlab.lab import procs

REPO = Path(__file__).resolve().parent.parent
CDNLAB = [sys.executable, "-m", "cdnlab.cli"]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# One implementation of "a free loopback port" and "wait until it listens", shared with the lab.
free_port = procs.free_port
wait_port = procs.wait_port


_NGINX_REQUEST = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+"')


def content_bytes(seed: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes: the same (seed, size) always gives the same object."""
    return random.Random(f"{seed}|{size}").randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_until(pred: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> object:
    """Poll ``pred`` until it returns something truthy (returned) or raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


# The same nginx the lab and the benchmarks run (one config, one place).
NGINX_CONF = procs.NGINX_CONF


@dataclass
class Nginx:
    port: int
    root: Path
    dir: Path
    proc: subprocess.Popen
    access_log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests_for(self, path: str) -> int:
        """How many times the origin was asked for ``path`` (from its access log)."""
        if not self.access_log.exists():
            return 0
        return sum(1 for line in self.access_log.read_text().splitlines() if f" {path} " in line)

    def requests(self) -> list[tuple[str, str]]:
        """Every (method, request-target) the origin logged, in order."""
        if not self.access_log.exists():
            return []
        out = []
        for line in self.access_log.read_text().splitlines():
            m = _NGINX_REQUEST.search(line)
            if m:
                out.append((m.group(1), m.group(2)))
        return out

    def fetches(self, path: str) -> int:
        """Origin requests whose path (query ignored) is exactly ``path``."""
        return sum(1 for _, target in self.requests() if target.split("?", 1)[0] == path)

    def put(self, path: str, data: bytes | int, mtime: float = 1_700_000_000.0) -> bytes:
        """Write ``data`` (or that many deterministic pseudo-random bytes) at ``path`` in the root."""
        if isinstance(data, int):
            data = content_bytes(path, data)
        f = self.root / path.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        os.utime(f, (mtime, mtime))
        return data

    def etag(self, path: str) -> str:
        """The strong ETag nginx sends for ``path``: hex mtime and hex size."""
        st = (self.root / path.lstrip("/")).stat()
        return f'"{int(st.st_mtime):x}-{st.st_size:x}"'

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def nginx(
    base: Path,
    root: Path | None = None,
    workers: int = 1,
    extra: str = "",
    access: bool = True,
    port: int | None = None,
) -> Iterator[Nginx]:
    base.mkdir(parents=True, exist_ok=True)
    root = root or base / "www"
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    access_log = base / "access.log"
    conf = base / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            dir=base,
            workers=workers,
            port=port,
            root=root,
            extra=extra,
            access=f"{access_log} combined" if access else "off",
            http_extra="",
            # As root, nginx workers would run as nobody and could not read pytest's 0700 dirs.
            user="user root;" if os.geteuid() == 0 else "",
        )
    )
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(base)], stderr=subprocess.PIPE)
    try:
        wait_port(port, proc=proc)
        n = Nginx(port, root, base, proc, access_log)
        yield n
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Edge:
    port: int
    admin_port: int
    proc: subprocess.Popen
    store: Path
    log: Path
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def health(self) -> dict:
        _, _, body = request(self.admin_port, "GET", "/healthz")
        return json.loads(body)

    def inventory(self) -> dict:
        status, _, body = request(self.admin_port, "GET", "/inventory")
        assert status == 200, (status, body)
        return json.loads(body)

    def inventory_keys(self) -> dict[str, dict]:
        return {o["key"]: o for o in self.inventory()["objects"]}

    def wait_stored(self, key: str, timeout: float = 10.0) -> dict:
        """Wait until /inventory lists ``key`` (its commit is done); return its entry."""
        return wait_until(lambda: self.inventory_keys().get(key), timeout)  # type: ignore[return-value]

    def metrics(self) -> str:
        status, _, body = request(self.admin_port, "GET", "/metrics")
        assert status == 200, (status, body)
        return body.decode()

    def post(self, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, dict]:
        status, _, data = request(self.admin_port, "POST", path, headers=headers, body=body)
        try:
            return status, json.loads(data)
        except ValueError:
            return status, {"raw": data.decode("latin-1")}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill9(self) -> None:
        """SIGKILL the whole process group (master and workers) and reap the master."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@contextmanager
def edge(
    base: Path,
    upstreams: list[str] | None = None,
    *,
    config: str | None = None,
    workers: int = 1,
    role: str = "edge",
    port: int | None = None,
    admin_port: int | None = None,
    extra_args: list[str] | None = None,
) -> Iterator[Edge]:
    """Start ``cdnlab edge serve`` (quick flags, or a TOML ``config`` with {port}/{admin}/{store}/{base}
    holes and {upstreams}, the ``upstreams`` list as a TOML array).

    The process group is SIGKILLed on exit whatever happened, so no worker outlives a test.
    """
    base.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    admin_port = admin_port or free_port()
    store = base / "store"
    log = base / "edge.log"
    if config is not None:
        cfg = write_config(
            base / "edge.toml",
            config.format(
                port=port,
                admin=admin_port,
                store=store,
                base=base,
                upstreams=json.dumps(upstreams or []),
            ),
        )
        args = ["edge", "serve", "--config", str(cfg)]
    else:
        args = [
            "edge",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--admin-listen",
            f"127.0.0.1:{admin_port}",
            "--store",
            str(store),
            "--workers",
            str(workers),
            "--role",
            role,
        ]
        for u in upstreams or []:
            args += ["--upstream", u]
    args += extra_args or []
    logf = open(log, "ab")  # noqa: SIM115 - lives as long as the process
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [*CDNLAB, *args], stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    e = Edge(port, admin_port, proc, store, log)
    try:
        try:
            wait_port(admin_port, proc=proc, timeout=30)
            wait_port(port, proc=proc, timeout=30)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; daemon log:\n{e.log_text()[-3000:]}") from None
        yield e
    finally:
        e.stop()
        logf.close()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass


def request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0, until_close: bool = True) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if not until_close:
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


def exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send raw bytes and read until the server closes or ``timeout`` passes.

    Returns what was received and whether the server closed the connection (EOF or reset)
    before the timeout.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            return b"", True
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return b"".join(chunks), False
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                return b"".join(chunks), False
            except ConnectionResetError:
                return b"".join(chunks), True
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)


@dataclass
class RawResponse:
    """One HTTP/1.1 response read off the wire, byte for byte."""

    status: int
    reason: str
    version: str
    header_list: list[tuple[str, str]]
    body: bytes
    head: bytes

    @property
    def headers(self) -> dict[str, str]:
        """Lower-cased names; a repeated field is joined with ", " (RFC 9110 §5.3)."""
        out: dict[str, str] = {}
        for k, v in self.header_list:
            k = k.lower()
            out[k] = f"{out[k]}, {v}" if k in out else v
        return out

    def count(self, name: str) -> int:
        return sum(1 for k, _ in self.header_list if k.lower() == name.lower())


def parse_head(head: bytes) -> RawResponse:
    """Status line and header fields of a response head (ending in CRLF CRLF)."""
    lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    version, status, reason = [*lines[0].split(" ", 2), ""][:3]
    hl = [(n, v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
    return RawResponse(int(status), reason, version, hl, b"", head)


class IncompleteResponse(Exception):
    def __init__(self, partial: bytes) -> None:
        super().__init__(f"connection ended after {len(partial)} bytes of a response")
        self.partial = partial


class RawReader:
    """Parse HTTP/1.1 responses from a byte stream: Content-Length bodies only (what cdnlab sends),
    no body for HEAD, 1xx, 204 and 304 (RFC 9112 §6.3)."""

    def __init__(self, recv: Callable[[], bytes]) -> None:
        self._recv = recv
        self.buf = b""
        self.eof = False

    def _fill(self) -> bool:
        try:
            chunk = self._recv()
        except ConnectionResetError:  # an abortive close (RST) ends the stream too
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_response(self, method: str = "GET") -> RawResponse:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise IncompleteResponse(self.buf)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        resp = parse_head(head + b"\r\n\r\n")
        code = resp.status
        if method == "HEAD" or code in (204, 304) or 100 <= code < 200:
            return resp
        cl = resp.headers.get("content-length")
        if cl is None:
            while self._fill():
                pass
            resp.body, self.buf = self.buf, b""
            return resp
        n = int(cl)
        while len(self.buf) < n:
            if not self._fill():
                raise IncompleteResponse(resp.head + self.buf)
        resp.body, self.buf = self.buf[:n], self.buf[n:]
        return resp


class RawConn:
    """A keep-alive client on one socket, requests written exactly as given."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = RawReader(lambda: self.sock.recv(262144))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> RawResponse:
        self.send(build_request(method, path, headers))
        return self.reader.read_response(method)

    def closed_by_peer(self, timeout: float = 2.0) -> bool:
        """True if the server closes (EOF or reset) within ``timeout`` and sends nothing more."""
        if self.reader.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_request(
    method: str, target: str, headers: dict[str, str] | None = None, version: str = "HTTP/1.1"
) -> bytes:
    hdrs = {"Host": "cdn.test", **(headers or {})}
    lines = [f"{method} {target} {version}"] + [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_all(data: bytes, methods: list[str]) -> list[RawResponse]:
    """Responses to pipelined requests (``methods`` in order) from one captured byte string."""
    chunks = [data]

    def recv() -> bytes:
        return chunks.pop() if chunks else b""

    reader = RawReader(recv)
    return [reader.read_response(m) for m in methods]


class _Gate:
    """Counts connections that are open and waiting; opens for all of them at once."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.ready = 0
        self.failed = 0


async def _one_async(
    port: int, raw: bytes, method: str, gate: _Gate, timeout: float
) -> RawResponse | Exception:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, TimeoutError) as exc:
        gate.failed += 1
        return exc
    gate.ready += 1
    try:
        await asyncio.wait_for(gate.event.wait(), timeout)
        writer.write(raw)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        resp = parse_head(head)
        if method != "HEAD" and resp.status not in (204, 304):
            n = int(resp.headers.get("content-length", "0"))
            resp.body = await asyncio.wait_for(reader.readexactly(n), timeout)
        return resp
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        return exc
    finally:
        writer.close()


def simultaneous(
    port: int, requests: list[tuple[str, dict[str, str]]], timeout: float = 30.0
) -> list[RawResponse | Exception]:
    """Open one connection per request first, then release every request at the same moment.

    Each request is sent whole in one write on its own connection; the answers (or the
    exception each connection ended with) come back in request order. Every wait is bounded
    by ``timeout``.
    """

    async def main() -> list[RawResponse | Exception]:
        gate = _Gate()
        tasks = [
            asyncio.create_task(_one_async(port, build_request("GET", path, hdrs), "GET", gate, timeout))
            for path, hdrs in requests
        ]
        deadline = time.monotonic() + timeout
        while gate.ready + gate.failed < len(tasks) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        gate.event.set()
        return list(await asyncio.gather(*tasks))

    return asyncio.run(main())


def http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


class ScriptedUpstream:
    """A tiny raw-socket HTTP/1.1 upstream for misbehaviour nginx cannot be made to show.

    By path prefix: ``/trunc/N/...`` promises Content-Length N, sends N // 2 bytes, then closes;
    ``/hang/...`` reads the request and never answers (until stopped); ``/ok/N/...`` answers
    N bytes properly; ``/chunked/N/...`` sends N bytes chunked (no Content-Length);
    ``/chunktrunc/N/...`` sends half of them chunked, then closes without the last chunk;
    ``/late/N/...`` answers like ``/ok/`` once ``release`` is set (at most 10 s); anything else
    404. The bytes are ``content_bytes(path, N)``, as ``Nginx.put(path, N)`` writes them.
    With ``hang_all`` set every request hangs. Every request is counted by path. One thread per
    connection; everything ends when the context exits.
    """

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.hits: dict[str, int] = {}
        self.hang_all = False
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, path: str) -> int:
        with self._lock:
            return self.hits.get(path, 0)

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        with conn:
            buf = b""
            deadline = time.monotonic() + 10
            while b"\r\n\r\n" not in buf and time.monotonic() < deadline and not self.stopping.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
            if b"\r\n\r\n" not in buf:
                return
            method, target = buf.split(b"\r\n", 1)[0].decode("latin-1").split(" ")[:2]
            path = target.split("?", 1)[0]
            with self._lock:
                self.hits[path] = self.hits.get(path, 0) + 1
            parts = path.split("/")
            try:
                if path.startswith("/hang/") or self.hang_all:
                    self.stopping.wait(30)
                    return
                if path.startswith(("/chunked/", "/chunktrunc/")) and len(parts) > 2 and parts[2].isdigit():
                    n = int(parts[2])
                    body = content_bytes(path, n)
                    head = (
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    )
                    if method == "HEAD":
                        conn.sendall(head)
                        return
                    conn.sendall(head)
                    send = body if path.startswith("/chunked/") else body[: n // 2]
                    for i in range(0, len(send), 50_000):
                        piece = send[i : i + 50_000]
                        conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    if path.startswith("/chunked/"):
                        conn.sendall(b"0\r\n\r\n")
                    return
                if path.startswith("/late/"):
                    self.release.wait(10)
                if path.startswith(("/trunc/", "/ok/", "/late/")) and len(parts) > 2 and parts[2].isdigit():
                    n = int(parts[2])
                    body = content_bytes(path, n)
                    head = (
                        f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                        f'Content-Length: {n}\r\nETag: "scripted-{n}"\r\n'
                        f"Last-Modified: {http_date(1_700_000_000)}\r\nConnection: close\r\n\r\n"
                    ).encode()
                    if method == "HEAD":
                        conn.sendall(head)
                    elif path.startswith("/trunc/"):
                        conn.sendall(head + body[: n // 2])
                    else:
                        conn.sendall(head + body)
                    return
                msg = b"not here\n"
                conn.sendall(
                    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                    b"Connection: close\r\n\r\n%s" % (len(msg), b"" if method == "HEAD" else msg)
                )
            except OSError:
                return

    def __enter__(self) -> ScriptedUpstream:
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.sock.close()
        self._acceptor.join(5)
        for t in self._threads:
            t.join(5)
