"""A user's test file: it imports only the installed package and uses the `node` fixture."""

import psutil
import pytest

import kernel
from kernel import Actor, Down
from kernel.testing import Facts, hang_worker, kill_worker, resume_worker, run_on, settle, wait_facts


class Counter(Actor):
    async def init(self, start=0):
        self.state = start

    async def handle_call(self, request, caller):
        return self.state

    async def handle_cast(self, message):
        self.state += message


async def test_counter(node):
    pid = await node.spawn(Counter, 1, worker=1)
    node.cast(pid, 2)
    assert await kernel.call(pid, "get") == 3  # the test runs in the node's context


@pytest.mark.node(workers=3)
async def test_kill_and_settle(node):
    assert len(node.workers) == 3
    old = node.workers[2]
    pid = await node.spawn(Counter, 0, worker=2)
    ref = node.monitor(pid)
    new = await kill_worker(node, 2)
    assert new != old and node.workers[2] == new
    down = await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=5)
    assert down.reason == "worker_down"
    facts = await node.spawn(Facts, worker=0)
    node.cast(facts, "a")
    await settle(node)
    assert await node.call(facts, ("all",)) == ["a"]
    assert await wait_facts(node, facts, 1) == ["a"]


async def test_hang(node):
    os_pid = hang_worker(node, 1)
    assert psutil.Process(os_pid).status() == psutil.STATUS_STOPPED
    resume_worker(node, 1)
    pid = await node.spawn(Counter, 5, worker=1)
    assert await node.call(pid, "x") == 5


def test_sync(node):
    pid = run_on(node, node.spawn(Counter, 4))
    assert run_on(node, node.call(pid, "x")) == 4
