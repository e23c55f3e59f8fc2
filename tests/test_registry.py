"""Names and groups across workers: atomic get_or_spawn, release on exit and on worker SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

import kernel
import registry
from kernel import AlreadyStarted, Down, Node, NoProc
from kernel.testing import Facts, wait_facts
from tests.support.nodes import run_node


class Box(kernel.Actor):
    async def init(self, value: int = 0) -> None:
        self.state = value

    async def handle_call(self, request, caller):
        if request == "get":
            return self.state
        if request == "pid":
            return self.pid
        return await super().handle_call(request, caller)

    async def handle_info(self, message):
        self.state = message


async def racer(ctx, name, parent, count):
    pids = await asyncio.gather(*(registry.get_or_spawn(Box, 1, name=name) for _ in range(count)))
    ctx.send(parent, ("pids", set(pids)))


def test_200_concurrent_get_or_spawn_yield_one_pid() -> None:
    async def body(node: Node) -> None:
        for w in (0, 1):
            await node.spawn(racer, "shared", node.pid, 70, worker=w)
        here = await asyncio.gather(*(registry.get_or_spawn(Box, 1, name="shared") for _ in range(60)))
        seen = set(here)
        for _ in range(2):
            msg = await node.receive(lambda m: isinstance(m, tuple) and m[0] == "pids", timeout=10)
            seen |= msg[1]
        assert len(seen) == 1
        (pid,) = seen
        assert await registry.whereis("shared") == pid
        table = await registry.registered()
        assert table["shared"] == pid

    run_node(body)


def test_register_unregister_and_errors() -> None:
    async def body(node: Node) -> None:
        a = await node.spawn(Box, worker=1)
        b = await node.spawn(Box, worker=0)
        await registry.register("a", a)
        with pytest.raises(AlreadyStarted) as info:
            await registry.register("a", b)
        assert info.value.pid == a
        node.send("a", 42)
        assert await node.call("a", "get") == 42
        assert await registry.unregister("a") is True
        assert await registry.whereis("a") is None
        assert await node.call(a, "get") == 42  # the holder lives on
        await node.stop(b)
        with pytest.raises(NoProc):
            await registry.register("b", b)
        with pytest.raises(TypeError, match="name"):
            await registry.register(["x"], a)
        with pytest.raises(TypeError, match="name"):
            await registry.get_or_spawn(Box, name=None)

    run_node(body)


def test_names_freed_on_exit_and_on_worker_sigkill() -> None:
    async def body(node: Node) -> None:
        pids = [await registry.get_or_spawn(Box, i, name=("user", i), worker=1) for i in range(20)]
        refs = {node.monitor(p): p for p in pids}
        os.kill(node.workers[1], signal.SIGKILL)
        for _ in range(20):
            down = await node.receive(lambda m: isinstance(m, Down) and m.ref in refs, timeout=10)
            assert down.reason == "worker_down"
            assert await registry.whereis(("user", pids.index(down.pid))) is None
        again = await registry.get_or_spawn(Box, 5, name=("user", 5), worker=1)
        assert again not in pids and await node.call(again, "get") == 5

    run_node(body)


class Listener(Facts):
    """A group member that records what is published to it (``wait_facts`` waits for it)."""

    async def init(self, topic):
        await super().init()
        await registry.join(topic)


def test_groups_publish_and_members_leave_on_exit() -> None:
    async def body(node: Node) -> None:
        l1 = await node.spawn(Listener, "room", worker=0)
        l2 = await node.spawn(Listener, "room", worker=1)
        assert set(await registry.members("room")) == {l1, l2}
        await registry.publish("room", "hello")
        for pid in (l1, l2):
            assert await wait_facts(node, pid, 1) == ["hello"]
        ref = node.monitor(l2)
        await node.stop(l2)
        await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=5)
        # The group server on l2's worker got its Down before the worker sent ours: it is gone.
        assert await registry.members("room") == [l1]

    run_node(body)
