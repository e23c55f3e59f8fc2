"""Row 18: ``python -m kernel run`` survives SIGKILL of each of its workers in turn.

Must hold: the root and the pool supervisor (hosted by the node process) keep their pids through every
kill; a kill restarts exactly the children the killed worker hosted (the others keep their pids: no
collateral restarts); SIGINT afterwards shuts the runner down with exit code 0.

Figure: time from each kill until the replacement worker is up and every child runs again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

import kernel
from kernel.node.control import ControlClient
from kernel.terms import NODE
from tests.reliability.support import record
from tests.support import BOUND
from tests.support.processes import interrupt, reap, start_runner, wait_line

KILLS = 6


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private runtime directory (short: Unix socket paths are limited to 108 bytes)."""
    base = tempfile.mkdtemp(prefix="r18", dir="/tmp")  # created 0700
    monkeypatch.setenv("XDG_RUNTIME_DIR", base)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def tree(snap: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Checkpoint key -> (pid, worker) of every actor in the snapshot that has a key."""
    return {a["key"]: (a["pid"], a["worker"]) for a in snap["actors"] if a.get("key")}


CHILDREN = [f"root/pool/{cid}" for cid in
            ("pinned-0a", "pinned-0b", "pinned-1a", "pinned-1b", "spread-a", "spread-b")]


async def settled(client: ControlClient, index: int, old_os_pid: int) -> dict[str, Any]:
    """The first snapshot where worker ``index`` has a new OS pid and every child runs."""
    async with asyncio.timeout(BOUND):
        while True:
            snap = await client.request({"op": "snapshot"})
            workers = {w["index"]: w for w in snap["workers"]}
            entry = workers.get(index, {})
            if entry.get("alive") and entry.get("os_pid") not in (None, old_os_pid) \
                    and all(key in tree(snap) for key in CHILDREN):
                return snap
            await asyncio.sleep(0.02)  # a separate process: its snapshot is the only view of it


def test_runner_survives_sigkill_of_each_worker_in_turn(runtime_dir: str) -> None:
    name = f"r18-{os.getpid()}"
    runner, lines = start_runner("tests.apps.chaos_app:children", name)
    seen: list[str] = []
    recoveries: list[float] = []
    try:
        wait_line(lines, "watch it live", seen)

        async def main() -> None:
            client = ControlClient()
            await client.connect(name)
            try:
                snap = await settled(client, 0, -1)
                for kill in range(KILLS):
                    index = kill % 2
                    before = tree(snap)
                    os_pid = {w["index"]: w["os_pid"] for w in snap["workers"]}[index]
                    started = time.monotonic()
                    os.kill(os_pid, signal.SIGKILL)
                    snap = await settled(client, index, os_pid)
                    recoveries.append(time.monotonic() - started)
                    after = tree(snap)
                    assert after["root"] == before["root"] and after["root/pool"] == before["root/pool"]
                    assert after["root"][1] == NODE and after["root/pool"][1] == NODE
                    for key in CHILDREN:
                        if before[key][1] != index:
                            assert after[key] == before[key], f"collateral restart of {key} (kill {kill})"
                        else:
                            assert after[key][0] != before[key][0], f"{key} was not restarted"
                        assert after[key][1] != NODE
                    # Pinned children come back on their own worker.
                    for key in CHILDREN[:4]:
                        assert after[key][1] == int(key[-2])
            finally:
                client.close()

        kernel.run(main())
        assert interrupt(runner) == 0, "".join(seen)
    finally:
        reap(runner)
    assert "root supervisor exited" not in "".join(seen)
    record(18, "test_runner_survives_sigkill_of_each_worker_in_turn", kills=KILLS,
           recovery_max_s=round(max(recoveries), 3),
           recovery_p50_s=round(sorted(recoveries)[len(recoveries) // 2], 3))
