"""An application for ``python -m kernel run tests.apps.observer_app:children``: two counters under the root.

Used by ``tests/test_observer_tmux.py``; its classes live in an importable module (not a test file) so the
worker processes load them by reference, as they would a user's app.
"""

from __future__ import annotations

from typing import Any

from kernel import Actor, KernelError
from supervisors import ChildSpec, which_children


class Counter(Actor):
    """Counts the calls it answers; its state is what the observer's detail panel shows."""

    async def init(self, start: int = 0) -> None:
        self.state = {"count": start}

    async def handle_call(self, request: Any, caller: Any) -> Any:
        self.state["count"] += 1
        return self.state["count"]


class Ticker(Actor):
    """Calls alpha every 0.2 s, from the other worker, so a trace of alpha has messages to show."""

    async def init(self) -> None:
        self.state = {"ticks": 0}
        self.send_after(0.2, "tick")

    async def handle_info(self, message: Any) -> None:
        if message != "tick":
            return
        self.send_after(0.2, "tick")
        self.state["ticks"] += 1
        try:
            alpha = next(pid for cid, pid, _ in await which_children("root") if cid == "alpha")
            if alpha is not None:
                await self.call(alpha, "tick")
        except (KernelError, StopIteration):
            pass  # alpha is being restarted (the tests kill it): the next tick finds the new one


children = [
    ChildSpec("alpha", Counter, args=(1,), worker=0),
    ChildSpec("beta", Counter, args=(2,), worker=1),
    ChildSpec("ticker", Ticker, worker=1),
]
