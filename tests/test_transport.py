"""The frame decoder: messages split anywhere across reads arrive whole, in order, exactly once."""

from __future__ import annotations

import pickle

from kernel.transport.sockets import _Inbound
from kernel.transport.wire import HEADER


def _inbound(out: list) -> _Inbound:
    inbound = _Inbound(b"k" * 32, out.append, lambda *a: None)
    inbound._ready = True  # past the handshake (tested with real sockets elsewhere)
    return inbound


def _frame(messages: list) -> bytes:
    return b"".join(HEADER.pack(len(p)) + p for p in (pickle.dumps(m, 5) for m in messages))


def test_byte_by_byte_delivery_keeps_order() -> None:
    messages = [("m", i, "x" * (i % 7)) for i in range(50)]
    data = _frame(messages)
    out: list = []
    inbound = _inbound(out)
    for i in range(len(data)):
        inbound.data_received(data[i:i + 1])
    assert out == messages


def test_large_message_in_chunks_and_small_ones_around_it() -> None:
    big = ("big", b"\x01" * 5_000_000)
    messages = [("a",), big, ("b",)]
    data = _frame(messages)
    out: list = []
    inbound = _inbound(out)
    for i in range(0, len(data), 65536):
        inbound.data_received(data[i:i + 65536])
    assert out == messages
