"""Typed errors of the kernel.

Every error crosses process boundaries (a call's failure is raised in the caller, which may live in
another worker), so each one pickles by its constructor arguments (``__reduce__``) and builds its
message from its fields.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ActorExited",
    "AlreadyStarted",
    "CallTimeout",
    "CheckpointCorrupt",
    "CheckpointWriteFailed",
    "KernelError",
    "MailboxFull",
    "MessageTooLarge",
    "NoProc",
    "NotSerializable",
    "NotTraced",
    "Overloaded",
    "Quarantined",
    "StaleEpoch",
    "StateFileInUse",
    "UnsafeStateFile",
]


class KernelError(Exception):
    """Base class of every error the kernel raises on purpose."""


class CallTimeout(KernelError):
    """No reply arrived within the call's timeout; a late reply is discarded, never delivered."""

    def __init__(self, dest: Any, timeout: float) -> None:
        self.dest = dest
        self.timeout = timeout
        super().__init__(
            f"no reply from {dest!r} within {timeout}s; raise the timeout or check that its handler returns"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.dest, self.timeout))


class NoProc(KernelError):
    """The destination is dead, or the name is not registered."""

    def __init__(self, dest: Any) -> None:
        self.dest = dest
        super().__init__(f"no process {dest!r}: it has exited or the name is not registered")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.dest,))


class ActorExited(KernelError):
    """The callee exited before it replied; ``reason`` is its exit reason."""

    def __init__(self, reason: Any, dest: Any = None) -> None:
        self.reason = reason
        self.dest = dest
        who = f"{dest!r} " if dest is not None else ""
        super().__init__(f"actor {who}exited before replying, reason: {reason!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.dest))


class AlreadyStarted(KernelError):
    """The name is held by a live actor; ``pid`` is the holder."""

    def __init__(self, pid: Any, name: Any = None) -> None:
        self.pid = pid
        self.name = name
        what = f"name {name!r}" if name is not None else "the name"
        super().__init__(
            f"{what} is already registered to {pid!r}; use it, or registry.get_or_spawn to share it"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.pid, self.name))


class NotSerializable(KernelError):
    """A message, reply or state could not be pickled; nothing was sent."""

    def __init__(self, what: str, cause: str) -> None:
        self.what = what
        self.cause = cause
        super().__init__(
            f"{what} cannot be serialized ({cause}); send plain data, or make the object picklable"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.what, self.cause))


class StaleEpoch(KernelError):
    """A checkpoint write came from an older incarnation of the key (a zombie) and was refused.

    The key was activated again since ``epoch`` was taken, so the newer incarnation owns its state; the
    writer should stop rather than retry.
    """

    def __init__(self, key: Any, epoch: int, current: int) -> None:
        self.key = key
        self.epoch = epoch
        self.current = current
        super().__init__(
            f"checkpoint of {key!r} refused: written at epoch {epoch}, but the key was activated again "
            f"(epoch {current}); a newer incarnation owns it"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.epoch, self.current))


class CheckpointWriteFailed(KernelError):
    """A checkpoint transaction failed (disk full, read-only or locked file); nothing of it was written.

    ``cause`` names the SQLite error (``"SQLITE_FULL: database or disk is full"``); the checkpoints
    committed before stay intact and readable.
    """

    def __init__(self, cause: str, count: int = 1) -> None:
        self.cause = cause
        self.count = count
        super().__init__(
            f"checkpoint write of {count} item(s) failed: {cause}; the previous checkpoints are intact"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.cause, self.count))


class MessageTooLarge(NotSerializable):
    """A message is larger than the node's ``max_message``; it was not sent and the channel is intact."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        KernelError.__init__(
            self, f"a message of {size} bytes exceeds the node's max_message of {limit} bytes; "
            "send a reference (a file path, a key) instead, or raise Node(max_message=...)")
        self.what = "message"
        self.cause = f"{size} > {limit} bytes"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.size, self.limit))


class MailboxFull(KernelError):
    """The callee's mailbox is at its class's ``max_mailbox``: the call was refused, not queued."""

    def __init__(self, dest: Any, limit: int) -> None:
        self.dest = dest
        self.limit = limit
        super().__init__(
            f"mailbox of {dest!r} is full ({limit} messages): it is not keeping up; retry later or shed load")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.dest, self.limit))


class Overloaded(KernelError):
    """The bytes buffered towards ``peer`` (a worker index, or "node") are past 4x ``send_buffer``.

    The message was refused, not queued: the peer process is not reading (hung, stopped or far behind).
    Links, monitors, exits and replies are never refused.
    """

    def __init__(self, peer: Any, buffered: int, limit: int) -> None:
        self.peer = peer
        self.buffered = buffered
        self.limit = limit
        super().__init__(
            f"{buffered} bytes are buffered towards {_peer_name(peer)}, past its hard limit of {limit}; "
            "send less, await node.drain() (an actor is paused for you), or raise Node(send_buffer=...)")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.peer, self.buffered, self.limit))


def _peer_name(peer: Any) -> str:
    return f"worker {peer}" if isinstance(peer, int) and peer >= 0 else "the node process"


class Quarantined(KernelError):
    """This exact message crashed the actor too often and is set aside (see ``kernel.quarantine``)."""

    def __init__(self, dest: Any) -> None:
        self.dest = dest
        super().__init__(
            f"the message was quarantined for {dest!r}: it crashed the actor repeatedly; inspect it with "
            "`python -m tools.checkpoints STATE`, fix the handler, then replay or drop it")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.dest,))


class NotTraced(KernelError):
    """``Node.trace_log`` found no trace for ``dest``: none was started, or it was long forgotten."""

    def __init__(self, dest: Any) -> None:
        self.dest = dest
        super().__init__(f"{dest!r} has no message trace: start one with node.trace({dest!r}, n)")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.dest,))


class CheckpointCorrupt(KernelError):
    """A stored checkpoint no longer matches its digest: it was damaged on disk; it is not restored."""

    def __init__(self, key: Any) -> None:
        self.key = key
        super().__init__(
            f"the checkpoint of {key!r} does not match its digest: the file was damaged; restore it from a "
            "backup, or inspect it with `python -m tools.checkpoints` and delete the row to start fresh")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key,))


class StateFileInUse(KernelError):
    """Another live node owns this state file (it holds the file's owner lock); this node did not start.

    ``owner`` is the OS pid of the owning process (0 if it could not be read). Ownership ends when that
    process dies in any way, SIGKILL included.
    """

    def __init__(self, path: str, owner: int) -> None:
        self.path = path
        self.owner = owner
        who = f"OS pid {owner}" if owner else "a process whose pid could not be read"
        super().__init__(
            f"state file {path!r} is in use by another node ({who}); stop that node first, or give this "
            "node another state file")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.owner))


class UnsafeStateFile(KernelError):
    """A state file (or a companion) that others could have written: refused, nothing was read from it.

    The file is unpickled on restore, so whoever can write it can run code as the node's user.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"refusing state file {path!r}: {problem}; whoever can write a state file can run code as "
            "this user when it is restored")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.problem))
