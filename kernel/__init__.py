"""An OTP-like actor kernel: asyncio actors in worker OS processes, on every core of one host.

Principles, written once:

* **A worker is an OS process** (a fresh interpreter, never a fork) running one uvloop event loop that
  hosts many actors. An actor is an object with a mailbox; it owns a task only while it has messages.
* **A pid names its worker**: ``<worker.serial>``, plus the worker's incarnation, so a pid is never
  reused and a send needs no lookup: a local append, or one pickle into the batch for that worker.
* **Ordering**: messages from one sender to one receiver arrive in the order sent, across workers too.
  Nothing else is promised (as in Erlang).
* **Failure is data**: an exit reason is a value (``"normal"``, ``"killed"``, ``Crash(...)``); links and
  monitors turn one process's death into signals for others, also when a whole worker dies.
* **Durability**: a persistent actor's state is checkpointed to SQLite; with ``durable=True`` a call's
  reply is released only once the state it produced is committed.
* **Security**: sockets carry pickles, so they check the peer's uid and require an HMAC handshake before
  a single byte is unpickled; the state file is unpickled on restore, so it must be ours alone (0600, no
  symlink) and has one owning node at a time (``kernel.persistence.statefile``).

Layers: ``kernel`` imports nothing of ours; ``registry``, ``supervisors``, ``tools`` and ``examples`` build
on this package's public names only.

The full contract is docs/api.md in the repository (installed as share/doc/pyotp-kernel/docs/api.md).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

from .errors import (
    ActorExited,
    AlreadyStarted,
    CallTimeout,
    CheckpointCorrupt,
    CheckpointWriteFailed,
    KernelError,
    MailboxFull,
    MessageTooLarge,
    NoProc,
    NotSerializable,
    NotTraced,
    Overloaded,
    Quarantined,
    StaleEpoch,
    StateFileInUse,
    UnsafeStateFile,
    WorkerStartFailed,
)
from .node.node import Node
from .process.actor import Actor, Checkpoint
from .process.context import current, current_or_none
from .process.raw import NodeContext, Process
from .process.trace import TraceEvent, TraceLog
from .terms import NODE, Crash, Down, Exit, NoReply, Pid, Ref
from .transport.tcp import TLS

__all__ = [
    "TLS",
    "Actor",
    "ActorExited",
    "AlreadyStarted",
    "CallTimeout",
    "Checkpoint",
    "CheckpointCorrupt",
    "CheckpointWriteFailed",
    "Crash",
    "Down",
    "Exit",
    "KernelError",
    "MailboxFull",
    "MessageTooLarge",
    "NoProc",
    "NoReply",
    "Node",
    "NodeContext",
    "NotSerializable",
    "NotTraced",
    "Overloaded",
    "Pid",
    "Process",
    "Quarantined",
    "Ref",
    "StaleEpoch",
    "StateFileInUse",
    "TraceEvent",
    "TraceLog",
    "UnsafeStateFile",
    "WorkerStartFailed",
    "call",
    "cast",
    "checkpoints",
    "cluster_members",
    "current",
    "current_or_none",
    "link",
    "lookup",
    "monitor",
    "node_id",
    "register",
    "registered",
    "run",
    "self_pid",
    "send",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "stop",
    "unregister",
    "whereis",
    "worker_count",
]

T = TypeVar("T")


def __getattr__(name: str) -> Any:
    # kernel.checkpoints pulls in SQLite tooling; load it on first use, not in every worker's start-up.
    if name == "checkpoints":
        import importlib

        return importlib.import_module(".checkpoints", __name__)
    raise AttributeError(f"module 'kernel' has no attribute {name!r}")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop; SIGTERM and SIGHUP close the program the orderly way, as Ctrl-C does.

    A signal cancels the main task, so ``async with Node()`` blocks exit normally (actors stopped,
    workers reaped, temporary files removed); then ``SystemExit(128 + signal)`` ends the program with
    the status a shell expects. A signal whose handler is not the default (``nohup``'s ignored SIGHUP,
    a handler of the program's own) is left alone.
    """
    if not asyncio.iscoroutine(main):
        raise TypeError(f"main must be a coroutine (call your async function: run(main())), got {main!r}")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_closing_on_signals(main))


