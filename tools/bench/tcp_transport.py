"""The kernel's transport alone over loopback TCP, the twin of the ``tcp_stream``/``tcp_roundtrip`` floors.

A :class:`Peer` and a :class:`Listener` on :class:`TcpAddress` in each of two processes (this one and a
child started as ``python -m tools.bench.tcp_transport MODE PORT BACK N``), node ids 1 and 2, so every
frame takes the cross-node path (the handshake's node id selects the ``remote`` dispatch). No actors:
this is what a cross-node call or cast costs in the transport, against plain uvloop protocols doing the
same work. Like the floors, each function runs on its own fresh uvloop loop (the runner calls it from a
thread) and the child's start-up stays outside the timed interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvloop

from kernel.transport.sockets import Listener, Peer
from kernel.transport.tcp import TcpAddress
from tools.bench.figure import Figure
from tools.bench.floors import REPO_ROOT, run_uvloop

HOST = "127.0.0.1"
_SECRET_ENV = "PYOTP_BENCH_SECRET"
_START = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class _Inbox:
    """The parent's dispatch: one envelope awaited at a time."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.waiter: asyncio.Future[Any] = self._loop.create_future()

    def __call__(self, envelope: Any) -> None:
        self.waiter.set_result(envelope)

    async def next(self) -> Any:
        value = await self.waiter
        self.waiter = self._loop.create_future()
        return value


def _ignore_lost(index: int, inc: int) -> None:
    """on_lost: called for peers of our own node only, and there are none here."""


@contextlib.asynccontextmanager
async def _child(mode: str, n: int) -> AsyncIterator[tuple[Peer, _Inbox]]:
    """Start the child, wait for it to listen and say ready; yield our peer to it and our inbox."""
    secret = os.urandom(32)
    inbox = _Inbox()
    back, port = _free_port(), _free_port()
    listener = Listener(TcpAddress(HOST, back), secret, inbox, _ignore_lost, node=1,
                        remote=lambda node, index, inc: inbox)
    await listener.start()
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    child = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the wait below is off-loop
        [sys.executable, "-m", "tools.bench.tcp_transport", mode, str(port), str(back), str(n)],
        env=dict(os.environ, PYTHONPATH=pythonpath, **{_SECRET_ENV: secret.hex()}),
    )
    peer = Peer(TcpAddress(HOST, port), secret, (0, 0), node=1)
    try:
        if await asyncio.wait_for(inbox.next(), _START) != ("ready",):
            raise RuntimeError("bench child did not say ready")
        if not await peer.connected():
            raise RuntimeError("could not connect to the bench child")
        yield peer, inbox
        peer.post(("stop",))
    finally:
        peer.close()
        listener.close()
        try:
            await asyncio.to_thread(child.wait, 10)
        except subprocess.TimeoutExpired:
            child.kill()
            await asyncio.to_thread(child.wait)


def peer_call(n: int) -> Figure:
    """Sequential request/reply through Peer/Listener over TCP, n times (round trips/s, ``mean_us``)."""

    async def main() -> Figure:
        async with _child("echo", n) as (peer, inbox):
            post, receive = peer.post, inbox.next
            t0 = time.perf_counter()
            for i in range(n):
                post(("call", i, 12345))
                await receive()
            dt = time.perf_counter() - t0
        return Figure.rate(n, dt, "call/s", mean_us=dt / n * 1e6)

    return run_uvloop(main)


def peer_cast(n: int) -> Figure:
    """n casts through Peer/Listener over TCP, the sender yielding only to backpressure (msgs/s, until
    the child acknowledges the last one)."""

    async def main() -> Figure:
        async with _child("sink", n) as (peer, inbox):
            post = peer.post
            t0 = time.perf_counter()
            for i in range(n):
                post(("cast", i))
                if peer.busy:
                    await peer.drained()
            await inbox.next()
            dt = time.perf_counter() - t0
        return Figure.rate(n, dt, "msg/s")

    return run_uvloop(main)


async def _serve(mode: str, port: int, back: int, n: int) -> None:
    """The child: echo each call, or count casts and acknowledge the n-th; stop when told."""
    loop = asyncio.get_running_loop()
    secret = bytes.fromhex(os.environ[_SECRET_ENV])
    stopped: asyncio.Future[None] = loop.create_future()
    out = Peer(TcpAddress(HOST, back), secret, (0, 0), node=2)
    left = n

    def dispatch(envelope: Any) -> None:
        nonlocal left
        if envelope[0] == "stop":
            stopped.set_result(None)
        elif mode == "echo":
            _, value, ref = envelope
            out.post((ref, value))
        else:
            left -= 1
            if left == 0:
                out.post(("ack",))

    def remote(node: int, index: int, inc: int) -> Callable[[Any], None]:
        return dispatch

    listener = Listener(TcpAddress(HOST, port), secret, dispatch, _ignore_lost, node=2, remote=remote)
    await listener.start()
    out.post(("ready",))
    await stopped
    out.close()
    listener.close()


if __name__ == "__main__":
    uvloop.run(_serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
