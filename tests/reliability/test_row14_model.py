"""Row 14: link/monitor semantics against a small Python model of Erlang's rules (hypothesis).

Rules: spawn (trapping or not, on either worker), link, exit(pid, reason) from a non-parent, kill,
crash, normal stop, SIGKILL of a worker. The node monitors every actor; after each step every Down
that the model expects must arrive with the model's reason, every actor the model says is alive must
answer, and no unexpected Down may arrive. Model (Erlang reference manual, "Processes"):

* a process exiting with reason R != "normal" sends R to every linked process: a trapping one gets an
  ``Exit`` and lives; any other dies with R (and so on); "normal" kills nobody;
* ``exit(pid, "kill")`` cannot be trapped: the target dies "killed", and its links see "killed";
* ``exit(pid, "normal")`` from another process is ignored unless trapped;
* linking to a dead process delivers an exit signal "noproc";
* a worker's death is the exit of all its actors with "worker_down".

Figure: divergences over N programs = 0.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kernel import Actor, Crash, Down
from tests.reliability.support import SOAK, record
from tests.support.supervisors import NodeRunner, node_fixture

EXAMPLES = 1000 if SOAK else 15
STEPS = 20 if SOAK else 10


class Subject(Actor):
    async def init(self, trap: bool) -> None:
        self.trap = trap

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("link", other):
                self.link(other)
                return None
            case ("exit", other, reason):
                self.exit(other, reason)
                return None
            case "stop":
                self.stop("normal")
                return None
            case "ping":
                return "pong"
        raise ValueError(request)

    async def handle_cast(self, message: Any) -> None:
        raise RuntimeError("crash on purpose")


class Trapping(Subject):
    trap_exits = True


class Parent(Actor):
    """Spawns the subjects (so exits sent by the node never come from their parent)."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        trap, worker = request
        return await self.spawn(Trapping if trap else Subject, trap, worker=worker)


runner = node_fixture(workers=2)


DIVERGENCES: list[str] = []
PROGRAMS = [0]


def _kind(reason: Any) -> Any:
    return "crash" if isinstance(reason, Crash) else reason