async def _closing_on_signals(main: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    got: list[int] = []
    installed: list[int] = []

    def stop(signum: int) -> None:
        got.append(signum)
        if task is not None:
            task.cancel()

    if threading.current_thread() is threading.main_thread():
        for signum in (int(signal.SIGTERM), int(signal.SIGHUP)):
            if signal.getsignal(signum) is signal.SIG_DFL:
                loop.add_signal_handler(signum, stop, signum)
                installed.append(signum)
    try:
        return await main
    except asyncio.CancelledError:
        if got:
            raise SystemExit(128 + got[0]) from None
        raise
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def self_pid() -> Pid:
    """The pid of the acting process (actor, raw process, or the node's context)."""
    return current().pid


def send(dest: Any, message: Any) -> None:
    """Send a raw message (``handle_info``) for the current context; never blocks."""
    current().send(dest, message)


def cast(dest: Any, message: Any) -> None:
    """Cast (``handle_cast``) for the current context; never blocks."""
    current().cast(dest, message)


async def call(dest: Any, request: Any, timeout: float = 5.0) -> Any:
    """Request-reply for the current context (see ``Actor.call``)."""
    return await current().call(dest, request, timeout)


async def spawn(cls: Any, *args: Any, name: Any = None, worker: int | None = None, **kwargs: Any) -> Pid:
    """Spawn for the current context; from plain node code the actor is placed round-robin."""
    return await current().spawn(cls, *args, name=name, worker=worker, **kwargs)


async def spawn_link(cls: Any, *args: Any, name: Any = None, worker: int | None = None,
                     **kwargs: Any) -> Pid:
    return await current().spawn_link(cls, *args, name=name, worker=worker, **kwargs)


async def spawn_monitor(cls: Any, *args: Any, name: Any = None, worker: int | None = None,
                        **kwargs: Any) -> tuple[Pid, Ref]:
    return await current().spawn_monitor(cls, *args, name=name, worker=worker, **kwargs)


def link(pid: Pid) -> None:
    current().link(pid)


def monitor(dest: Any) -> Ref:
    return current().monitor(dest)


#: Seconds ``whereis(name, node=...)`` waits for the other node's answer (``CallTimeout`` past it): a node
#: that was paused past its lease may find that the others drop what they send it until it rejoins.
REMOTE_LOOKUP = 5.0


async def whereis(name: Any, node: int | None = None) -> Pid | None:
    """The live holder of ``name``, or None. Resolved from this process's replica when it knows it.

    ``node`` (a cluster node id, as ``Pid.node`` and ``Node.members`` show them): ask that node for the
    name it has registered, as Erlang's ``{Name, Node}`` addresses one; its answer is its pid as seen
    from here. ``ActorExited("node_down")`` when that node is down, ``CallTimeout`` when it does not
    answer within ``REMOTE_LOOKUP`` seconds.
    """
    proc = current()
    rt = proc._rt
    if node is not None:
        remote = rt.remote
        if isinstance(node, bool) or not isinstance(node, int):
            raise TypeError(f"node must be a cluster node id (int) or None, got {node!r}")
        if remote is None or node in (0, remote.node):
            if remote is None and node != 0:
                raise ValueError(f"node {node} is not a member: this node is not in a cluster")
        else:
            if node not in remote.members:
                raise ValueError(f"node must be a live cluster member's id, got {node!r}")
            found: Pid | None = await remote.rpc(node, NODE, "whereis", (name,), timeout=REMOTE_LOOKUP)
            return found
    pid = rt.resolve(name, "name")
    if pid is None:
        return await rt.resolve_for_call(name)
    if pid.worker == rt.index and not pid.node and rt.local(pid) is None:
        return None
    return pid


def lookup(name: Any) -> Pid | None:
    """The holder of ``name`` in this process's replica of the name table: no round trip, never blocks.

    None when this process has not heard of the name (a worker may learn of a fresh registration a
    moment after the node does); ``whereis`` asks the authority in that case.
    """
    proc = current()
    rt = proc._rt
    pid = rt.resolve(name, "name")
    if pid is not None and pid.worker == rt.index and not pid.node and rt.local(pid) is None:
        return None
    return pid


async def stop(dest: Any, reason: Any = "normal", timeout: float = 5.0) -> None:
    """Stop ``dest`` the orderly way (OTP's gen_server:stop); returns once it is gone."""
    proc = current()
    await proc._rt.stop(proc, dest, reason, timeout)


async def register(name: Any, pid: Pid) -> None:
    """Register ``name`` for ``pid``; ``AlreadyStarted(holder)`` if taken, ``NoProc`` if ``pid`` is dead."""
    from .routing.name_table import check_name
    from .terms import NODE

    check_name(name)
    if not isinstance(pid, Pid):
        raise TypeError(f"pid must be a Pid, got {type(pid).__name__}: {pid!r}")
    await current()._rt.rpc(NODE, "register", (name, pid, True))


async def unregister(name: Any) -> bool:
    """Remove ``name``; returns False if it was not registered. The holder keeps running."""
    from .routing.name_table import check_name
    from .terms import NODE

    check_name(name)
    removed: bool = await current()._rt.rpc(NODE, "unregister", (name,))
    return removed


async def registered() -> dict[Any, Pid]:
    """Every registered name and its holder, as the authority sees them now."""
    from .terms import NODE

    table: dict[Any, Pid] = await current()._rt.rpc(NODE, "registered", ())
    return table


def worker_count() -> int:
    """How many worker processes this node runs."""
    return current()._rt.workers


def node_id() -> int:
    """This node's id in its cluster (what ``Pid.node`` shows for its pids on other nodes); 0 alone."""
    remote = current()._rt.remote
    return 0 if remote is None else int(remote.node)


def cluster_members() -> list[tuple[int, int]]:
    """The live nodes of the cluster as ``(node id, workers)``, this node included, by id.

    On a single host: ``[(0, worker_count())]``. Every node derives the same list from the membership
    table, so a placement computed from it agrees across nodes (``supervisors.Entities``).
    """
    rt = current()._rt
    remote = rt.remote
    if remote is None:
        return [(0, rt.workers)]
    others = [(n, w) for n, (_, _, w) in remote.members.items() if n not in remote.down and n != remote.node]
    return sorted([(int(remote.node), rt.workers), *others])
