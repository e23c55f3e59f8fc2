"""The node's watch over its workers' event loops: a heartbeat that finds a hung worker.

A crashed worker shows itself by exiting; a hung one (SIGSTOP, a handler that never awaits, a deadlock
in a C extension) does not: its process lives on. So the node pings each ready worker, and the worker
answers from its event loop, which a blocked or stopped loop cannot do. One ping is outstanding per
worker at a time, so how long it has waited is that worker's loop lag as the node sees it (the socket
hop included, a fraction of a millisecond). A lag over a second is logged; a worker silent for
``worker_timeout`` seconds is reported hung, and the node kills and replaces it.

Cost: one small notice each way per worker per ``interval`` (at most one a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..routing.runtime import Runtime

__all__ = ["LAG_WARNING", "Heartbeat"]

log = logging.getLogger("kernel.node")

#: A loop blocked for longer than this (seconds) is logged, long before it counts as hung.
LAG_WARNING = 1.0


@dataclass(slots=True)
class _Health:
    """One worker incarnation's heartbeat. Invariant: ``pinged`` is the send time of the one ping not yet
    answered, or None when every ping was answered."""

    inc: int
    pinged: float | None = None
    rtt: float = 0.0
    warned: bool = False


class Heartbeat:
    """Pings the workers it watches every ``interval``; calls ``on_hung(index, inc, silent_for)`` once for
    a worker silent for ``worker_timeout`` (None: never, the lag is still measured and logged)."""

    def __init__(self, rt: Runtime, worker_timeout: float | None,
                 on_hung: Callable[[int, int, float], None]) -> None:
        self.rt = rt
        self.timeout = worker_timeout
        self.interval = min(1.0, worker_timeout / 10) if worker_timeout is not None else 1.0
        self._on_hung = on_hung
        self._workers: dict[int, _Health] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = self.rt.loop.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def watch(self, index: int, inc: int) -> None:
        """Worker ``index`` (incarnation ``inc``) is ready: watch it from now on."""
        self._workers[index] = _Health(inc)

    def forget(self, index: int) -> None:
        self._workers.pop(index, None)

    def lag(self, index: int) -> float | None:
        """Seconds the worker's loop is (or last was) behind: the last answer's round trip, or how long
        the current ping has waited if that is longer; None for a worker not watched."""
        health = self._workers.get(index)
        if health is None:
            return None
        waited = 0.0 if health.pinged is None else self.rt.loop.time() - health.pinged
        return max(health.rtt, waited)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.beat(self.rt.loop.time())

    def beat(self, now: float) -> None:
        """Ping every worker that answered its last ping; report those silent for too long."""
        for index, health in list(self._workers.items()):
            if health.pinged is None:
                health.pinged = now
                self.rt.note(index, "ping", now)
                continue
            silent = now - health.pinged
            if silent > LAG_WARNING and not health.warned:
                health.warned = True
                log.warning("worker %d has not answered a heartbeat for %.1fs: its event loop is blocked "
                            "or the process is stopped", index, silent)
            if self.timeout is not None and silent > self.timeout:
                del self._workers[index]
                self._on_hung(index, health.inc, silent)

    def _pong(self, index: int, inc: int, sent: float) -> None:
        health = self._workers.get(index)
        if health is None or health.inc != inc or health.pinged != sent:
            return  # an answer from an older incarnation or to a ping already given up on
        health.rtt = self.rt.loop.time() - sent
        health.pinged = None
        if health.rtt > LAG_WARNING:
            log.warning("worker %d answered a heartbeat after %.1fs: its event loop was blocked that long",
                        index, health.rtt)
        health.warned = False
