"""The values the kernel hands to user code: pids, refs, exit reasons and signal messages.

All of them are immutable tuples underneath, so they hash, compare and pickle at C speed; they
travel between workers inside messages.
"""

from __future__ import annotations

import copyreg
import traceback
from typing import Any, NamedTuple

__all__ = ["NODE", "Crash", "Down", "Exit", "NoReply", "Pid", "Reason", "Ref", "exit_kind", "set_home"]

#: Worker index of the node process itself (the context that runs the user's ``async with Node()``).
NODE = -1

#: An exit reason: "normal", "shutdown", ("shutdown", term), "killed", "noproc", "worker_down", a Crash...
Reason = Any


class Pid(NamedTuple):
    """One actor incarnation: ``<worker.serial>`` on this node, ``<worker.serial@node>`` on another.

    ``incarnation`` counts the restarts of the worker process, so a pid is never reused, not even after
    its worker was replaced (the repr then shows it as a third part: ``<1.42.2>``). ``node`` is 0 for
    this node's own processes and, in a cluster, the other node's id (see :func:`set_home`).
    """

    worker: int
    serial: int
    incarnation: int = 0
    node: int = 0

    def __repr__(self) -> str:
        where = "node" if self.worker == NODE else str(self.worker)
        at = f"@{self.node}" if self.node else ""
        if self.incarnation:
            return f"<{where}.{self.serial}.{self.incarnation}{at}>"
        return f"<{where}.{self.serial}{at}>"

    def __str__(self) -> str:
        return self.__repr__()


class Ref(NamedTuple):
    """A unique reference (monitors, timers, calls): a plain, picklable value (``node`` as in ``Pid``)."""

    worker: int
    incarnation: int
    serial: int
    node: int = 0

    def __repr__(self) -> str:
        at = f"@{self.node}" if self.node else ""
        return f"#Ref<{self.worker}.{self.incarnation}.{self.serial}{at}>"


#: This node's id in its cluster (0: not in a cluster). See :func:`set_home`.
_home = 0


def set_home(node: int) -> None:
    """Make pickles of pids and refs say which node they belong to (cluster mode; once per process).

    Inside a process a pid of its own node always has ``node == 0``, so single-host code and every
    comparison stay as they are. Once the home is set, a pickled pid or ref carries this node's id in
    place of 0, and unpickling maps the home id back to 0: a pid that travels to another node and back
    compares equal to itself, and one that arrives from another node keeps that node's id. Single-host
    pickles are untouched (nothing is registered until a cluster node calls this).
    """
    global _home
    if not isinstance(node, int) or isinstance(node, bool) or node <= 0:
        raise ValueError(f"node must be a positive int (a cluster node id), got {node!r}")
    _home = node
    copyreg.pickle(Pid, _reduce_pid)
    copyreg.pickle(Ref, _reduce_ref)


def _reduce_pid(pid: Pid) -> tuple[Any, ...]:
    return _pid, (pid[0], pid[1], pid[2], pid[3] or _home)


def _reduce_ref(ref: Ref) -> tuple[Any, ...]:
    return _ref, (ref[0], ref[1], ref[2], ref[3] or _home)


def _pid(worker: int, serial: int, incarnation: int, node: int) -> Pid:
    return Pid(worker, serial, incarnation, 0 if node == _home else node)


def _ref(worker: int, incarnation: int, serial: int, node: int) -> Ref:
    return Ref(worker, incarnation, serial, 0 if node == _home else node)


class Crash(NamedTuple):
    """The exit reason of an actor whose handler raised: data, not a live exception, so it always pickles."""

    type_name: str
    message: str
    traceback_text: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> Crash:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc).__name__, str(exc), tb)

    def __repr__(self) -> str:
        return f"Crash({self.type_name}: {self.message})"


class Exit(NamedTuple):
    """An exit signal turned into a message, for an actor with ``trap_exits = True``."""

    pid: Pid
    reason: Reason


class Down(NamedTuple):
    """The one message a monitor delivers when its target exits (``"noproc"`` if it was already gone)."""

    ref: Ref
    pid: Any
    reason: Reason


class _NoReplyType:
    """Returned by ``handle_call`` to answer later with ``self.reply(caller, value)``."""

    _instance: _NoReplyType | None = None

    def __new__(cls) -> _NoReplyType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NoReply"

    def __reduce__(self) -> str:
        return "NoReply"


NoReply = _NoReplyType()

#: Exit reasons counted under their own name in ``pyotp_exits_total`` (kernel/node/metrics.py); any other
#: reason is "other", a crash is "crash" (the ``reason`` label must stay a small set).
_REASONS = frozenset({"normal", "shutdown", "kill", "killed", "worker_down", "node_down", "lease_lost",
                      "noproc", "noconnection"})


def exit_kind(reason: Any) -> str:
    """The ``reason`` label of ``pyotp_exits_total`` for one exit reason."""
    if isinstance(reason, Crash):
        return "crash"
    if isinstance(reason, str):
        return reason if reason in _REASONS else "other"
    if isinstance(reason, tuple) and reason and reason[0] == "shutdown":
        return "shutdown"
    return "other"
