"""Raw floors: plain Python on uvloop with no actor framework, one function per kernel scenario.

Each function is synchronous and runs its own fresh uvloop loop, so the runner can call it from a
thread while a Node is up and measure floor and kernel in the same sitting. Cross-process floors talk
to a child started with ``subprocess`` running ``python -m tools.bench._peer`` (never a fork of a
process with a running loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import pickle
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from tools.bench._peer import HEADER, READY, FrameProtocol
from tools.bench.figure import Figure

T = TypeVar("T")
PER_FRAME = 100  # messages per frame in the streaming floor, each pickled on its own
REPO_ROOT = Path(__file__).resolve().parents[2]


def run_uvloop(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one coroutine on a fresh uvloop loop (safe in any thread that has no running loop)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro_fn())


# ---------------------------------------------------------------- same process


def queue_one_way(n: int) -> Figure:
    """Floor of local cast: a producer puts n items on an asyncio.Queue, a consumer takes them (msgs/s)."""

    async def main() -> Figure:
        q: asyncio.Queue[int] = asyncio.Queue()

        async def consumer() -> None:
            got = 0
            while got < n:
                await q.get()
                got += 1

        async def producer() -> None:
            put = q.put_nowait
            for i in range(n):
                put(i)

        t0 = time.perf_counter()
        await asyncio.gather(consumer(), producer())
        return Figure.rate(n, time.perf_counter() - t0, "msg/s")

    return run_uvloop(main)


def ping_pong(n: int) -> Figure:
    """Floor of local call: two tasks bounce a value through two queues (round trips/s)."""

    async def main() -> Figure:
        requests: asyncio.Queue[int] = asyncio.Queue()
        replies: asyncio.Queue[int] = asyncio.Queue()

        async def server() -> None:
            while True:
                replies.put_nowait(await requests.get())

        task = asyncio.create_task(server())
        t0 = time.perf_counter()
        for i in range(n):
            requests.put_nowait(i)
            await replies.get()
        dt = time.perf_counter() - t0
        task.cancel()
        return Figure.rate(n, dt, "call/s")

    return run_uvloop(main)


def future_per_call(n: int) -> Figure:
    """Second floor of local call: one queue to the server and a fresh Future per call (calls/s)."""

    async def main() -> Figure:
        loop = asyncio.get_running_loop()
        requests: asyncio.Queue[tuple[int, asyncio.Future[int]]] = asyncio.Queue()

        async def server() -> None:
            while True:
                value, fut = await requests.get()
                fut.set_result(value)

        task = asyncio.create_task(server())
        t0 = time.perf_counter()
        for i in range(n):
            fut: asyncio.Future[int] = loop.create_future()
            requests.put_nowait((i, fut))
            await fut
        dt = time.perf_counter() - t0
        task.cancel()
        return Figure.rate(n, dt, "call/s")

    return run_uvloop(main)


async def _idle(q: asyncio.Queue[object]) -> None:
    """The body of a bare 'actor': a task parked on its own queue."""
    while True:
        await q.get()


def spawn_task_queue(n: int) -> Figure:
    """Floor of spawn: n bare tasks each parked on its own asyncio.Queue (tasks/s, until all are parked)."""

    async def main() -> Figure:
        queues: list[asyncio.Queue[object]] = []
        tasks: list[asyncio.Task[None]] = []
        t0 = time.perf_counter()
        for _ in range(n):
            q: asyncio.Queue[object] = asyncio.Queue()
            queues.append(q)
            tasks.append(asyncio.create_task(_idle(q)))
        await asyncio.sleep(0)  # every task runs to its first await and parks
        dt = time.perf_counter() - t0
        await _cancel_all(tasks)
        return Figure.rate(n, dt, "spawn/s")

    return run_uvloop(main)


def memory_task_queue(n: int) -> Figure:
    """Floor of memory per idle actor: traced bytes per parked task+Queue (tracemalloc, as in the worker)."""

    async def main() -> Figure:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            queues: list[asyncio.Queue[object]] = []
            tasks: list[asyncio.Task[None]] = []
            for _ in range(n):
                q: asyncio.Queue[object] = asyncio.Queue()
                queues.append(q)
                tasks.append(asyncio.create_task(_idle(q)))
            await asyncio.sleep(0)
            gc.collect()
            # The two bookkeeping lists are the harness's, not the task's: leave them out.
            used = tracemalloc.get_traced_memory()[0] - before - sys.getsizeof(queues) - sys.getsizeof(tasks)
        finally:
            tracemalloc.stop()
        await _cancel_all(tasks)
        return Figure(used / n, "B/actor")

    return run_uvloop(main)


def ring_tasks(n: int, size: int = 1000) -> Figure:
    """Floor of the ring: ``size`` bare tasks pass a countdown token round a ring of queues (hops/s)."""

    async def main() -> Figure:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(size)]

        async def hop(inbox: asyncio.Queue[int], out: asyncio.Queue[int]) -> None:
            while True:
                k = await inbox.get()
                if k == 0:
                    done.set_result(None)
                else:
                    out.put_nowait(k - 1)

        tasks = [asyncio.create_task(hop(queues[i], queues[(i + 1) % size])) for i in range(size)]
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        queues[0].put_nowait(n)
        await done
        dt = time.perf_counter() - t0
        await _cancel_all(tasks)
        return Figure.rate(n, dt, "hop/s")

    return run_uvloop(main)


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------- across processes


class _Parent(FrameProtocol):
    """Parent end: one frame is awaited at a time; ``drain`` honours the transport's flow control."""

    def __init__(self) -> None:
        super().__init__()
        self.waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.resumed: asyncio.Future[None] | None = None

    def frame(self, body: memoryview) -> None:
        self.waiter.set_result(body.tobytes())
        body.release()

    async def next_frame(self) -> bytes:
        data = await self.waiter
        self.waiter = asyncio.get_running_loop().create_future()
        return data

    def pause_writing(self) -> None:
        self.resumed = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.resumed is not None:
            self.resumed.set_result(None)
            self.resumed = None

    async def drain(self) -> None:
        if self.resumed is not None:
            await self.resumed


