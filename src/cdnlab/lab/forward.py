"""A TCP forwarder: the AWS emulator listens on loopback; the lab's hosts reach it through this on
the controller's lab address. Stopping it is the "origin unreachable" drill (connections are
refused at once, as from a dead origin).

    python -m cdnlab.lab.forward 10.203.50.1:4566 127.0.0.1:4566
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*target)
        except OSError:
            cw.close()
            return
        await asyncio.gather(_pipe(cr, uw), _pipe(ur, cw))

    server = await asyncio.start_server(handle, *listen, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m cdnlab.lab.forward LISTEN_HOST:PORT TARGET_HOST:PORT", file=sys.stderr)
        return 2
    asyncio.run(_serve(_addr(args[0]), _addr(args[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
