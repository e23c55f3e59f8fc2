"""Routing and scheduling inside one OS process (internal; import from ``kernel``).

* ``runtime``: ``Runtime``, one per process: pids, the run queue, sends, calls and their deadlines,
  link/monitor signals across workers, spawning.
* ``name_table``: the replica of the name table every process holds (not ``registry.names``, the
  get-or-spawn helpers built on top).
* ``authority``: the node process's name authority, the one writer of that table.
"""