@contextlib.asynccontextmanager
async def _peer(mode: str, n: int, tcp: bool = False) -> AsyncIterator[_Parent]:
    """Start ``python -m tools.bench._peer MODE`` and yield the connection once the child said ready.

    Over a Unix socket, or with ``tcp`` over loopback TCP (the floors of the cross-node rows). The
    child's interpreter start-up and import time stay outside every timed interval.
    """
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        path = os.path.join(tmp, "s")
        accepted: asyncio.Future[_Parent] = loop.create_future()

        def factory() -> _Parent:
            proto = _Parent()
            if not accepted.done():
                accepted.set_result(proto)
            return proto

        if tcp:  # uvloop sets TCP_NODELAY on both ends
            server = await loop.create_server(factory, "127.0.0.1", 0)
            path = f"tcp:127.0.0.1:{server.sockets[0].getsockname()[1]}"
        else:
            server = await loop.create_unix_server(factory, path)
        pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        child = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the wait below is off-loop
            [sys.executable, "-m", "tools.bench._peer", mode, path, str(n)],
            env=dict(os.environ, PYTHONPATH=pythonpath),
        )
        try:
            proto = await asyncio.wait_for(accepted, 30)
            if await asyncio.wait_for(proto.next_frame(), 30) != READY:
                raise RuntimeError("bench peer did not say ready")
            yield proto
            proto.transport.close()
        finally:
            server.close()
            try:
                await asyncio.to_thread(child.wait, 10)
            except subprocess.TimeoutExpired:
                child.kill()
                await asyncio.to_thread(child.wait)


def socket_stream(n: int, tcp: bool = False) -> Figure:
    """Floor of cross-worker cast: stream n messages to a child, 100 per frame, each pickled on its own.

    Timed from the first write to the child's acknowledgement of the last message (msgs/s).
    """

    async def main() -> Figure:
        async with _peer("sink", n, tcp) as conn:
            dumps, pack = pickle.dumps, HEADER.pack
            proto = pickle.HIGHEST_PROTOCOL
            t0 = time.perf_counter()
            sent = 0
            while sent < n:
                parts: list[bytes] = []
                for i in range(sent, min(sent + PER_FRAME, n)):
                    data = dumps(("cast", i), proto)
                    parts.append(pack(len(data)))
                    parts.append(data)
                sent += PER_FRAME
                conn.send(b"".join(parts))
                await conn.drain()
            await conn.next_frame()
            dt = time.perf_counter() - t0
        return Figure.rate(n, dt, "msg/s")

    return run_uvloop(main)


def socket_roundtrip(n: int, tcp: bool = False) -> Figure:
    """Floor of cross-worker call: a pickled request and a pickled reply over a Unix socket, n times.

    Headline is round trips/s; ``mean_us`` is the mean round-trip time.
    """

    async def main() -> Figure:
        async with _peer("echo", n, tcp) as conn:
            dumps, loads = pickle.dumps, pickle.loads
            proto = pickle.HIGHEST_PROTOCOL
            t0 = time.perf_counter()
            for i in range(n):
                conn.send(dumps(("call", i, 12345), proto))
                loads(await conn.next_frame())
            dt = time.perf_counter() - t0
        return Figure.rate(n, dt, "call/s", mean_us=dt / n * 1e6)

    return run_uvloop(main)


