"""Which way of driving TLS from uvloop is fastest for the edge's data path? One run, three servers.

    .venv/bin/python bench/tls_transport.py [--duration 4] [--rounds 3]

The same tiny HTTP/1.1 server (any GET answered with a fixed body, keep-alive, body written in
64 KiB chunks with back-pressure) three ways, one process each, loaded by wrk over https:
  sslsocket — a non-blocking ssl.SSLSocket on the raw fd, add_reader/add_writer (what tlsconn.py does)
  memorybio — ssl.SSLObject + MemoryBIO pair, the raw socket read and written by us
  protocol  — uvloop's own TLS: loop.create_server(ssl=...) with a Protocol, pause_writing honoured
Reports req/s for a 4 KiB and a 2 MiB body, medians of alternating rounds, each relative to
sslsocket.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from edge_tls import make_cert  # noqa: E402
from edge_vs_nginx import wrk  # noqa: E402

CHUNK = 64 * 1024
BODIES = {b"/4k": os.urandom(4096), b"/2m": os.urandom(2 * 1024 * 1024)}


def head(n: int) -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
    )


def requests_in(buf: bytearray) -> list[bytes]:
    """Complete request heads in ``buf`` (consumed), as their paths."""
    out = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return out
        line = bytes(buf[: buf.find(b"\r\n")])
        del buf[: end + 4]
        out.append(line.split(b" ")[1])


class Pending:
    """Response bytes still to send: headers, then body chunks, never more than CHUNK at a time."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes, int]] = []  # (data, offset)

    def add(self, path: bytes) -> None:
        body = BODIES.get(path, BODIES[b"/4k"])
        self.items.append((head(len(body)), 0))
        self.items.append((body, 0))

    def next_chunk(self) -> memoryview | None:
        while self.items:
            data, off = self.items[0]
            if off < len(data):
                return memoryview(data)[off : off + CHUNK]
            self.items.pop(0)
        return None

    def advance(self, n: int) -> None:
        data, off = self.items[0]
        self.items[0] = (data, off + n)


class SockConn:
    def __init__(self, loop: asyncio.AbstractEventLoop, ssock: ssl.SSLSocket) -> None:
        self.loop, self.s, self.fd = loop, ssock, ssock.fileno()
        self.buf = bytearray()
        self.out = Pending()
        self.shaken = False
        self.writing = False
        loop.add_reader(self.fd, self.on_read)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        if self.writing:
            self.loop.remove_writer(self.fd)
        self.s.close()

    def on_read(self) -> None:
        try:
            if not self.shaken:
                self.s.do_handshake()
                self.shaken = True
            while True:
                data = self.s.recv(65536)
                if not data:
                    self.close()
                    return
                self.buf += data
                if not self.s.pending():
                    break
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except (ssl.SSLError, OSError):
            self.close()
            return
        for p in requests_in(self.buf):
            self.out.add(p)
        self.flush()

    def flush(self) -> None:
        try:
            while (chunk := self.out.next_chunk()) is not None:
                self.out.advance(self.s.send(chunk))
        except ssl.SSLWantWriteError:
            if not self.writing:
                self.writing = True
                self.loop.add_writer(self.fd, self.flush)
            return
        except (ssl.SSLError, OSError):
            self.close()
            return
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.fd)


class BioConn:
    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, ctx: ssl.SSLContext) -> None:
        self.loop, self.sock, self.fd = loop, sock, sock.fileno()
        self.inc, self.outb = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.outb, server_side=True)
        self.buf = bytearray()
        self.out = Pending()
        self.wire = b""  # ciphertext the socket did not take yet
        self.shaken = False
        self.writing = False
        loop.add_reader(self.fd, self.on_read)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        if self.writing:
            self.loop.remove_writer(self.fd)
        self.sock.close()

    def on_read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()
            return
        self.inc.write(data)
        try:
            if not self.shaken:
                self.obj.do_handshake()
                self.shaken = True
            while True:
                self.buf += self.obj.read(65536)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            self.close()
            return
        for p in requests_in(self.buf):
            self.out.add(p)
        self.flush()

    def flush(self) -> None:
        while True:
            if not self.wire:
                self.wire = self.outb.read()
                if not self.wire:
                    chunk = self.out.next_chunk()
                    if chunk is None:
                        break
                    self.out.advance(self.obj.write(chunk))
                    continue
            try:
                n = self.sock.send(self.wire)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self.close()
                return
            self.wire = self.wire[n:]
            if self.wire:
                if not self.writing:
                    self.writing = True
                    self.loop.add_writer(self.fd, self.flush)
                return
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.fd)


class Proto(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = bytearray()
        self.out = Pending()
        self.paused = False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for p in requests_in(self.buf):
            self.out.add(p)
        self.flush()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.flush()

    def flush(self) -> None:
        while not self.paused and (chunk := self.out.next_chunk()) is not None:
            self.t.write(bytes(chunk))
            self.out.advance(len(chunk))


def serve(mode: str, port: int, cert: str, key: str) -> None:
    import uvloop

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if mode == "protocol":
            await loop.create_server(Proto, "127.0.0.1", port, ssl=ctx, backlog=1024)
        else:
            lsock = socket.create_server(("127.0.0.1", port), backlog=1024)
            lsock.setblocking(False)

            def accept() -> None:
                for _ in range(64):
                    try:
                        sock, _ = lsock.accept()
                    except BlockingIOError:
                        return
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if mode == "sslsocket":
                        SockConn(loop, ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False))
                    else:
                        BioConn(loop, sock, ctx)

            loop.add_reader(lsock.fileno(), accept)
        await asyncio.Event().wait()

    uvloop.run(main())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--serve", nargs=4, metavar=("MODE", "PORT", "CERT", "KEY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        mode, port, cert, key = args.serve
        serve(mode, int(port), cert, key)
        return 0
    modes = ("sslsocket", "memorybio", "protocol")
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(Path(tmp))
        procs, ports = [], {}
        try:
            for mode in modes:
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                ports[mode] = s.getsockname()[1]
                s.close()
                cmd = [sys.executable, __file__, "--serve", mode, str(ports[mode]), str(cert), str(key)]
                procs.append(subprocess.Popen(cmd))
            time.sleep(1.5)
            for path in ("/4k", "/2m"):
                runs: dict[str, list[float]] = {m: [] for m in modes}
                for _ in range(args.rounds):
                    for mode in modes:
                        url = f"https://127.0.0.1:{ports[mode]}{path}"
                        runs[mode].append(wrk(url, "", args.duration, args.connections, 1).rps)
                med = {m: statistics.median(v) for m, v in runs.items()}
                print(
                    f"{path}: "
                    + "  ".join(f"{m} {med[m]:.0f} req/s ({med[m] / med['sslsocket']:.2f})" for m in modes),
                    flush=True,
                )
        finally:
            for p in procs:
                p.terminate()
                p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
