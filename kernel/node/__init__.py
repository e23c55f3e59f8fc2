"""The node's lifecycle: the OS processes and how they are watched (internal; ``Node`` is in ``kernel``).

* ``node``: ``Node``, the user's process: starts, watches and replaces the workers.
* ``worker``: the worker OS process (``python -m kernel.node.worker``).
* ``control``: the control socket (server in the node, client in tools; public path ``kernel.control``).
* ``heartbeat``, ``sampler``: finding a hung worker and what holds its loop.
* ``metrics``: counters for the observer and Prometheus.
"""
