"""kernel/routing/scheduling.py on its own: the call deadlines on one timer, and the run queue."""

from __future__ import annotations

import asyncio

import pytest

from kernel.errors import CallTimeout
from kernel.routing import scheduling
from kernel.routing.scheduling import Deadlines, RunQueue

BOUND = 10.0


def _run(main) -> None:
    asyncio.run(asyncio.wait_for(main(), BOUND))


def test_deadlines_fail_only_the_calls_still_in_flight_in_deadline_order() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        calls: dict = {}
        deadlines = Deadlines(loop, calls)
        futs = {ref: loop.create_future() for ref in (1, 2, 3)}
        for ref, fut in futs.items():
            calls[ref] = (fut, 0, 0, None)
        deadlines.arm(3, "c", 0.03)
        deadlines.arm(1, "a", 0.01)  # earlier than the armed timer: it is re-armed
        deadlines.arm(2, "b", 0.02)
        calls.pop(2)  # answered in time: skipped when it reaches the top
        with pytest.raises(CallTimeout) as first:
            await futs[1]
        with pytest.raises(CallTimeout) as last:
            await futs[3]
        assert (first.value.dest, last.value.dest) == ("a", "c")
        assert not futs[2].done() and deadlines.timed_out == 2 and not calls

    _run(main)


def test_deadline_heap_is_rebuilt_from_live_calls(monkeypatch) -> None:
    monkeypatch.setattr(scheduling, "_HEAP_SLACK", 4)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        calls: dict = {}
        deadlines = Deadlines(loop, calls)
        for ref in range(10):
            deadlines.arm(ref, ref, 60.0)  # none in flight: each push past the slack rebuilds the heap
        assert len(deadlines._heap) <= 5

    _run(main)


class _Queued:
    def __init__(self, log: list, n: int, runq: RunQueue) -> None:
        self.log, self.n, self.runq, self.pid = log, n, runq, n

    def _run_queued(self) -> None:
        self.log.append(self.n)
        if self.n < 3:
            self.runq.enqueue(_Queued(self.log, self.n + 1, self.runq))  # woken: runs in the same pass


def test_run_queue_runs_what_it_wakes_in_the_same_pass_and_yields_at_its_budget(monkeypatch) -> None:
    async def main() -> None:
        runq = RunQueue(asyncio.get_running_loop())
        log: list = []
        runq.enqueue(_Queued(log, 0, runq))
        await asyncio.sleep(0)
        assert log == [0, 1, 2, 3]
        monkeypatch.setattr(scheduling, "RUNQ_BUDGET", 2)
        log.clear()
        runq.enqueue(_Queued(log, 0, runq))
        await asyncio.sleep(0)
        assert log == [0, 1]  # past the budget: the rest waits for the next loop iteration
        await asyncio.sleep(0)
        assert log == [0, 1, 2, 3]

    _run(main)
