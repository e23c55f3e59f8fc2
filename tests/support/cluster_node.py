"""One cluster node as a subprocess the tests drive: ``python -m tests.support.cluster_node CONFIG``.

CONFIG is JSON: ``{"name", "dsn", "listen", "lease", "workers"}``. The node starts, prints
``{"ready": node_id}``, then reads one JSON command per line on stdin and prints one JSON answer per
line (``{"id": n, "ok": value}`` or ``{"id": n, "error": "Type: text"}``). Commands run concurrently, so
a test can leave a call waiting while it kills another node. Monitors report their ``Down`` as a line
``{"down": tag, "reason": ...}`` when it arrives; a linker actor (op ``link``) reports the ``Exit`` it
traps as a line ``{"exit": tag, "reason": ..., "pid": ...}``. The node exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import kernel
from kernel import Actor, Checkpoint, Down, Exit, Node, Pid
from supervisors import Entities, Supervisor


class Echo(Actor):
    """Answers ``("echo", x)`` with ``x`` and ``"where"`` with its pid and node."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "where":
            return [kernel.node_id(), repr(self.pid)]
        return request[1]


class Counter(Actor):
    """A persistent entity: ``("add", n)`` adds durably and answers the total; ``"get"`` answers it."""

    checkpoint = Checkpoint(every=1)

    async def init(self, key: Any) -> None:
        self.state = 0

    async def handle_call(self, request: Any, caller: Any) -> Any:
        if request != "get":
            self.state += request[1]
        return [kernel.node_id(), self.state]


class Linker(Actor):
    """Traps exits and links to ``target``; reports each ``Exit`` to ``owner`` as ``("exit", tag, ...)``."""

    trap_exits = True

    async def init(self, target: Pid, owner: Pid, tag: str) -> None:
        self.owner = owner
        self.tag = tag
        self.link(target)

    async def handle_info(self, message: Any) -> None:
        if isinstance(message, Exit):
            self.send(self.owner, ("exit", self.tag, str(message.reason), repr(message.pid)))


COUNTERS = Entities("counters", Counter)


async def _run(config: dict[str, Any]) -> None:
    node = Node(workers=config.get("workers", 2), name=config["name"], cluster=config["dsn"],
                listen=config["listen"], lease=config.get("lease", 2.0))
    async with node:
        await node.spawn(Supervisor, strategy="one_for_one", children=[COUNTERS.child_spec()], name="root")
        await node.spawn(Echo, name="echo", worker=0)
        out = sys.stdout

        def emit(item: dict[str, Any]) -> None:
            out.write(json.dumps(item) + "\n")
            out.flush()

        emit({"ready": node.node_id})
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        monitors: dict[Any, str] = {}
        pids: dict[str, Pid] = {}  # op whereis's results, by tag, for a later op link

        def reported(m: Any) -> bool:
            return isinstance(m, Down) or (type(m) is tuple and len(m) == 4 and m[0] == "exit")

        async def downs() -> None:
            while True:
                message = await node.receive(reported)
                if isinstance(message, Down):
                    emit({"down": monitors.pop(message.ref, "?"), "reason": str(message.reason)})
                else:
                    emit({"exit": message[1], "reason": message[2], "pid": message[3]})

        async def run(command: dict[str, Any]) -> Any:
            op = command["op"]
            if op == "members":
                return {"id": node.node_id, "members": {str(k): v for k, v in node.members.items()}}
            if op == "call":  # a name registered on node `node`
                pid = await kernel.whereis(command["name"], node=command["node"])
                if pid is None:
                    return None
                return await node.call(pid, command["request"], timeout=command.get("timeout", 5.0))
            if op == "monitor":
                pid = await kernel.whereis(command["name"], node=command["node"])
                assert pid is not None
                monitors[node.monitor(pid)] = command["tag"]
                return repr(pid)
            if op == "workers":  # the OS pids of this node's workers, by index
                return node.workers
            if op == "monitor_entity":  # the entity for a key, where it runs now
                pid = await COUNTERS.whereis(command["key"])
                assert pid is not None, f"entity {command['key']!r} is not running"
                monitors[node.monitor(pid)] = command["tag"]
                return repr(pid)
            if op == "whereis":  # remember a name's pid on node `node` under `tag`
                pid = await kernel.whereis(command["name"], node=command["node"])
                assert pid is not None
                pids[command["tag"]] = pid
                return repr(pid)
            if op == "link":  # a trapping linker linked to `pid` (a whereis tag) or `name` on `node`
                if "pid" in command:
                    pid = pids[command["pid"]]
                else:
                    pid = await kernel.whereis(command["name"], node=command["node"])
                    assert pid is not None
                await node.spawn(Linker, pid, node.pid, command["tag"])
                return repr(pid)
            if op == "entity":
                return await COUNTERS.call(command["key"], command["request"],
                                           timeout=command.get("timeout", 5.0))
            raise ValueError(f"unknown op {op!r}")

        async def answer(command: dict[str, Any]) -> None:
            try:
                emit({"id": command["id"], "ok": await run(command)})
            except Exception as exc:
                emit({"id": command["id"], "error": f"{type(exc).__name__}: {exc}"})

        tasks = {loop.create_task(downs())}
        while line := await reader.readline():
            task = loop.create_task(answer(json.loads(line)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        for task in tasks:
            task.cancel()


if __name__ == "__main__":
    kernel.run(_run(json.loads(sys.argv[1])))
