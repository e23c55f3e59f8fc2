"""Supervisor behaviour on a real node with two workers: strategies, restart types, intensity and
escalation, start failures, shutdown order and timeouts, and the child-management API."""

from __future__ import annotations

import time
from typing import Any

import pytest

from kernel import ActorExited, Crash
from supervisors import (
    ChildSpec,
    Supervisor,
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
    starts,
    wait_down,
)

runner = node_fixture(workers=2)


def member(tag: str, journal: Any, *, worker: int | None = None, mode: str = "", **spec: Any) -> ChildSpec:
    return ChildSpec(tag, Member, args=(tag, journal, mode), worker=worker, **spec)


async def tree(r: NodeRunner, strategy: str, tags: list[str], **flags: Any) -> tuple[Any, Any]:
    """A journal and a supervisor of ``Member`` children spread over both workers."""
    journal = await r.node.spawn(Journal, worker=0)
    children = [member(t, journal, worker=i % 2) for i, t in enumerate(tags)]
    sup = await r.node.spawn(Supervisor, strategy=strategy, children=children, worker=1, **flags)
    return journal, sup


def pids(children: list[tuple[Any, Any, str]]) -> dict[Any, Any]:
    return {cid: pid for cid, pid, _ in children}


@pytest.mark.parametrize(
    ("strategy", "restarted", "stopped_in_order"),
    [
        ("one_for_one", {"b"}, []),
        ("rest_for_one", {"b", "c", "d"}, ["d", "c"]),
        ("one_for_all", {"a", "b", "c", "d"}, ["d", "c", "a"]),
    ],
)
def test_strategy_restarts_exactly_the_right_children(
    runner: NodeRunner, strategy: str, restarted: set[str], stopped_in_order: list[str]
) -> None:
    async def body() -> None:
        node = runner.node
        journal, sup = await tree(runner, strategy, ["a", "b", "c", "d"])
        before = pids(await which_children(sup))
        assert [cid for cid, *_ in await which_children(sup)] == ["a", "b", "c", "d"]
        ref = node.monitor(before["b"])
        node.cast(before["b"], "crash")
        assert isinstance((await wait_down(node, ref)).reason, Crash)
        # Every restarted child journals a second start; when the last one has, the restart is done.
        last = max(restarted, key="abcd".index)
        entries = await journal_wait(journal, "start", last, 2)
        after = pids(await which_children(sup))
        for tag in "abcd":
            if tag in restarted:
                assert after[tag] != before[tag] and after[tag] == starts(entries, tag)[-1]
            else:
                assert after[tag] == before[tag] and len(starts(entries, tag)) == 1
        crash_at = entries.index(("stop", "b", "crash")) if ("stop", "b", "crash") in entries else 0
        stops = [e[1] for e in entries[crash_at:] if e[0] == "stop" and e[1] != "b"]
        assert stops == stopped_in_order
        # Bystanders stopped before anything restarted, and restarts ran in start order.
        restart_order = [e[1] for e in entries[crash_at:] if e[0] == "start"]
        assert restart_order == sorted(restarted)
        await node.stop(sup, "shutdown")

    runner.run(body())


def test_transient_and_temporary_rules(runner: NodeRunner) -> None:
    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, worker=0)
        # Children on the supervisor's own worker (worker=None): their Exit reaches the supervisor
        # by a local enqueue, before the Down reaches this process over a socket, so which_children
        # after the Down already reflects the exit.
        children = [
            member("t", journal, restart="transient"),
            member("tmp", journal, restart="temporary"),
            member("p", journal),
        ]
        sup = await node.spawn(Supervisor, children=children, worker=1)
        first = pids(await which_children(sup))

        for reason in ["normal", "shutdown", ("shutdown", "done")]:
            if reason != "normal":
                await restart_child(sup, "t")
            t = pids(await which_children(sup))["t"]
            ref = node.monitor(t)
            assert await node.call(t, ("exit", reason)) == "ok"
            assert (await wait_down(node, ref)).reason == reason
            assert pids(await which_children(sup))["t"] is None, f"transient restarted after {reason!r}"

        await restart_child(sup, "t")
        t = pids(await which_children(sup))["t"]
        ref = node.monitor(t)
        node.cast(t, "crash")
        await wait_down(node, ref)
        entries = await journal_wait(journal, "start", "t", 5)
        assert pids(await which_children(sup))["t"] == starts(entries, "t")[-1] != t

        ref = node.monitor(first["tmp"])
        node.cast(first["tmp"], "crash")
        await wait_down(node, ref)
        assert [cid for cid, *_ in await which_children(sup)] == ["t", "p"]
        assert pids(await which_children(sup))["p"] == first["p"]
        assert await count_children(sup) == {"specs": 2, "active": 2, "supervisors": 0, "workers": 2}
        await node.stop(sup, "shutdown")

    runner.run(body())


