"""The offline readers of a state file, at their public path (``kernel.checkpoints.load``, ``keys``).

The code is kernel/persistence/store.py; this module keeps the path that docs/api.md and users rely on.
"""

from .persistence.store import *  # noqa: F403
