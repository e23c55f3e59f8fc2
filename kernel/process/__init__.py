"""The process model: what runs inside a worker (internal; the public classes are re-exported by ``kernel``).

* ``base``: ``Proc``, the process-table entry every kind of process shares (pid, links, monitors,
  signals).
* ``actor``: ``Actor``, a mailbox and handlers; it owns a task only while it has messages.
* ``raw``: ``Process`` (a plain coroutine with ``receive``) and ``NodeContext`` (the node's own code).
* ``context``: which process is acting now.
* ``quarantine``: messages that crashed their handler twice, kept aside.
"""
