"""The control-socket operations observer v2 uses, on a real node: an actor's queued messages, a child's
exit history, orderly stop, and the dead-letter list."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

import kernel
from kernel import Down, Node, Quarantined
from kernel.control import ControlClient, ControlError
from supervisors import ChildSpec, Supervisor, which_children
from tests.support.nodes import run_node
from tests.support.quarantine import crash_until_quarantined, dead_letters


class Gate(kernel.Actor):
    """Holds its handler on an event that is never set, so what is sent next stays queued."""

    async def init(self) -> None:
        self.state = {"held": True}

    async def handle_cast(self, message: Any) -> None:
        if message == "hold":
            await asyncio.Event().wait()


class Polite(kernel.Actor):
    async def handle_call(self, request: Any, caller: Any) -> Any:
        return request


async def ask(node: Node, req: dict[str, Any]) -> dict[str, Any]:
    async with ControlClient() as client:
        await client.connect(node.name)
        return await client.request(req)


def test_state_lists_the_first_queued_messages_capped() -> None:
    async def body(node: Node) -> None:
        gate = await node.spawn(Gate, worker=0)
        node.cast(gate, "hold")
        for i in range(12):
            node.cast(gate, ("add", i, "x" * 500))
        await node.call(await node.spawn(Polite, worker=0), "sync")  # the casts reached worker 0 first
        state = await ask(node, {"op": "state", "pid": repr(gate)})
        assert state["queued"] == 12
        assert len(state["queue"]) == 10
        assert state["queue"][0].startswith("cast: ('add', 0, 'xxx")
        assert all(len(item) < 200 for item in state["queue"])  # each repr capped

    run_node(body)


def test_snapshot_keeps_a_childs_exit_history_and_stop_is_orderly() -> None:
    async def body(node: Node) -> None:
        sup = await node.spawn(Supervisor, strategy="one_for_one", name="root",
                               children=[ChildSpec("c", Polite, worker=0), ChildSpec("d", Polite, worker=1)])
        [(_, child, _), (_, other, _)] = await which_children(sup)
        ref = node.monitor(child)
        await ask(node, {"op": "kill", "pid": repr(child)})
        await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=10)
        async with asyncio.timeout(10):
            while True:  # each turn is a round trip to the supervisor
                [(_, fresh, _), _] = await which_children(sup)
                if fresh is not None and fresh != child:
                    break
        snap = await node.snapshot()
        [entry] = [a for a in snap["actors"] if a["key"] == "root/c"]
        assert entry["restarts"] == 1
        [[when, reason]] = entry["exits"]
        assert reason == "'killed'" and when == pytest.approx(snap["time"], abs=30)
        # Orderly stop: the exit reason is "normal" (a permanent child still comes back, as in OTP).
        ref = node.monitor(other)
        assert await ask(node, {"op": "stop", "pid": repr(other)}) == {}
        down = await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=10)
        assert down.reason == "normal"
        with pytest.raises(ControlError, match="noproc"):
            await ask(node, {"op": "stop", "pid": repr(other)})

    run_node(body)


def test_dead_letters_are_listed_as_json(tmp_path: Any) -> None:
    async def body(node: Node) -> None:
        assert await ask(node, {"op": "dead_letters"}) == {"letters": []}
        _sup, child = await crash_until_quarantined(node)
        with pytest.raises(Quarantined):
            await node.call(child, ("poison", 1))
        [letter] = await dead_letters(node.state_path, 1)
        [listed] = (await ask(node, {"op": "dead_letters"}))["letters"]
        assert listed["id"] == letter.id and listed["key"] == "'root/fragile'" and listed["count"] == 3
        assert listed["message"] == "call: ('poison', 1)" and "ValueError" in listed["error"]
        assert await ask(node, {"op": "drop", "id": letter.id}) == {"id": letter.id, "op": "drop"}
        assert await ask(node, {"op": "dead_letters"}) == {"letters": []}

    run_node(body, state=tmp_path / "s.db")


class Spinner(kernel.Actor):
    """Blocks its worker's event loop (a synchronous wait) until a file appears."""

    async def handle_cast(self, message: Any) -> None:
        flag = message
        while not os.path.exists(flag):
            time.sleep(0.01)  # blocking on purpose: the loop is held, as by a CPU-bound handler


def test_stack_of_an_actor_that_blocks_its_worker(tmp_path: Any) -> None:
    async def body(node: Node) -> None:
        gate = await node.spawn(Gate, worker=1)
        node.cast(gate, "hold")
        await node.call(await node.spawn(Polite, worker=1), "sync")
        waiting = await ask(node, {"op": "stack", "pid": repr(gate)})
        assert waiting["where"] == "awaiting" and any("handle_cast" in f for f in waiting["stack"]), waiting
        idle = await ask(node, {"op": "stack", "pid": repr(await node.spawn(Polite, worker=1))})
        assert idle["where"] == "idle" and idle["stack"] == []

        spinner = await node.spawn(Spinner, worker=0)
        flag = str(tmp_path / "release")
        node.cast(spinner, flag)
        try:
            async with asyncio.timeout(20):
                while True:  # until the sampler sees the handler on the loop's thread
                    held = await ask(node, {"op": "stack", "pid": repr(spinner)})
                    if held["where"] == "running":
                        break
            assert held["running"] == repr(spinner)
            assert any("time.sleep(0.01)" in f and "handle_cast" in f for f in held["stack"])
            snap = await node.snapshot()  # worker 0 cannot answer: it is listed with what holds it
            [w0] = [w for w in snap["workers"] if w["index"] == 0]
            assert w0["responsive"] is False and w0["running"] == repr(spinner)
            assert any("handle_cast" in f for f in w0["stack"])
        finally:
            open(flag, "w").close()
        await node.call(await node.spawn(Polite, worker=0), "sync")  # worker 0 is back

    run_node(body)


def test_a_lone_node_has_no_cluster_part_and_refuses_the_cluster_ops() -> None:
    """Single-host mode stays as it was: no ``cluster`` in the snapshot; ``cluster`` and a snapshot of
    another node answer an error that says why."""
    async def body(node: Node) -> None:
        assert "cluster" not in await ask(node, {"op": "snapshot"})
        assert (await ask(node, {"op": "snapshot", "node": node.name}))["node"] == node.name
        with pytest.raises(ControlError, match="not in a cluster"):
            await ask(node, {"op": "cluster"})
        with pytest.raises(ControlError, match=r"no live node 'other'.*not in a cluster"):
            await ask(node, {"op": "snapshot", "node": "other"})
        with pytest.raises(ControlError, match="node must be the name of a node"):
            await ask(node, {"op": "snapshot", "node": 3})

    run_node(body, workers=1)
