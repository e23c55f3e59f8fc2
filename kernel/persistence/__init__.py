"""Persistence: checkpoints of actors' state (internal; the public readers are ``kernel.checkpoints``).

* ``service``: ``CheckpointService``, a worker's side: which actor is dirty, durable replies.
* ``store``: the SQLite store, the group committer and the offline readers.
* ``codec``: how a state and a key become bytes and text.
* ``statefile``: the state file's safety (private, one owning node).

``tools/checkpoints.py`` is the command line on top of the offline readers.
"""
