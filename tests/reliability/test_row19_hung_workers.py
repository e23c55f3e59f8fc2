"""Row 19: a hung worker (SIGSTOP) is found by the heartbeat, killed, replaced; nothing waits forever.

Must hold: with ``worker_timeout=1.5``, a ``Down`` (monitor from the node and from an actor on the other
worker), a trapped ``Exit`` (link) and the failure of a ``timeout=None`` call, all ``"worker_down"``,
within ``worker_timeout + 2`` s of the SIGSTOP; the worker is replaced and the stopped process reaped.
``node.snapshot()`` answers within 2 s with the stopped worker ``"responsive": False``; leaving
``async with Node()`` with 3 top-level actors on a stopped worker (heartbeat off) takes < 20 s.

Figures: time from SIGSTOP to Down; snapshot time; close time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import kernel
from kernel import Actor, ActorExited, Checkpoint, Node, NoReply
from tests.reliability.support import Collector, TrappingCollector, record, wait_down

TIMEOUT = 1.5


class Sink(Actor):
    """Answers ``"hold"`` never (the caller waits with ``timeout=None``) and ``"ping"`` at once."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        return NoReply if request == "hold" else "pong"


def test_stopped_worker_is_killed_and_replaced_links_monitors_and_calls_fire() -> None:
    figures: dict[str, float] = {}

    async def main() -> None:
        async with Node(workers=2, worker_timeout=TIMEOUT) as node:
            async with asyncio.timeout(30):
                target = await node.spawn(Sink, worker=1)
                watcher = await node.spawn(TrappingCollector, worker=0)
                remote = await node.spawn(Collector, worker=0)
                await node.call(watcher, ("link", [target]))
                await node.call(remote, ("monitor", [target]))
                ref = node.monitor(target)
                held = asyncio.ensure_future(node.call(target, "hold", timeout=None))
                assert await node.call(target, "ping") == "pong"  # everything above is in place
                old = node.workers[1]
                stopped = time.monotonic()
                os.kill(old, signal.SIGSTOP)
                down = await wait_down(node, ref, timeout=TIMEOUT + 10)
                figures["stop_to_down_s"] = time.monotonic() - stopped
                assert down.reason == "worker_down"
                with pytest.raises(ActorExited) as failed:
                    await held
                assert failed.value.reason == "worker_down"
                figures["stop_to_call_failed_s"] = time.monotonic() - stopped
                await node.call(watcher, ("wait", "Exit", 1))
                await node.call(remote, ("wait", "Down", 1))
                exits = await node.call(watcher, ("items", "Exit"))
                downs = await node.call(remote, ("items", "Down"))
                assert [e.reason for e in exits] == ["worker_down"]
                assert [d.reason for d in downs] == ["worker_down"]
                assert figures["stop_to_down_s"] < TIMEOUT + 2
                # Replaced: the slot hosts actors again; the stopped process was killed and reaped.
                fresh = await node.spawn(Sink, worker=1)
                assert await node.call(fresh, "ping") == "pong"
                assert node.workers[1] != old
                assert not psutil.pid_exists(old)

    kernel.run(main())
    record(19, "test_stopped_worker_is_killed_and_replaced_links_monitors_and_calls_fire",
           worker_timeout=TIMEOUT, **{k: round(v, 3) for k, v in figures.items()})


def test_snapshot_and_close_are_bounded_with_a_stopped_worker() -> None:
    figures: dict[str, float] = {}

    async def main() -> None:
        node = Node(workers=2, worker_timeout=None)
        async with node:
            async with asyncio.timeout(30):
                for _ in range(3):
                    await node.spawn(Sink, worker=1)
                os.kill(node.workers[1], signal.SIGSTOP)
                started = time.monotonic()
                snap = await node.snapshot()
                figures["snapshot_s"] = time.monotonic() - started
                entries = {w["index"]: w for w in snap["workers"]}
                assert entries[1]["responsive"] is False and entries[0]["responsive"] is True
                assert figures["snapshot_s"] < 2.0
            closing = time.monotonic()
        figures["close_s"] = time.monotonic() - closing
        assert figures["close_s"] < 20.0

    kernel.run(main())
    record(19, "test_snapshot_and_close_are_bounded_with_a_stopped_worker",
           **{k: round(v, 3) for k, v in figures.items()})


