"""Rows 12 and 13: call timeouts, late replies, self-calls and call cycles.

Row 12: a call times out on time; the callee's late reply is dropped, never delivered to the caller's
mailbox. Figure: timeout error (ms past the deadline); stray replies 0.

Row 13: a call to oneself raises at once; A->B->A (and longer rings, across workers) end by timeout
with a clear ``CallTimeout``, and every actor in the cycle answers again afterwards. Figure: time to
the self-call error; stuck actors 0.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kernel import Actor, CallTimeout, KernelError, Node
from tests.reliability.support import record, run_node, scale, soak_timeout

T = 0.2


class Slow(Actor):
    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("sleep", seconds):
                await asyncio.sleep(seconds)  # the callee is busy: its reply comes after the timeout
                return "late"
            case "ping":
                return "pong"
        raise ValueError(request)


async def _stray(receive: Any) -> int:
    """How many messages sit in the mailbox now (the late reply, if it leaked)."""
    n = 0
    while True:
        try:
            await receive(lambda m: True, 0.001)
        except TimeoutError:
            return n
        n += 1


class Caller(Actor):
    """Calls ``dest`` with a short timeout, then pings it (same pair: the late reply comes first)."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("try", dest):
                t0 = time.monotonic()
                try:
                    await self.call(dest, ("sleep", 2 * T), timeout=T)
                except CallTimeout:
                    late = time.monotonic() - t0 - T
                else:
                    raise AssertionError("no timeout")
                assert await self.call(dest, "ping") == "pong"
                return late, await _stray(self.receive)
            case "self":
                t0 = time.monotonic()
                for dest in (self.pid, self.name):
                    if dest is None:
                        continue
                    try:
                        await self.call(dest, "ping", timeout=5)
                    except KernelError as exc:
                        assert not isinstance(exc, CallTimeout), exc
                    else:
                        raise AssertionError("a self-call returned")
                return time.monotonic() - t0
            case "ping":
                return "pong"
        raise ValueError(request)


@soak_timeout(600)
def test_call_timeout_on_time_and_late_reply_dropped() -> None:
    rounds = scale(2, 20)

    async def body(node: Node) -> dict[str, Any]:
        slow = [await node.spawn(Slow, worker=w) for w in (0, 1)]
        callers = [await node.spawn(Caller, worker=w) for w in (0, 1)]
        lates: list[float] = []
        stray = 0
        for _ in range(rounds):
            # An actor caller, callee on the same worker and on the other one.
            for c in callers:
                for s in slow:
                    late, n = await node.call(c, ("try", s), timeout=10)
                    lates.append(late)
                    stray += n
            # The node as caller.
            t0 = time.monotonic()
            try:
                await node.call(slow[1], ("sleep", 2 * T), timeout=T)
            except CallTimeout:
                lates.append(time.monotonic() - t0 - T)
            assert await node.call(slow[1], "ping") == "pong"
            stray += await _stray(node.receive)
        lates.sort()
        return {"calls": len(lates), "stray_replies": stray,
                "timeout_error_ms_p50": round(1000 * lates[len(lates) // 2], 2),
                "timeout_error_ms_max": round(1000 * lates[-1], 2),
                "early": sum(1 for x in lates if x < -0.001)}

    res = run_node(body)
    assert res["calls"] == 5 * rounds
    assert res["stray_replies"] == 0, res
    assert res["early"] == 0, res
    assert res["timeout_error_ms_max"] < 500, res
    record(12, "test_call_timeout_on_time_and_late_reply_dropped", **res)


class Ring(Actor):
    """``("go", path)``: call the next actor of ``path`` with the rest of it; a ring calls back."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("go", path, timeout):
                if not path:
                    return "end"
                try:
                    return await self.call(path[0], ("go", path[1:], timeout), timeout=timeout)
                except CallTimeout as exc:
                    return ("timeout", str(exc))
            case "ping":
                return "pong"
        raise ValueError(request)


def test_self_call_rejected_at_once_and_cycles_end_by_timeout() -> None:
    sizes = scale(3, 10)

    async def body(node: Node) -> dict[str, Any]:
        # Self-call, by pid and by registered name, from an actor; and from the node itself.
        me = await node.spawn(Caller, name="r13-me", worker=1)
        self_err = await node.call(me, "self", timeout=5)
        t0 = time.monotonic()
        try:
            await node.call(node.pid, "ping", timeout=5)
        except KernelError as exc:
            assert not isinstance(exc, CallTimeout)
        node_self_err = time.monotonic() - t0
        # Rings of 2..sizes+1 actors alternating workers: A->B->A, A->B->C->A, ...
        stuck = 0
        ends = []
        for k in range(2, sizes + 2):
            ring = [await node.spawn(Ring, worker=i % 2) for i in range(k)]
            path = (*ring[1:], ring[0], ring[1])  # back to the start: a cycle
            t0 = time.monotonic()
            answer = await node.call(ring[0], ("go", path, T), timeout=10 + k * T)
            ends.append(time.monotonic() - t0)
            assert answer[0] == "timeout" and "no reply" in answer[1], answer
            for r in ring:  # every member serves again: nobody is stuck
                try:
                    assert await node.call(r, "ping", timeout=2 + k * T) == "pong"
                except KernelError:
                    stuck += 1
        return {"self_call_error_ms": round(1000 * self_err, 3),
                "node_self_call_error_ms": round(1000 * node_self_err, 3),
                "cycles": len(ends), "cycle_end_s_max": round(max(ends), 3), "stuck_actors": stuck}

    res = run_node(body)
    assert res["stuck_actors"] == 0, res
    assert res["self_call_error_ms"] < 100 and res["node_self_call_error_ms"] < 100, res
    record(13, "test_self_call_rejected_at_once_and_cycles_end_by_timeout", **res)