class WorkerStartFailed(KernelError):
    """A worker slot could not be filled: its (replacement) worker process failed to start, repeatedly.

    Raised by ``async with Node()`` (its block is cancelled) and by what waits on the slot; the node
    then stops, because a slot that stays dead would hang every spawn and call aimed at it.
    """

    def __init__(self, index: int, attempts: int, cause: str) -> None:
        self.index = index
        self.attempts = attempts
        self.cause = cause
        super().__init__(
            f"worker {index} could not be started ({attempts} attempt(s), the last: {cause}); the node is "
            "stopping: check the worker's log above, free memory or file descriptors, then start it again")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.index, self.attempts, self.cause))


class PostgresUnavailable(KernelError):
    """A throwaway PostgreSQL server (``kernel.pgserver``) could not be started: binaries missing, or
    ``initdb`` / ``pg_ctl`` failed (the message carries their output)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(
            f"cannot start a PostgreSQL server: {problem}; install PostgreSQL 15+ (Debian: "
            "`apt-get install postgresql`) or put its bin directory on PATH")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problem,))


class ClusterSchemaMismatch(KernelError):
    """The cluster's database was set up by another kernel version: upgrade this node (``found`` >
    ``supported``), or give an older test database's ``pyotp_*`` tables up (``found`` < ``supported``:
    version 1 predates node ids and the cluster secret, and has no migration)."""

    def __init__(self, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        if found > supported:
            advice = f"this kernel knows up to {supported}; upgrade this node's pyotp-kernel before it joins"
        else:
            advice = (f"this kernel needs {supported} and has no migration from it; drop the pyotp_* tables "
                      "(or use a new database) and start the nodes again")
        super().__init__(f"the cluster database has schema version {found}; {advice}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.found, self.supported))


class NodeNameInUse(KernelError):
    """Another live node process is a member under this node's ``name``: each node needs its own name.

    A node restarted under the name of one that died waits for the dead one's lease to run out first
    (``Node`` waits up to one lease); this is raised when the name is still held after that.
    """

    def __init__(self, node: str, address: str) -> None:
        self.node = node
        self.address = address
        super().__init__(
            f"a live node named {node!r} ({address}) is already a member of the cluster; give this node "
            "another name, or stop that one (a dead one's name is free once its lease runs out)")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.node, self.address))


class LeaseExpired(KernelError):
    """This node's membership lease ran out (or it never joined): the cluster counts it as dead.

    Its names may already be held by others; it must stop its persistent actors and join again (a new
    incarnation) rather than retry.
    """

    def __init__(self, node: str, detail: str = "") -> None:
        self.node = node
        self.detail = detail
        why = f": {detail}" if detail else ""
        super().__init__(
            f"the lease of node {node!r} has expired or was never taken{why}; stop its persistent actors "
            "and join the cluster again")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.node, self.detail))


class Fenced(KernelError):
    """A checkpoint write under fence ``fence`` was refused: ``key``'s claim is now ``current``.

    ``current`` is None when nobody holds the name any more. Another holder took the name over (this one
    was paused, partitioned or expired), so its writes can never commit again; stop rather than retry.
    """

    def __init__(self, key: str, fence: int, current: int | None) -> None:
        self.key = key
        self.fence = fence
        self.current = current
        now = "nobody holds the name" if current is None else f"the name is now held under fence {current}"
        super().__init__(
            f"checkpoint of {key!r} refused: written under fence {fence}, but {now}; this holder was taken "
            f"over or released it, so it must stop its actor for {key!r} rather than retry")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.fence, self.current))


class HeldElsewhere(KernelError):
    """``key`` cannot be activated on this node: node ``node`` (at ``address``, node id ``id``) holds its
    name, and its lease is live. Not a failure of either node: the activation (and the calls for ``key``)
    belong there.
    """

    def __init__(self, key: Any, node: str, address: str, fence: int, id: int = 0) -> None:
        self.key = key
        self.node = node
        self.address = address
        self.fence = fence
        self.id = id
        super().__init__(
            f"{key!r} is active on node {node!r} ({address}, claim {fence}), whose lease is live; send the "
            "call for it to that node instead of activating it here")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.node, self.address, self.fence, self.id))
