"""Row 9: huge messages, from 1 MB to the limit and beyond.

``Node(max_message=N)`` bounds one encoded message. Must hold: a message up to the limit arrives; a
larger one makes the sender raise ``MessageTooLarge`` (a ``NotSerializable``) at once and nothing is
sent (the receiver never sees it), from the node and from an actor, for a call, a cast and a reply; a
peer that *announces* a bigger frame on a worker socket is hung up on before the worker allocates
anything for it; the connections for normal traffic keep working and no worker is replaced.

Figures: largest accepted payload (bytes, found by bisection next to the limit), peak RSS (VmHWM) of
the node process and of each worker.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import psutil

from kernel import Actor, KernelError, MessageTooLarge, Node, NotSerializable
from tests.reliability.support import SOAK, record, run_node, scale
from tests.reliability.test_row15_socket_abuse import HEADER, _eof, legit_handshake

MB = 2**20


def _hwm(pid: int) -> int:
    """Peak resident set size of ``pid`` (VmHWM, bytes)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class Sink(Actor):
    async def init(self) -> None:
        self.state = 0

    async def handle_cast(self, message: Any) -> None:
        self.state += 1

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("size", payload):
                self.state += 1
                return len(payload)
            case ("reply", n):
                return bytes(n)  # a reply too big to send back
            case "count":
                return self.state
            case ("relay", dest, n):  # from an actor: a cast and a call that are too big
                out = []
                for how in ("cast", "call"):
                    try:
                        if how == "cast":
                            self.cast(dest, bytes(n))
                        else:
                            await self.call(dest, ("size", bytes(n)))
                        out.append("sent")
                    except MessageTooLarge as exc:
                        out.append(type(exc).__name__)
                return out
        raise ValueError(request)


def test_huge_messages_limit_refuses_in_sender_and_drops_announcing_peer(tmp_path: Any) -> None:
    limit = scale(8 * MB, 64 * MB)
    beyond = [limit + 1, 2 * limit] + ([256 * MB, 1024 * MB] if SOAK else [])

    async def body(node: Node) -> dict[str, Any]:
        sink = await node.spawn(Sink, worker=1)
        relay = await node.spawn(Sink, worker=0)
        os_pids = list(node.workers)
        # Up to the limit: arrives whole.
        sizes = [MB, limit // 4, limit // 2]
        for n in sizes:
            assert await node.call(sink, ("size", bytes(n)), timeout=30) == n
        # Bisect the largest payload that still fits (the envelope costs a few dozen bytes).
        lo, hi = limit // 2, limit  # lo fits, hi does not (payload plus envelope > limit)
        refused_at_once = 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                assert await node.call(sink, ("size", bytes(mid)), timeout=30) == mid
                lo = mid
            except MessageTooLarge:
                refused_at_once += 1
                hi = mid
        largest = lo
        delivered = await node.call(sink, "count")
        # Beyond the limit: the sender raises at once; nothing reaches the receiver.
        raised = {"call": 0, "cast": 0, "reply": 0, "actor_cast": 0, "actor_call": 0}
        for n in beyond:
            payload = bytes(n)
            try:
                await node.call(sink, ("size", payload), timeout=30)
            except MessageTooLarge as exc:
                assert isinstance(exc, NotSerializable) and exc.size > exc.limit == limit, exc
                raised["call"] += 1
            try:
                node.cast(sink, payload)
            except MessageTooLarge:
                raised["cast"] += 1
            del payload
        for n in beyond[:2]:
            try:
                await node.call(sink, ("reply", n), timeout=30)
            except KernelError as exc:
                assert isinstance(exc, NotSerializable), exc
                raised["reply"] += 1
            out = await node.call(relay, ("relay", sink, n), timeout=30)
            raised["actor_cast"] += out[0] == "MessageTooLarge"
            raised["actor_call"] += out[1] == "MessageTooLarge"
        assert await node.call(sink, "count") == delivered, "a refused message reached the receiver"
        # A peer announcing a frame bigger than the limit is hung up on before allocation.
        rt = node.context._rt
        path = os.path.join(rt.sockdir, "w1.sock")
        hwm_before = _hwm(node.workers[1])
        hung_up = 0
        announced = [limit + 1, 2**32 - 1]
        for size in announced:
            reader, writer, _ = await legit_handshake(path, rt.secret)
            writer.write(HEADER.pack(size) + b"\0" * 64)
            await writer.drain()
            hung_up += await _eof(reader)
            writer.close()
        hwm_growth = _hwm(node.workers[1]) - hwm_before
        # Normal traffic still flows on both paths, and no worker was replaced.
        assert await node.call(sink, ("size", bytes(MB)), timeout=30) == MB
        assert await node.call(relay, ("size", b"x")) == 1
        assert node.workers == os_pids
        return {"largest_accepted": largest, "limit": limit, "envelope_bytes": limit - largest,
                "bisection_refusals": refused_at_once, "raised": raised, "beyond_sizes": beyond,
                "announcing_peers_hung_up": hung_up, "announced": len(announced),
                "worker_hwm_growth_on_announce_mb": round(hwm_growth / MB, 1),
                "peak_rss_node_mb": round(_hwm(os.getpid()) / MB),
                "peak_rss_workers_mb": [round(_hwm(p) / MB) for p in node.workers],
                "rss_workers_now_mb": [round(psutil.Process(p).memory_info().rss / MB) for p in node.workers]}

    res = run_node(body, max_message=limit)
    n = len(beyond)
    assert res["raised"] == {"call": n, "cast": n, "reply": 2, "actor_cast": 2, "actor_call": 2}, res
    assert res["announcing_peers_hung_up"] == res["announced"], res
    assert 0 < res["envelope_bytes"] < 1024, res
    assert res["worker_hwm_growth_on_announce_mb"] < limit / MB / 2, res  # nothing allocated for it
    record(9, "test_huge_messages_limit_refuses_in_sender_and_drops_announcing_peer", **res)


def test_default_limit_is_64_mib() -> None:
    async def main() -> int:
        async with Node(workers=1) as node:
            async with asyncio.timeout(30):
                sink = await node.spawn(Sink)
                try:
                    await node.call(sink, ("size", bytes(64 * MB)))
                except MessageTooLarge as exc:
                    return exc.limit
                return 0

    import kernel

    assert kernel.run(main()) == 64 * MB
