"""The quarantine tests' child and waits, shared with the observer's operations tests."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import kernel
from kernel import ActorExited, Down, Node
from supervisors import ChildSpec, Supervisor, which_children


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


async def dead_letters(path, count: int) -> list:
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


async def crash_until_quarantined(node: Node) -> tuple[Any, Any]:
    """A supervisor ``root`` (worker 0) over one ``Fragile`` child, crashed by ``("poison", 1)`` until
    the next delivery of it is quarantined (``quarantine_after`` crashes, each restart awaited).

    Returns the supervisor and the child as it runs now.
    """
    sup = await node.spawn(Supervisor, strategy="one_for_one", max_restarts=10, name="root", worker=0,
                           children=[ChildSpec("fragile", Fragile, worker=0)])
    [(_, child, _)] = await which_children(sup)
    for _ in range(Fragile.quarantine_after):
        ref = node.monitor(child)
        with pytest.raises(ActorExited):
            await node.call(child, ("poison", 1))
        await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=5)
        [(_, child, _)] = await which_children(sup)
    return sup, child
