"""Test helpers that run against a live ``Node``: a barrier, fault injection, an actor to wait on.

These are what ``kernel.testing`` (the pytest plugin) re-exports; they live here, free of pytest, because
the actors below are spawned on workers, which import this module to run them. See docs/guides/testing.md.

* :func:`settle` is a barrier: once it returns, every message that any of the node's processes had sent
  to another before the call has reached its receiver's mailbox, so "nothing else happened" can be
  checked without sleeping.
* :func:`kill_worker`, :func:`hang_worker`, :func:`resume_worker` send SIGKILL, SIGSTOP and SIGCONT to a
  worker's OS process; ``kill_worker`` returns once the replacement is ready to host actors.
* :class:`Facts` records facts and answers a call once ``n`` of them exist: the test waits on a fact,
  never on a clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from . import run as kernel_run  # the package is initialised before any of its users imports this
from .errors import ActorExited, KernelError, NoProc
from .node.node import Node
from .process.actor import Actor
from .terms import Down, NoReply, Pid

T = TypeVar("T")


#: Bound on each wait inside these helpers (seconds); a test's own timeout is the outer bound.
BOUND = 30.0


def run_node(body: Callable[[Node], Awaitable[T]], workers: int = 2, bound: float = 60.0,
             **options: Any) -> T:
    """From plain (non-async) code: start a ``Node``, run ``body(node)`` inside it bounded by ``bound``
    seconds, close the node, and return what ``body`` returned (or raise what it raised).

    ``body`` runs in the node's context (module functions such as ``kernel.call`` act for the node).
    """

    async def main() -> T:
        async with Node(workers=workers, **options) as node:
            async with asyncio.timeout(bound):
                return await body(node)

    return kernel_run(main())


class Relay(Actor):
    """One per worker while :func:`settle` runs: a round trip to every other relay drains those streams."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("via", peers):
                for peer in peers:
                    await self.call(peer, ("ping",), timeout=BOUND)
                return "settled"
            case ("ping",):
                return "pong"
        raise ValueError(f"Relay: unexpected request {request!r}")


async def settle(node: Node) -> None:
    """Barrier over every stream between the node's processes (node and workers, both directions).

    A relay actor is spawned on each worker; the node calls each relay, which calls every other relay.
    Streams between two processes are FIFO, so when a ping has crossed from process A to process B,
    everything A had sent to B before it has been delivered. Delivered means queued in the receiver's
    mailbox: to see it handled, call the receiver afterwards (its mailbox is served in order). A message
    that a handler sends later, in reaction, is not covered: settle again after calling that handler.
    """
    relays = [await node.spawn(Relay, worker=i) for i in range(len(node.workers))]
    try:
        for relay in relays:
            await node.call(relay, ("via", [r for r in relays if r != relay]), timeout=BOUND)
    finally:
        for relay in relays:
            with contextlib.suppress(NoProc, ActorExited):
                await node.stop(relay, timeout=BOUND)


def _worker_os_pid(node: Node, index: int) -> int:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(node.workers):
        raise ValueError(f"index must be a worker index in 0..{len(node.workers) - 1}, got {index!r}")
    return node.workers[index]


async def kill_worker(node: Node, index: int) -> int:
    """SIGKILL worker ``index`` and return the OS pid of its replacement, once it can host actors.

    Returns after the node has noticed the death (every actor the worker hosted has exited
    ``"worker_down"``, links and monitors into it have fired) and the replacement is ready.
    """
    os_pid = _worker_os_pid(node, index)
    sentinel = await node.spawn(Relay, worker=index)
    ref = node.monitor(sentinel)
    os.kill(os_pid, signal.SIGKILL)
    down = await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=BOUND)
    if down.reason != "worker_down":
        raise KernelError(f"worker {index}'s sentinel exited {down.reason!r}, expected 'worker_down'")
    # A spawn aimed at a worker that is being replaced waits for the replacement (docs/api.md section 1).
    fresh = await node.spawn(Relay, worker=index)
    await node.stop(fresh, timeout=BOUND)
    return node.workers[index]


