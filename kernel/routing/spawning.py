"""Spawning: the argument checks, where a new process goes, and its start on this worker.

Not on the hot path of a message: a spawn is an rpc when the child goes to another worker, and an
``init`` here. ``Runtime`` keeps ``spawn`` and ``spawn_local`` as bound methods of its ``Spawner``, so
callers (``Proc.spawn``, the ``spawn`` rpc in routing/ops.py) reach it as before.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

from ..errors import ActorExited, HeldElsewhere, KernelError
from ..process.actor import Actor
from ..process.base import Host, Proc
from ..process.raw import NodeContext, Process
from ..terms import NODE, Crash, Pid, Ref
from ..transport import wire
from .name_table import check_name

__all__ = ["SpawnHost", "Spawner", "check_spawnable"]


class SpawnHost(Host, Protocol):
    """What spawning needs of its runtime beyond what a process does (``Runtime`` satisfies it)."""

    down: set[int]
    procs: dict[int, Proc]
    top_level: list[Pid]

    def next_pid(self) -> Pid: ...


class Spawner:
    """Spawns for one runtime: checks, places (round-robin in the node process), starts."""

    def __init__(self, rt: SpawnHost) -> None:
        self.rt = rt
        self._rr = 0

    async def spawn(self, spawner: Proc, cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                    name: Any = None, worker: int | None = None, link: bool = False, monitor: bool = False,
                    key: Any = None) -> Any:
        check_spawnable(cls)
        if name is not None:
            check_name(name)
        if isinstance(cls, type) and issubclass(cls, Actor):
            cls.check_args(*args, **kwargs)
        if worker is None:
            if getattr(cls, "is_supervisor", False):
                # Supervisors live in the node process, which outlives every worker: a worker's death
                # then costs exactly the actors it hosted, never the tree above them (API section 12).
                worker = NODE
            elif self.rt.index == NODE:
                worker = self.place()
            else:
                worker = self.rt.index
        elif not isinstance(worker, int) or isinstance(worker, bool) or not 0 <= worker < self.rt.workers:
            raise ValueError(f"worker must be an int in 0..{self.rt.workers - 1} or None, got {worker!r}")
        top_level = isinstance(spawner, NodeContext)
        if link and top_level:
            raise KernelError("the node's context cannot link; use spawn_monitor or a supervisor")
        ref = self.rt.make_ref() if monitor else None
        me = spawner.pid
        if worker == self.rt.index:
            pid = await self.spawn_local(cls, args, kwargs, me, name, link, ref, key)
        else:
            def adopt(child: Pid) -> None:
                # Runs as the reply is decoded, before any later signal from the child is.
                if not spawner.alive:
                    if link:
                        self.rt.signal(child, wire.EXIT, me, "noproc", True)
                    if ref is not None:
                        self.rt.signal(child, wire.DEMONITOR, ref)
                    return
                if link:
                    spawner._on_link(child)
                if ref is not None:
                    spawner._on_watch(ref, child)

            pid = await self.rt.rpc(worker, "spawn", (cls, args, kwargs, me, name, link, ref, key), adopt)
        if top_level:
            self.rt.top_level.append(pid)  # however the node's code spawned it, its close stops it in order
        return (pid, ref) if monitor else pid

    def place(self) -> int:
        """Round-robin over the workers, skipping a slot that is being replaced while another is up."""
        index = self._rr % self.rt.workers
        for _ in range(self.rt.workers):
            index = self._rr % self.rt.workers
            self._rr += 1
            if index not in self.rt.down:
                break
        return index

    async def spawn_local(self, cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any], parent: Pid,
                          name: Any, link: bool, ref: Ref | None, key: Any) -> Pid:
        """Create a process here; returns once its ``init`` (or ``restore``) finished."""
        proc: Proc = Process(cls) if not isinstance(cls, type) else cls()
        pid = self.rt.next_pid()
        proc._bind(self.rt, pid, parent, name, key)
        self.rt.procs[pid.serial] = proc
        if name is not None:
            try:
                await self.register_name(name, pid)
            except BaseException:
                del self.rt.procs[pid.serial]
                proc.alive = False
                raise
        restored = None
        if isinstance(proc, Actor) and type(proc)._policy is not None and self.rt.store is not None \
                and proc.key is not None:
            try:
                restored = await self.rt.store.activate(proc)
            except HeldElsewhere:
                proc._finish("noproc")
                raise  # not a failure: the key is active on another cluster node, the spawner routes there
            except Exception as exc:
                reason = Crash.from_exception(exc)
                proc._finish(reason)
                raise ActorExited(reason, pid) from None
        await proc._start(args, kwargs, restored)  # type: ignore[attr-defined]
        if proc._exiting:
            raise ActorExited("killed", pid)
        if link:
            proc._on_link(parent)
            spawner = self.rt.local(parent) if parent.worker == self.rt.index else None
            if spawner is not None:
                spawner._on_link(pid)
        if ref is not None:
            proc._on_monitor(parent, ref)
            spawner = self.rt.local(parent) if parent.worker == self.rt.index else None
            if spawner is not None:
                spawner._on_watch(ref, pid)
        return pid

    async def register_name(self, name: Any, pid: Pid) -> None:
        """Register at the authority (the node); the reply comes after every replica has the name."""
        await self.rt.rpc(NODE, "register", (name, pid, False))


def check_spawnable(cls: Any) -> None:
    if isinstance(cls, type):
        if not issubclass(cls, Actor):
            raise TypeError(f"cls must be an Actor subclass or an async function, got class {cls.__name__}")
        return
    if not inspect.iscoroutinefunction(cls):
        raise TypeError(f"cls must be an Actor subclass or an `async def fn(ctx, ...)`, got {cls!r}")
