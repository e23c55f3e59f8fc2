"""A bounded message trace of one actor: Erlang's ``sys:trace`` with recon_trace's limit.

``Node.trace(pid, n)`` (or the control op ``trace``) records the next ``n`` messages the actor handles
(``in``: dispatched to ``handle_call``/``handle_cast``/``handle_info``) and sends (``out``: ``send``,
``cast``, ``call`` and the replies it gives), then turns itself off. Off is the default and costs one
attribute test (``_trace is None``) where a message is dispatched or sent; nothing else is added to the
message path. Events hold a capped repr of the message, never the message itself, so a trace cannot
keep a large payload alive and everything it holds is JSON-able.

A send or cast does not carry its sender (as in Erlang), so an ``in`` event names a peer only for a call
(its caller); an ``out`` event names the destination as it was given (pid or name).
"""

from __future__ import annotations

import reprlib
import time
from dataclasses import asdict, dataclass
from typing import Any

from ..transport import wire

__all__ = ["MAX_TRACE", "TraceEvent", "TraceLog", "check_limit", "msg_repr"]

#: The largest ``n`` one trace may ask for: a trace is a look at a few messages, not a log.
MAX_TRACE = 1000
#: Traces a process keeps readable after they ended (the oldest is forgotten first).
KEPT = 32

#: The cap on a message's repr, shared with the observer's queued messages (node/introspection.py).
msg_repr = reprlib.Repr()
msg_repr.maxstring = msg_repr.maxother = 160
msg_repr.maxlist = msg_repr.maxdict = msg_repr.maxtuple = 8

_KINDS = {wire.SEND: "send", wire.CAST: "cast", wire.CALL: "call"}


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One traced message. ``at`` is wall-clock time (``time.time()``); ``direction`` is ``"in"`` or
    ``"out"``; ``kind`` is ``send``, ``cast``, ``call`` or ``reply``; ``peer`` is the other side's repr
    (None for a received send or cast); ``message`` is the message's repr, capped."""

    at: float
    direction: str
    kind: str
    peer: str | None
    message: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TraceLog:
    """What a trace has recorded so far. ``ended`` is None while it runs, ``"limit"`` once ``n`` events
    were recorded, ``"exited"`` if the actor exited first, ``"replaced"`` if a newer trace took over."""

    pid: str
    n: int
    events: tuple[TraceEvent, ...]
    ended: str | None

    def as_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "n": self.n, "events": [e.as_json() for e in self.events],
                "ended": self.ended}


def check_limit(n: Any) -> int:
    """``n`` if it is a valid trace length, else ``TypeError``/``ValueError`` naming the argument."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n must be an int (the number of messages to trace), got {type(n).__name__}: {n!r}")
    if not 1 <= n <= MAX_TRACE:
        raise ValueError(f"n must be in 1..{MAX_TRACE} (the number of messages to trace), got {n!r}")
    return n


class Trace:
    """The recorder one traced actor holds in ``_trace`` while it runs; it detaches itself when done.

    Invariant: ``proc._trace is self`` exactly while ``ended is None``.
    """

    __slots__ = ("ended", "events", "left", "n", "pid", "proc")

    def __init__(self, proc: Any, n: int) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.n = self.left = n
        self.events: list[TraceEvent] = []
        self.ended: str | None = None

    def received(self, item: tuple[Any, ...]) -> None:
        """A mailbox item is being dispatched to a handler (stops and exit signals are not messages)."""
        kind = item[0]
        if kind in _KINDS:
            self._record("in", _KINDS[kind], repr(item[2][0]) if kind == wire.CALL else None, item[1])

    def sent(self, kind: int, dest: Any, message: Any) -> None:
        self._record("out", _KINDS[kind], repr(dest), message)

    def replied(self, caller: Any, value: Any) -> None:
        peer = caller[0] if isinstance(caller, tuple) and caller else caller
        self._record("out", "reply", repr(peer), value)

    def _record(self, direction: str, kind: str, peer: str | None, message: Any) -> None:
        if self.ended is not None:
            return
        try:
            shown = msg_repr.repr(message)
        except Exception as exc:  # reprlib stands in for most failing __repr__s; never crash the actor
            shown = f"<repr failed: {type(exc).__name__}>"
        self.events.append(TraceEvent(time.time(), direction, kind, peer, shown))
        self.left -= 1
        if self.left <= 0:
            self.end("limit")

    def end(self, why: str) -> None:
        if self.ended is None:
            self.ended = why
            if self.proc._trace is self:
                self.proc._trace = None
            self.proc = None  # a finished trace keeps no actor alive

    def log(self) -> TraceLog:
        ended = self.ended
        if ended is None and (self.proc is None or self.proc._exiting):
            self.end("exited")  # it exited without a word to us: _finish does not look at traces
            ended = self.ended
        return TraceLog(repr(self.pid), self.n, tuple(self.events), ended)


class Traces:
    """One runtime's traces, by process serial: the :data:`KEPT` newest, running or ended (starting one
    more forgets the oldest, which ends as ``"replaced"`` if it still ran)."""

    __slots__ = ("_by_serial",)

    def __init__(self) -> None:
        self._by_serial: dict[int, Trace] = {}

    def start(self, proc: Any, n: int) -> None:
        """Trace the next ``n`` messages of ``proc`` (an Actor), replacing a trace it already has."""
        check_limit(n)
        old = self._by_serial.pop(proc.pid.serial, None)
        if old is not None:
            old.end("replaced")
        trace = Trace(proc, n)
        self._by_serial[proc.pid.serial] = trace
        proc._trace = trace
        while len(self._by_serial) > KEPT:
            oldest = next(iter(self._by_serial))
            self._by_serial.pop(oldest).end("replaced")

    def log(self, serial: int, inc: int) -> TraceLog | None:
        trace = self._by_serial.get(serial)
        if trace is None or trace.pid.incarnation != inc:
            return None
        return trace.log()
