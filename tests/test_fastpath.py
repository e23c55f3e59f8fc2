"""``may_hand_off``: the one decision of whether a delivery runs its handler in the sender's step."""

from __future__ import annotations

import itertools

from kernel.process.actor import may_hand_off
from kernel.transport import wire

SYNC = frozenset({wire.CALL, wire.CAST})  # a class whose handle_call and handle_cast have no await


def test_a_call_to_a_ready_idle_actor_is_handed_off_whether_or_not_it_came_alone() -> None:
    assert may_hand_off(wire.CALL, SYNC, True, False, False)
    assert may_hand_off(wire.CALL, SYNC, True, True, False)


def test_a_cast_is_handed_off_only_when_it_arrived_alone() -> None:
    assert may_hand_off(wire.CAST, SYNC, True, True, False)
    assert not may_hand_off(wire.CAST, SYNC, True, False, False)


def test_each_condition_alone_refuses_the_hand_off() -> None:
    for kind, ready, durable in itertools.product((wire.CALL, wire.SEND), (True, False), (True, False)):
        expected = kind == wire.CALL and ready and not durable  # SEND's handler may suspend
        assert may_hand_off(kind, SYNC, ready, True, durable) is expected, (kind, ready, durable)


def test_each_operation_has_one_table_entry_and_a_notice_is_not_an_rpc() -> None:
    from kernel.routing.ops import NOTES, RPCS, Ops

    assert "shutdown" in RPCS and "ping" in NOTES and not RPCS & NOTES
    none = dict.fromkeys(("spawn", "adopt", "by_key", "trace", "trace_log", "name_add", "name_del",
                          "worker_down", "worker_up"))
    ops = Ops(sync=lambda: None, unquarantine=lambda *a: None, **none)
    assert ops.rpc("sync") is ops.sync
    assert ops.rpc("unquarantine") is None  # a notice's name, asked as an rpc
    assert ops.note("unquarantine") is ops.unquarantine
    assert ops.rpc("shutdown") is None  # not served on this side
    assert ops.rpc("__class__") is None
