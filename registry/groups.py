"""Duplicate-key groups for pub/sub, as Erlang's ``pg``: one group server per worker, no central one.

Why per worker: each server holds and monitors only the members that live on its worker, so a
publish pickles the message once per worker (the server fans out locally), a member that exits is
dropped by its own worker's server, and a worker's death loses nothing but its own (dead) members.
There is no authority to rebuild. The node's own context joins through worker 0's server.
"""

from __future__ import annotations

from typing import Any

import kernel
from kernel import Actor, Down, Pid, Ref


class GroupServer(Actor):
    """Members of every topic that live on one worker."""

    async def init(self) -> None:
        self.state = {}  # topic -> {pid: ref}
        self.watch: dict[Ref, tuple[Any, Pid]] = {}

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("join", topic, pid):
                members = self.state.setdefault(topic, {})
                if pid not in members:
                    ref = self.monitor(pid)
                    members[pid] = ref
                    self.watch[ref] = (topic, pid)
                return True
            case ("leave", topic, pid):
                ref = self.state.get(topic, {}).pop(pid, None)
                if ref is not None:
                    self.demonitor(ref)
                    self.watch.pop(ref, None)
                    if not self.state[topic]:
                        del self.state[topic]
                return ref is not None
            case ("members", topic):
                return list(self.state.get(topic, ()))
        return await super().handle_call(request, caller)

    async def handle_cast(self, message: Any) -> None:
        match message:
            case ("publish", topic, payload):
                for pid in self.state.get(topic, ()):
                    self.send(pid, payload)

    async def handle_info(self, message: Any) -> None:
        if isinstance(message, Down) and message.ref in self.watch:
            topic, pid = self.watch.pop(message.ref)
            members = self.state.get(topic)
            if members is not None:
                members.pop(pid, None)
                if not members:
                    del self.state[topic]


def _server_name(worker: int) -> tuple[str, int]:
    return ("registry.groups", worker)


async def _server(worker: int) -> Pid:
    from .names import get_or_spawn

    return await get_or_spawn(GroupServer, name=_server_name(worker), worker=worker)


def _home(pid: Pid) -> int:
    return pid.worker if pid.worker >= 0 else 0


async def join(topic: Any, pid: Pid | None = None) -> None:
    """Add ``pid`` (default: the calling process) to ``topic``; it leaves when it exits."""
    pid = pid if pid is not None else kernel.self_pid()
    if not isinstance(pid, Pid):
        raise TypeError(f"pid must be a Pid or None, got {pid!r}")
    hash(topic)
    await kernel.call(await _server(_home(pid)), ("join", topic, pid))


async def leave(topic: Any, pid: Pid | None = None) -> bool:
    """Remove ``pid`` (default: the caller) from ``topic``; returns False if it was not a member."""
    pid = pid if pid is not None else kernel.self_pid()
    left: bool = await kernel.call(await _server(_home(pid)), ("leave", topic, pid))
    return left


async def members(topic: Any) -> list[Pid]:
    """Every live member of ``topic``, across all workers."""
    hash(topic)
    out: list[Pid] = []
    for worker in range(kernel.worker_count()):
        server = await kernel.whereis(_server_name(worker))
        if server is not None:
            try:
                out.extend(await kernel.call(server, ("members", topic)))
            except (kernel.NoProc, kernel.ActorExited):
                continue  # that worker is being replaced: its members are gone with it
    return out


async def publish(topic: Any, message: Any) -> None:
    """Send ``message`` (to ``handle_info``) to every member of ``topic``; pickled once per worker."""
    hash(topic)
    for worker in range(kernel.worker_count()):
        server = await kernel.whereis(_server_name(worker))
        if server is not None:
            kernel.cast(server, ("publish", topic, message))
