"""Supervision across worker processes: a child whose worker OS process is SIGKILLed exits
``"worker_down"`` and its supervisor, on another worker, starts it again on a live worker."""

from __future__ import annotations

import os
import signal

from supervisors import ChildSpec, Supervisor, which_children
from tests.test_supervisors_support import (
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
