"""Shared pieces of the supervisor integration tests: a node fixture, a journal, test children.

The integration modules import from it (``wait_down`` is ``kernel.testing``'s). Every wait is on
a fact with a bound: a ``Down`` through ``node.monitor`` + ``node.receive``, a journal entry (the
journal answers a ``wait`` call only once the entry exists), or a call's reply.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import kernel
import kernel.testing
from kernel import Actor, NoReply
from kernel.testing import wait_down
from tests.support import BODY_BOUND, BOUND


class NodeRunner(kernel.testing.NodeRunner):
    """Runs one ``Node`` in a driver task for a whole test module and runs test bodies inside it.

    The bodies run inside the ``async with Node()`` block (so ``kernel.call`` and the
    ``supervisors`` coroutines act for the node) and each is bounded by ``BODY_BOUND``. Closing also
    checks that no worker process it ever had outlives it.
    """

    def __init__(self, workers: int = 2) -> None:
        super().__init__(BODY_BOUND, workers=workers)
        self.os_pids = list(self.node.workers)

    def close(self) -> None:
        super().close()
        for pid in self.os_pids + list(self.node.workers):
            assert not _os_alive(pid), f"worker process {pid} outlived its node"


def _os_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie that nobody reaped still counts as a leak only until reaped: check its state
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def node_fixture(workers: int = 2) -> Callable[[], Iterator[NodeRunner]]:
    """A module-scoped fixture that starts a ``Node(workers=...)`` and stops it (checking for leaks)."""

    @pytest.fixture(scope="module")
    def runner() -> Iterator[NodeRunner]:
        r = NodeRunner(workers)
        try:
            yield r
        finally:
            r.close()

    return runner


class Journal(Actor):
    """An ordered log of what children did, fed by calls (so its order is the order things happened).

    ``("wait", kind, tag, n)`` replies once ``n`` entries ``(kind, tag, ...)`` exist (``tag=None``
    matches any tag): the tests wait on it instead of sleeping.
    """

    async def init(self) -> None:
        self.state = []
        self.waiters: list[tuple[str, Any, int, Any]] = []

    def _count(self, kind: str, tag: Any) -> int:
        return sum(1 for e in self.state if e[0] == kind and (tag is None or e[1] == tag))

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("log", entry):
                self.state.append(entry)
                still = []
                for kind, tag, n, who in self.waiters:
                    if self._count(kind, tag) >= n:
                        self.reply(who, list(self.state))
                    else:
                        still.append((kind, tag, n, who))
                self.waiters = still
                return None
            case ("count", kind, tag):
                return self._count(kind, tag)
            case ("read",):
                return list(self.state)
            case ("wait", kind, tag, n):
                if self._count(kind, tag) >= n:
                    return list(self.state)
                self.waiters.append((kind, tag, n, caller))
                return NoReply
        raise ValueError(request)


class Member(Actor):
    """A test child: journals ``("start", tag, pid)`` in init and ``("stop", tag, reason)`` in terminate.

    It traps exits so that a shutdown from its supervisor runs ``terminate`` (as an OTP worker that
    must clean up would). Modes: ``"fail_restarts"`` makes every start after the first fail;
    ``"stubborn"`` makes ``terminate`` hang, so only a kill stops it.
    """

    trap_exits = True
    quarantine_after = None  # these tests crash children on purpose with the same message

    async def init(self, tag: str, journal: Any, mode: str = "") -> None:
        self.tag, self.journal, self.mode = tag, journal, mode
        if mode == "fail_restarts" and await self.call(journal, ("count", "start", tag)) > 0:
            await self.call(journal, ("log", ("failed", tag)))
            raise RuntimeError(f"{tag} cannot start again")
        if mode == "fail":
            raise RuntimeError(f"{tag} never starts")
        await self.call(journal, ("log", ("start", tag, self.pid)))

    async def handle_cast(self, message: Any) -> None:
        if message == "crash":
            raise RuntimeError(f"{self.tag} crashed on purpose")

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("exit", reason):
                self.stop(reason)
                return "ok"
            case "ping":
                return self.tag
        raise ValueError(request)

    async def terminate(self, reason: Any) -> None:
        if isinstance(reason, kernel.Crash):
            reason = "crash"
        await self.call(self.journal, ("log", ("stop", self.tag, reason)))
        if self.mode == "stubborn":
            await asyncio.Event().wait()


async def journal_wait(journal: Any, kind: str, tag: Any, n: int) -> list[Any]:
    """Entries so far, once ``n`` entries of ``kind`` (and ``tag``) exist."""
    entries: list[Any] = await kernel.call(journal, ("wait", kind, tag, n), timeout=BOUND)
    return entries


def starts(entries: list[Any], tag: str) -> list[Any]:
    """Pids that child ``tag`` started as, in order."""
    return [e[2] for e in entries if e[0] == "start" and e[1] == tag]


__all__ = ["Journal", "Member", "NodeRunner", "journal_wait", "node_fixture", "starts", "wait_down"]
