"""An application for ``python -m kernel run tests.apps.chaos_app:children``: a pool of counters spread
over the workers, under a supervisor that the node process hosts.

Used by ``tests/reliability/test_row18_runner_survives_worker_kills.py``: two children pinned to each
worker and two placed round-robin. The pool's restart budget is wide (the test kills workers back to
back) but finite, so restarts that cannot succeed (a worker slot that failed for good) escalate soon;
the root, hosted in the node process too, never sees a child exit from a worker's death.
"""

from __future__ import annotations

from supervisors import ChildSpec, Supervisor
from tools.bench.actors import Counter  # counts the calls it answers

children = [
    ChildSpec("pool", Supervisor, type="supervisor", kwargs={
        "strategy": "one_for_one", "max_restarts": 100, "max_seconds": 10.0,
        "children": [
            ChildSpec("pinned-0a", Counter, worker=0), ChildSpec("pinned-0b", Counter, worker=0),
            ChildSpec("pinned-1a", Counter, worker=1), ChildSpec("pinned-1b", Counter, worker=1),
            ChildSpec("spread-a", Counter), ChildSpec("spread-b", Counter),
        ]}),
]