def test_temporary_bystander_is_not_restarted(runner: NodeRunner) -> None:
    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, worker=0)
        children = [member("a", journal), member("b", journal, restart="temporary"), member("c", journal)]
        sup = await node.spawn(Supervisor, strategy="rest_for_one", children=children, max_restarts=1)
        before = pids(await which_children(sup))
        ref = node.monitor(before["a"])
        node.cast(before["a"], "crash")
        await wait_down(node, ref)
        await journal_wait(journal, "start", "c", 2)
        assert [cid for cid, *_ in await which_children(sup)] == ["a", "c"]
        await node.stop(sup, "shutdown")

    runner.run(body())


def test_intensity_escalates_through_two_levels(runner: NodeRunner) -> None:
    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, worker=0)
        mid = ChildSpec(
            "mid",
            Supervisor,
            type="supervisor",
            kwargs={"children": [member("w", journal, worker=0)], "max_restarts": 1, "max_seconds": 60.0},
        )
        root = await node.spawn(Supervisor, children=[mid], max_restarts=1, max_seconds=60.0, worker=1)
        root_ref = node.monitor(root)
        mids = [pids(await which_children(root))["mid"]]

        async def crash_w(n: int) -> None:
            entries = await journal_wait(journal, "start", "w", n)
            w = starts(entries, "w")[-1]
            ref = node.monitor(w)
            node.cast(w, "crash")
            await wait_down(node, ref)

        # Round 1: mid restarts w once, then gives up on the second crash; root restarts mid.
        await crash_w(1)
        mid_ref = node.monitor(mids[0])
        await crash_w(2)
        assert (await wait_down(node, mid_ref)).reason == "shutdown"
        await journal_wait(journal, "start", "w", 3)
        mids.append(pids(await which_children(root))["mid"])
        assert mids[1] not in (None, mids[0])
        # Round 2: the same again; now root is over its own limit and exits "shutdown" too.
        await crash_w(3)
        await crash_w(4)
        assert (await wait_down(node, root_ref)).reason == "shutdown"
        entries = await journal_wait(journal, "stop", "w", 4)
        assert entries[-1][:2] != ("start", "w"), "nothing restarted after the escalation"

    runner.run(body())


def test_init_failure_stops_the_supervisor_start_naming_the_child(runner: NodeRunner) -> None:
    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, worker=0)
        children = [
            member("ok", journal, worker=0),
            member("bad", journal, mode="fail"),
            member("c", journal),
        ]
        with pytest.raises(ActorExited) as info:
            await node.spawn(Supervisor, children=children)
        reason = info.value.reason
        assert isinstance(reason, Crash) and reason.type_name == "SupervisorError"
        assert "'bad'" in reason.message and "never starts" in reason.message
        entries = await journal_wait(journal, "stop", "ok", 1)
        assert [e[:2] for e in entries] == [("start", "ok"), ("stop", "ok")]

    runner.run(body())


def test_child_that_cannot_restart_is_retried_then_escalates(runner: NodeRunner) -> None:
    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, worker=0)
        children = [member("stable", journal), member("flaky", journal, mode="fail_restarts", worker=0)]
        sup = await node.spawn(Supervisor, children=children, max_restarts=3, max_seconds=60.0)
        sup_ref = node.monitor(sup)
        flaky = pids(await which_children(sup))["flaky"]
        node.cast(flaky, "crash")
        assert (await wait_down(node, sup_ref)).reason == "shutdown"
        entries = await kernel_read(journal)
        # One restart per attempt: 3 allowed restarts all fail, the 4th exceeds the intensity.
        assert sum(1 for e in entries if e == ("failed", "flaky")) == 3
        assert ("stop", "stable", "shutdown") in entries

    runner.run(body())


async def kernel_read(journal: Any) -> list[Any]:
    import kernel

    entries: list[Any] = await kernel.call(journal, ("read",))
    return entries


