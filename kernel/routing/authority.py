"""The name authority, hosted by the node process: one decision per name at a time.

Why a central authority with replicas rather than names sharded across workers: the node process
outlives every worker, so no live name is ever lost with a worker (a shard would have to be rebuilt
from the survivors), and every send or call by name still resolves locally from a replica. Only
registrations pay a round trip, and they are rare next to sends.

Exactly one holder: registrations of one name are serialised by a per-name lock. Freshness: when the
table shows a holder on another worker, the authority first syncs with that worker (one round trip
on the same ordered stream), so a holder whose exit notice is already on its way is not reported as
taken to a caller that has seen its Down.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from ..errors import ActorExited, AlreadyStarted, NoProc
from ..terms import NODE, Pid
from .runtime import Runtime

__all__ = ["Authority", "NameDirectory"]


class NameDirectory(Protocol):
    """The one writer of the node's name table, as the node process serves it to every worker.

    The seam of the cluster issue (17): today :class:`Authority` in the node process; a directory shared
    by several hosts (PostgreSQL) would sit behind the same four operations. Every process keeps its own
    replica for sends and lookups (routing/name_table.py); only these go to the directory.
    """

    async def register(self, name: Any, pid: Pid, adopt: bool = True) -> None: ...
    def unregister(self, name: Any) -> bool: ...
    def whereis(self, name: Any) -> Pid | None: ...
    def registered(self) -> dict[Any, Pid]: ...


class _NameTurn:
    """One name's lock and how many registrations hold or wait for it, so it is dropped at zero."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Authority:
    """The node process's name authority: its rpcs and notices are listed in routing/ops.py ``Ops``
    and installed by ``Node._start``."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.names = rt.names
        self._locks: dict[Any, _NameTurn] = {}

    async def register(self, name: Any, pid: Pid, adopt: bool = True) -> None:
        turn = self._locks.get(name)
        if turn is None:
            turn = self._locks[name] = _NameTurn()
        turn.users += 1
        try:
            async with turn.lock:
                await self._register(name, pid, adopt)
        finally:
            turn.users -= 1
            if not turn.users:  # no registration of this name holds or waits for the lock: forget it
                del self._locks[name]

    async def _register(self, name: Any, pid: Pid, adopt: bool) -> None:
        rt = self.rt
        synced: set[int] = set()
        while True:
            holder = self.names.get(name)
            if holder is None:
                break
            if holder == pid:
                return
            if holder.worker != NODE and not holder.node and holder.worker not in synced \
                    and rt.pid_is_current(holder):
                synced.add(holder.worker)
                with contextlib.suppress(ActorExited):  # that worker died: its names are gone now
                    await rt.rpc(holder.worker, "sync", ())
                continue
            raise AlreadyStarted(holder, name)
        if not rt.pid_is_current(pid):
            raise NoProc(pid)
        if adopt and not pid.node:  # another node's process keeps its own names there
            alive = rt.inbound.adopt(pid.serial, pid.incarnation, name) if pid.worker == NODE \
                else await rt.rpc(pid.worker, "adopt", (pid.serial, pid.incarnation, name))
            if not alive:
                raise NoProc(pid)
            if self.names.get(name) is not None:
                raise AlreadyStarted(self.names.get(name), name)
        self.names.add(name, pid)
        self._broadcast("name_add", name, pid)

    def unregister(self, name: Any) -> bool:
        holder = self.names.get(name)
        if holder is None:
            return False
        self.names.remove(name, holder)
        self._broadcast("name_del", name, holder)
        return True

    def whereis(self, name: Any) -> Pid | None:
        return self.names.get(name)

    def registered(self) -> dict[Any, Pid]:
        return dict(self.names.items_list())

    def name_del(self, name: Any, pid: Pid) -> None:
        if self.names.remove(name, pid):
            self._broadcast("name_del", name, pid)

    def send_name(self, dest: Any, kind: int, message: Any) -> None:
        pid = self.names.get(dest)
        if pid is not None:
            self.rt.send(pid, kind, message)

    def _broadcast(self, op: str, *args: Any) -> None:
        for index in range(self.rt.workers):
            if index not in self.rt.down:
                self.rt.note(index, op, *args)
