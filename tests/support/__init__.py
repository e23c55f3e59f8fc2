"""What the project's own tests share (none of it is a test): bounds, node runners, test children.

Helpers that a user's tests want too live in ``kernel.testing`` / ``kernel.testkit`` (the pytest plugin,
docs/guides/testing.md); this package holds only what our suite needs beyond them:

* ``tests.support.nodes``: ``run_node`` with the suite's body bound, ``probe_as_nobody``.
* ``tests.support.supervisors``: the module-scoped node fixture, the journal and the children of the
  supervisor tests.
* ``tests.support.processes``: subprocess helpers (stop a server with SIGINT, read a runner's lines).

The suite's bounds, one pair for every test (a bound is only reached when a test fails; it is not a
sleep): each wait on a fact is inside its test body, and each body inside pytest-timeout's 60 s, so a
hang is reported where it happens, with its traceback.
"""

from __future__ import annotations

import os

from kernel.testkit import BOUND

#: ``SOAK=1`` selects the long form of the reliability suite (``make soak``).
SOAK = os.environ.get("SOAK") == "1"

#: Bound on one test body run inside a node (seconds); soak bodies run for minutes on purpose.
BODY_BOUND = 600.0 if SOAK else 45.0

__all__ = ["BODY_BOUND", "BOUND", "SOAK"]
