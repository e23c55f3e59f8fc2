"""Child side of the cross-process floors, run as ``python -m tools.bench._peer MODE PATH N``.

PATH is a Unix socket path, or ``tcp:HOST:PORT`` for the loopback TCP floors (the cross-node ones).

A fresh interpreter (not a fork of a process with a running loop) on uvloop, as a kernel worker is.
Both ends use a plain ``asyncio.Protocol`` with one receive buffer, the tightest ordinary way to frame
a stream (asyncio streams' ``readexactly`` costs ~40% more per round trip here), so the floor is not
lax. Every frame is a 4-byte little-endian length and a body. ``sink`` bodies hold length-prefixed
pickles and are unpickled one by one, then the child acknowledges after N messages; ``echo`` answers
each pickled request with a pickled reply.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
import sys
from typing import cast

import uvloop

HEADER = struct.Struct("<I")
READY, ACK = b"r", b"k"


class FrameProtocol(asyncio.Protocol):
    """Splits the byte stream into frames and hands each body to ``frame``."""

    transport: asyncio.Transport

    def __init__(self) -> None:
        self.buf = bytearray()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        start, end = 0, len(buf)
        while end - start >= 4:
            (size,) = HEADER.unpack_from(buf, start)
            if end - start - 4 < size:
                break
            self.frame(memoryview(buf)[start + 4 : start + 4 + size])
            start += 4 + size
        if start:
            del buf[:start]

    def send(self, body: bytes) -> None:
        self.transport.write(HEADER.pack(len(body)) + body)

    def frame(self, body: memoryview) -> None:
        raise NotImplementedError


class Sink(FrameProtocol):
    """Unpickle every message of every frame; acknowledge once all n arrived."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    def frame(self, body: memoryview) -> None:
        loads, unpack_from = pickle.loads, HEADER.unpack_from
        off, size = 0, len(body)
        while off < size:
            (length,) = unpack_from(body, off)
            off += 4
            loads(body[off : off + length])
            off += length
            self.left -= 1
        body.release()
        if self.left <= 0:
            self.send(ACK)


class Echo(FrameProtocol):
    """Reply to each request with a freshly pickled (ref, value) term."""

    def frame(self, body: memoryview) -> None:
        _, value, ref = pickle.loads(body)
        body.release()
        self.send(pickle.dumps((ref, value), pickle.HIGHEST_PROTOCOL))


async def main(mode: str, path: str, n: int) -> None:
    loop = asyncio.get_running_loop()
    def factory() -> FrameProtocol:
        return Sink(n) if mode == "sink" else Echo()

    if path.startswith("tcp:"):
        host, _, port = path[4:].rpartition(":")
        _, proto = await loop.create_connection(factory, host, int(port))  # TCP_NODELAY: set by uvloop
    else:
        _, proto = await loop.create_unix_connection(factory, path)
    proto.send(READY)
    await proto.closed  # the parent closes first, so it times nothing of our exit


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
