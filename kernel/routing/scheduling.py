"""Two small parts of a runtime with one job each (as trio's ``Deadlines`` and ``Runner``): the call
deadlines on one timer, and the run queue of actors whose next handler cannot suspend.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..errors import CallTimeout
from ..process.base import SLICE

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..process.actor import Actor

__all__ = ["RUNQ_BUDGET", "Deadlines", "RunQueue"]

log = logging.getLogger("kernel")

#: Queued actors run per loop iteration (and at most ``SLICE`` of time) before others get their turn.
RUNQ_BUDGET = 1000
#: The deadline heap is rebuilt from the live calls once it holds more than this many entries and
#: more than twice as many as there are calls in flight.
_HEAP_SLACK = 64

#: A call in flight: its future, where it waits (a worker index of this node, or ``(node, index)`` of
#: another node's process), that process's incarnation, an rpc's result hook.
Call = tuple["asyncio.Future[Any]", "int | tuple[int, int]", int, "Callable[[Any], None] | None"]


class Deadlines:
    """Call timeouts share one timer: a heap of deadlines and a handle for the earliest.

    A ``call_later`` per call costs 1.5-3 us to create and cancel, about four pickles; a heap push is a
    fraction of that. Finished calls are not removed from the heap: they are skipped when they reach its
    top (a call is live while its ref is in ``calls``), and the heap is rebuilt from the live calls when
    it grows past twice their number.
    """

    __slots__ = ("_at", "_calls", "_handle", "_heap", "_loop", "timed_out")

    def __init__(self, loop: asyncio.AbstractEventLoop, calls: dict[int, Call]) -> None:
        self._loop = loop
        self._calls = calls
        self._heap: list[tuple[float, int, Any, float]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0
        #: Calls failed with ``CallTimeout`` (read by node/metrics.py at scrape time).
        self.timed_out = 0

    def arm(self, ref: int, dest: Any, timeout: float) -> None:
        """Fail call ``ref`` with ``CallTimeout(dest, timeout)`` if it is still in flight then."""
        deadline = self._loop.time() + timeout
        heap = self._heap
        heapq.heappush(heap, (deadline, ref, dest, timeout))
        if len(heap) > _HEAP_SLACK and len(heap) > 2 * len(self._calls):
            heap[:] = [item for item in heap if item[1] in self._calls]
            heapq.heapify(heap)
        if self._handle is None or deadline < self._at:
            if self._handle is not None:
                self._handle.cancel()
            self._at = deadline
            self._handle = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._handle = None
        heap = self._heap
        calls = self._calls
        now = self._loop.time()
        while heap and (heap[0][0] <= now or heap[0][1] not in calls):
            _, ref, dest, timeout = heapq.heappop(heap)
            entry = calls.pop(ref, None)
            if entry is not None and not entry[0].done():
                self.timed_out += 1
                entry[0].set_exception(CallTimeout(dest, timeout))
        if heap:
            self._at = heap[0][0]
            self._handle = self._loop.call_at(self._at, self._expire)


class RunQueue:
    """Actors with one message for a handler that cannot suspend, run without a task each (Erlang's
    scheduler run queue): a ring hop, one message of a fan-out."""

    __slots__ = ("_loop", "_queue")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: deque[Actor] = deque()

    def enqueue(self, actor: Actor) -> None:
        """Put an actor in the run queue; it runs later in this loop iteration."""
        self._queue.append(actor)
        if len(self._queue) == 1:
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        """Run queued actors, and those they wake, up to a budget of actors and of time; then yield.

        Handlers here cannot suspend, so each runs to completion; the budget bounds how long other
        tasks and I/O wait, as a task draining its mailbox does (``Actor._drain``).
        """
        runq = self._queue
        end = time.perf_counter() + SLICE
        for n in range(RUNQ_BUDGET):
            if not runq:
                return
            actor = runq[0]  # stays queued while it runs, so what it wakes needs no second call_soon
            try:
                actor._run_queued()
            except Exception:
                log.exception("%r failed outside its handler", actor.pid)
            finally:
                runq.popleft()
            if n & 3 == 3 and time.perf_counter() > end:
                break
        if runq:
            self._loop.call_soon(self._run)
