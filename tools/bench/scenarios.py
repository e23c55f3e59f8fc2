"""Kernel scenarios, each the twin of a floor in ``floors.py``, on the public kernel API only.

Every scenario spawns a fresh ``Driver`` on worker 0 and asks it to run and time the work inside the
worker: the calling process only starts it and reads the result, so the node's extra hop is not in
the figure. Cross-worker scenarios put the other end on worker 1.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psutil

from kernel import Node, Pid
from supervisors import ChildSpec, DynamicSupervisor, start_child, which_children
from tools.bench.actors import Counter, Driver, DurableCounter, Idle, VolatileCounter
from tools.bench.figure import Figure
from tools.bench.tcp_transport import peer_call, peer_cast

TIMEOUT = 600.0
RING_SIZE = 1000
CALLERS = 100
#: The worker_timeout of the node that ``stop_to_down`` measures (the bench's own node keeps 30 s).
HANG_TIMEOUT = 1.0
#: Put on tools.bench.hang's PYTHONPATH so it runs this very tree.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

Scenario = Callable[[Node, int], Awaitable[Figure]]


async def _drive(node: Node, request: tuple[Any, ...]) -> dict[str, float]:
    driver = await node.spawn(Driver, worker=0)
    try:
        result: dict[str, float] = await node.call(driver, request, timeout=TIMEOUT)
    finally:
        await node.stop(driver)
    return result


async def local_cast(node: Node, n: int) -> Figure:
    """A sender casts n messages to a receiver on the same worker, which counts them (msgs/s)."""
    r = await _drive(node, ("local_cast", n))
    return Figure.rate(n, r["seconds"], "msg/s")


async def local_call(node: Node, n: int) -> Figure:
    """One actor calls another on the same worker n times, one after another (calls/s)."""
    r = await _drive(node, ("call", n, None))
    return Figure.rate(n, r["seconds"], "call/s", mean_us=r["seconds"] / n * 1e6)


async def cross_cast(node: Node, n: int) -> Figure:
    """A sender on worker 0 casts n messages to a receiver on worker 1 (msgs/s, until all counted)."""
    r = await _drive(node, ("cross_cast", n, 1))
    return Figure.rate(n, r["seconds"], "msg/s")


async def cross_cast_burst(node: Node, n: int) -> Figure:
    """As ``cross_cast`` but the sender never yields: all n casts in one handler (msgs/s)."""
    r = await _drive(node, ("cross_cast", n, 1, 0))
    return Figure.rate(n, r["seconds"], "msg/s")


async def _spinner_calls(node: Node, n: int, spin: bool) -> Figure:
    r = await _drive(node, ("behind_spinner", n, spin))
    return Figure(r["worst"] * 1e3, "ms worst", {"median_ms": r["median"] * 1e3})


async def call_behind_spinner(node: Node, n: int) -> Figure:
    """Worst latency of n sequential calls from worker 0 to an actor on worker 1 while a self-casting
    actor whose handler never awaits (1 ms of work per message) runs on worker 1 (ms)."""
    return await _spinner_calls(node, n, True)


async def call_no_spinner(node: Node, n: int) -> Figure:
    """The same calls with worker 1 otherwise idle (ms)."""
    return await _spinner_calls(node, n, False)


async def _down_after(sig: str, n: int) -> Figure:
    """Median seconds, over n trials in a node of its own (``tools.bench.hang``), from the signal to
    worker 1 to the ``Down`` of an actor on it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.bench.hang", "--signal", sig, "--worker-timeout", str(HANG_TIMEOUT),
        "--trials", str(n), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"tools.bench.hang --signal {sig} failed: {err.decode()[-500:]}")
    seconds = sorted(json.loads(out)["seconds"])
    return Figure(seconds[(len(seconds) - 1) // 2], "s", {"max_s": seconds[-1]})


async def stop_to_down(node: Node, n: int) -> Figure:
    """SIGSTOP of worker 1 to the Down of its actor, ``worker_timeout=1.0`` (s): the heartbeat's delay."""
    return await _down_after("STOP", n)


async def kill_to_down(node: Node, n: int) -> Figure:
    """SIGKILL of worker 1 to the Down of its actor (s): what noticing an exit costs, the base."""
    return await _down_after("KILL", n)


async def cross_call(node: Node, n: int) -> Figure:
    """Sequential calls from worker 0 to an actor on worker 1 (calls/s; mean_us per round trip)."""
    r = await _drive(node, ("call", n, 1))
    return Figure.rate(n, r["seconds"], "call/s", mean_us=r["seconds"] / n * 1e6)


async def cross_call_100(node: Node, n: int) -> Figure:
    """100 caller actors on worker 0 share n calls to one actor on worker 1, all in flight (calls/s)."""
    r = await _drive(node, ("call_many", n, 1, CALLERS))
    return Figure.rate(n // CALLERS * CALLERS, r["seconds"], "call/s")


async def spawn(node: Node, n: int) -> Figure:
    """An actor spawns n idle actors on its own worker, each spawn awaited (spawns/s)."""
    r = await _drive(node, ("spawn", n))
    return Figure.rate(n, r["seconds"], "spawn/s")


async def idle_memory(node: Node, n: int) -> Figure:
    """Traced bytes per idle actor in the worker (``rss_per_actor``: RSS growth, first run only)."""
    r = await _drive(node, ("memory", n))
    return Figure(r["bytes_per_actor"], "B/actor", {"rss_per_actor": r["rss_per_actor"]})


async def ring_local(node: Node, n: int) -> Figure:
    """A token makes n hops round a ring of 1000 actors on one worker (hops/s)."""
    r = await _drive(node, ("ring", n, RING_SIZE, 1))
    return Figure.rate(n, r["seconds"], "hop/s")


async def ring_2workers(node: Node, n: int) -> Figure:
    """As ``ring_local`` but neighbours alternate between 2 workers, so every hop crosses (hops/s)."""
    r = await _drive(node, ("ring", n, RING_SIZE, 2))
    return Figure.rate(n, r["seconds"], "hop/s")


_serial = itertools.count()


def _tag(what: str) -> str:
    """A name part unique in this process, so reps never meet a checkpoint from an earlier rep."""
    return f"{what}-{os.getpid()}-{next(_serial)}"


# ---------------------------------------------------------------- issue 3: registry and supervisors


async def send_by_name(node: Node, n: int) -> Figure:
    """As ``local_cast`` but every cast addressed by the receiver's registered name (msgs/s)."""
    r = await _drive(node, ("cast_by_name", n))
    return Figure.rate(n, r["seconds"], "msg/s")


async def get_or_spawn_existing(node: Node, n: int) -> Figure:
    """``registry.get_or_spawn`` of a name whose holder runs, from an actor on worker 0 (calls/s)."""
    r = await _drive(node, ("get_or_spawn", n))
    return Figure.rate(n, r["seconds"], "call/s", mean_us=r["seconds"] / n * 1e6)


async def dynsup_start(node: Node, n: int) -> Figure:
    """A DynamicSupervisor on worker 0 (``worker=`` given) starts n idle children there, one awaited
    ``start_child`` each from an actor on worker 0 (children/s)."""
    r = await _drive(node, ("dynsup", n, True))
    return Figure.rate(n, r["seconds"], "child/s", rss_per_child=r["rss_per_child"],
                       sup_worker=r["sup_worker"])


async def dynsup_start_node(node: Node, n: int) -> Figure:
    """The same from a DynamicSupervisor placed by default, in the node process: each ``start_child``
    is a call from worker 0 to the node and a spawn RPC from there to a worker (children/s)."""
    r = await _drive(node, ("dynsup", n, False))
    return Figure.rate(n, r["seconds"], "child/s", sup_worker=r["sup_worker"])


async def restart_after_kill(node: Node, n: int) -> Figure:
    """Seconds until a DynamicSupervisor on worker 0 has restarted its n children after their worker
    (worker 1) was SIGKILLed: polled with ``which_children`` until every child has a new pid.

    Headline is children restarted per second; ``seconds`` beside it. Bounded at 300 s.
    """
    sup = await node.spawn(DynamicSupervisor, max_restarts=10 * n, max_seconds=60.0, worker=0)
    try:
        batch = 200
        for start in range(0, n, batch):
            await asyncio.gather(*(start_child(sup, ChildSpec(i, Idle, worker=1, shutdown="brutal_kill"))
                                   for i in range(start, min(start + batch, n))))
        before = {cid: pid for cid, pid, _ in await which_children(sup)}
        if len(before) != n or any(p is None or p.worker != 1 for p in before.values()):
            raise AssertionError("children not all running on worker 1 before the kill")
        os.kill(node.workers[1], signal.SIGKILL)
        t0 = time.perf_counter()
        deadline = t0 + 300.0
        while True:
            now = await which_children(sup)
            if len(now) == n and all(p is not None and p != before[cid] for cid, p, _ in now):
                break
            if time.perf_counter() > deadline:
                raise TimeoutError("children not all restarted 300 s after the SIGKILL")
            await asyncio.sleep(0.01)
        seconds = time.perf_counter() - t0
        on_1 = sum(1 for _, p, _ in now if p is not None and p.worker == 1)
    finally:
        node.exit(sup, "kill")  # not node.stop: see actors.Driver._dynsup
    await _worker_back(node, 1)
    return Figure.rate(n, seconds, "child/s", elapsed_s=seconds, restarted_on_worker_1=on_1)


async def _worker_back(node: Node, index: int, limit: float = 60.0) -> None:
    """Wait (bounded) until worker ``index`` runs again, so the next rep starts on a whole node."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        try:
            pid = await node.spawn(Idle, worker=index)
        except Exception:
            await asyncio.sleep(0.05)
            continue
        node.exit(pid, "kill")
        return
    raise TimeoutError(f"worker {index} not back {limit} s after the kill")


# ---------------------------------------------------------------- issue 4: checkpoints


async def _counter(node: Node, n: int, cls: type[Counter]) -> Figure:
    r = await _drive(node, ("counter_calls", n, cls, ("bench-counter", _tag(cls.__name__))))
    return Figure.rate(n, r["seconds"], "call/s", mean_us=r["seconds"] / n * 1e6)


async def plain_counter(node: Node, n: int) -> Figure:
    """Sequential calls to a named counter on the caller's worker, no checkpoint (calls/s)."""
    return await _counter(node, n, Counter)


async def ckpt_volatile(node: Node, n: int) -> Figure:
    """As ``plain_counter`` with ``Checkpoint(every=1, durable=False)``: every call checkpoints."""
    return await _counter(node, n, VolatileCounter)


async def ckpt_durable(node: Node, n: int) -> Figure:
    """As ``plain_counter`` with ``Checkpoint(every=1, durable=True)``: each reply waits for its commit."""
    return await _counter(node, n, DurableCounter)


async def _commits(node: Node) -> int:
    snap = await node.snapshot()
    return sum(int(w.get("commits", 0)) for w in snap["workers"])


DURABLE_ACTORS = 50


async def durable_50(node: Node, n: int) -> Figure:
    """50 named durable counters, 25 per worker, each called by its own caller on its worker; n calls
    in all (acknowledged calls/s). Commits are the workers' ``commits`` counters (snapshot) before and
    after; actors per commit = acknowledged calls / commits (each call changes its actor's state)."""
    tag = _tag("d50")
    targets: list[Pid] = [await node.spawn(DurableCounter, name=("bench-durable", tag, i), worker=i % 2)
                          for i in range(DURABLE_ACTORS)]
    try:
        per = max(n // DURABLE_ACTORS, 1)
        c0 = await _commits(node)
        r = await _drive(node, ("call_targets", per, targets))
        commits = await _commits(node) - c0
    finally:
        for pid in targets:
            await node.stop(pid, timeout=60.0)
    total = per * DURABLE_ACTORS
    return Figure.rate(total, r["seconds"], "call/s", commits_per_s=commits / r["seconds"],
                       actors_per_commit=total / max(commits, 1))


async def reactivate(node: Node, n: int) -> Figure:
    """Reactivation of n passivated ``PassiveCounter``s (idle_timeout 0.3 s) by ``get_or_spawn`` + a
    call each, 100 in flight, across 2 workers (actors/s). ``first_per_s`` is the first activation
    (no checkpoint yet) in the same run; ``restored`` counts the actors that came back with state."""
    r = await _drive(node, ("reactivate", n, _tag("re"), 2))
    if r["restored"] != n:
        raise AssertionError(f"only {r['restored']} of {n} actors came back with their checkpoint")
    return Figure.rate(n, r["seconds"], "actor/s", first_per_s=n / r["first_seconds"])


# ---------------------------------------------------------------- issue 8: scale


def _workers_rss(node: Node) -> int:
    return sum(psutil.Process(p).memory_info().rss for p in node.workers)


async def million_idle(node: Node, n: int) -> Figure:
    """n idle actors, half spawned on each worker by a driver on that worker; the headline is the
    growth of the workers' total RSS per actor (psutil), ``total_rss`` the workers' RSS after."""
    rss0 = _workers_rss(node)
    drivers = [await node.spawn(Driver, worker=w) for w in (0, 1)]
    t0 = time.perf_counter()
    await asyncio.gather(*(node.call(d, ("spawn_idle", n // 2), timeout=TIMEOUT) for d in drivers))
    seconds = time.perf_counter() - t0
    rss = _workers_rss(node)
    for d in drivers:
        await node.stop(d)
    return Figure((rss - rss0) / (n // 2 * 2), "B/actor", {"total_rss": float(rss), "actors": float(n),
                                                           "spawn_per_s": n / seconds})


CRUNCHERS_PER_WORKER = 2


async def _crunch(node: Node, units: int, workers: list[int]) -> Figure:
    r = await _drive(node, ("crunch", units, workers, CRUNCHERS_PER_WORKER))
    done = units // (len(workers) * CRUNCHERS_PER_WORKER) * len(workers) * CRUNCHERS_PER_WORKER
    return Figure.rate(done, r["seconds"], "unit/s")


async def cpu_1worker(node: Node, n: int) -> Figure:
    """CPU-bound units (pure-Python loops) on 2 actors, both on worker 0; worker 1 idle (units/s)."""
    return await _crunch(node, n, [0])


async def cpu_2workers(node: Node, n: int) -> Figure:
    """The same units on 2 actors per worker, on both workers (aggregate units/s)."""
    return await _crunch(node, n, [0, 1])


async def tcp_peer_call(node: Node, n: int) -> Figure:
    """The transport alone: Peer/Listener over loopback TCP between two processes as nodes 1 and 2,
    sequential request/reply (tools/bench/tcp_transport.py); the node is not used."""
    return await asyncio.to_thread(peer_call, n)


async def tcp_peer_cast(node: Node, n: int) -> Figure:
    """The transport alone: n casts over Peer/Listener on loopback TCP, node 1 -> node 2."""
    return await asyncio.to_thread(peer_cast, n)


SCENARIOS: dict[str, Scenario] = {
    "local_cast": local_cast,
    "local_call": local_call,
    "cross_cast": cross_cast,
    "cross_cast_burst": cross_cast_burst,
    "cross_call": cross_call,
    "call_behind_spinner": call_behind_spinner,
    "call_no_spinner": call_no_spinner,
    "cross_call_100": cross_call_100,
    "spawn": spawn,
    "idle_memory": idle_memory,
    "ring_local": ring_local,
    "ring_2workers": ring_2workers,
    "send_by_name": send_by_name,
    "get_or_spawn": get_or_spawn_existing,
    "dynsup_start": dynsup_start,
    "dynsup_start_node": dynsup_start_node,
    "restart_10k": restart_after_kill,
    "stop_to_down": stop_to_down,
    "kill_to_down": kill_to_down,
    "plain_counter": plain_counter,
    "ckpt_volatile": ckpt_volatile,
    "ckpt_durable": ckpt_durable,
    "durable_50": durable_50,
    "reactivate_10k": reactivate,
    "million_idle": million_idle,
    "cpu_1worker": cpu_1worker,
    "cpu_2workers": cpu_2workers,
    "tcp_peer_call": tcp_peer_call,
    "tcp_peer_cast": tcp_peer_cast,
}
