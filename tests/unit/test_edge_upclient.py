"""The lean upstream client against a scripted HTTP/1.1 server on loopback."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from cdnlab.edge.upclient import BodyError, Client

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


class Server:
    """Counts connections; answers each with ``script``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.script(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


async def read_all(client: Client, url: str, path: str) -> tuple[int, bytes]:
    resp = await client.request(url, path, {"User-Agent": "t"})
    try:
        return resp.status, await resp.read(1 << 24)
    finally:
        resp.release()


def test_keep_alive_connection_is_reused_and_the_request_is_well_formed() -> None:
    requests: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            req = await read_request(reader)
            requests.append(req)
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "e"\r\n\r\nhello')
            await writer.drain()

    async def main() -> None:
        async with Server(script) as s:
            client = Client(1.0, 2.0)
            for i in range(5):
                status, body = await read_all(client, s.url, f"/a/{i}.bin?x=1")
                assert (status, body) == (200, b"hello")
            assert s.connections == 1
            first = requests[0].decode()
            assert first.startswith("GET /a/0.bin?x=1 HTTP/1.1\r\n")
            port = s.url.rsplit(":", 1)[1]
            assert f"\r\nHost: 127.0.0.1:{port}\r\n" in first and "\r\nUser-Agent: t\r\n" in first
            client.close()

    run(main())


def test_idle_connection_closed_by_upstream_is_replaced() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # then close the kept-alive connection, as an upstream's keepalive_timeout would

    async def main() -> None:
        async with Server(script) as s:
            client = Client(1.0, 2.0)
            assert await read_all(client, s.url, "/1") == (200, b"ok")
            await asyncio.sleep(0.1)  # the close reaches us while idle
            assert await read_all(client, s.url, "/2") == (200, b"ok")
            assert s.connections == 2
            client.close()

    run(main())


def test_stale_connection_closed_when_the_request_arrives_is_retried_once() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # the second request on this connection: hang up unanswered
        writer.transport.abort()

    async def main() -> None:
        async with Server(script) as s:
            client = Client(1.0, 2.0)
            assert await read_all(client, s.url, "/1") == (200, b"ok")
            assert await read_all(client, s.url, "/2") == (200, b"ok")
            assert s.connections == 2
            client.close()

    run(main())


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 50,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["content-length", "chunked"],
)
def test_truncated_body_raises(answer: bytes) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async def main() -> None:
        async with Server(script) as s:
            client = Client(1.0, 2.0)
            resp = await client.request(s.url, "/t", {})
            assert resp.status == 200
            with pytest.raises(BodyError):
                await resp.read(1 << 20)
            resp.release()
            client.close()

    run(main())


def test_chunked_and_close_delimited_bodies_are_read_whole() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world",
    ]

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answers.pop(0))
        await writer.drain()

    async def main() -> None:
        async with Server(script) as s:
            client = Client(1.0, 2.0)
            resp = await client.request(s.url, "/c", {})
            assert resp.content_length is None
            assert await resp.read(1 << 20) == b"hello world"
            resp.release()
            assert await read_all(client, s.url, "/d") == (200, b"hello world")
            client.close()

    run(main())


def test_silent_upstream_times_out() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def main() -> None:
        async with Server(script) as s:
            client = Client(1.0, 0.3)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                await client.request(s.url, "/slow", {})
            assert 0.25 < loop.time() - started < 2
            client.close()

    run(main())


def test_stall_mid_body_times_out() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)

    async def main() -> None:
        async with Server(script) as s:
            client = Client(1.0, 0.3)
            resp = await client.request(s.url, "/stall", {})
            with pytest.raises(TimeoutError):  # 3 of 10 bytes, then silence
                await resp.read_chunk(100)
            resp.release()
            client.close()

    run(main())


def test_refused_connection_raises_oserror() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused

        async def main() -> None:
            client = Client(1.0, 1.0)
            with pytest.raises(OSError):
                await client.request(f"http://127.0.0.1:{port}", "/", {})

        run(main())


def test_garbage_answer_is_a_body_error() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        async with Server(script) as s:
            client = Client(1.0, 1.0)
            with pytest.raises(BodyError):
                await client.request(s.url, "/", {})
            client.close()

    run(main())


def test_body_is_read_in_whole_chunks_not_per_tcp_read() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n")
        for i in range(30):  # 30 small writes with pauses: 30 TCP reads on the other side
            writer.write(bytes([65 + i % 26]) * 100)
            await writer.drain()
            await asyncio.sleep(0.005)

    async def main() -> None:
        async with Server(script) as s:
            client = Client(1.0, 2.0)
            resp = await client.request(s.url, "/w", {})
            chunks = []
            while chunk := await resp.read_chunk(1000):
                chunks.append(chunk)
            assert [len(c) for c in chunks] == [1000, 1000, 1000]
            assert b"".join(chunks) == b"".join(bytes([65 + i % 26]) * 100 for i in range(30))
            resp.release()
            client.close()

    run(main())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_https_upstream_is_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "up.crt", tmp_path / "up.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def main(trusted: bool) -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        client = Client(2.0, 2.0)
        try:
            if trusted:
                assert await read_all(client, f"https://localhost:{port}", "/s") == (200, b"secret")
            else:
                with pytest.raises(OSError):  # ssl.SSLCertVerificationError
                    await client.request(f"https://localhost:{port}", "/s", {})
        finally:
            client.close()
            server.close()

    run(main(trusted=False))  # the system's CAs do not know this certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now they do (OpenSSL's default verify paths)
    run(main(trusted=True))
