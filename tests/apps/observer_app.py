"""An application for ``python -m kernel run tests.apps.observer_app:children``: two counters under the root.

Used by ``tests/test_observer_tmux.py``; its classes live in an importable module (not a test file) so the
worker processes load them by reference, as they would a user's app.
"""

from __future__ import annotations

from typing import Any

from kernel import Actor
from supervisors import ChildSpec


class Counter(Actor):
    """Counts the calls it answers; its state is what the observer's detail panel shows."""

    async def init(self, start: int = 0) -> None:
        self.state = {"count": start}

    async def handle_call(self, request: Any, caller: Any) -> Any:
        self.state["count"] += 1
        return self.state["count"]


children = [
    ChildSpec("alpha", Counter, args=(1,), worker=0),
    ChildSpec("beta", Counter, args=(2,), worker=1),
]
