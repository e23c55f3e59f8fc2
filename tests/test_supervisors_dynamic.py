"""DynamicSupervisor on a real node: children added at run time, per-spec restarts, max_children,
cheap bookkeeping for many children, and concurrent shutdown."""

from __future__ import annotations

import pytest

from kernel import Actor
from supervisors import (
    ChildSpec,
    DynamicSupervisor,
    SupervisorError,
    count_children,
    delete_child,
    restart_child,
    start_child,
    terminate_child,
    which_children,
)
from tests.support.supervisors import (
    Journal,
    Member,
    NodeRunner,
    journal_wait,
    node_fixture,
    wait_down,
)

runner = node_fixture(workers=2)


class Quiet(Actor):
    """A child that journals nothing: cheap enough to start by the hundred."""

    async def init(self, n: int) -> None:
        self.state = n


def test_children_added_at_run_time_restart_per_spec(runner: NodeRunner) -> None:
    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, worker=0)
        sup = await node.spawn(DynamicSupervisor, worker=1)
        assert await which_children(sup) == []
        p = await start_child(sup, ChildSpec("cart-1", Member, args=("cart-1", journal), worker=0))
        t = await start_child(sup, ChildSpec("cart-2", Member, args=("cart-2", journal), restart="temporary"))
        assert await which_children(sup) == [("cart-1", p, "worker"), ("cart-2", t, "worker")]
        with pytest.raises(SupervisorError, match="'cart-1'") as info:
            await start_child(sup, ChildSpec("cart-1", Member, args=("x", journal)))
        assert info.value.reason == "already_started"

        ref = node.monitor(p)
        node.cast(p, "crash")
        await wait_down(node, ref)
        entries = await journal_wait(journal, "start", "cart-1", 2)
        p2 = [e[2] for e in entries if e[:2] == ("start", "cart-1")][-1]
        assert await which_children(sup) == [("cart-1", p2, "worker"), ("cart-2", t, "worker")]

        # Temporary: gone when it exits (co-located with the supervisor, see the tree tests).
        ref = node.monitor(t)
        node.cast(t, "crash")
        await wait_down(node, ref)
        assert [cid for cid, *_ in await which_children(sup)] == ["cart-1"]

        for fn in (restart_child, delete_child):
            with pytest.raises(SupervisorError, match="'cart-1'"):
                await fn(sup, "cart-1")
        ref = node.monitor(p2)
        await terminate_child(sup, "cart-1")
        assert (await wait_down(node, ref)).reason == "shutdown"
        assert await which_children(sup) == []
        with pytest.raises(SupervisorError, match="'cart-1'"):
            await terminate_child(sup, "cart-1")
        # As in Elixir, a child can also be named by its pid.
        p3 = await start_child(sup, ChildSpec("cart-3", Member, args=("cart-3", journal)))
        await terminate_child(sup, p3)
        assert await which_children(sup) == []
        await node.stop(sup, "shutdown")

    runner.run(body())


def test_max_children_caps_the_supervisor(runner: NodeRunner) -> None:
    async def body() -> None:
        sup = await runner.node.spawn(DynamicSupervisor, max_children=2)
        for i in range(2):
            await start_child(sup, ChildSpec(i, Quiet, args=(i,)))
        with pytest.raises(SupervisorError, match="max_children") as info:
            await start_child(sup, ChildSpec(2, Quiet, args=(2,)))
        assert info.value.child_id == 2 and info.value.detail == 2
        await terminate_child(sup, 0)
        await start_child(sup, ChildSpec(2, Quiet, args=(2,)))
        assert [cid for cid, *_ in await which_children(sup)] == [1, 2]
        await runner.node.stop(sup, "shutdown")

    runner.run(body())


def test_many_children_start_report_and_stop_together(runner: NodeRunner) -> None:
    async def body() -> None:
        node = runner.node
        sup = await node.spawn(DynamicSupervisor, worker=0)
        n = 1000
        for i in range(n):
            await start_child(sup, ChildSpec(f"u{i}", Quiet, args=(i,), worker=i % 2))
        children = await which_children(sup)
        assert [cid for cid, *_ in children] == [f"u{i}" for i in range(n)]
        assert {pid.worker for _, pid, _ in children} == {0, 1}
        assert await count_children(sup) == {"specs": n, "active": n, "supervisors": 0, "workers": n}
        refs = [node.monitor(pid) for _, pid, _ in children[:: n // 10]]
        await node.stop(sup, "shutdown", timeout=10.0)
        for ref in refs:
            assert (await wait_down(node, ref)).reason == "shutdown"

    runner.run(body())


def test_bad_flags_fail_the_spawn_naming_the_argument(runner: NodeRunner) -> None:
    async def body() -> None:
        for kwargs, needle in [
            ({"strategy": "one_for_all"}, "strategy"),
            ({"max_children": -1}, "max_children"),
            ({"max_children": "3"}, "max_children"),
        ]:
            # Checked in the caller (Actor.check_args): nothing is sent or started.
            with pytest.raises((TypeError, ValueError), match=needle):
                await runner.node.spawn(DynamicSupervisor, **kwargs)

    runner.run(body())