def tcp_stream(n: int) -> Figure:
    """Floor of cross-node cast: ``socket_stream`` over loopback TCP (msgs/s)."""
    return socket_stream(n, tcp=True)


def tcp_roundtrip(n: int) -> Figure:
    """Floor of cross-node call: ``socket_roundtrip`` over loopback TCP (round trips/s, ``mean_us``)."""
    return socket_roundtrip(n, tcp=True)


def dict_lookup(n: int) -> Figure:
    """Context for ``get_or_spawn`` of an existing name: a plain ``dict.get`` of a tuple key (lookups/s).

    Not the base of the ratio: a kernel call cannot be a dict lookup; it shows the distance only.
    """
    table = {("bench-existing", i): i for i in range(1000)}
    key = ("bench-existing", 7)
    get = table.get
    t0 = time.perf_counter()
    for _ in range(n):
        get(key)
    return Figure.rate(n, time.perf_counter() - t0, "lookup/s")


def group_commit_2procs(n: int) -> Figure:
    """Floor of ``durable_50``: the kernel's own ``GroupCommitter`` driven bare (no actors, no messages)
    by 25 asyncio tasks in each of 2 processes on one WAL file, each awaiting durable commits of its own
    key in a loop, for ``n / 10,000`` seconds (at least 0.2). Durable commits/s in total; extras:
    transactions/s and rows per transaction."""
    from tools.bench.checkpoint_store import multi_process

    with tempfile.TemporaryDirectory() as tmp:
        r = multi_process(os.path.join(tmp, "floor.db"), 2, 25, max(n / 10_000, 0.2))
    return Figure(r["durable_per_s"], "call/s", {"commits_per_s": r["commits_per_s"],
                                                 "rows_per_commit": r["rows_per_commit"]})


_CRUNCH = ("import sys, time\n"
           "t0 = time.time(); acc = 0\n"
           "for _ in range(int(sys.argv[1])):\n"
           "    for i in range(20_000): acc += i * i\n"
           "print(t0, time.time())\n")


def _crunch_procs(units: list[int]) -> float:
    """Wall seconds from the first child's start of work to the last one's end (start-up excluded)."""
    children = [subprocess.Popen([sys.executable, "-c", _CRUNCH, str(u)], stdout=subprocess.PIPE, text=True)
                for u in units]
    spans = [tuple(map(float, c.communicate()[0].split())) for c in children]
    return max(end for _, end in spans) - min(start for start, _ in spans)


def cpu_scaling_raw(n: int) -> Figure:
    """What the machine allows right now: n units of the ``Cruncher``'s pure-Python loop in 1 process,
    then split over 2 processes started together (no framework); the figure is the speed-up (x).
    On a shared VM it falls well below 2 when the second core is busy with other work."""
    one = _crunch_procs([n])
    two = _crunch_procs([n // 2, n - n // 2])
    return Figure(one / two, "x", {"one_proc_units_per_s": n / one, "two_procs_units_per_s": n / two})


FloorFn = Callable[[int], Figure]

FLOORS: dict[str, tuple[str, FloorFn]] = {
    "queue_one_way": ("asyncio.Queue producer/consumer", queue_one_way),
    "ping_pong": ("2 tasks via 2 queues", ping_pong),
    "future_per_call": ("queue + future per call", future_per_call),
    "socket_stream": ("Unix socket, 100/frame pickled each", socket_stream),
    "socket_roundtrip": ("Unix socket request/reply", socket_roundtrip),
    "tcp_stream": ("loopback TCP, 100/frame pickled each", tcp_stream),
    "tcp_roundtrip": ("loopback TCP request/reply", tcp_roundtrip),
    "spawn_task_queue": ("bare task + Queue", spawn_task_queue),
    "memory_task_queue": ("bare task + Queue (tracemalloc)", memory_task_queue),
    "ring_tasks": ("ring of 1000 bare tasks", ring_tasks),
    "dict_lookup": ("dict.get of a tuple key", dict_lookup),
    "group_commit_2procs": ("bare GroupCommitter, 2 procs x 25 tasks", group_commit_2procs),
    "cpu_scaling_raw": ("CPU loop, 2 raw processes vs 1 (speed-up)", cpu_scaling_raw),
}
"""Floor name -> (label, function). Names are what scenarios refer to and what JSON records."""
