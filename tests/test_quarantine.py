"""Poison-message quarantine: after K crashes on one message it is set aside, recorded, replayable."""

from __future__ import annotations

import asyncio

import pytest

import kernel
from kernel import ActorExited, Down, Node, Quarantined
from kernel.control import ControlClient
from supervisors import ChildSpec, Supervisor, which_children
from tests.support.nodes import run_node


class Fragile(kernel.Actor):
    fixed = False  # flipped in the worker process by the "fix" cast: survives restarts there

    async def init(self) -> None:
        self.state = []

    async def handle_call(self, request, caller):
        if request == "seen":
            return list(self.state)
        if request == ("poison", 1) and not type(self).fixed:
            raise ValueError("cannot digest poison")
        self.state.append(request)
        return "ok"

    async def handle_cast(self, message) -> None:
        if message == "fix":
            type(self).fixed = True


async def _dead_letters(path, count: int) -> list:
    """Wait (bounded) for the dead-letter table to hold ``count`` rows: a file state, not a sleep."""
    async with asyncio.timeout(10):
        while True:
            try:
                letters = kernel.checkpoints.dead_letters(path)
            except Exception:
                letters = []
            if len(letters) == count:
                return letters
            await asyncio.sleep(0.02)


def test_poison_message_is_quarantined_after_k_crashes_and_can_be_replayed(tmp_path) -> None:
    async def body(node: Node) -> None:
        sup = await node.spawn(Supervisor, strategy="one_for_one", max_restarts=10, name="root", worker=0,
                               children=[ChildSpec("fragile", Fragile, worker=0)])
        [(_, child, _)] = await which_children(sup)
        for _ in range(Fragile.quarantine_after):
            ref = node.monitor(child)
            with pytest.raises(ActorExited):
                await node.call(child, ("poison", 1))
            await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=5)
            [(_, child, _)] = await which_children(sup)
        # The fourth delivery is set aside: no crash, no restart, the supervisor is untouched.
        with pytest.raises(Quarantined):
            await node.call(child, ("poison", 1))
        assert await which_children(sup) == [("fragile", child, "worker")]
        assert await node.call(child, ("other", 2)) == "ok"  # other messages flow
        [letter] = await _dead_letters(node.state_path, 1)
        assert letter.key == "root/fragile" and letter.count == 3 and "ValueError" in letter.error
        # Fix the handler, then replay through the control socket: the message is handled once.
        node.cast(child, "fix")
        async with ControlClient() as client:
            await client.connect(node.name)
            answer = await client.request({"op": "replay", "id": letter.id})
        assert answer == {"id": letter.id, "op": "replay", "answer": "'ok'"}
        assert kernel.checkpoints.dead_letters(node.state_path) == []
        assert await node.call(child, "seen") == [("other", 2), ("poison", 1)]

    run_node(body, state=tmp_path / "s.db")
