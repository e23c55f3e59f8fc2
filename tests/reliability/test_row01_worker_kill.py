"""Row 1: SIGKILL a worker holding persistent actors under load.

Must hold: a Down to every monitor and an Exit to every linked trapping watcher (reason
``"worker_down"``); every actor comes back (its supervisor, on another worker, restarts it) from a
checkpoint at least as new as the last reply its caller got (``durable=True``: a reply is released
only after the commit), under its registered name again.

Figure: time from the kill until every actor is back; acknowledged states lost (must be 0); in-doubt
(restored state newer than the last reply: committed, reply lost with the worker).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from typing import Any

import kernel
from kernel import Actor, Checkpoint, Down, KernelError, Node
from supervisors import ChildSpec, DynamicSupervisor, start_child
from tests.reliability.support import (
    SOAK,
    Collector,
    TrappingCollector,
    record,
    run_node,
    scale,
    soak_timeout,
)

COLLECTOR = "r1-collector"


class Acc(Actor):
    """A durable counter: each ``incr`` reply is released only once its state is committed."""

    checkpoint = Checkpoint(every=1, durable=True)

    async def init(self) -> None:
        self.state = 0
        self.cast(COLLECTOR, ("up", (self.name, 0)))  # never incremented: no checkpoint, init again

    async def restore(self, state: Any) -> None:
        self.state = state
        self.cast(COLLECTOR, ("up", (self.name, state)))

    async def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "incr":
            self.state += 1
            return self.state
        if request == "get":
            return self.state
        raise ValueError(request)


async def _one_round(node: Node, n: int, drivers: int, acks_before_kill: int, rnd: random.Random
                     ) -> dict[str, Any]:
    collector = await node.spawn(Collector, name=COLLECTOR, worker=0)
    watcher = await node.spawn(TrappingCollector, worker=0)
    sup = await node.spawn(DynamicSupervisor, max_restarts=2 * n + 10, max_seconds=600.0,
                           name="r1-sup", worker=0)
    pids = []
    for i in range(n):
        pids.append(await start_child(sup, ChildSpec(i, Acc, worker=1, name=("acc", i))))
    refs = {node.monitor(p): p for p in pids}
    await node.call(watcher, ("link", pids))

    acked = [0] * n
    acks = 0
    killed = asyncio.Event()
    enough = asyncio.Event()

    async def driver() -> None:
        nonlocal acks
        while not killed.is_set():
            i = rnd.randrange(n)
            try:
                value = await node.call(pids[i], "incr", timeout=10)
            except KernelError:
                if killed.is_set():
                    return
                raise
            acked[i] = max(acked[i], value)
            acks += 1
            if acks >= acks_before_kill:
                enough.set()

    tasks = [asyncio.ensure_future(driver()) for _ in range(drivers)]
    await enough.wait()
    old = node.workers[1]
    t_kill = time.monotonic()
    os.kill(old, signal.SIGKILL)
    killed.set()
    downs = 0
    while downs < n:
        msg = await node.receive(match=lambda m: isinstance(m, Down) and m.ref in refs, timeout=30)
        assert msg.reason == "worker_down", msg
        downs += 1
    await asyncio.gather(*tasks)
    await node.call(collector, ("wait", "up", 2 * n), timeout=120)  # n first starts, n restarts
    t_back = time.monotonic() - t_kill
    exits = await node.call(watcher, ("items", "Exit"))
    back = dict((await node.call(collector, ("items", "up")))[n:])

    lost = [i for i in range(n) if back.get(("acc", i), -1) < acked[i]]
    in_doubt = sum(1 for i in range(n) if back[("acc", i)] > acked[i])
    not_renamed = 0
    for i in range(n):
        pid = await kernel.whereis(("acc", i))
        if pid is None or pid.incarnation < 1:
            not_renamed += 1
            continue
        assert await node.call(("acc", i), "get") == back[("acc", i)]
    await node.stop(sup, "shutdown", timeout=120)
    await node.stop(watcher)
    await node.stop(collector)
    return {"acked_calls": acks, "downs": downs, "exits": len(exits), "lost": len(lost),
            "lost_examples": [(i, acked[i], back.get(("acc", i))) for i in lost[:5]],
            "in_doubt": in_doubt, "not_renamed": not_renamed, "seconds_until_all_back": round(t_back, 3),
            "actors": n}


@soak_timeout(1800)
def test_sigkill_worker_under_load_every_acknowledged_state_back(tmp_path: Any) -> None:
    n = scale(400, 10_000)
    rounds = scale(1, 3)
    drivers = scale(8, 32)
    rnd = random.Random(1)

    async def body(node: Node) -> list[dict[str, Any]]:
        results = []
        for r in range(rounds):
            results.append(await _one_round(node, n, drivers, scale(600, 5_000) * (r + 1), rnd))
        return results

    results = run_node(body, workers=2, state=str(tmp_path / "r1.db"))
    for res in results:
        assert res["downs"] == res["actors"], res
        assert res["exits"] == res["actors"], res
        assert res["lost"] == 0, res
        assert res["not_renamed"] == 0, res
    times = sorted(r["seconds_until_all_back"] for r in results)
    record(1, "test_sigkill_worker_under_load_every_acknowledged_state_back",
           actors=n, rounds=rounds, drivers=drivers,
           acked_calls=sum(r["acked_calls"] for r in results),
           lost=sum(r["lost"] for r in results), in_doubt=sum(r["in_doubt"] for r in results),
           seconds_until_all_back=times, soak=SOAK)
