"""Supervision across worker processes: a child whose worker OS process is SIGKILLed exits
``"worker_down"`` and its supervisor, on another worker, starts it again on a live worker."""

from __future__ import annotations

import os
import signal
from typing import Any

from kernel import Actor, Checkpoint, Crash
from kernel.terms import NODE
from supervisors import ChildSpec, Supervisor, which_children
from tests.support.supervisors import (
    Journal,
    Member,
    NodeRunner,
    journal_wait,
    node_fixture,
    starts,
    wait_down,
)

runner = node_fixture(workers=2)


def test_child_on_a_killed_worker_is_restarted_on_a_live_worker(runner: NodeRunner) -> None:
    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, worker=0)
        children = [
            ChildSpec("stay", Member, args=("stay", journal), worker=0),
            ChildSpec("away", Member, args=("away", journal), worker=1),
        ]
        sup = await node.spawn(Supervisor, children=children, worker=0)
        before = {cid: pid for cid, pid, _ in await which_children(sup)}
        assert before["away"].worker == 1
        ref = node.monitor(before["away"])
        old_os_pid = node.workers[1]
        os.kill(old_os_pid, signal.SIGKILL)
        assert (await wait_down(node, ref)).reason == "worker_down"

        entries = await journal_wait(journal, "start", "away", 2)
        after = {cid: pid for cid, pid, _ in await which_children(sup)}
        assert after["stay"] == before["stay"], "a one_for_one sibling on a live worker keeps running"
        assert after["away"] == starts(entries, "away")[-1] != before["away"]
        assert await node.call(after["away"], "ping") == "away"
        assert node.workers[1] != old_os_pid
        await node.stop(sup, "shutdown")

    runner.run(body())


CK_JOURNAL = "supervisors-test-ck-journal"


class Counter(Actor):
    """A persistent child: its checkpoint key is its supervisor path, so restarts restore its state."""

    checkpoint = Checkpoint(every=1)

    async def init(self, start: int) -> None:
        self.state = start
        await self.call(CK_JOURNAL, ("log", ("start", "counter", self.pid)))

    async def restore(self, state: Any) -> None:
        self.state = state
        await self.call(CK_JOURNAL, ("log", ("start", "counter", self.pid)))

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("add", n):
                self.state += n
                return self.state
            case "get":
                return self.state
        raise ValueError(request)

    async def handle_cast(self, message: Any) -> None:
        raise RuntimeError(f"crash on {message!r}")


def test_restarted_child_restores_its_checkpoint_by_supervisor_path(runner: NodeRunner) -> None:
    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, name=CK_JOURNAL, worker=0)
        spec = ChildSpec("counter", Counter, args=(10,), worker=1)
        sup = await node.spawn(Supervisor, children=[spec], name="ckroot", worker=0)
        counter = (await which_children(sup))[0][1]
        assert await node.call(counter, ("add", 5)) == 15  # durable: committed before the reply

        ref = node.monitor(counter)
        node.cast(counter, "boom")
        assert isinstance((await wait_down(node, ref)).reason, Crash)
        counter = starts(await journal_wait(journal, "start", "counter", 2), "counter")[-1]
        assert await node.call(counter, "get") == 15

        ref = node.monitor(counter)
        os.kill(node.workers[1], signal.SIGKILL)
        assert (await wait_down(node, ref)).reason == "worker_down"
        counter = starts(await journal_wait(journal, "start", "counter", 3), "counter")[-1]
        assert await node.call(counter, ("add", 1)) == 16
        await node.stop(sup, "shutdown")

    runner.run(body())


class SpawnsSupervisor(Actor):
    """Starts a supervisor from a worker, as an application's own code may."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        return await self.spawn(Supervisor, children=[])


def test_supervisors_live_in_the_node_process_and_children_on_workers(runner: NodeRunner) -> None:
    """API section 12: a supervisor without ``worker=`` is hosted by the node process, whoever spawns
    it; its children keep their ``worker=`` and the others are spread over the workers, never placed
    on the node process; the snapshot shows the node-hosted supervisors."""

    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, worker=0)
        children = [ChildSpec(f"c{i}", Member, args=(f"c{i}", journal)) for i in range(4)]
        children.append(ChildSpec("pinned", Member, args=("pinned", journal), worker=1))
        children.append(ChildSpec("inner", Supervisor, type="supervisor", kwargs={"children": []}))
        sup = await node.spawn(Supervisor, children=children)
        assert sup.worker == NODE
        placed = {cid: pid for cid, pid, _ in await which_children(sup)}
        assert placed["pinned"].worker == 1
        assert placed["inner"].worker == NODE
        assert sorted(placed[f"c{i}"].worker for i in range(4)) == [0, 0, 1, 1]
        explicit = await node.spawn(Supervisor, children=[], worker=1)
        assert explicit.worker == 1
        spawner = await node.spawn(SpawnsSupervisor, worker=0)
        from_worker = await node.call(spawner, "go")
        assert from_worker.worker == NODE
        snap = await node.snapshot()
        hosted = {a["pid"]: a for a in snap["actors"] if a["worker"] == NODE}
        assert {repr(sup), repr(placed["inner"]), repr(from_worker)} <= set(hosted)
        assert hosted[repr(sup)]["supervisor"] and hosted[repr(sup)]["children"][-1] == repr(placed["inner"])
        for pid in (sup, explicit, from_worker):
            await node.stop(pid, "shutdown")

    runner.run(body())
