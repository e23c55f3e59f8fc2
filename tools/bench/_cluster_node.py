"""One node of the cluster benchmarks as a subprocess: ``python -m tools.bench._cluster_node CONFIG``.

CONFIG is JSON: ``{"name", "dsn", "listen", "lease", "workers"}``; ``dsn`` null is a single-host node
(SQLite), the reference of the cluster rows. The node starts, prints ``{"ready": node_id}``, then reads
one JSON command per line on stdin and prints one JSON answer per line (``{"id": n, "ok": value}`` or
``{"id": n, "error": "Type: text"}``); commands run concurrently. Each timed loop runs here, inside the
node, so the JSON lines stay out of every figure. The node exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from typing import Any

import kernel
from kernel import Actor, Checkpoint, Node, NoReply
from supervisors import Entities, Supervisor


class Echo(Actor):
    """Answers every call with its request."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        return request


class Sink(Actor):
    """Counts casts; ``("wait", n)`` is answered with the count once ``n`` arrived since the last wait."""

    async def init(self) -> None:
        self.count = 0
        self.waiting: tuple[Any, int] | None = None

    async def handle_cast(self, message: Any) -> None:
        self.count += 1
        if self.waiting is not None and self.count >= self.waiting[1]:
            self._answer()

    async def handle_call(self, request: Any, caller: Any) -> Any:
        self.waiting = (caller, request[1])
        if self.count >= request[1]:
            self._answer()
        return NoReply

    def _answer(self) -> None:
        assert self.waiting is not None
        self.reply(self.waiting[0], self.count)
        self.waiting = None
        self.count = 0


class Caller(Actor):
    """Times loops from inside a worker: sequential calls, or a cast stream, to a pid on another node."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        op, name, node, n = request
        pid = await kernel.whereis(name, node=node)
        assert pid is not None, f"{name!r} not found on node {node}"
        await self.call(pid, ("wait", 0) if op == "casts" else -1)  # connected both ways before timing
        if op == "calls":
            call = self.call
            t0 = time.perf_counter()
            for i in range(n):
                await call(pid, i)
            return time.perf_counter() - t0
        cast = self.cast
        t0 = time.perf_counter()
        for start in range(0, n, 1000):  # yield now and then, as the cross_cast row does
            for i in range(start, min(start + 1000, n)):
                cast(pid, i)
            await asyncio.sleep(0)
        got = await self.call(pid, ("wait", n), timeout=120.0)
        assert got == n, (got, n)
        return time.perf_counter() - t0


class Counter(Actor):
    """A persistent entity: each ``("add", n)`` adds and its reply waits for the commit (durable)."""

    checkpoint = Checkpoint(every=1, durable=True)

    async def init(self, key: Any) -> None:
        self.state = 0

    async def handle_call(self, request: Any, caller: Any) -> Any:
        if request != "get":
            self.state += request[1]
        return [kernel.node_id(), self.state]


COUNTERS = Entities("bench-counters", Counter)


async def _concurrent(callers: int, per: int, one: Any) -> float:
    """``callers`` tasks, each awaiting ``one(caller, i)`` ``per`` times in a row; seconds for all."""

    async def loop(c: int) -> None:
        for i in range(per):
            await one(c, i)

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in range(callers)))
    return time.perf_counter() - t0


async def _first_success(key: str, timeout: float) -> float:
    """Call entity ``key`` until a call succeeds; the wall-clock time (``time.time``) of that success."""
    while True:
        try:
            await COUNTERS.call(key, "get", timeout=timeout)
            return time.time()
        except Exception:  # every failure before the take-over is expected
            await asyncio.sleep(0.01)


async def _run(config: dict[str, Any]) -> None:
    cluster = config.get("dsn")
    where = {"cluster": cluster, "listen": config["listen"], "lease": config["lease"]} if cluster else {}
    node = Node(workers=config.get("workers", 2), name=config["name"], **where)
    async with node:
        await node.spawn(Supervisor, strategy="one_for_one", children=[COUNTERS.child_spec()], name="root")
        await node.spawn(Echo, name="echo", worker=0)
        await node.spawn(Sink, name="sink", worker=0)
        caller = await node.spawn(Caller, worker=0)
        out = sys.stdout

        def emit(item: dict[str, Any]) -> None:
            out.write(json.dumps(item) + "\n")
            out.flush()

        emit({"ready": node.node_id})
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def run(command: dict[str, Any]) -> Any:
            op = command["op"]
            if op == "members":
                return len(node.members)
            if op in ("calls", "casts"):  # from the actor on worker 0, to "echo"/"sink" on `node`
                return await node.call(caller, (op, command["name"], command["node"], command["n"]),
                                       timeout=300.0)
            if op == "node_calls":  # from the node context: `callers` tasks in flight
                pid = await kernel.whereis("echo", node=command["node"])
                assert pid is not None
                await node.call(pid, -1)  # connected both ways before timing
                callers = command["callers"]
                return await _concurrent(callers, command["n"] // callers,
                                         lambda c, i: node.call(pid, i, timeout=60.0))
            if op == "entities":  # first calls to fresh keys, `callers` in flight; keys per node hosting
                prefix, callers, hosts = command["prefix"], command["callers"], dict[int, int]()

                async def first(c: int, i: int) -> None:
                    where = await COUNTERS.call(f"{prefix}-{c}-{i}", ("add", 1), timeout=60.0)
                    hosts[where[0]] = hosts.get(where[0], 0) + 1

                seconds = await _concurrent(callers, command["n"] // callers, first)
                return {"seconds": seconds, "hosts": {str(k): v for k, v in hosts.items()}}
            if op == "durable":  # `callers` tasks, each adding to its own entity `per` times (`local`:
                # entities the cluster placed on this node only, so no call leaves it)
                prefix, start_at, keys = command["prefix"], command["start_at"], list[str]()
                for i in itertools.count():  # activate outside the timed interval
                    if len(keys) == command["callers"]:
                        break
                    where = await COUNTERS.call(f"{prefix}-{i}", "get", timeout=60.0)
                    if where[0] == node.node_id or not command.get("local"):  # local: keys placed here
                        keys.append(f"{prefix}-{i}")
                await asyncio.sleep(max(0.0, start_at - time.time()))  # all nodes start together
                t0 = time.time()
                seconds = await _concurrent(command["callers"], command["per"],
                                            lambda c, i: COUNTERS.call(keys[c], ("add", 1), timeout=60.0))
                return {"start": t0, "seconds": seconds}
            if op == "entity":
                return await COUNTERS.call(command["key"], command["request"], timeout=10.0)
            if op == "first_success":
                return await _first_success(command["key"], command.get("timeout", 0.5))
            raise ValueError(f"unknown op {op!r}")

        async def answer(command: dict[str, Any]) -> None:
            try:
                emit({"id": command["id"], "ok": await run(command)})
            except Exception as exc:  # reported to the driver, which raises it
                emit({"id": command["id"], "error": f"{type(exc).__name__}: {exc}"})

        tasks: set[asyncio.Task[None]] = set()
        while line := await reader.readline():
            task = loop.create_task(answer(json.loads(line)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        for task in tasks:
            task.cancel()


if __name__ == "__main__":
    kernel.run(_run(json.loads(sys.argv[1])))