def test_worker_timeout_is_validated() -> None:
    for bad in (0, -1.0, "30", True):
        with pytest.raises(ValueError, match="worker_timeout"):
            Node(workers=1, worker_timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start_timeout"):
        Node(workers=1, start_timeout=0)
    assert Node(workers=1, worker_timeout=None).worker_timeout is None


def test_heartbeat_reports_lag_in_the_snapshot() -> None:
    class Blocker(Actor):
        async def handle_call(self, request: Any, caller: Any) -> Any:
            time.sleep(request)  # blocks the worker's loop, as a handler with no await would
            return "done"

    async def main() -> None:
        async with Node(workers=1, worker_timeout=10.0) as node:
            async with asyncio.timeout(30):
                blocker = await node.spawn(Blocker)
                snap = await node.snapshot()
                assert snap["workers"][0]["responsive"] is True
                assert snap["workers"][0]["lag"] < 1.0
                assert await node.call(blocker, 2.5) == "done"
                # The heartbeat that waited through the block measured it.
                assert 1.0 < node._heartbeat.lag(0) < 10.0  # type: ignore[union-attr]

    kernel.run(main())


class LockHolder(Actor):
    """Takes the state file's writer turn and SQLite's write lock, and keeps them (then is stopped)."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        import fcntl
        import sqlite3

        from kernel.persistence.store import WRITER_LOCK

        path = request
        self.turn = os.open(path + WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.turn, fcntl.LOCK_EX)
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("BEGIN IMMEDIATE")
        return "held"


class Durable(Actor):
    checkpoint = Checkpoint(every=1, durable=True)

    async def init(self) -> None:
        self.state = 0

    async def handle_call(self, request: Any, caller: Any) -> Any:
        self.state += 1
        return self.state


def test_hung_lock_holder_does_not_fail_other_workers_durable_writes(tmp_path: Path) -> None:
    """A worker stopped while it holds the checkpoint write locks is killed by the heartbeat before any
    other worker's durable write gives up waiting for them (on main: SQLITE_BUSY after 10 s)."""
    figures: dict[str, float] = {}
    state = str(tmp_path / "state.db")

    async def main() -> None:
        async with Node(workers=2, worker_timeout=TIMEOUT, state=state) as node:
            async with asyncio.timeout(40):
                writer = await node.spawn(Durable, name="r19-durable", worker=0)
                assert await node.call(writer, "incr") == 1  # the file and its schema exist
                holder = await node.spawn(LockHolder, worker=1)
                assert await node.call(holder, state) == "held"
                os.kill(node.workers[1], signal.SIGSTOP)
                started = time.monotonic()
                assert await node.call(writer, "incr", timeout=30.0) == 2
                figures["durable_write_waited_s"] = time.monotonic() - started

    kernel.run(main())
    record(19, "test_hung_lock_holder_does_not_fail_other_workers_durable_writes",
           worker_timeout=TIMEOUT, **{k: round(v, 3) for k, v in figures.items()})


def test_close_lets_the_heartbeat_end_a_supervisor_waiting_on_a_hung_child() -> None:
    """A worker that hangs as the node closes is still killed by the heartbeat, so a node-hosted
    supervisor stopping its child there finishes after about ``worker_timeout``, not the close budget."""
    from supervisors import ChildSpec, Supervisor

    figures: dict[str, float] = {}

    async def main() -> None:
        async with Node(workers=2, worker_timeout=TIMEOUT) as node:
            sup = await node.spawn(Supervisor, children=[ChildSpec("hung", Sink, worker=1)])
            assert sup.worker == -1
            os.kill(node.workers[1], signal.SIGSTOP)
            closing = time.monotonic()
        figures["close_s"] = time.monotonic() - closing
        assert figures["close_s"] < TIMEOUT + 4

    kernel.run(main())
    record(19, "test_close_lets_the_heartbeat_end_a_supervisor_waiting_on_a_hung_child",
           worker_timeout=TIMEOUT, **{k: round(v, 3) for k, v in figures.items()})


def test_taking_a_name_held_on_a_hung_worker_ends_once_the_heartbeat_kills_it() -> None:
    """The authority syncs with the holder's worker before it answers "taken"; a hung worker would hold
    that forever, the heartbeat ends it: the name is free once the holder exits "worker_down"."""

    async def main() -> None:
        async with Node(workers=2, worker_timeout=TIMEOUT) as node:
            async with asyncio.timeout(30):
                await node.spawn(Sink, name="r19-name", worker=1)
                os.kill(node.workers[1], signal.SIGSTOP)
                started = time.monotonic()
                pid = await node.spawn(Sink, name="r19-name", worker=0)
                assert time.monotonic() - started < TIMEOUT + 2
                assert await node.whereis("r19-name") == pid

    kernel.run(main())
