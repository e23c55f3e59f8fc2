"""The values the kernel hands to user code: pids, refs, exit reasons and signal messages.

All of them are immutable tuples underneath, so they hash, compare and pickle at C speed; they
travel between workers inside messages.
"""

from __future__ import annotations

import traceback
from typing import Any, NamedTuple

__all__ = ["NODE", "Crash", "Down", "Exit", "NoReply", "Pid", "Reason", "Ref", "exit_kind"]

#: Worker index of the node process itself (the context that runs the user's ``async with Node()``).
NODE = -1

#: An exit reason: "normal", "shutdown", ("shutdown", term), "killed", "noproc", "worker_down", a Crash...
Reason = Any


class Pid(NamedTuple):
    """One actor incarnation on this node: ``<worker.serial>``.

    ``incarnation`` counts the restarts of the worker process, so a pid is never reused, not even after
    its worker was replaced (the repr then shows it as a third part: ``<1.42.2>``).
    """

    worker: int
    serial: int
    incarnation: int = 0

    def __repr__(self) -> str:
        where = "node" if self.worker == NODE else str(self.worker)
        if self.incarnation:
            return f"<{where}.{self.serial}.{self.incarnation}>"
        return f"<{where}.{self.serial}>"

    def __str__(self) -> str:
        return self.__repr__()


class Ref(NamedTuple):
    """A unique reference (monitors, timers, calls): a plain, picklable value."""

    worker: int
    incarnation: int
    serial: int

    def __repr__(self) -> str:
        return f"#Ref<{self.worker}.{self.incarnation}.{self.serial}>"


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
_REASONS = frozenset({"normal", "shutdown", "kill", "killed", "worker_down", "noproc", "noconnection"})


def exit_kind(reason: Any) -> str:
    """The ``reason`` label of ``pyotp_exits_total`` for one exit reason."""
    if isinstance(reason, Crash):
        return "crash"
    if isinstance(reason, str):
        return reason if reason in _REASONS else "other"
    if isinstance(reason, tuple) and reason and reason[0] == "shutdown":
        return "shutdown"
    return "other"
