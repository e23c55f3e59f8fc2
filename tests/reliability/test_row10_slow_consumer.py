"""Row 10: a slow consumer flooded with casts.

The consumer's first cast blocks its handler (a call to a gate that answers only when the test says
so), so everything after it queues. With ``max_mailbox = M`` on the class: the mailbox stops at M,
every further cast is dropped and counted (``actor.dropped``, shown as ``"dropped"`` in
``node.snapshot()``), and a call is refused at once with ``MailboxFull``; once the gate opens the
consumer handles exactly the M it kept, in order, and answers calls again. Without a bound the
mailbox holds everything and ``node.snapshot()`` reports its length.

Figures: peak queue (from the snapshot), dropped, peak RSS (VmHWM) of the consumer's worker, for the
bounded and the unbounded consumer. Short form 100k casts, soak 1M.
"""

from __future__ import annotations

import time
from typing import Any

from kernel import Actor, MailboxFull, Node
from tests.reliability.support import SOAK, record, run_node, scale, soak_timeout
from tests.reliability.test_row09_huge_messages import MB, _hwm
from tests.support.actors import Latch

BOUND_AT = 1000


class Slow(Actor):
    async def init(self, gate: Any) -> None:
        self.state = {"gate": gate, "seen": 0, "last": -1, "out_of_order": 0}

    async def handle_cast(self, message: Any) -> None:
        s = self.state
        if s["seen"] == 0:
            await self.call(s["gate"], "wait", timeout=120)
        s["out_of_order"] += message <= s["last"]
        s["last"] = message
        s["seen"] += 1

    async def handle_call(self, request: Any, caller: Any) -> Any:
        return dict(self.state, gate=None)


class Bounded(Slow):
    max_mailbox = BOUND_AT


def _row(snap: dict[str, Any], pid: Any) -> dict[str, Any]:
    return next(a for a in snap["actors"] if a["pid"] == repr(pid))


async def _flood(node: Node, cls: type[Slow], casts: int) -> dict[str, Any]:
    gate = await node.spawn(Latch, worker=0)
    slow = await node.spawn(cls, gate, worker=1)
    hwm0 = _hwm(node.workers[1])
    t0 = time.monotonic()
    for i in range(casts):
        node.cast(slow, i)
    send_s = time.monotonic() - t0
    # Wait (bounded by the caller's timeout) until the worker accounted for every cast: one is in the
    # blocked handler, the rest are queued or dropped. Each loop is a snapshot round trip, not a sleep.
    peak = 0
    while True:
        row = _row(await node.snapshot(), slow)
        peak = max(peak, row["mailbox"])
        if row["mailbox"] + row["dropped"] + 1 == casts:
            break
    refused_call = None
    if cls.max_mailbox is not None:
        t1 = time.monotonic()
        try:
            await node.call(slow, "state", timeout=10)
        except MailboxFull as exc:
            refused_call = time.monotonic() - t1
            assert exc.limit == cls.max_mailbox
        row = _row(await node.snapshot(), slow)  # the refused call counts as dropped too
    hwm = _hwm(node.workers[1])
    await node.call(gate, "open")
    # A call would be refused while the kept casts still fill the mailbox: wait until it drained.
    while _row(await node.snapshot(), slow)["mailbox"]:
        pass
    state = await node.call(slow, "state", timeout=120)
    return {"peak_queue": peak, "dropped": row["dropped"], "handled": state["seen"],
            "out_of_order": state["out_of_order"], "last": state["last"],
            "refused_call_ms": None if refused_call is None else round(refused_call * 1e3, 2),
            "cast_rate_per_s": round(casts / send_s), "peak_rss_mb": round(hwm / MB),
            "rss_growth_mb": round((hwm - hwm0) / MB, 1)}


@soak_timeout(900)
def test_slow_consumer_bounded_mailbox_sheds_and_unbounded_is_reported(tmp_path: Any) -> None:
    casts = scale(100_000, 1_000_000)

    async def body(node: Node) -> dict[str, Any]:
        bounded = await _flood(node, Bounded, casts)
        unbounded = await _flood(node, Slow, casts)
        return {"bounded": bounded, "unbounded": unbounded}

    res = run_node(body)
    b, u = res["bounded"], res["unbounded"]
    # Bounded: the queue stops at the bound, the rest is counted as dropped, the kept ones all handled.
    assert b["peak_queue"] == BOUND_AT, b
    assert b["dropped"] == casts - BOUND_AT - 1 + 1, b  # the casts past the bound, plus the refused call
    assert b["handled"] == BOUND_AT + 1 and b["out_of_order"] == 0, b
    assert b["refused_call_ms"] is not None, b
    # Unbounded: the snapshot reports the whole queue; nothing is dropped; all handled in order.
    assert u["peak_queue"] == casts - 1 and u["dropped"] == 0, u
    assert u["handled"] == casts and u["out_of_order"] == 0 and u["last"] == casts - 1, u
    record(10, "test_slow_consumer_bounded_mailbox_sheds_and_unbounded_is_reported", casts=casts,
           max_mailbox=BOUND_AT, soak=SOAK, **res)
