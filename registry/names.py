"""``get_or_spawn``: the "already_started" idiom as one call."""

from __future__ import annotations

from typing import Any

import kernel
from kernel import AlreadyStarted, Pid


async def get_or_spawn(cls: Any, *args: Any, name: Any, worker: int | None = None, **kwargs: Any) -> Pid:
    """The live holder of ``name``, or a new actor spawned (and registered) under it.

    The fast path reads this process's replica (no round trip). Otherwise the spawn registers the name
    atomically at the authority before ``init`` runs: of any number of concurrent callers exactly one
    starts an actor, and every other one gets ``AlreadyStarted(holder)``, whose pid it returns.
    """
    if name is None:
        raise TypeError("name is required: get_or_spawn finds or starts the actor registered under it")
    holder = await kernel.whereis(name)
    if holder is not None:
        return holder
    try:
        return await kernel.spawn(cls, *args, name=name, worker=worker, **kwargs)
    except AlreadyStarted as taken:
        pid: Pid = taken.pid
        return pid