def test_shutdown_stops_children_in_reverse_start_order(runner: NodeRunner) -> None:
    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, worker=0)
        inner = ChildSpec(
            "inner",
            Supervisor,
            type="supervisor",
            kwargs={"children": [member("i1", journal), member("i2", journal, worker=0)]},
        )
        children = [member("a", journal, worker=0), inner, member("z", journal, worker=1)]
        sup = await node.spawn(Supervisor, children=children, worker=1)
        await node.stop(sup, "shutdown")
        entries = await kernel_read(journal)
        assert [e[1] for e in entries if e[0] == "start"] == ["a", "i1", "i2", "z"]
        assert [e[1] for e in entries if e[0] == "stop"] == ["z", "i2", "i1", "a"]
        assert all(e[2] == "shutdown" for e in entries if e[0] == "stop")

    runner.run(body())


def test_shutdown_timeout_kills_a_child_that_ignores_shutdown(runner: NodeRunner) -> None:
    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, worker=0)
        children = [member("polite", journal), member("stubborn", journal, mode="stubborn", shutdown=0.3)]
        sup = await node.spawn(Supervisor, children=children)
        stubborn = pids(await which_children(sup))["stubborn"]
        ref = node.monitor(stubborn)
        began = time.monotonic()
        await terminate_child(sup, "stubborn")
        assert (await wait_down(node, ref)).reason == "killed"
        assert time.monotonic() - began >= 0.3
        assert ("stop", "stubborn", "shutdown") in await kernel_read(journal)
        assert pids(await which_children(sup)) == {
            "polite": pids(await which_children(sup))["polite"],
            "stubborn": None,
        }
        await node.stop(sup, "shutdown")

    runner.run(body())


def test_child_management_api(runner: NodeRunner) -> None:
    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, worker=0)
        sup = await node.spawn(Supervisor, children=[member("a", journal)])
        b = await start_child(sup, member("b", journal, worker=0))
        assert pids(await which_children(sup))["b"] == b
        with pytest.raises(SupervisorError, match="'b'") as info:
            await start_child(sup, member("b", journal))
        assert info.value.reason == "already_started" and info.value.detail == b
        for fn in (restart_child, delete_child):
            with pytest.raises(SupervisorError, match="'b'") as info:
                await fn(sup, "b")
            assert info.value.reason == "running"
        for fn in (restart_child, delete_child, terminate_child):
            with pytest.raises(SupervisorError, match="'nope'") as info:
                await fn(sup, "nope")
            assert info.value.reason == "not_found"

        ref = node.monitor(b)
        await terminate_child(sup, "b")
        assert (await wait_down(node, ref)).reason == "shutdown"
        await terminate_child(sup, "b")  # already terminated: succeeds
        assert await which_children(sup) == [
            ("a", pids(await which_children(sup))["a"], "worker"),
            ("b", None, "worker"),
        ]
        assert await count_children(sup) == {"specs": 2, "active": 1, "supervisors": 0, "workers": 2}
        with pytest.raises(SupervisorError, match="restart_child or delete_child") as info:
            await start_child(sup, member("b", journal))
        assert info.value.reason == "already_present"
        b2 = await restart_child(sup, "b")
        assert b2 != b and pids(await which_children(sup))["b"] == b2
        await terminate_child(sup, "b")
        await delete_child(sup, "b")
        assert [cid for cid, *_ in await which_children(sup)] == ["a"]

        with pytest.raises(SupervisorError, match="'bad'") as info:
            await start_child(sup, member("bad", journal, mode="fail"))
        assert info.value.reason == "failed_to_start" and isinstance(info.value.detail, Crash)
        assert [cid for cid, *_ in await which_children(sup)] == ["a"]
        with pytest.raises(TypeError, match="spec"):
            await start_child(sup, "not a spec")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="child_id"):
            await terminate_child(sup, ["unhashable"])
        await node.stop(sup, "shutdown")

    runner.run(body())


def test_bad_supervisor_flags_fail_the_spawn_naming_the_argument(runner: NodeRunner) -> None:
    async def body() -> None:
        for kwargs, needle in [
            ({"strategy": "one_for_some"}, "strategy"),
            ({"max_restarts": -1}, "max_restarts"),
            ({"max_seconds": 0}, "max_seconds"),
            ({"children": ["x"]}, "children[0]"),
        ]:
            # Checked in the caller (Actor.check_args): nothing is sent or started.
            with pytest.raises((TypeError, ValueError), match=needle.replace("[", r"\[")):
                await runner.node.spawn(Supervisor, **kwargs)

    runner.run(body())


