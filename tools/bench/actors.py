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

import kernel
import registry
from kernel import Actor, Checkpoint, NoReply, Pid
from supervisors import ChildSpec, DynamicSupervisor, start_child

YIELD_EVERY = 1000
"""Cross-worker casts yield to the loop this often, so the kernel can flush a frame while the sender
runs, as a real sender that awaits anything would let it (the floor drains once per 100-message frame)."""


class Idle(Actor):
    """An actor that never gets a message: what spawn and memory per idle actor measure."""


class Echo(Actor):
    """Answers every call with its request."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        return request


class Spinner(Actor):
    """Does ~1 ms of CPU work per message and casts itself the next; its handler never awaits."""

    async def handle_cast(self, message: Any) -> None:
        end = time.perf_counter() + 0.001
        while time.perf_counter() < end:
            pass
        self.cast(self.pid, message)


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


class Counter(Actor):
    """The plain twin of the checkpointed counters: each call changes the state (an int) by one."""

    async def init(self) -> None:
        self.state = 0

    async def handle_call(self, request: Any, caller: Any) -> Any:
        self.state += 1
        return self.state


class VolatileCounter(Counter):
    """Checkpointed after every change; replies at once (durable=False)."""

    checkpoint = Checkpoint(every=1, durable=False)


class DurableCounter(Counter):
    """Checkpointed after every change; a reply waits for the commit of its state (durable=True)."""

    checkpoint = Checkpoint(every=1, durable=True)


class PassiveCounter(Counter):
    """A persistent counter that passivates after ``idle_timeout`` seconds without a message."""

    checkpoint = Checkpoint(every=1, durable=False)
    idle_timeout = 0.3


class Cruncher(Actor):
    """CPU-bound work in pure Python: each unit is a loop of ``UNIT`` multiply-adds."""

    UNIT = 20_000

    async def handle_cast(self, message: Any) -> None:
        units, driver = message
        acc = 0
        for _ in range(units):
            for i in range(self.UNIT):
                acc += i * i
        self.send(driver, ("done", acc))


class Driver(Actor):
    """Runs one timed scenario per call, on its own worker, and replies with a dict of figures."""

    async def init(self) -> None:
        self.pending: tuple[Any, float, int, list[Pid]] | None = None  # caller, t0, waits left, to kill

    async def handle_call(self, request: Any, caller: Any) -> Any:
        kind, n, *rest = request
        if kind == "local_cast":
            return await self._cast(caller, n, worker=None, yield_every=0)
        if kind == "cross_cast":
            return await self._cast(caller, n, worker=rest[0], yield_every=rest[1] if len(rest) > 1
                                    else YIELD_EVERY)
        if kind == "behind_spinner":
            return await self._behind_spinner(n, spin=rest[0])
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
        if kind == "cast_by_name":
            return await self._cast(caller, n, worker=None, yield_every=0, by_name=True)
        if kind == "get_or_spawn":
            return await self._get_or_spawn(n)
        if kind == "dynsup":
            return await self._dynsup(n, here=rest[0] if rest else True)
        if kind == "counter_calls":
            return await self._counter_calls(n, cls=rest[0], name=rest[1])
        if kind == "call_targets":
            return await self._call_targets(caller, n, targets=rest[0])
        if kind == "reactivate":
            return await self._reactivate(n, tag=rest[0], workers=rest[1])
        if kind == "spawn_idle":
            return await self._spawn_idle(n)
        if kind == "crunch":
            return await self._crunch(caller, n, workers=rest[0], per_worker=rest[1])
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

    async def _cast(self, caller: Any, n: int, worker: int | None, yield_every: int,
                    by_name: bool = False) -> Any:
        name = ("bench-sink", self.pid.serial) if by_name else None  # the shape of ("cart", 42)
        sink = await self.spawn(Sink, n, self.pid, worker=worker, name=name)
        dest: Any = name if by_name else sink
        cast = self.cast
        self.pending = (caller, time.perf_counter(), 1, [sink])
        if yield_every:
            for start in range(0, n, yield_every):
                for i in range(start, min(start + yield_every, n)):
                    cast(dest, i)
                await asyncio.sleep(0)
        else:
            for i in range(n):
                cast(dest, i)
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

    async def _behind_spinner(self, n: int, spin: bool) -> Any:
        """n sequential calls to an actor on worker 1 beside (or without) a self-casting spinner."""
        echo = await self.spawn(Echo, worker=1)
        spinner = await self.spawn(Spinner, worker=1) if spin else None
        if spinner is not None:
            self.cast(spinner, "spin")
        call = self.call
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            await call(echo, i)
            times.append(time.perf_counter() - t0)
        self._kill([echo] if spinner is None else [echo, spinner])
        times.sort()
        return {"worst": times[-1], "median": times[len(times) // 2]}

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

    async def _get_or_spawn(self, n: int) -> Any:
        """``registry.get_or_spawn`` of a name whose holder is running, n times in a row."""
        name = ("bench-existing", self.pid)
        pid = await self.spawn(Idle, name=name)
        get_or_spawn = registry.get_or_spawn
        t0 = time.perf_counter()
        for _ in range(n):
            await get_or_spawn(Idle, name=name)
        seconds = time.perf_counter() - t0
        if await get_or_spawn(Idle, name=name) != pid:
            raise AssertionError("get_or_spawn of an existing name returned another pid")
        self._kill([pid])
        return {"seconds": seconds}

    async def _dynsup(self, n: int, here: bool) -> Any:
        """A DynamicSupervisor starts n idle children, one ``start_child`` each, from this actor.

        ``here``: the supervisor is on this worker (``worker=`` given), and so are its children; else it
        is where supervisors live by default, the node process (API section 12), and its children go
        round-robin over the workers: each start is then a call to the node and a spawn RPC from it.
        Memory is this worker's RSS growth per child (children, the supervisor's bookkeeping and the
        specs it keeps): meaningful on the first run in a fresh worker, and only when ``here``.
        """
        sup = await self.spawn(DynamicSupervisor, worker=self.pid.worker if here else None)
        gc.collect()
        rss0 = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        for i in range(n):
            await start_child(sup, ChildSpec(i, Idle, shutdown="brutal_kill"))
        seconds = time.perf_counter() - t0
        gc.collect()
        rss = psutil.Process().memory_info().rss - rss0
        # Killed, not stopped: an orderly stop of 100k children takes minutes (quadratic selective
        # receive in supervisors.shutdown_many; see BENCHMARKS.md). Linked children die with it.
        self.exit(sup, "kill")
        if not here:
            return {"seconds": seconds, "sup_worker": sup.worker}
        return {"seconds": seconds, "rss_per_child": rss / n, "sup_worker": sup.worker}

    async def _counter_calls(self, n: int, cls: type[Actor], name: Any) -> Any:
        """n sequential calls to a (persistent, when ``cls`` has a checkpoint) counter on this worker."""
        pid = await self.spawn(cls, name=name)
        call = self.call
        t0 = time.perf_counter()
        for _ in range(n):
            await call(pid, None, timeout=60.0)
        seconds = time.perf_counter() - t0
        await kernel.stop(pid, timeout=60.0)
        return {"seconds": seconds}

    async def _call_targets(self, caller: Any, n: int, targets: list[Pid]) -> Any:
        """One ``Caller`` per target, on the target's worker, each making n sequential calls."""
        pids = [await self.spawn(Caller, worker=t.worker) for t in targets]
        self.pending = (caller, time.perf_counter(), len(targets), pids)
        for pid, target in zip(pids, targets, strict=True):
            self.cast(pid, (target, n, self.pid))
        return NoReply

    async def _reactivate(self, n: int, tag: str, workers: int) -> Any:
        """First activation of n named ``PassiveCounter``s (get_or_spawn + a call that checkpoints),
        a bounded wait until every one passivated (its name is free), then the timed reactivation:
        get_or_spawn + a call for each again, which must see the restored state (2)."""
        names = [("bench-passive", tag, i) for i in range(n)]

        async def touch(i: int) -> Any:
            pid = await registry.get_or_spawn(PassiveCounter, name=names[i], worker=i % workers)
            return await self.call(pid, None, timeout=60.0)

        async def all_of(batch: int = 100) -> tuple[float, list[Any]]:
            t0 = time.perf_counter()
            out: list[Any] = []
            for start in range(0, n, batch):
                out += await asyncio.gather(*(touch(i) for i in range(start, min(start + batch, n))))
            return time.perf_counter() - t0, out

        first, _ = await all_of()
        deadline = time.monotonic() + 120.0
        left = list(names)
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(left)} of {n} actors still registered after 120 s")
            await asyncio.sleep(0.1)
            left = [nm for nm in left if await kernel.whereis(nm) is not None]
        again, states = await all_of()
        restored = sum(1 for s in states if s == 2)
        return {"seconds": again, "first_seconds": first, "restored": restored}

    async def _spawn_idle(self, n: int) -> Any:
        """n idle actors on this worker, pids not kept (they stay until the node closes)."""
        spawn = self.spawn
        t0 = time.perf_counter()
        for _ in range(n):
            await spawn(Idle)
        return {"seconds": time.perf_counter() - t0}

    async def _crunch(self, caller: Any, units: int, workers: list[int], per_worker: int) -> Any:
        """``per_worker`` Crunchers on each of ``workers`` share ``units`` of CPU work."""
        pids = [await self.spawn(Cruncher, worker=w) for w in workers for _ in range(per_worker)]
        share = units // len(pids)
        self.pending = (caller, time.perf_counter(), len(pids), pids)
        # Remote ones first, then a yield so their frame leaves: a cast to an idle actor on this worker
        # may be handed off directly, running its whole CPU-bound handler inside this loop right away.
        mine = self.pid.worker
        for pid in pids:
            if pid.worker != mine:
                self.cast(pid, (share, self.pid))
        await asyncio.sleep(0)
        for pid in pids:
            if pid.worker == mine:
                self.cast(pid, (share, self.pid))
        return NoReply
