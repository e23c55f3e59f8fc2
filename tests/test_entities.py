"""``supervisors.Entities`` (API section 13): one actor per key, activated on demand, supervised.

Real worker processes; every wait is on a fact (a reply, a ``Down``, a recorded fact), never a clock.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import kernel
from kernel import Actor, ActorExited, Checkpoint, Node, NoReply, Pid
from kernel.testing import Facts, kill_worker, wait_down, wait_facts
from kernel.testkit import run_node
from supervisors import (
    ChildSpec,
    Entities,
    HashPlacement,
    Supervisor,
    SupervisorError,
    count_children,
    which_children,
)

FACTS = "entities-test-facts"


class Cart(Actor):
    """A checkpointed entity that records each start (``init`` or ``restore``) as a fact."""

    checkpoint = Checkpoint(every=1)

    async def init(self, key: Any) -> None:
        self.state = {"key": key, "items": []}
        kernel.cast(FACTS, ("init", key, self.pid))

    async def restore(self, state: Any) -> None:
        self.state = state
        kernel.cast(FACTS, ("restore", state["key"], self.pid))

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case "get":
                return list(self.state["items"])
            case "pid":
                return self.pid
            case "hold":
                return NoReply  # answered never: a call that stays in flight
            case ("add", item):
                self.state["items"].append(item)
                return list(self.state["items"])
        raise ValueError(request)

    async def handle_cast(self, message: Any) -> None:
        match message:
            case ("add", item):
                self.state["items"].append(item)
            case "crash":
                raise RuntimeError("asked to crash")


carts = Entities("carts", Cart)
idle_carts = Entities("idle-carts", Cart, idle_timeout=0.2)
on_one = Entities("on-one", Cart, placement=lambda key, workers: workers - 1)


class Poker(Actor):
    """Calls an entity when told to, and records which pid answered."""

    async def handle_cast(self, message: Any) -> None:
        match message:
            case ("poke", key):
                pid = await carts.call(key, "pid")
                kernel.cast(FACTS, ("answer", pid))


async def _start(node: Node, *families: Entities) -> Pid:
    await node.spawn(Facts, name=FACTS, worker=0)
    children = [f.child_spec() for f in families]
    return await node.spawn(Supervisor, children=children, name="entities-test-root")


def _kind(kind: str) -> Any:
    return lambda fact: fact[0] == kind


@pytest.mark.node(workers=2)
async def test_concurrent_first_messages_from_the_node_and_every_worker_activate_one(node: Node) -> None:
    await _start(node, carts)
    pokers = [await node.spawn(Poker, worker=w) for w in (0, 1) for _ in range(4)]
    for poker in pokers:
        node.cast(poker, ("poke", "k1"))
    from_node = await asyncio.gather(*(carts.call("k1", "pid") for _ in range(4)))
    answers = await wait_facts(node, FACTS, len(pokers), _kind("answer"))
    pids = {pid for _, pid in answers} | set(from_node)
    assert len(pids) == 1
    starts = await node.call(FACTS, ("all",))
    assert [f for f in starts if f[0] in ("init", "restore")] == [("init", "k1", pids.pop())]


@pytest.mark.node(workers=2)
async def test_placement_is_the_stable_hash_or_the_given_function(node: Node) -> None:
    await _start(node, carts, on_one)
    for key in range(8):
        pid = await carts.call(key, "pid")
        assert pid.worker == HashPlacement().place(key, 2)
        assert (await on_one.call(key, "pid")).worker == 1
    assert {(await carts.whereis(k)).worker for k in range(8)} == {0, 1}  # type: ignore[union-attr]


def test_placement_is_stable_across_node_restarts(tmp_path: Any) -> None:
    state = str(tmp_path / "app.db")

    async def placed(node: Node) -> dict[int, int]:
        await _start(node, carts)
        return {key: (await carts.call(key, "pid")).worker for key in range(12)}

    first = run_node(placed, workers=3, state=state)
    second = run_node(placed, workers=3, state=state)
    assert first == second
    assert len(set(first.values())) > 1


@pytest.mark.node(workers=2)
async def test_whereis_does_not_activate_and_stop_passivates(node: Node) -> None:
    await _start(node, carts)
    assert await carts.whereis("w") is None
    assert await carts.call("w", ("add", "book")) == ["book"]
    pid = await carts.whereis("w")
    assert isinstance(pid, Pid)
    ref = node.monitor(pid)
    await carts.stop("w")
    assert (await wait_down(node, ref)).reason == "normal"
    assert await carts.whereis("w") is None
    assert await carts.call("w", "get") == ["book"], "reactivated from its final checkpoint"
    await carts.stop("never-started")  # a passive entity: nothing to do


@pytest.mark.node(workers=2)
async def test_a_crashed_entity_is_restarted_from_its_last_checkpoint(node: Node) -> None:
    await _start(node, carts)
    assert await carts.call("c", ("add", "pen")) == ["pen"]
    pid = await carts.whereis("c")
    assert pid is not None
    carts.cast("c", "crash")
    # Restarted by its supervisor without any message asking for it:
    restored = await wait_facts(node, FACTS, 1, _kind("restore"))
    assert restored[0][1] == "c" and restored[0][2] != pid
    assert await carts.call("c", "get") == ["pen"]
    node.exit(restored[0][2], "kill")  # a kill (the observer's) is restarted too
    again = await wait_facts(node, FACTS, 2, _kind("restore"))
    assert again[1][2] != restored[0][2]
    assert await carts.call("c", "get") == ["pen"]  # once it answers, its supervisor has recorded it
    [(key, running, kind)] = await which_children(carts.supervisor_name)
    assert (key, kind) == ("c", "worker") and running == again[1][2]
    assert (await count_children(carts.supervisor_name))["active"] == 1


@pytest.mark.node(workers=2)
async def test_passivation_then_a_cast_while_passive_reactivates_it(node: Node) -> None:
    await _start(node, idle_carts)
    assert await idle_carts.call("p", ("add", 1)) == [1]
    pid = await idle_carts.whereis("p")
    assert pid is not None
    ref = node.monitor(pid)
    assert (await wait_down(node, ref, timeout=10.0)).reason == "normal", "passivated after 0.2 s idle"
    assert await idle_carts.whereis("p") is None
    idle_carts.cast("p", ("add", 2))  # passive: the cast activates it and is not lost
    assert await idle_carts.call("p", "get") == [1, 2]
    assert (await idle_carts.whereis("p")) not in (None, pid)


@pytest.mark.node(workers=2)
async def test_an_entity_whose_worker_is_killed_is_restored_on_its_next_message(node: Node) -> None:
    await _start(node, carts)
    key = next(k for k in range(20) if HashPlacement().place(k, 2) == 1)
    assert await carts.call(key, ("add", "lamp")) == ["lamp"]
    old = await carts.whereis(key)
    assert old is not None and old.worker == 1
    await kill_worker(node, 1)
    assert await carts.call(key, "get") == ["lamp"]
    new = await carts.whereis(key)
    assert new is not None and new != old and new.worker == 1


@pytest.mark.node(workers=2)
async def test_a_call_in_flight_when_the_worker_dies_names_the_entity(node: Node) -> None:
    await _start(node, carts)
    key = next(k for k in range(20) if HashPlacement().place(k, 2) == 0)
    await carts.call(key, "pid")
    hang = asyncio.get_running_loop().create_task(carts.call(key, "hold", timeout=30.0))
    await kill_worker(node, 0)
    with pytest.raises(ActorExited) as info:
        await hang
    assert info.value.reason == "worker_down"
    assert info.value.dest == ("carts", key)
    assert "('carts', " in str(info.value)


def test_bad_declarations_are_refused_naming_the_argument() -> None:
    with pytest.raises(TypeError, match="cls"):
        Entities("x", object)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idle_timeout"):
        Entities("x", Cart, idle_timeout=0)
    with pytest.raises(TypeError, match="placement"):
        Entities("x", Cart, placement=3)
    with pytest.raises(ValueError, match="max_restarts"):
        Entities("x", Cart, max_restarts=-1)
    spec = carts.child_spec()
    assert isinstance(spec, ChildSpec) and spec.id == "carts"


@pytest.mark.node(workers=2)
async def test_without_its_supervisor_a_family_says_what_to_do(node: Node) -> None:
    with pytest.raises(SupervisorError, match="child_spec"):
        await carts.call("k", "get")
    with pytest.raises(SupervisorError, match="child_spec"):
        carts.cast("k", "x")


class Holder(Actor):
    """Never answers: a call to it stays in flight until something else ends it."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        return NoReply


