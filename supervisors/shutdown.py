"""Stopping children the OTP way: monitor, ask politely, wait, then kill.

The wait is on a ``Down`` from a monitor, not on the child's ``Exit``: a child that unlinked itself
would never send an ``Exit``, and waiting for one would hang the supervisor (OTP's ``child_unlink``
case). Everything else in the supervisor's mailbox stays queued, in order, while it waits.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable
from typing import Any

from kernel import Actor, Down, Exit, Pid, Ref

__all__ = ["shutdown_child", "shutdown_many"]


def _down_for(ref: Ref) -> Any:
    return lambda m: isinstance(m, Down) and m.ref == ref


async def shutdown_child(sup: Actor, pid: Pid, grace: float | None) -> Any:
    """Stop one child and return once it is gone.

    Args:
        sup: the supervisor (the child's parent, so a trapping child runs ``terminate``).
        pid: the child.
        grace: 0 kills at once (``"brutal_kill"``), None waits forever (``"infinity"``),
            otherwise the seconds allowed after the ``"shutdown"`` signal before ``"kill"``.

    Returns:
        The child's exit reason (``"noproc"`` if it was already gone).
    """
    ref = sup.monitor(pid)
    is_down = _down_for(ref)
    if grace == 0:
        sup.exit(pid, "kill")
        down = await sup.receive(match=is_down)
        return down.reason
    sup.exit(pid, "shutdown")
    try:
        down = await sup.receive(match=is_down, timeout=grace)
    except TimeoutError:
        sup.exit(pid, "kill")
        down = await sup.receive(match=is_down)
    return down.reason


async def shutdown_many(sup: Actor, children: Iterable[tuple[Pid, float | None]]) -> None:
    """Stop many children concurrently (a ``DynamicSupervisor``'s shutdown, as OTP's
    ``terminate_dynamic_children``): signal all, then collect every ``Down``, killing each child
    whose own shutdown time ran out.

    The cost is O(n log n) in the number of children: one monitor and one signal each, and a heap
    of deadlines, so ten thousand children stop in one pass rather than one round trip at a time.
    """
    pending: dict[Ref, Pid] = {}
    deadlines: list[tuple[float, int, Ref]] = []
    now = time.monotonic()
    for serial, (pid, grace) in enumerate(children):
        ref = sup.monitor(pid)
        pending[ref] = pid
        if grace == 0:
            sup.exit(pid, "kill")
            continue
        sup.exit(pid, "shutdown")
        if grace is not None:
            deadlines.append((now + grace, serial, ref))
    heapq.heapify(deadlines)

    stopping = set(pending.values())

    def is_ours(m: object) -> bool:
        # Each child's Exit (it is linked) is taken too: left queued, every later receive would
        # rescan them all and stopping n children would cost O(n^2) (OTP flushes them likewise).
        return (isinstance(m, Down) and m.ref in pending) or (isinstance(m, Exit) and m.pid in stopping)

    while pending:
        # Invariant: the heap's head is the earliest child still allowed to stop on its own.
        while deadlines and deadlines[0][2] not in pending:
            heapq.heappop(deadlines)
        wait = max(0.0, deadlines[0][0] - time.monotonic()) if deadlines else None
        try:
            down = await sup.receive(match=is_ours, timeout=wait)
        except TimeoutError:
            now = time.monotonic()
            while deadlines and deadlines[0][0] <= now:
                _, _, ref = heapq.heappop(deadlines)
                if ref in pending:
                    sup.exit(pending[ref], "kill")
            continue
        if isinstance(down, Down):
            del pending[down.ref]
