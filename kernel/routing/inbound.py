"""What other processes of the node ask of this one besides messages: envelopes whose message was
pickled on its own (decoded here, or answered with why not), rpcs, and the rpcs and notices every
runtime serves itself (name adoption, the key scan, message traces; routing/ops.py).

``Runtime.dispatch`` decodes the hot envelopes itself (a message, a call, a reply, a signal) and hands
the rest here: none of it is per-message work of a healthy node.
"""

from __future__ import annotations

import inspect
import logging
import pickletools
from collections.abc import Awaitable
from typing import Any, Protocol

from ..errors import KernelError, NoProc, NotSerializable, NotTraced
from ..process.actor import Actor
from ..process.base import Host, Proc
from ..process.trace import TraceLog, Traces
from ..terms import NODE, Pid
from ..transport import wire
from ..transport.serialize import loads
from .name_table import NameTable
from .ops import Ops

__all__ = ["Inbound", "InboundHost"]

log = logging.getLogger("kernel")

_CALL = wire.CALL
_PACKED = wire.PACKED


class InboundHost(Host, Protocol):
    """What inbound decoding needs of its runtime beyond what a process does (``Runtime`` satisfies it)."""

    ops: Ops
    procs: dict[int, Proc]
    names: NameTable
    traces: Traces
    undecodable: int

    def dispatch(self, env: Any) -> None: ...
    def _reply_to(self, index: int, inc: int, ref: int, ok: bool, value: Any, node: int = 0) -> None: ...


class Inbound:
    """Serves one runtime's rpcs and decodes its packed envelopes."""

    def __init__(self, rt: InboundHost) -> None:
        self.rt = rt

    def unpack(self, env: tuple[Any, ...]) -> None:
        """A SEND, CAST or CALL whose message was pickled on its own: decode it, or tell why not."""
        kind = env[0] - _PACKED
        try:
            message = loads(env[3])
        except Exception as exc:
            target = Pid(self.rt.index, env[1], env[2])
            cause = self._undecodable(env[3], exc)
            if kind == _CALL:
                self.rt.fail_caller_with((Pid(env[4], env[5], env[6]), env[7]),
                                      NotSerializable(f"request to {target!r}", cause))
            else:
                self.rt.undecodable += 1
                log.error("%s to %r dropped (counted as dead): %s", "cast" if kind == wire.CAST else "send",
                          target, cause)
            return
        self.rt.dispatch((kind, env[1], env[2], message, *env[4:]))

    def _undecodable(self, data: bytes, exc: Exception) -> str:
        who = "the node process" if self.rt.index == NODE else f"worker {self.rt.index}"
        return f"{who} cannot unpickle {_pickled_types(data)}: {type(exc).__name__}: {exc}"

    def serve_rpc(self, index: int, inc: int, ref: int, op: str, packed: bytes, node: int = 0) -> None:
        """Run rpc ``op`` for process ``index`` (incarnation ``inc``) of this node, or of cluster node
        ``node``, and answer it there."""
        reply = self.rt._reply_to
        handler = self.rt.ops.rpc(op)
        if handler is None:
            reply(index, inc, ref, False, KernelError(f"unknown operation {op!r}"), node)
            return
        try:
            args = loads(packed)
        except Exception as exc:
            what = "spawn arguments" if op == "spawn" else f"{op} arguments"
            reply(index, inc, ref, False, NotSerializable(what, self._undecodable(packed, exc)), node)
            return
        try:
            result = handler(*args)
        except Exception as exc:
            reply(index, inc, ref, False, exc, node)
            return
        if inspect.isawaitable(result):
            self.rt.loop.create_task(self._finish_rpc(result, index, inc, ref, node))
        else:
            self._send_result(index, inc, ref, result, node)

    async def _finish_rpc(self, awaitable: Awaitable[Any], index: int, inc: int, ref: int, node: int) -> None:
        try:
            result = await awaitable
        except Exception as exc:
            self.rt._reply_to(index, inc, ref, False, exc, node)
        else:
            self._send_result(index, inc, ref, result, node)

    def _send_result(self, index: int, inc: int, ref: int, result: Any, node: int) -> None:
        try:
            self.rt._reply_to(index, inc, ref, True, result, node)
        except NotSerializable as exc:
            self.rt._reply_to(index, inc, ref, False, exc, node)

    def adopt(self, serial: int, inc: int, name: Any) -> bool:
        proc = self.rt.local(Pid(self.rt.index, serial, inc))
        if proc is None:
            return False
        if proc.name is None:
            proc.name = name
            if proc.key is None:
                proc.key = name
        return True

    def by_key(self, key: Any) -> Pid | None:
        """The live local actor whose checkpoint key is ``key`` (operators' tools; a scan)."""
        for proc in self.rt.procs.values():
            if proc.key == key and not proc._exiting:
                return proc.pid
        return None

    def trace(self, serial: int, inc: int, n: int) -> None:
        pid = Pid(self.rt.index, serial, inc)
        proc = self.rt.local(pid)
        if proc is None:
            raise NoProc(pid)
        if not isinstance(proc, Actor):
            raise TypeError(f"dest must name an Actor to be traced; {pid!r} is a raw process "
                            f"({type(proc).__name__}), whose receive is not traced")
        self.rt.traces.start(proc, n)

    def trace_log(self, serial: int, inc: int) -> TraceLog:
        found = self.rt.traces.log(serial, inc)
        if found is None:
            raise NotTraced(Pid(self.rt.index, serial, inc))
        return found

    def name_del(self, name: Any, pid: Pid) -> None:
        self.rt.names.remove(name, pid)


_ALWAYS_THERE = ("builtins.", "copyreg.", "cloudpickle.", "kernel.")


def _pickled_types(data: bytes) -> str:
    """The classes and functions a pickle refers to, for an error message (not a fast path)."""
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(str(arg))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
    except Exception:
        pass
    found = [n for n in dict.fromkeys(names) if not n.startswith(_ALWAYS_THERE)]
    return "a message referring to " + ", ".join(found[:4]) if found else "a message"
