"""A TCP-to-Unix-socket relay, run inside a network namespace: ``python -m tests.support.unix_relay
PORT SOCKET``.

It listens on ``127.0.0.1:PORT`` of the namespace it runs in and pipes each connection to the Unix
socket ``SOCKET`` (PostgreSQL's, whose path the namespace shares with the host: network namespaces do
not separate path-named sockets). So a node in that namespace reaches the database at the same DSN as
everyone else, over its own loopback, and nothing else on the host. It prints ``ready`` once listening.
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


async def _serve(port: int, path: str) -> None:
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(path)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(relay, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]), sys.argv[2]))
