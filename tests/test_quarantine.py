"""Poison-message quarantine: after K crashes on one message it is set aside, recorded, replayable."""

from __future__ import annotations

import pytest

import kernel
from kernel import Node, Quarantined
from kernel.control import ControlClient
from supervisors import which_children
from tests.support.nodes import run_node
from tests.support.quarantine import crash_until_quarantined, dead_letters


def test_poison_message_is_quarantined_after_k_crashes_and_can_be_replayed(tmp_path) -> None:
    async def body(node: Node) -> None:
        sup, child = await crash_until_quarantined(node)
        # The fourth delivery is set aside: no crash, no restart, the supervisor is untouched.
        with pytest.raises(Quarantined):
            await node.call(child, ("poison", 1))
        assert await which_children(sup) == [("fragile", child, "worker")]
        assert await node.call(child, ("other", 2)) == "ok"  # other messages flow
        [letter] = await dead_letters(node.state_path, 1)
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
