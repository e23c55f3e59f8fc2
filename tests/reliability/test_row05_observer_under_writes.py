"""Row 5: every worker writes checkpoints while the observer polls.

Load: persistent actors on every worker (``Checkpoint(every=1, durable=True)``), driven by concurrent
callers, so every worker's group committer writes all the time. Meanwhile the observer's three ways in
poll as fast as they answer: ``await node.snapshot()`` in a loop, a ``ControlClient`` on the node's
control socket sending ``{"op": "snapshot"}``, and the offline reader of ``tools.checkpoints``
(``kernel.checkpoints.entries`` on the live file, in a thread).

Must hold: no lock error reaches an actor (every call answered, no actor exits, no restarts); the
``-wal`` file stays bounded (no long read transaction pins it), measured after every poll. Figures:
rows/s (acknowledged durable writes), p99 commit (durable call round trip: the reply waits for the
commit), max WAL MB, polls of each kind.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from kernel import Actor, Checkpoint, Down, Node
from kernel.node.control import ControlClient
from kernel.persistence import store as checkpoints
from tests.reliability.support import SOAK, record, run_node, scale, soak_timeout

#: SQLite's default wal_autocheckpoint is 1,000 pages (4 MB): the WAL restarts from its start after each
#: checkpoint, so it stays near 4 MB; past twice that, a reader pinned it (seen: 9.4 MB in 5 s).
WAL_BOUND_MB = 8.0


class Account(Actor):
    checkpoint = Checkpoint(every=1, durable=True)

    async def init(self) -> None:
        self.state = {"n": 0, "pad": "x" * 300}

    async def handle_call(self, request: Any, caller: Any) -> Any:
        self.state = {**self.state, "n": self.state["n"] + 1}
        return self.state["n"]


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


@soak_timeout(1200)
def test_all_workers_write_while_the_observer_polls(tmp_path: Any) -> None:
    actors_per_worker = scale(40, 200)
    callers = scale(16, 64)
    seconds = scale(2, 300)
    workers = 2

    async def body(node: Node) -> dict[str, Any]:
        wal = node.state_path + "-wal"
        pids = [await node.spawn(Account, name=("acct", w, i), worker=w)
                for w in range(workers) for i in range(actors_per_worker)]
        refs = {node.monitor(p) for p in pids}
        stop = asyncio.Event()
        latencies: list[float] = []
        errors: list[BaseException] = []
        wal_max = 0
        polls = {"node_snapshot": 0, "control_snapshot": 0, "file_entries": 0}

        def sample_wal() -> None:
            nonlocal wal_max
            try:
                wal_max = max(wal_max, os.path.getsize(wal))
            except FileNotFoundError:
                pass

        async def caller(k: int) -> None:
            i = k
            while not stop.is_set():
                pid = pids[i % len(pids)]
                i += callers
                t0 = time.perf_counter()
                try:
                    await node.call(pid, "incr", timeout=10)
                except Exception as exc:  # any error is a failure of this row
                    errors.append(exc)
                    return
                latencies.append(time.perf_counter() - t0)

        async def poll_node() -> None:
            while not stop.is_set():
                snap = await node.snapshot()
                assert len(snap["workers"]) == workers
                polls["node_snapshot"] += 1
                sample_wal()

        async def poll_control() -> None:
            async with ControlClient() as client:
                await client.connect(node.name)
                while not stop.is_set():
                    snap = await client.request({"op": "snapshot"})
                    assert snap["node"] == node.name
                    polls["control_snapshot"] += 1
                    sample_wal()

        async def poll_file() -> None:
            while not stop.is_set():
                await asyncio.to_thread(checkpoints.entries, node.state_path)
                polls["file_entries"] += 1
                sample_wal()

        tasks = [asyncio.ensure_future(caller(k)) for k in range(callers)]
        pollers = [asyncio.ensure_future(f()) for f in (poll_node, poll_control, poll_file)]
        t0 = time.monotonic()
        # The run lasts `seconds`: wait on a timer that nothing else needs, failing fast on an error.
        await asyncio.wait([*tasks, *pollers], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await asyncio.gather(*tasks, *pollers)
        elapsed = time.monotonic() - t0
        sample_wal()
        snap = await node.snapshot()
        mine = [a for a in snap["actors"] if a["class"].endswith("Account")]
        exited = 0
        try:  # a Down for any Account means it exited during the run
            while True:
                await node.receive(lambda m: isinstance(m, Down) and m.ref in refs, timeout=0.05)
                exited += 1
        except TimeoutError:
            pass
        return {"errors": [repr(e) for e in errors[:3]], "n_errors": len(errors), "exited": exited,
                "alive": len(mine), "restarts": sum(a["restarts"] for a in mine),
                "rows_per_s": round(len(latencies) / elapsed), "acked_writes": len(latencies),
                "p50_commit_ms": round(_pct(latencies, 0.5) * 1e3, 2),
                "p99_commit_ms": round(_pct(latencies, 0.99) * 1e3, 2),
                "max_wal_mb": round(wal_max / 2**20, 2), "seconds": round(elapsed, 1),
                "commits": sum(w.get("commits", 0) for w in snap["workers"]), **polls}

    res = run_node(body, workers=workers, state=str(tmp_path / "r5.db"))
    assert res["n_errors"] == 0 and res["exited"] == 0, res
    assert res["alive"] == workers * actors_per_worker and res["restarts"] == 0, res
    assert res["max_wal_mb"] < WAL_BOUND_MB, res
    assert min(res["node_snapshot"], res["control_snapshot"], res["file_entries"]) > 0, res
    record(5, "test_all_workers_write_while_the_observer_polls", actors=workers * actors_per_worker,
           callers=callers, soak=SOAK, **res)
