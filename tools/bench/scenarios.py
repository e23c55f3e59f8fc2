"""Kernel scenarios, each the twin of a floor in ``floors.py``, on the public kernel API only.

Every scenario spawns a fresh ``Driver`` on worker 0 and asks it to run and time the work inside the
worker: the calling process only starts it and reads the result, so the node's extra hop is not in
the figure. Cross-worker scenarios put the other end on worker 1.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kernel import Node
from tools.bench.actors import Driver
from tools.bench.figure import Figure

TIMEOUT = 600.0
RING_SIZE = 1000
CALLERS = 100

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


SCENARIOS: dict[str, Scenario] = {
    "local_cast": local_cast,
    "local_call": local_call,
    "cross_cast": cross_cast,
    "cross_call": cross_call,
    "cross_call_100": cross_call_100,
    "spawn": spawn,
    "idle_memory": idle_memory,
    "ring_local": ring_local,
    "ring_2workers": ring_2workers,
}
