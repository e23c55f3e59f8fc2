"""The bounded message trace of one actor (process/trace.py): the next N messages in and out, then off."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import kernel
from kernel import Node, NoProc, NotTraced, TraceLog
from kernel.control import ControlClient, ControlError
from kernel.process.trace import Traces
from kernel.transport import wire


class Relay(kernel.Actor):
    """Answers calls; on ``("fwd", dest, msg)`` casts ``msg`` to ``dest``; on ``("echo", to)`` sends back."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        if isinstance(request, tuple) and request[0] == "fwd":
            self.cast(request[1], request[2])
            return "ok"
        if request == "slow":
            await asyncio.sleep(0)  # a handler that suspends: drained by a task, not handed off
            return "slept"
        return request

    async def handle_cast(self, message: Any) -> None:
        if isinstance(message, tuple) and message[0] == "echo":
            self.send(message[1], ("pong", message[2]))


async def just_wait(ctx: Any) -> None:
    await ctx.receive()


def shape(log: TraceLog) -> list[tuple[str, str, str | None, str]]:
    return [(e.direction, e.kind, e.peer, e.message) for e in log.events]


async def test_off_by_default_then_exactly_the_next_n_in_and_out(node: Node) -> None:
    a = await node.spawn(Relay, worker=0)
    b = await node.spawn(Relay, worker=0)
    assert await node.call(a, "before") == "before"
    with pytest.raises(NotTraced, match="no message trace"):
        await node.trace_log(a)  # off by default: nothing was recorded
    await node.trace(a, n=4)
    me = repr(node.pid)
    assert await node.call(a, ("fwd", b, "x")) == "ok"  # in call, out cast, out reply
    assert await node.call(a, "slow") == "slept"  # in call: the 4th event, so its reply is not traced
    assert await node.call(a, "after") == "after"
    log = await node.trace_log(a)
    assert log.ended == "limit" and log.n == 4 and log.pid == repr(a)
    assert shape(log) == [
        ("in", "call", me, f"('fwd', {b!r}, 'x')"),
        ("out", "cast", repr(b), "'x'"),
        ("out", "reply", me, "'ok'"),
        ("in", "call", me, "'slow'"),
    ]
    assert all(e.at > 0 for e in log.events)
    assert log.as_json()["events"][1] == {"at": log.events[1].at, "direction": "out", "kind": "cast",
                                          "peer": repr(b), "message": "'x'"}


async def test_a_message_from_another_worker_is_traced(node: Node) -> None:
    a = await node.spawn(Relay, worker=0)
    b = await node.spawn(Relay, worker=1)
    await node.trace(a, 2)
    assert await node.call(b, ("fwd", a, ("echo", node.pid, 7))) == "ok"
    assert await node.receive(lambda m: m == ("pong", 7), timeout=10) == ("pong", 7)
    log = await node.trace_log(a)
    assert shape(log) == [("in", "cast", None, f"('echo', {node.pid!r}, 7)"),
                          ("out", "send", repr(node.pid), "('pong', 7)")]
    assert log.ended == "limit"


async def test_survives_the_actors_exit_and_can_be_replaced(node: Node) -> None:
    a = await node.spawn(Relay, worker=1, name="relay")
    await node.trace("relay", 10)
    assert await node.call("relay", "one") == "one"
    await node.trace("relay", 10)  # a new trace replaces the old one
    assert await node.call(a, "two") == "two"
    log = await node.trace_log(a)
    assert log.ended is None and [e.message for e in log.events] == ["'two'", "'two'"]
    await node.stop(a)
    log = await node.trace_log(a)  # still readable after the exit
    assert log.ended == "exited" and len(log.events) == 2
    assert await node.call(await node.spawn(Relay, worker=1), "alive") == "alive"  # the worker is fine


async def test_bad_input_names_the_argument(node: Node) -> None:
    a = await node.spawn(Relay, worker=0)
    with pytest.raises(ValueError, match=r"n must be in 1\.\.1000"):
        await node.trace(a, 0)
    with pytest.raises(TypeError, match="n must be an int"):
        await node.trace(a, "3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n must be an int"):
        await node.trace(a, True)
    with pytest.raises(NoProc):
        await node.trace("nobody", 5)
    await node.stop(a)
    with pytest.raises(NoProc):
        await node.trace(a, 5)
    raw = await node.spawn(just_wait, worker=1)
    with pytest.raises(TypeError, match="Actor"):
        await node.trace(raw, 5)
    node.send(raw, "go")


async def test_control_ops_trace_and_trace_log(node: Node) -> None:
    a = await node.spawn(Relay, worker=1)
    async with ControlClient() as client:
        await client.connect(node.name)
        with pytest.raises(ControlError, match="not_traced"):
            await client.request({"op": "trace_log", "pid": repr(a)})
        for bad in (0, -1, "5", None, True, 1001):
            with pytest.raises(ControlError, match=r"bad_request: n must be an int in 1\.\.1000"):
                await client.request({"op": "trace", "pid": repr(a), "n": bad})
        with pytest.raises(ControlError, match="noproc"):
            await client.request({"op": "trace", "pid": "<1.999>", "n": 3})
        assert await client.request({"op": "trace", "pid": repr(a), "n": 2}) == {}
        assert await node.call(a, "hi") == "hi"
        log = await client.request({"op": "trace_log", "pid": repr(a)})
    assert log["ended"] == "limit" and log["pid"] == repr(a) and log["n"] == 2
    assert [(e["direction"], e["kind"], e["message"]) for e in log["events"]] == [
        ("in", "call", "'hi'"), ("out", "reply", "'hi'")]


class _Fake:
    """Just what a Trace touches of an actor."""

    def __init__(self) -> None:
        self.pid = kernel.Pid(0, 1, 0)
        self._trace: Any = None
        self._exiting = False


def test_a_repr_that_raises_or_is_huge_is_capped_not_fatal() -> None:
    class Nasty:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    proc = _Fake()
    traces = Traces()
    traces.start(proc, 3)
    proc._trace.sent(wire.SEND, "x", Nasty())
    proc._trace.sent(wire.SEND, "x", "y" * 10_000)
    log = traces.log(1, 0)
    assert log is not None
    assert log.events[0].message.startswith("<Nasty instance")  # reprlib stands in for it
    assert len(log.events[1].message) < 200
    assert proc._trace is not None and log.ended is None
    proc._exiting = True
    assert traces.log(1, 0).ended == "exited" and proc._trace is None  # type: ignore[union-attr]
