"""Bench actors, importable by workers (so nothing travels by value) and written on the public API only.

A ``Driver`` runs inside a worker and times each scenario there, so the node's own hop (the calling
process) stays out of every figure. A scenario that ends with a message from elsewhere (a sink that
has counted everything, a ring token that ran out) answers through ``NoReply`` + ``reply`` once the
``("done", ...)`` info message arrives.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import tracemalloc
from typing import Any

import psutil

from kernel import Actor, NoReply, Pid

YIELD_EVERY = 1000
"""Cross-worker casts yield to the loop this often, so the kernel can flush a frame while the sender
runs, as a real sender that awaits anything would let it (the floor drains once per 100-message frame)."""


class Idle(Actor):
    """An actor that never gets a message: what spawn and memory per idle actor measure."""


class Echo(Actor):
    """Answers every call with its request."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        return request


class Sink(Actor):
    """Counts casts and tells ``notify`` once ``expected`` arrived."""

    async def init(self, expected: int, notify: Pid) -> None:
        self.left = expected
        self.notify = notify

    async def handle_cast(self, message: Any) -> None:
        self.left -= 1
        if self.left == 0:
            self.send(self.notify, ("done", None))


class RingNode(Actor):
    """One link of the ring: an int token is passed on decremented; at 0 the driver is told."""

    async def init(self, driver: Pid, next_pid: Pid | None = None) -> None:
        self.driver = driver
        self.next = next_pid

    async def handle_cast(self, message: Any) -> None:
        if message:
            self.cast(self.next, message - 1)
        else:
            self.send(self.driver, ("done", None))

    async def handle_call(self, request: Any, caller: Any) -> Any:
        _, self.next = request  # ("next", pid) closes the ring
        return None


class Caller(Actor):
    """One of many concurrent callers: makes ``count`` sequential calls, then tells the driver."""

    async def handle_cast(self, message: Any) -> None:
        target, count, driver = message
        for i in range(count):
            await self.call(target, i, timeout=60.0)
        self.send(driver, ("done", None))


class Driver(Actor):
    """Runs one timed scenario per call, on its own worker, and replies with a dict of figures."""

    async def init(self) -> None:
        self.pending: tuple[Any, float, int, list[Pid]] | None = None  # caller, t0, waits left, to kill

    async def handle_call(self, request: Any, caller: Any) -> Any:
        kind, n, *rest = request
        if kind == "local_cast":
            return await self._cast(caller, n, worker=None, yield_every=0)
        if kind == "cross_cast":
            return await self._cast(caller, n, worker=rest[0], yield_every=YIELD_EVERY)
        if kind == "call":
            return await self._call(n, worker=rest[0])
        if kind == "call_many":
            return await self._call_many(caller, n, worker=rest[0], callers=rest[1])
        if kind == "spawn":
            return await self._spawn(n)
        if kind == "memory":
            return await self._memory(n)
        if kind == "ring":
            return await self._ring(caller, n, size=rest[0], workers=rest[1])
        raise ValueError(f"unknown scenario {kind!r}")

    async def handle_info(self, message: Any) -> None:
        if not (isinstance(message, tuple) and message[0] == "done" and self.pending):
            return
        caller, t0, left, spawned = self.pending
        if left > 1:
            self.pending = (caller, t0, left - 1, spawned)
            return
        seconds = time.perf_counter() - t0
        self.pending = None
        self._kill(spawned)
        self.reply(caller, {"seconds": seconds})

    def _kill(self, pids: list[Pid]) -> None:
        for pid in pids:
            self.exit(pid, "kill")

    async def _cast(self, caller: Any, n: int, worker: int | None, yield_every: int) -> Any:
        sink = await self.spawn(Sink, n, self.pid, worker=worker)
        cast = self.cast
        self.pending = (caller, time.perf_counter(), 1, [sink])
        if yield_every:
            for start in range(0, n, yield_every):
                for i in range(start, min(start + yield_every, n)):
                    cast(sink, i)
                await asyncio.sleep(0)
        else:
            for i in range(n):
                cast(sink, i)
        return NoReply

    async def _call(self, n: int, worker: int | None) -> Any:
        echo = await self.spawn(Echo, worker=worker)
        call = self.call
        t0 = time.perf_counter()
        for i in range(n):
            await call(echo, i)
        seconds = time.perf_counter() - t0
        self._kill([echo])
        return {"seconds": seconds}

    async def _call_many(self, caller: Any, n: int, worker: int, callers: int) -> Any:
        echo = await self.spawn(Echo, worker=worker)
        pids = [await self.spawn(Caller) for _ in range(callers)]
        self.pending = (caller, time.perf_counter(), callers, [echo, *pids])
        for pid in pids:
            self.cast(pid, (echo, n // callers, self.pid))
        return NoReply

    async def _spawn(self, n: int) -> Any:
        spawn = self.spawn
        t0 = time.perf_counter()
        pids = [await spawn(Idle) for _ in range(n)]
        seconds = time.perf_counter() - t0
        self._kill(pids)
        return {"seconds": seconds}

    async def _memory(self, n: int) -> Any:
        """Traced bytes per idle actor (what the floor measures too) and the worker's RSS growth.

        RSS only means something on the first run in a fresh worker: freed arenas are reused after.
        """
        gc.collect()
        rss0 = psutil.Process().memory_info().rss
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            pids = [await self.spawn(Idle) for _ in range(n)]
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - before - sys.getsizeof(pids)
        finally:
            tracemalloc.stop()
        rss = psutil.Process().memory_info().rss - rss0
        self._kill(pids)
        return {"bytes_per_actor": used / n, "rss_per_actor": rss / n}

    async def _ring(self, caller: Any, hops: int, size: int, workers: int) -> Any:
        mine = self.pid.worker
        first = last = await self.spawn(RingNode, self.pid, worker=mine)
        pids = [first]
        for i in range(size - 1, 0, -1):  # built backwards: each node knows the one after it
            first = await self.spawn(RingNode, self.pid, first, worker=(mine + i) % workers)
            pids.append(first)
        await self.call(last, ("next", first))  # closed before the token can get there
        self.pending = (caller, time.perf_counter(), 1, pids)
        self.cast(first, hops)
        return NoReply