@pytest.mark.node(workers=2)
async def test_calls_failed_by_a_worker_death_name_the_destination_the_caller_used(node: Node) -> None:
    pid = await node.spawn(Holder, name="holder", worker=1)
    loop = asyncio.get_running_loop()
    by_name = loop.create_task(node.call("holder", "x", timeout=30.0))
    by_pid = loop.create_task(node.call(pid, "x", timeout=30.0))
    await kill_worker(node, 1)
    for task, dest in ((by_name, "holder"), (by_pid, pid)):
        with pytest.raises(ActorExited) as info:
            await task
        assert info.value.reason == "worker_down"
        assert info.value.dest == dest
        assert repr(dest) in str(info.value) and "<1.0>" not in str(info.value)


class Racer(Actor):
    """Reproduces, on the entity's own worker, a cast that arrives just after the idle timer fired."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        pid = request
        entity = self._rt.local(pid)  # white-box: fire the idle passivation now, then cast at once
        self._rt.store._passivate(entity)
        self.cast(pid, ("add", "late"))
        return await self.call(pid, "get")


@pytest.mark.node(workers=2)
async def test_a_message_that_overtakes_an_idle_passivation_is_handled_not_dropped(node: Node) -> None:
    await _start(node, carts)  # no idle timer of its own: the racer fires the passivation
    await carts.call("r", ("add", "early"))
    pid = await carts.whereis("r")
    assert pid is not None
    racer = await node.spawn(Racer, worker=pid.worker)
    assert await node.call(racer, pid) == ["early", "late"]


class Room(Actor):
    """An entity whose ``init`` calls another entity of its own family (its lobby)."""

    async def init(self, key: str) -> None:
        self.state = await rooms.call("lobby", "count") if key != "lobby" else 0

    async def handle_call(self, request: Any, caller: Any) -> Any:
        self.state += 1
        return self.state


rooms = Entities("rooms", Room)


@pytest.mark.node(workers=2)
async def test_an_entity_init_may_call_another_entity_of_its_family(node: Node) -> None:
    await _start(node, rooms)
    assert await rooms.call("kitchen", "count", timeout=10.0) == 2  # lobby answered 1 during init
