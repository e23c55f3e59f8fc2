"""Row 11: a message storm, many senders across workers to a few receivers.

Must hold: messages from one sender to one receiver arrive in the order sent (across workers too),
and nothing is lost while nothing fails. Figure: msgs/s; order violations 0; lost 0.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kernel import Actor, Node, NoReply
from tests.reliability.support import record, run_node, scale, soak_timeout


class Receiver(Actor):
    async def init(self) -> None:
        self.last: dict[Any, int] = {}
        self.count = 0
        self.violations = 0
        self.waiter: tuple[int, Any] | None = None

    async def handle_cast(self, message: Any) -> None:
        sender, seq = message
        if seq <= self.last.get(sender, -1):
            self.violations += 1
        self.last[sender] = seq
        self.count += 1
        if self.waiter is not None and self.count >= self.waiter[0]:
            self.reply(self.waiter[1], self._tally())
            self.waiter = None

    def _tally(self) -> dict[str, Any]:
        return {"count": self.count, "violations": self.violations, "pairs": len(self.last)}

    async def handle_call(self, request: Any, caller: Any) -> Any:
        _, n = request
        if self.count >= n:
            return self._tally()
        self.waiter = (n, caller)
        return NoReply


class Sender(Actor):
    async def handle_cast(self, message: Any) -> None:
        receivers, m = message
        r = len(receivers)
        for i in range(m):
            self.cast(receivers[i % r], (self.pid, i))
            if i % 64 == 63:
                await asyncio.sleep(0)  # let the loop flush and other senders interleave


class Spawner(Actor):
    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("spawn", k):
                self.senders = [await self.spawn(Sender) for _ in range(k)]
                return len(self.senders)
            case ("go", receivers, m):
                for s in self.senders:
                    self.cast(s, (receivers, m))
                return None
        raise ValueError(request)


@soak_timeout(1200)
def test_storm_per_pair_order_and_nothing_lost() -> None:
    senders = scale(2000, 10_000)
    per_sender = scale(50, 100)
    receivers_n = 4

    async def body(node: Node) -> dict[str, Any]:
        receivers = [await node.spawn(Receiver, worker=i % 2) for i in range(receivers_n)]
        spawners = [await node.spawn(Spawner, worker=w) for w in (0, 1)]
        for sp in spawners:
            await node.call(sp, ("spawn", senders // 2), timeout=300)
        total = senders * per_sender
        t0 = time.monotonic()
        for sp in spawners:
            await node.call(sp, ("go", receivers, per_sender))
        # Sender messages go round-robin over the receivers: receiver k gets seq k, k+R, k+2R...
        expect = [senders * len(range(k, per_sender, receivers_n)) for k in range(receivers_n)]
        tallies = [await node.call(r, ("wait", e), timeout=600) for r, e in zip(receivers, expect)]
        elapsed = time.monotonic() - t0
        got = sum(t["count"] for t in tallies)
        return {"senders": senders, "messages": total, "received": got, "lost": total - got,
                "violations": sum(t["violations"] for t in tallies),
                "pairs": sum(t["pairs"] for t in tallies),
                "msgs_per_s": round(total / elapsed), "seconds": round(elapsed, 3)}

    res = run_node(body)
    assert res["lost"] == 0 and res["violations"] == 0, res
    assert res["pairs"] == res["senders"] * receivers_n, res
    record(11, "test_storm_per_pair_order_and_nothing_lost", **res)
