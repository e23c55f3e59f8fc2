"""What every process of the kernel has in common: identity, links, monitors, timers, and exit.

Actors, raw coroutine processes and the node's own context all derive from :class:`Proc`. It owns the
signal rules (OTP's): links are bidirectional and fire on any exit but ``"normal"``; a trapping
process gets ``Exit`` messages instead of dying; ``exit(pid, "kill")`` cannot be trapped; a monitor
delivers exactly one ``Down``. The runtime routes; this module decides what a signal does.

Memory: an idle process is one object with slots; its sets and dicts stay ``None`` until used.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from ..terms import Down, Exit, Pid, Reason, Ref, exit_kind
from ..transport import wire

if TYPE_CHECKING:
    from .trace import Trace

__all__ = ["Host", "Proc"]

log = logging.getLogger("kernel")

_SEND, _CAST = wire.SEND, wire.CAST
#: The time a mailbox drain, a pass of the runtime's run queue, or a raw process's run of ``receive``
#: calls that find their message waiting, goes on before it yields to the loop (checked every 4th
#: message): a process that keeps waking itself cannot keep its worker from its sockets, timers and
#: other processes for more than a few ms.
SLICE = 0.001


class Host(Protocol):
    """What a process needs of the runtime that hosts it: the one view the process model has of it.

    ``Proc`` and its kinds call into their runtime for every send, call, signal and spawn, and the
    runtime (kernel/routing/runtime.py) creates them. Typing ``Proc._rt`` with this protocol instead of
    ``Runtime`` keeps the import graph one way, TYPE_CHECKING imports included: routing imports the
    process model, never the reverse. ``Runtime`` satisfies it structurally; a member is here because a
    process (or a public function in ``kernel``) uses it. ``Actor`` adds its own (``ActorHost``).
    """
    loop: asyncio.AbstractEventLoop
    #: This OS process's worker index (``NODE`` in the node process) and the node's worker count.
    index: int
    workers: int
    #: Fast-path state read on delivery (see ``Runtime``).
    inline: bool
    solo: bool
    slice_end: float
    #: The checkpoint service when persistence is on (kernel/persistence/service.py), else None.
    store: Any
    #: Routes to the other nodes of a cluster (kernel/routing/remote.py ``Remote``), else None.
    remote: Any
    exits: dict[str, int]
    handled_done: int

    def make_ref(self) -> Ref: ...
    def local(self, pid: Pid) -> Proc | None: ...
    def resolve(self, dest: Any, argument: str = "dest") -> Pid | None: ...
    async def resolve_for_call(self, dest: Any) -> Pid | None: ...
    def send(self, dest: Any, kind: int, message: Any) -> None: ...
    def signal(self, pid: Pid, kind: int, *fields: Any) -> None: ...
    def call(self, caller: Proc, dest: Any, request: Any,
             timeout: float | None) -> Coroutine[Any, Any, Any]: ...
    async def stop(self, caller: Proc, dest: Any, reason: Any, timeout: float | None) -> None: ...
    def reply(self, caller: Any, value: Any) -> None: ...
    def reply_from_handler(self, actor: Proc, caller: Any, value: Any) -> None: ...
    def fail_caller(self, caller: Any, reason: Any, pid: Pid) -> None: ...
    def fail_caller_with(self, caller: Any, error: BaseException) -> None: ...
    async def rpc(self, index: int, op: str, args: tuple[Any, ...],
                  hook: Callable[[Any], None] | None = None, timeout: float | None = None) -> Any: ...
    async def spawn(self, spawner: Proc, cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                    name: Any = None, worker: int | None = None, link: bool = False, monitor: bool = False,
                    key: Any = None) -> Any: ...
    def release(self, proc: Proc) -> None: ...


class Proc:
    """Base of every process. User code sees the public methods; the runtime calls the ``_on_*`` ones."""

    __slots__ = (
        "_exiting",
        "_handled",
        "_links",
        "_mbox",
        "_monitors",
        "_rt",
        "_task",
        "_timers",
        "_trace",
        "_waiter",
        "_watching",
        "alive",
        "key",
        "name",
        "parent",
        "pid",
    )

    #: Exit signals arrive as ``Exit`` messages instead of killing (class attribute, as in the API).
    trap_exits: bool = False

    pid: Pid
    name: Any
    key: Any
    parent: Pid | None
    alive: bool
    _rt: Host
    _mbox: deque[Any] | None
    _task: asyncio.Task[Any] | None
    _links: set[Pid] | None
    _monitors: dict[Ref, Pid] | None  # who watches me: ref -> watcher
    _watching: dict[Ref, Any] | None  # what I watch: ref -> target pid
    _timers: dict[Ref, asyncio.TimerHandle] | None
    _exiting: bool
    _handled: int
    _waiter: asyncio.Future[None] | None
    #: The running message trace (process/trace.py), or None: the only cost of tracing when it is off.
    _trace: Trace | None

    def _bind(self, rt: Host, pid: Pid, parent: Pid | None, name: Any, key: Any) -> None:
        self._rt = rt
        self.pid = pid
        self.parent = parent
        self.name = name
        self.key = key if key is not None else name
        self.alive = True
        self._exiting = False
        self._handled = 0
        self._mbox = None
        self._task = None
        self._links = None
        self._monitors = None
        self._watching = None
        self._timers = None
        self._waiter = None
        self._trace = None

    def __repr__(self) -> str:
        pid = getattr(self, "pid", None)
        return f"<{type(self).__name__} {pid!r}>"

    # -- messaging ------------------------------------------------------------------------------

    def send(self, dest: Any, message: Any) -> None:
        """Send a raw message (``handle_info``); never blocks, never fails for a dead destination."""
        if self._trace is not None:
            self._trace.sent(_SEND, dest, message)
        self._rt.send(dest, _SEND, message)

    def cast(self, dest: Any, message: Any) -> None:
        """Send to ``handle_cast``; never blocks, never fails for a dead destination."""
        if self._trace is not None:
            self._trace.sent(_CAST, dest, message)
        self._rt.send(dest, _CAST, message)

    def call(self, dest: Any, request: Any, timeout: float = 5.0) -> Coroutine[Any, Any, Any]:
        """Request-reply: ``await self.call(dest, request)``. Raises ``CallTimeout``, ``NoProc`` or
        ``ActorExited``; a call to self raises."""
        if self._trace is not None:
            self._trace.sent(wire.CALL, dest, request)
        return self._rt.call(self, dest, request, timeout)

    def reply(self, caller: Any, value: Any) -> None:
        """Answer a call whose handler returned ``NoReply``."""
        if self._trace is not None:
            self._trace.replied(caller, value)
        self._rt.reply(caller, value)

    # -- spawning -------------------------------------------------------------------------------

    async def spawn(self, cls: Any, *args: Any, name: Any = None, worker: int | None = None,
                    **kwargs: Any) -> Pid:
        """Start an actor (or ``async def fn(ctx, ...)`` process); returns once its ``init`` is done."""
        pid: Pid = await self._rt.spawn(self, cls, args, kwargs, name=name, worker=worker)
        return pid

    async def spawn_link(self, cls: Any, *args: Any, name: Any = None, worker: int | None = None,
                         **kwargs: Any) -> Pid:
        """Spawn and link atomically: there is no moment when the child can die unobserved."""
        pid: Pid = await self._rt.spawn(self, cls, args, kwargs, name=name, worker=worker, link=True)
        return pid

    async def spawn_monitor(self, cls: Any, *args: Any, name: Any = None, worker: int | None = None,
                            **kwargs: Any) -> tuple[Pid, Ref]:
        """Spawn and monitor atomically; returns ``(pid, ref)``."""
        result: tuple[Pid, Ref] = await self._rt.spawn(
            self, cls, args, kwargs, name=name, worker=worker, monitor=True)
        return result

    async def spawn_opt(self, cls: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
                        *, name: Any = None, worker: int | None = None, link: bool = False,
                        monitor: bool = False, key: Any = None) -> Any:
        """Erlang's spawn_opt: every option explicit. ``key`` is a supervisor path used as checkpoint key.

        Returns the pid, or ``(pid, ref)`` when ``monitor`` is true.
        """
        if not isinstance(args, tuple):
            raise TypeError(f"args must be a tuple, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be a dict, got {type(kwargs).__name__}")
        return await self._rt.spawn(self, cls, args, kwargs or {}, name=name, worker=worker,
                                    link=link, monitor=monitor, key=key)

    # -- links, monitors, exit signals ----------------------------------------------------------

    def link(self, pid: Pid) -> None:
        """Link to ``pid`` (idempotent). Linking to a dead pid delivers an exit signal ``"noproc"``."""
        if not isinstance(pid, Pid):
            raise TypeError(f"pid must be a Pid, got {type(pid).__name__}: {pid!r}")
        if pid == self.pid:
            return
        if self._links is None:
            self._links = set()
        if pid in self._links:
            return
        self._links.add(pid)
        self._rt.signal(pid, wire.LINK, self.pid)

    def unlink(self, pid: Pid) -> None:
        if not isinstance(pid, Pid):
            raise TypeError(f"pid must be a Pid, got {type(pid).__name__}: {pid!r}")
        if self._links and pid in self._links:
            self._links.discard(pid)
            self._rt.signal(pid, wire.UNLINK, self.pid)

    def monitor(self, dest: Any) -> Ref:
        """Watch ``dest`` (pid or name): exactly one ``Down`` arrives, at once with ``"noproc"`` if gone."""
        ref = self._rt.make_ref()
        pid = self._rt.resolve(dest, "dest")
        if pid is None:
            self._deliver_info(Down(ref, dest, "noproc"))
            return ref
        if self._watching is None:
            self._watching = {}
        self._watching[ref] = pid
        self._rt.signal(pid, wire.MONITOR, self.pid, ref)
        return ref

    def demonitor(self, ref: Ref) -> None:
        """Stop watching; a ``Down`` for ``ref`` that has not been handled yet is dropped."""
        if not isinstance(ref, Ref):
            raise TypeError(f"ref must be a Ref returned by monitor(), got {ref!r}")
        if self._watching is not None:
            pid = self._watching.pop(ref, None)
            if pid is not None:
                self._rt.signal(pid, wire.DEMONITOR, ref)
        if self._mbox:
            kept = [m for m in self._mbox
                    if not (m[0] == wire.SEND and isinstance(m[1], Down) and m[1].ref == ref)]
            if len(kept) != len(self._mbox):
                self._mbox.clear()
                self._mbox.extend(kept)

    def exit(self, pid: Pid, reason: Reason) -> None:
        """Send an exit signal. ``"kill"`` cannot be trapped: the target exits ``"killed"``."""
        if not isinstance(pid, Pid):
            raise TypeError(f"pid must be a Pid, got {type(pid).__name__}: {pid!r}")
        self._rt.signal(pid, wire.EXIT, self.pid, reason, False)

    # -- timers ---------------------------------------------------------------------------------

    def send_after(self, seconds: float, message: Any) -> Ref:
        """Deliver ``message`` to this process's ``handle_info`` after ``seconds``; returns a timer ref."""
        if not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError(f"seconds must be a number >= 0, got {seconds!r}")
        ref = self._rt.make_ref()
        if self._timers is None:
            self._timers = {}
        self._timers[ref] = self._rt.loop.call_later(seconds, self._fire_timer, ref, message)
        return ref

    def cancel_timer(self, ref: Ref) -> bool:
        """Cancel a timer; returns False if it already fired or was cancelled."""
        handle = self._timers.pop(ref, None) if self._timers else None
        if handle is None:
            return False
        handle.cancel()
        return True

    def _fire_timer(self, ref: Ref, message: Any) -> None:
        if self._timers is not None and self._timers.pop(ref, None) is not None and self.alive:
            self._deliver_info(message)

    # -- what subclasses provide ----------------------------------------------------------------

    def _deliver(self, item: tuple[Any, ...]) -> None:
        """Queue a mailbox item (kind, payload, ...) and make sure it will be handled."""
        raise NotImplementedError

    def _deliver_info(self, message: Any) -> None:
        self._deliver((wire.SEND, message))

    def _on_parent_exit(self, reason: Reason) -> None:
        """A trapping process's parent sent an exit signal. Only actors treat it specially."""
        self._deliver_info(Exit(self.parent, reason))  # type: ignore[arg-type]

    # -- signals from the runtime ---------------------------------------------------------------

    def _on_link(self, other: Pid) -> None:
        if self._links is None:
            self._links = set()
        self._links.add(other)

    def _on_unlink(self, other: Pid) -> None:
        if self._links:
            self._links.discard(other)

    def _on_monitor(self, watcher: Pid, ref: Ref) -> None:
        if self._monitors is None:
            self._monitors = {}
        self._monitors[ref] = watcher

    def _on_demonitor(self, ref: Ref) -> None:
        if self._monitors:
            self._monitors.pop(ref, None)

    def _on_watch(self, ref: Ref, target: Pid) -> None:
        """This process now watches ``target`` under ``ref`` (a spawn_monitor child, set up by its spawn)."""
        if self._watching is None:
            self._watching = {}
        self._watching[ref] = target

    def _on_worker_down(self, index: int, inc: int) -> None:
        """Worker ``index`` (incarnation ``inc``) of this node died: drop the monitors its processes held
        on this one, and fire this one's monitors and links that pointed into it (``"worker_down"``)."""
        self._on_gone(lambda p: p.worker == index and p.incarnation == inc and not p.node, "worker_down")

    def _on_node_down(self, node: int) -> None:
        """Cluster node ``node`` is down (its lease expired): as ``_on_worker_down``, for every process
        of that node, with ``"node_down"``."""
        self._on_gone(lambda p: p.node == node, "node_down")

    def _on_gone(self, gone: Callable[[Pid], bool], reason: str) -> None:
        if self._monitors:
            for mref, w in list(self._monitors.items()):
                if gone(w):
                    del self._monitors[mref]
        if self._watching:
            for mref, target in list(self._watching.items()):
                if isinstance(target, Pid) and gone(target):
                    self._on_down(mref, target, reason)
        if self._links:
            for other in [p for p in self._links if gone(p)]:
                self._on_exit(other, reason, True)

    def _on_down(self, ref: Ref, pid: Any, reason: Reason) -> None:
        if self._watching is None or self._watching.pop(ref, None) is None:
            return  # demonitored meanwhile
        self._deliver_info(Down(ref, pid, reason))

    def _on_exit(self, sender: Pid, reason: Reason, via_link: bool) -> None:
        """OTP's decision table for an incoming exit signal."""
        if self._exiting:
            return
        if via_link:
            if not self._links or sender not in self._links:
                return  # the link was removed meanwhile
            self._links.discard(sender)
        if reason == "kill" and not via_link:
            self._die("killed")
        elif self.trap_exits:
            if sender == self.parent:
                self._on_parent_exit(reason)
            else:
                self._deliver_info(Exit(sender, reason))
        elif reason == "normal":
            if sender == self.pid:
                self._die("normal")
        else:
            self._die(reason)

    # -- exiting --------------------------------------------------------------------------------

    def _die(self, reason: Reason) -> None:
        """Exit now, without ``terminate``: cancel whatever handler is running, then signal."""
        if self._exiting:
            return
        task = self._task
        self._finish(reason)
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    def _finish(self, reason: Reason) -> None:
        """Release everything and tell the world, in OTP's order: names first, then links and monitors."""
        if self._exiting:
            return
        self._exiting = True
        self.alive = False
        rt = self._rt
        rt.handled_done += self._handled
        kind = exit_kind(reason)
        rt.exits[kind] = rt.exits.get(kind, 0) + 1
        if self._timers:
            for handle in self._timers.values():
                handle.cancel()
            self._timers = None
        rt.release(self)
        mbox = self._mbox
        if mbox:
            for item in mbox:
                kind = item[0]
                if kind in (wire.CALL, wire.STOP):
                    rt.fail_caller(item[-1], reason, self.pid)
            mbox.clear()
        self._fail_pending(reason)
        if self._watching:
            for ref, target in self._watching.items():
                rt.signal(target, wire.DEMONITOR, ref)
            self._watching = None
        if self._links:
            for other in self._links:
                rt.signal(other, wire.EXIT, self.pid, reason, True)
            self._links = None
        if self._monitors:
            for ref, watcher in self._monitors.items():
                rt.signal(watcher, wire.DOWN, ref, self.pid, reason)
            self._monitors = None
        self._after_exit(reason)

    def _fail_pending(self, reason: Reason) -> None:
        """Fail callers this process still owes a reply (subclasses track them)."""

    def _after_exit(self, reason: Reason) -> None:
        """Hook for subclasses (e.g. the orderly-stop waiters)."""
