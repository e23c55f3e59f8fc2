"""A TCP relay to PostgreSQL for tests: ``python -m tests.support.unix_relay PORT UPSTREAM``.

It listens on ``127.0.0.1:PORT`` of the network namespace it runs in and pipes each connection to
``UPSTREAM``: a Unix socket path (PostgreSQL's, whose path a namespace shares with the host: network
namespaces do not separate path-named sockets), or ``host:port``. So a node in that namespace reaches the
database over its own loopback and nothing else on the host. It prints ``ready`` once listening.

A line ``delay SECONDS`` on stdin makes every connection opened from then on wait that long before it is
piped (a slow database connect, for races against it); ``delay 0`` ends that.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


async def _serve(port: int, upstream: str) -> None:
    delay = [0.0]

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if delay[0]:
            await asyncio.sleep(delay[0])  # the fault itself: a connect that takes this long
        try:
            if upstream.startswith("/"):
                up_reader, up_writer = await asyncio.open_unix_connection(upstream)
            else:
                host, _, up_port = upstream.rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(host, int(up_port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    server = await asyncio.start_server(relay, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        while line := await commands.readline():
            word, _, value = line.decode().partition(" ")
            if word == "delay":
                delay[0] = float(value)
                print("ok", flush=True)


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]), sys.argv[2]))