def make_machine(runner: NodeRunner) -> type[RuleBasedStateMachine]:
    node = runner.node
    parent = runner.run(node.spawn(Parent, worker=0))

    def now(fn: Any, *args: Any) -> Any:
        """Run a plain node function inside the node's event loop (sends need the running loop)."""

        async def inside() -> Any:
            return fn(*args)

        return runner.run(inside())

    class LinkModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            PROGRAMS[0] += 1
            self.pids: list[Any] = []
            self.trap: dict[Any, bool] = {}
            self.alive: set[Any] = set()
            self.links: set[frozenset[Any]] = set()
            self.expect: dict[Any, Any] = {}  # dead pid -> reason (model)
            self.refs: dict[Any, Any] = {}  # pid -> monitor ref
            self.seen: set[Any] = set()  # pids whose Down arrived

        # -- the model --------------------------------------------------------------------
        def _die(self, pid: Any, reason: Any) -> None:
            if pid not in self.alive:
                return
            self.alive.discard(pid)
            self.expect[pid] = reason
            propagated = "killed" if reason == "kill" else reason
            for pair in [p for p in self.links if pid in p]:
                self.links.discard(pair)
                (other,) = pair - {pid}
                self._signal(other, propagated)

        def _signal(self, pid: Any, reason: Any) -> None:
            if pid not in self.alive:
                return
            if reason == "kill":
                self._die(pid, "killed")
            elif self.trap[pid] or reason == "normal":
                return  # trapped (an Exit message), or a normal exit ignored
            else:
                self._die(pid, reason)

        # -- rules ------------------------------------------------------------------------
        @rule(trap=st.booleans(), worker=st.integers(0, 1))
        def spawn(self, trap: bool, worker: int) -> None:
            pid = runner.run(node.call(parent, (trap, worker)))
            self.pids.append(pid)
            self.trap[pid] = trap
            self.alive.add(pid)
            self.refs[pid] = now(node.monitor, pid)

        @precondition(lambda self: self.alive)
        @rule(data=st.data())
        def link(self, data: st.DataObject) -> None:
            a = data.draw(st.sampled_from(sorted(self.alive)))
            b = data.draw(st.sampled_from(self.pids))
            if a == b:
                return
            runner.run(node.call(a, ("link", b)))
            if b in self.alive:
                self.links.add(frozenset((a, b)))
            else:
                self._signal(a, "noproc")

        @precondition(lambda self: self.alive)
        @rule(data=st.data(), reason=st.sampled_from(["normal", "kill", "shutdown", ("shutdown", 1)]))
        def exit(self, data: st.DataObject, reason: Any) -> None:
            pid = data.draw(st.sampled_from(sorted(self.alive)))
            now(node.exit, pid, reason)
            self._signal(pid, reason)

        @precondition(lambda self: self.alive)
        @rule(data=st.data())
        def crash(self, data: st.DataObject) -> None:
            pid = data.draw(st.sampled_from(sorted(self.alive)))
            now(node.cast, pid, "boom")
            self._die(pid, "crash")

        @precondition(lambda self: self.alive)
        @rule(data=st.data())
        def stop_normal(self, data: st.DataObject) -> None:
            pid = data.draw(st.sampled_from(sorted(self.alive)))
            runner.run(node.call(pid, "stop"))
            self._die(pid, "normal")

        @precondition(lambda self: self.alive)
        @rule(worker=st.integers(0, 1))
        def kill_worker(self, worker: int) -> None:
            on = [p for p in self.alive if p.worker == worker]
            if not on:
                return
            os.kill(node.workers[worker], signal.SIGKILL)
            for p in on:  # all at once: no link between them decides anything
                self.alive.discard(p)
                self.expect[p] = "worker_down"
            for p in on:
                for pair in [q for q in self.links if p in q]:
                    self.links.discard(pair)
                    (other,) = pair - {p}
                    self._signal(other, "worker_down")
            runner.run(self._await_worker(worker, on[0]))

        async def _await_worker(self, worker: int, victim: Any) -> None:
            # Once the node has seen the death (a Down), a spawn there waits for the replacement.
            ref = self.refs[victim]
            down = await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=10)
            self.seen.add(victim)
            if down.reason != "worker_down":
                DIVERGENCES.append(f"{victim}: Down {down.reason!r}, model says 'worker_down'")
            if worker == 0:  # the Parent lived there
                nonlocal parent
                parent = await node.spawn(Parent, worker=0)
            await node.call(parent, (False, worker))

        # -- the check ----------------------------------------------------------------------
        @invariant()
        def matches_model(self) -> None:
            runner.run(self._check())

        async def _check(self) -> None:
            for pid, reason in self.expect.items():
                if pid in self.seen:
                    continue
                ref = self.refs[pid]
                try:
                    down = await node.receive(lambda m, ref=ref: isinstance(m, Down) and m.ref == ref,
                                              timeout=10)
                except TimeoutError:
                    DIVERGENCES.append(f"{pid}: no Down, model says {reason!r}")
                    raise AssertionError(DIVERGENCES[-1]) from None
                self.seen.add(pid)
                want = "killed" if reason == "kill" else reason
                if _kind(down.reason) != want:
                    DIVERGENCES.append(f"{pid}: Down {down.reason!r}, model says {want!r}")
                    raise AssertionError(DIVERGENCES[-1])
            for pid in self.alive:
                try:
                    assert await node.call(pid, "ping", timeout=5) == "pong"
                except Exception as exc:
                    DIVERGENCES.append(f"{pid}: model says alive, call gave {exc!r}")
                    raise AssertionError(DIVERGENCES[-1]) from None

        def teardown(self) -> None:
            async def clean() -> None:
                for pid in list(self.alive):
                    node.exit(pid, "kill")
                for pid in list(self.alive):
                    await node.receive(lambda m, r=self.refs[pid]: isinstance(m, Down) and m.ref == r,
                                       timeout=10)
                # No unexpected Down is left over (the model expected none for live pids).
                while True:
                    try:
                        extra = await node.receive(lambda m: isinstance(m, Down), timeout=0.01)
                    except TimeoutError:
                        return
                    DIVERGENCES.append(f"unexpected {extra!r}")

            runner.run(clean())

    return LinkModel


@pytest.mark.timeout(3000 if SOAK else 60)
def test_links_and_monitors_match_the_erlang_model(runner: NodeRunner) -> None:
    machine = make_machine(runner)
    machine.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                                         suppress_health_check=list(HealthCheck), derandomize=not SOAK)
    machine.TestCase().runTest()
    assert not DIVERGENCES, DIVERGENCES
    record(14, "test_links_and_monitors_match_the_erlang_model", programs=PROGRAMS[0],
           steps_per_program=STEPS, divergences=len(DIVERGENCES))