def _await_stopped(os_pid: int, stopped: bool) -> None:
    """Return once the kernel reports ``os_pid`` stopped (or running again), within a second.

    Signal delivery is asynchronous; the state in /proc is the fact to wait on (a few microseconds).
    """
    deadline = time.monotonic() + 1.0
    while True:
        try:
            with open(f"/proc/{os_pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:  # no /proc (not Linux) or the process is gone: nothing more to wait for
            return
        if (state in ("T", "t")) == stopped:
            return
        if time.monotonic() > deadline:
            raise KernelError(f"worker OS process {os_pid} is still in state {state!r} a second after "
                              "the signal")
        time.sleep(0.0005)


def hang_worker(node: Node, index: int) -> int:
    """SIGSTOP worker ``index`` (a hung process: it reads nothing, answers nothing); returns its OS pid.

    Returns once the process is stopped. Pair it with :func:`resume_worker`; the ``node`` fixture resumes
    every worker before closing.
    """
    os_pid = _worker_os_pid(node, index)
    os.kill(os_pid, signal.SIGSTOP)
    _await_stopped(os_pid, True)
    return os_pid


def resume_worker(node: Node, index: int) -> int:
    """SIGCONT worker ``index`` (undoes :func:`hang_worker`) and return its OS pid once it runs again."""
    os_pid = _worker_os_pid(node, index)
    os.kill(os_pid, signal.SIGCONT)
    _await_stopped(os_pid, False)
    return os_pid


class Facts(Actor):
    """An ordered record of facts that answers a call once ``n`` matching facts exist.

    Record with a cast or a raw send of the fact itself, or ``call(facts, ("add", fact))`` when the
    recorder must know it is recorded. Read with ``("all",)``; wait with ``("wait", n)`` or
    ``("wait", n, where)`` (``where`` a picklable predicate): the reply is the list of matching facts,
    sent once there are at least ``n``. Use :func:`wait_facts` from the node.
    """

    async def init(self) -> None:
        self.state: list[Any] = []
        #: ``[n, where, caller, matching so far]``: a count per waiter, so that a fact costs one test
        #: per waiter (a wait for 20,000 facts is not quadratic).
        self.waiters: list[list[Any]] = []

    def _matching(self, where: Callable[[Any], bool] | None) -> list[Any]:
        return [f for f in self.state if where is None or where(f)]

    def _add(self, fact: Any) -> None:
        self.state.append(fact)
        still = []
        for waiter in self.waiters:
            n, where, caller, _ = waiter
            if where is None or where(fact):
                waiter[3] += 1
            if waiter[3] >= n:
                self.reply(caller, self._matching(where))
            else:
                still.append(waiter)
        self.waiters = still

    async def handle_cast(self, message: Any) -> None:
        self._add(message)

    async def handle_info(self, message: Any) -> None:
        self._add(message)

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("add", fact):
                self._add(fact)
                return None
            case ("all",):
                return list(self.state)
            case ("wait", n, *rest) if isinstance(n, int) and len(rest) <= 1:
                where = rest[0] if rest else None
                found = self._matching(where)
                if len(found) >= n:
                    return found
                self.waiters.append([n, where, caller, len(found)])
                return NoReply
        raise ValueError(f"Facts: unexpected request {request!r} (use ('add', fact), ('all',) or "
                         "('wait', n[, where]))")


async def wait_facts(node: Node, facts: Pid | Any, n: int, where: Callable[[Any], bool] | None = None,
                     timeout: float = BOUND) -> list[Any]:
    """The facts recorded by ``facts`` that match ``where``, once there are at least ``n``."""
    found: list[Any] = await node.call(facts, ("wait", n, where), timeout=timeout)
    return found


async def wait_down(node: Node, ref: Any, timeout: float = BOUND) -> Down:
    """The ``Down`` for ``ref`` (a monitor taken with ``node.monitor``), within ``timeout`` seconds."""
    msg: Down = await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=timeout)
    return msg


__all__ = ["Facts", "Relay", "hang_worker", "kill_worker", "resume_worker", "run_node", "settle",
           "wait_down", "wait_facts"]
