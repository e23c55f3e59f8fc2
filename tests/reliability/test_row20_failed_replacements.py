"""Row 20: a replacement worker that hangs or fails is killed and retried with backoff; if it keeps
failing, the node fails loudly.

Must hold: two replacements that stop themselves before reporting ready (the worker's test hook) are
killed after ``start_timeout`` and retried; the third comes up, and a spawn aimed at the slot meanwhile
waits for it, while round-robin spawns skip the slot. When every attempt fails, ``async with Node()``
raises ``WorkerStartFailed`` naming the worker, and ``python -m kernel run`` exits 1 with one line.

Figures: time from the kill to the replacement ready; time to the loud failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import kernel
from kernel import Actor, Node, WorkerStartFailed
from kernel.node.worker import STALL_ENV
from tests.reliability.support import record, wait_down
from tests.reliability.test_row18_runner_survives_worker_kills import runtime_dir  # noqa: F401 - a fixture
from tests.support.processes import reap, start_runner, wait_line

#: Long enough that a worker's first start on a loaded 2-CPU machine (several test suites at once) is
#: not taken for a stuck one; a stuck attempt (SIGSTOPped before ready) costs this much.
START_TIMEOUT = 4.0

class Echo(Actor):
    async def handle_call(self, request: Any, caller: Any) -> Any:
        return request


@pytest.fixture
def fail_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The worker's test hook: ``"N stop"`` / ``"N exit"`` makes the next N starting workers fail."""
    path = tmp_path / "fail-before-ready"
    path.write_text("0 stop")
    monkeypatch.setenv(STALL_ENV, str(path))
    return path


def test_stuck_replacement_is_killed_and_retried(fail_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    figures: dict[str, float] = {}

    async def main() -> None:
        async with Node(workers=2, start_timeout=START_TIMEOUT) as node:
            async with asyncio.timeout(40):
                old = node.workers[1]
                ref = node.monitor(await node.spawn(Echo, worker=1))
                fail_file.write_text("2 stop")
                killed = time.monotonic()
                os.kill(old, signal.SIGKILL)
                assert (await wait_down(node, ref)).reason == "worker_down"  # the node knows: replacing
                aimed = asyncio.ensure_future(node.spawn(Echo, worker=1))
                spread = [await node.spawn(Echo) for _ in range(4)]
                pid = await aimed
                figures["kill_to_replaced_s"] = time.monotonic() - killed
                assert pid.worker == 1 and await node.call(pid, "hi") == "hi"
                assert node.workers[1] != old
                assert fail_file.read_text() == "0 stop"  # both stuck attempts were made
                # While the slot was being replaced, round-robin placement skipped it.
                assert all(p.worker == 0 for p in spread)

    with caplog.at_level(logging.ERROR, logger="kernel.node"):
        kernel.run(main())
    retries = [r.getMessage() for r in caplog.records if "could not replace worker 1" in r.getMessage()]
    assert len(retries) == 2 and "attempt 1 of 5" in retries[0], retries
    assert f"not ready within start_timeout={START_TIMEOUT}s" in retries[0]
    record(20, "test_stuck_replacement_is_killed_and_retried", stuck_attempts=2,
           **{k: round(v, 3) for k, v in figures.items()})


def test_replacement_that_keeps_failing_fails_the_node_loudly(fail_file: Path) -> None:
    figures: dict[str, float] = {}

    async def main() -> None:
        async with Node(workers=2, start_timeout=START_TIMEOUT) as node:
            async with asyncio.timeout(40):
                ref = node.monitor(await node.spawn(Echo, worker=1))
                fail_file.write_text("99 exit")
                figures["killed"] = time.monotonic()
                os.kill(node.workers[1], signal.SIGKILL)
                await wait_down(node, ref)
                await node.spawn(Echo, worker=1)  # waits for the slot: the failure ends the wait
        pytest.fail("the node should have failed")

    with pytest.raises(WorkerStartFailed, match="worker 1 could not be started") as failed:
        kernel.run(main())
    assert failed.value.attempts == 5 and "exited with code 3 while starting" in failed.value.cause
    record(20, "test_replacement_that_keeps_failing_fails_the_node_loudly",
           kill_to_failure_s=round(time.monotonic() - figures["killed"], 3))


def test_runner_exits_non_zero_with_one_line_when_a_worker_cannot_be_replaced(
        runtime_dir: str, fail_file: Path) -> None:  # noqa: F811 - the fixture above
    runner, lines = start_runner("tests.apps.chaos_app:children", f"r20-{os.getpid()}")
    seen: list[str] = []
    try:
        wait_line(lines, "watch it live", seen)
        worker = __import__("psutil").Process(runner.pid).children()[0]
        fail_file.write_text("99 exit")
        worker.kill()
        wait_line(lines, "the node failed", seen)
        assert runner.wait(20) == 1
    finally:
        reap(runner)
    line = next(line for line in seen if "the node failed" in line)
    assert "could not be started (5 attempt(s)" in line and "exited with code 3" in line, line
