"""The worker slots of a node: what one runtime does when a worker of the node dies or comes back.

The tables it edits (``incarnations``, ``down``, ``gone``) stay attributes of ``Runtime``: ``send``,
``signal`` and every call read them per message, and the worker process replaces ``incarnations`` as
it starts (node/worker.py). ``Runtime`` keeps these methods as bound methods of its ``WorkerSlots``,
so the node (node/node.py) and the ``worker_down``/``worker_up`` notices reach them as before.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from ..errors import ActorExited
from ..process.base import Proc
from ..terms import Pid
from ..transport.sockets import Peer
from .name_table import NameTable
from .scheduling import Call

__all__ = ["WorkerSlots", "WorkerSlotsHost"]

log = logging.getLogger("kernel")


class WorkerSlotsHost(Protocol):
    """What membership needs of its runtime (``Runtime`` satisfies it)."""

    loop: asyncio.AbstractEventLoop
    index: int
    workers: int
    incarnations: dict[int, int]
    down: set[int]
    peers: dict[int, Peer]
    names: NameTable
    procs: dict[int, Proc]
    calls: dict[int, Call]

    def peer(self, index: int) -> Peer: ...


class WorkerSlots:
    """One runtime's view of which worker incarnations are alive, and what a change fires."""

    def __init__(self, rt: WorkerSlotsHost) -> None:
        self.rt = rt

    def worker_down(self, index: int, inc: int) -> None:
        """Worker ``index`` (incarnation ``inc``) died: everything that pointed into it fires now."""
        if self.rt.incarnations.get(index, -1) > inc:
            return
        self.rt.incarnations[index] = inc + 1
        self.rt.down.add(index)
        peer = self.rt.peers.get(index)
        if peer is not None:
            peer.mark_down()
        self.rt.names.forget_worker(index, inc)
        self.fail_calls(index, inc, ActorExited("worker_down", Pid(index, 0, inc)))
        for proc in list(self.rt.procs.values()):
            if not proc._exiting:
                proc._on_worker_down(index, inc)

    def fail_calls(self, index: int, inc: int | None, error: BaseException) -> None:
        """Fail the pending calls into worker ``index`` (incarnation ``inc``; None: any) with ``error``."""
        for ref, entry in list(self.rt.calls.items()):
            if entry[1] == index and (inc is None or entry[2] == inc) and not entry[0].done():
                entry[0].set_exception(error)
                del self.rt.calls[ref]

    def worker_up(self, index: int, inc: int) -> None:
        self.rt.incarnations[index] = inc
        self.rt.down.discard(index)
        self.rt.peer(index).mark_up()  # connect now, not at the first message

    async def connect_peers(self, budget: float = 3.0) -> None:
        """Connect to every other worker (retrying those not listening yet), within ``budget`` seconds.

        A worker does this before it reports ready, so the links and monitors its actors set up never
        wait behind a handshake while a third process's message to the target does not (API.md
        section 12, causal set-up). A peer still missing after the budget is connected on first use.
        """
        deadline = self.rt.loop.time() + budget
        pending = [i for i in range(self.rt.workers) if i != self.rt.index]
        delay = 0.005
        while pending:
            left = deadline - self.rt.loop.time()
            if left <= 0:
                log.warning("workers %s not reachable within %.0fs; connecting on first use", pending, budget)
                return
            try:
                async with asyncio.timeout(left):
                    ok = await asyncio.gather(*(self.rt.peer(i).connected() for i in pending))
            except TimeoutError:
                continue
            pending = [i for i, up in zip(pending, ok, strict=True) if not up]
            if pending:
                await asyncio.sleep(min(delay, max(0.0, deadline - self.rt.loop.time())))
                delay = min(delay * 2, 0.1)