def test_snapshot_shows_the_tree_and_child_keys(runner: NodeRunner) -> None:
    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, worker=0)
        inner = ChildSpec("inner", Supervisor, type="supervisor", kwargs={"children": [member("i", journal)]})
        sup = await node.spawn(Supervisor, children=[member("a", journal, worker=0), inner], name="snaproot")
        kids = pids(await which_children(sup))
        snap = await node.snapshot()
        by_pid = {a["pid"]: a for a in snap["actors"]}
        root = by_pid[repr(sup)]
        assert root["supervisor"] is True and root["key"] == "snaproot"
        assert root["children"] == [repr(kids["a"]), repr(kids["inner"])]
        assert by_pid[repr(kids["a"])]["key"] == "snaproot/a"
        assert by_pid[repr(kids["a"])]["supervisor"] is False
        inner_kids = pids(await which_children(kids["inner"]))
        assert by_pid[repr(inner_kids["i"])]["key"] == "snaproot/inner/i"
        assert by_pid[repr(kids["inner"])]["children"] == [repr(inner_kids["i"])]
        await node.stop(sup, "shutdown")

    runner.run(body())


def test_supervisor_stays_responsive_while_a_child_keeps_failing_to_restart(runner: NodeRunner) -> None:
    # OTP's hanging_restart_loop: between two attempts the supervisor answers requests, and
    # terminate_child ends the loop.
    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, worker=0)
        children = [member("stable", journal), member("flaky", journal, mode="fail_restarts", worker=0)]
        sup = await node.spawn(Supervisor, children=children, max_restarts=100_000, max_seconds=60.0)
        flaky = pids(await which_children(sup))["flaky"]
        node.cast(flaky, "crash")
        await journal_wait(journal, "failed", "flaky", 2)
        assert pids(await which_children(sup))["flaky"] is None
        for fn in (restart_child, delete_child):
            with pytest.raises(SupervisorError, match="'flaky'") as info:
                await fn(sup, "flaky")
            assert info.value.reason == "restarting"
        await terminate_child(sup, "flaky")
        failed = await kernel_count(journal, "failed", "flaky")
        # Once terminated, a retry already queued is ignored: the count stops moving.
        assert await which_children(sup) == [
            ("stable", pids(await which_children(sup))["stable"], "worker"),
            ("flaky", None, "worker"),
        ]
        assert await kernel_count(journal, "failed", "flaky") == failed
        await delete_child(sup, "flaky")
        await node.stop(sup, "shutdown")

    runner.run(body())


async def kernel_count(journal: Any, kind: str, tag: Any) -> int:
    import kernel

    n: int = await kernel.call(journal, ("count", kind, tag))
    return n


async def linked_crasher(ctx: Any, target: Any) -> None:
    ctx.link(target)
    raise RuntimeError("not a child of anyone")


def test_exits_from_unknown_pids_are_ignored(runner: NodeRunner) -> None:
    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, worker=0)
        sup = await node.spawn(Supervisor, children=[member("a", journal)], worker=1)
        before = await which_children(sup)
        # On the supervisor's worker, so its Exit is enqueued locally before our Down arrives.
        _crasher, ref = await node.spawn_opt(linked_crasher, (sup,), worker=1, monitor=True)
        assert isinstance((await wait_down(node, ref)).reason, Crash)
        assert await which_children(sup) == before
        await node.stop(sup, "shutdown")

    runner.run(body())


def test_one_for_all_retry_terminates_the_already_restarted_children_again(runner: NodeRunner) -> None:
    # OTP's one_for_all_other_child_fails_restart: each attempt is a whole group restart.
    async def body() -> None:
        node = runner.node
        journal = await node.spawn(Journal, worker=0)
        children = [
            member("a", journal, worker=0),
            member("flaky", journal, mode="fail_restarts"),
            member("c", journal, worker=1),
        ]
        sup = await node.spawn(
            Supervisor, strategy="one_for_all", children=children, max_restarts=2, max_seconds=60.0
        )
        sup_ref = node.monitor(sup)
        a = pids(await which_children(sup))["a"]
        node.cast(a, "crash")
        assert (await wait_down(node, sup_ref)).reason == "shutdown"
        entries = await kernel_read(journal)
        after_crash = entries[entries.index(("stop", "a", "crash")) + 1 :]
        assert [e[:2] for e in after_crash] == [
            ("stop", "c"),  # attempt 1: stop the others (flaky, c) in reverse order...
            ("stop", "flaky"),
            ("start", "a"),  # ...start all in order: flaky fails
            ("failed", "flaky"),
            ("stop", "a"),  # attempt 2 (the retry): the restarted a is stopped again
            ("start", "a"),
            ("failed", "flaky"),
            ("stop", "a"),  # attempt 3 exceeds max_restarts=2: escalation stops what runs
        ]

    runner.run(body())
