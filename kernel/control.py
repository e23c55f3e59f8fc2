"""The control socket's client, at its public path (``kernel.control.request``, ``NodeBusy``).

The code is kernel/node/control.py; this module keeps the path that docs and users rely on.
"""

from .node.control import *  # noqa: F403
