"""Overload and size limits: a bounded mailbox sheds the newest, a huge message is refused in the sender."""

from __future__ import annotations

import pytest

import kernel
from kernel import MailboxFull, MessageTooLarge, Node, NoReply, NotSerializable
from tests.support.nodes import run_node


class Gate(kernel.Actor):
    """Holds its first call open until released, so the mailbox fills behind it."""

    max_mailbox = 3

    async def init(self) -> None:
        self.state = []
        self.held = None

    async def handle_call(self, request, caller):
        if request == "hold":
            self.held = caller
            return NoReply
        if request == "release":
            self.reply(self.held, "released")
            return list(self.state)
        if request == "count":
            return (list(self.state), getattr(self, "dropped", 0))
        return await super().handle_call(request, caller)

    async def handle_cast(self, message) -> None:
        self.state.append(message)


class Log(kernel.Actor):
    """Keeps every cast ``(i, text)``, unbounded."""

    async def init(self) -> None:
        self.state = []

    async def handle_cast(self, message) -> None:
        self.state.append(message)

    async def handle_call(self, request, caller):
        return [(i, text == f"{i:0250d}") for i, text in self.state]


class Slow(kernel.Actor):
    max_mailbox = 2

    async def init(self, notify) -> None:
        self.state = 0
        self.notify = notify

    async def handle_call(self, request, caller):
        if request == "count":
            return (self.state, self.dropped)
        return await super().handle_call(request, caller)

    async def handle_cast(self, message) -> None:
        self.state += 1
        if not self._mbox:
            self.send(self.notify, ("drained", self.state))


async def _fill(ctx, target, count, parent):
    """From the target's own worker: queue `count` casts and one call in the same step."""
    for i in range(count):
        ctx.cast(target, i)
    try:
        await ctx.call(target, "count", timeout=5)
    except MailboxFull as exc:
        ctx.send(parent, ("full", exc.limit))
    else:
        ctx.send(parent, ("answered",))


def test_call_into_a_full_mailbox_raises_mailbox_full() -> None:
    async def body(node: Node) -> None:
        slow = await node.spawn(Slow, node.pid, worker=0)
        await node.spawn(_fill, slow, 5, node.pid, worker=0)
        assert await node.receive(lambda m: m[0] == "full", timeout=5) == ("full", 2)
        # The two queued casts were handled; the three past the bound and the call were shed.
        assert await node.receive(lambda m: m[0] == "drained", timeout=5) == ("drained", 2)
        assert await node.call(slow, "count") == (2, 4)

    run_node(body)


def test_huge_message_is_refused_in_the_sender_and_the_channel_survives() -> None:
    async def body(node: Node) -> None:
        gate = await node.spawn(Gate, worker=1)
        with pytest.raises(MessageTooLarge) as info:
            node.cast(gate, b"x" * 200_000)
        assert isinstance(info.value, NotSerializable) and info.value.limit == 100_000
        node.cast(gate, b"y" * 1000)
        state, _ = await node.call(gate, "count")
        assert state == [b"y" * 1000]

    run_node(body, max_message=100_000)


def test_a_ticks_batch_larger_than_the_bound_arrives_whole_and_in_order() -> None:
    """Small messages of one tick travel as one pickled batch; past ``max_message`` it is split."""

    async def body(node: Node) -> None:
        log = await node.spawn(Log, worker=1)
        sent = [(i, f"{i:0250d}") for i in range(2000)]  # about 520 KB in one tick, bound 64 KiB
        for message in sent:
            node.cast(log, message)
        # The log's state is as big as the batch: it answers with the order and a check of each.
        assert await node.call(log, "check") == [(i, True) for i in range(2000)]

    run_node(body, max_message=64 * 1024)


def test_max_message_below_64_kib_is_refused_naming_the_argument() -> None:
    with pytest.raises(ValueError, match="max_message"):
        Node(max_message=1024)
