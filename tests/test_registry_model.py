"""The name registry against a model, under random programs (hypothesis stateful).

Rules: get_or_spawn, spawn unnamed, register, unregister, kill, orderly stop, SIGKILL of a worker.
Invariants after every step, checked from the node *and* from an actor on each worker:

* at most one live holder per name, and it is the one the model says;
* ``whereis`` never returns a dead pid once its ``Down`` has arrived (every step that kills waits for
  the Down before the check).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import kernel
import registry
from kernel import Actor, AlreadyStarted, Down, NoProc
from tests.support.supervisors import NodeRunner, node_fixture

NAMES = ["a", "b", ("cart", 1), ("cart", 2)]


class Box(Actor):
    quarantine_after = None

    async def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "ping":
            return "pong"
        if request[0] == "whereis":  # the registry as seen from this worker
            return [await kernel.whereis(n) for n in request[1]]
        return await super().handle_call(request, caller)


runner = node_fixture(workers=2)


def make_machine(runner: NodeRunner) -> type[RuleBasedStateMachine]:
    node = runner.node
    probes = [runner.run(node.spawn(Box, worker=w)) for w in (0, 1)]

    class RegistryModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.holder: dict[Any, Any] = {}  # name -> pid (the model)
            self.alive: dict[Any, Any] = {}  # pid -> monitor ref (the node watches every actor)

        def _watch(self, pid: Any) -> None:
            if pid not in self.alive:
                self.alive[pid] = runner.run(self._monitor(pid))

        async def _monitor(self, pid: Any) -> Any:
            return node.monitor(pid)

        def _dead(self, pid: Any) -> None:
            ref = self.alive.pop(pid)
            runner.run(node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=10))
            for name in [n for n, p in self.holder.items() if p == pid]:
                del self.holder[name]

        @rule(name=st.sampled_from(NAMES), worker=st.sampled_from([0, 1]))
        def get_or_spawn(self, name: Any, worker: int) -> None:
            pid = runner.run(registry.get_or_spawn(Box, name=name, worker=worker))
            if name in self.holder:
                assert pid == self.holder[name], (name, pid, self.holder[name])
            else:
                assert pid not in self.alive, "a pid was reused"
                self.holder[name] = pid
                self._watch(pid)

        @rule(worker=st.sampled_from([0, 1]))
        def spawn_unnamed(self, worker: int) -> None:
            self._watch(runner.run(node.spawn(Box, worker=worker)))

        @precondition(lambda self: self.alive)
        @rule(name=st.sampled_from(NAMES), data=st.data())
        def register(self, name: Any, data: st.DataObject) -> None:
            pid = data.draw(st.sampled_from(sorted(self.alive)))
            try:
                runner.run(registry.register(name, pid))
            except AlreadyStarted as taken:
                assert self.holder.get(name) == taken.pid, (name, taken.pid, self.holder.get(name))
                return
            assert self.holder.get(name) in (None, pid), (name, self.holder.get(name))
            self.holder[name] = pid

        @rule(name=st.sampled_from(NAMES))
        def unregister(self, name: Any) -> None:
            assert runner.run(registry.unregister(name)) == (name in self.holder)
            self.holder.pop(name, None)

        @precondition(lambda self: self.alive)
        @rule(data=st.data(), how=st.sampled_from(["kill", "stop"]))
        def end(self, data: st.DataObject, how: str) -> None:
            pid = data.draw(st.sampled_from(sorted(self.alive)))
            if how == "kill":
                runner.run(self._kill(pid))
            else:
                runner.run(node.stop(pid))
            self._dead(pid)

        async def _kill(self, pid: Any) -> None:
            node.exit(pid, "kill")

        @precondition(lambda self: self.alive)
        @rule(worker=st.sampled_from([0, 1]))
        def kill_worker(self, worker: int) -> None:
            victims = [p for p in self.alive if p.worker == worker]
            if not victims:
                return
            os.kill(node.workers[worker], signal.SIGKILL)
            for pid in victims:
                self._dead(pid)
            nonlocal probes
            probes[worker] = runner.run(node.spawn(Box, worker=worker))  # waits for the replacement

        @invariant()
        def registry_matches_model(self) -> None:
            runner.run(self._check())

        async def _check(self) -> None:
            want = [self.holder.get(n) for n in NAMES]
            assert [await registry.whereis(n) for n in NAMES] == want
            table = await registry.registered()
            assert {n: p for n, p in table.items() if n in NAMES} == self.holder
            for probe in probes:
                assert await node.call(probe, ("whereis", NAMES)) == want, f"seen from {probe}"
            for pid in self.alive:
                assert await node.call(pid, "ping") == "pong"

        def teardown(self) -> None:
            async def clean() -> None:
                for pid in list(self.alive):
                    node.exit(pid, "kill")
            runner.run(clean())
            for pid in list(self.alive):
                self._dead(pid)
            for name in NAMES:
                with pytest.raises(NoProc):
                    runner.run(node.call(name, "ping"))

    return RegistryModel


@pytest.mark.timeout(120)
def test_registry_matches_the_model(runner: NodeRunner) -> None:
    machine = make_machine(runner)
    machine.TestCase.settings = settings(max_examples=12, stateful_step_count=12, deadline=None,
                                         suppress_health_check=list(HealthCheck), derandomize=True)
    machine.TestCase().runTest()
