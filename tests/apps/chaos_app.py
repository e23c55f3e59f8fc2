"""An application for ``python -m kernel run tests.apps.chaos_app:children``: a pool of counters spread
over the workers, under a supervisor that the node process hosts.

Used by ``tests/reliability/test_row18_runner_survives_worker_kills.py``: two children pinned to each
worker and two placed round-robin. The pool's restart budget is wide (the test kills workers back to
back); the root, hosted in the node process too, never sees a child exit at all.
"""

from __future__ import annotations

from typing import Any

from kernel import Actor
from supervisors import ChildSpec, Supervisor


class Counter(Actor):
    """Counts the calls it answers."""

    async def init(self) -> None:
        self.state = 0

    async def handle_call(self, request: Any, caller: Any) -> Any:
        self.state += 1
        return self.state


children = [
    ChildSpec("pool", Supervisor, type="supervisor", kwargs={
        "strategy": "one_for_one", "max_restarts": 1000, "max_seconds": 1.0,
        "children": [
            ChildSpec("pinned-0a", Counter, worker=0), ChildSpec("pinned-0b", Counter, worker=0),
            ChildSpec("pinned-1a", Counter, worker=1), ChildSpec("pinned-1b", Counter, worker=1),
            ChildSpec("spread-a", Counter), ChildSpec("spread-b", Counter),
        ]}),
]
