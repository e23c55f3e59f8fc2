"""Row 8: unpicklable message, reply and checkpoint state.

Must hold: ``NotSerializable`` in the sender at once (the message never leaves); an unpicklable reply
becomes an error in the caller while the callee lives on; an unpicklable state stops the persistent
actor (its caller learns why) and the last good checkpoint stays; the channel keeps working: the
messages sent afterwards all arrive, in order. Figure: hangs (operations that did not end at once) = 0.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from kernel import Actor, ActorExited, Checkpoint, Crash, KernelError, Node, NotSerializable
from kernel.persistence import store as checkpoints
from tests.reliability.support import Collector, record, run_node, scale, wait_down

#: An operation that does not fail within this is counted as a hang.
AT_ONCE = 2.0


def _unpicklables() -> list[Any]:
    gen = (i for i in range(3))
    return [threading.Lock(), gen, threading.Event(), {"nested": [1, threading.Lock()]}]


class Echo(Actor):
    async def init(self) -> None:
        self.state = []

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case "lock":
                return threading.Lock()  # cannot be pickled to a caller on another worker
            case ("relay", dest, kind):
                bad = threading.Lock()
                try:
                    if kind == "send":
                        self.send(dest, bad)
                    elif kind == "cast":
                        self.cast(dest, bad)
                    else:
                        await self.call(dest, ("echo", bad))
                except NotSerializable:
                    return "raised"
                return "accepted"
            case ("call_lock", dest):
                try:
                    await self.call(dest, "lock")
                except KernelError as exc:
                    return exc
                return "no error"
            case ("echo", v):
                return v
            case "log":
                return list(self.state)
        raise ValueError(request)

    async def handle_cast(self, message: Any) -> None:
        self.state.append(message)

    async def handle_info(self, message: Any) -> None:
        self.state.append(message)


class Vault(Actor):
    checkpoint = Checkpoint(every=1, durable=True)

    async def init(self) -> None:
        self.state = {"n": 0}

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case "incr":
                self.state["n"] += 1
                return self.state["n"]
            case "poison":
                self.state["lock"] = threading.Lock()
                return "poisoned"
        raise ValueError(request)


async def _at_once(coro: Any) -> BaseException | Any:
    """Run ``coro`` with the hang bound; returns its exception or result (TimeoutError = hang)."""
    try:
        async with asyncio.timeout(AT_ONCE):
            return await coro
    except TimeoutError as exc:
        return exc
    except Exception as exc:
        return exc


def test_unpicklable_message_reply_and_state(tmp_path: Any) -> None:
    follow = scale(1000, 100_000)

    async def body(node: Node) -> dict[str, Any]:
        hangs = 0
        sync_raises = 0
        attempts = 0
        a = await node.spawn(Echo, worker=0)
        b = await node.spawn(Echo, worker=1)
        # 1. From the node's context: send, cast, call with each unpicklable value.
        for bad in _unpicklables():
            for op in ("send", "cast"):
                attempts += 1
                t0 = time.monotonic()
                try:
                    getattr(node, op)(b, bad)
                except NotSerializable:
                    sync_raises += 1
                assert time.monotonic() - t0 < AT_ONCE
            attempts += 1
            res = await _at_once(node.call(b, ("echo", bad)))
            hangs += isinstance(res, TimeoutError)
            sync_raises += isinstance(res, NotSerializable)
        # 2. From an actor to an actor on another worker.
        for kind in ("send", "cast", "call"):
            attempts += 1
            res = await _at_once(node.call(a, ("relay", b, kind)))
            hangs += isinstance(res, TimeoutError)
            sync_raises += res == "raised"
        # 3. An unpicklable reply: the caller gets an error, the callee lives on.
        for caller_ctx in ("node", "actor"):
            attempts += 1
            if caller_ctx == "node":
                res = await _at_once(node.call(b, "lock"))
            else:
                res = await _at_once(node.call(a, ("call_lock", b)))
            hangs += isinstance(res, TimeoutError)
            sync_raises += isinstance(res, KernelError)
            assert isinstance(res, KernelError), res
        # 4. The channel keeps working: everything sent afterwards arrives, in order.
        for i in range(follow):
            node.cast(b, i)
        log = await _at_once(node.call(b, "log"))
        assert not isinstance(log, BaseException), log
        assert log == list(range(follow)), "messages after the bad ones were lost or reordered"
        # 5. Unpicklable checkpoint state: the actor stops with a Crash naming NotSerializable, its
        #    caller gets ActorExited, the last good checkpoint stays readable, the worker serves on.
        v = await node.spawn(Vault, name="r8-vault", worker=1)
        assert await node.call(v, "incr") == 1
        ref = node.monitor(v)
        res = await _at_once(node.call(v, "poison"))
        hangs += isinstance(res, TimeoutError)
        assert isinstance(res, ActorExited), res
        down = await wait_down(node, ref)
        assert isinstance(down.reason, Crash) and "NotSerializable" in (
            down.reason.type_name + down.reason.message), down.reason
        assert checkpoints.load(node.state_path, "r8-vault") == {"n": 1}
        assert await node.call(b, ("echo", "still here")) == "still here"
        c = await node.spawn(Collector, worker=1)
        assert await node.call(c, ("count", "x")) == 0
        return {"attempts": attempts, "errors_at_once": sync_raises, "hangs": hangs,
                "messages_after": follow}

    res = run_node(body, state=str(tmp_path / "r8.db"))
    assert res["hangs"] == 0
    assert res["errors_at_once"] == res["attempts"], res
    record(8, "test_unpicklable_message_reply_and_state", **res)
