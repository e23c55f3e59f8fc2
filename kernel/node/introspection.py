"""What the observer sees of the processes one runtime hosts: the snapshot rows and one actor's state.

Used by the node process (its own supervisors, and the node's control ops) and by each worker (its part
of a snapshot); both import it from here, so a worker never imports the node.
"""

from __future__ import annotations

import itertools
import reprlib
import sys
from typing import Any

from ..process.actor import Actor
from ..process.raw import NodeContext
from ..process.trace import msg_repr
from ..routing.runtime import Runtime
from ..transport import wire

__all__ = ["KIND_NAMES", "MESSAGE_REPR", "QUEUE_SHOWN", "REPR", "describe_actors", "state_info"]

#: An actor's state or a call's answer as the observer shows it (truncated).
REPR = reprlib.Repr()
REPR.maxstring = 400
REPR.maxother = 400
REPR.maxlist = REPR.maxdict = 20

#: Queued messages ``state`` shows (the first ones, oldest first), each repr capped by ``MESSAGE_REPR``.
QUEUE_SHOWN = 10
MESSAGE_REPR = msg_repr  # the same cap as a traced message's (process/trace.py)
KIND_NAMES = {wire.SEND: "send", wire.CAST: "cast", wire.CALL: "call"}


def state_info(proc: Any) -> dict[str, Any]:
    """What the observer shows of one actor: its state (truncated repr), links, monitors, and the first
    :data:`QUEUE_SHOWN` queued messages (``"call: ('get', 3)"``) with the queue's length."""
    mbox = proc._mbox or ()
    queue = [f"{KIND_NAMES.get(item[0], 'signal')}: {MESSAGE_REPR.repr(item[1])}"
             for item in itertools.islice(mbox, QUEUE_SHOWN)]
    return {
        "repr": REPR.repr(getattr(proc, "state", None)),
        "queued": len(mbox),
        "queue": queue,
        "links": sorted(repr(p) for p in (proc._links or ())),
        "monitors": [repr(p) for p in (proc._monitors or {}).values()],
        "watching": [repr(p) for p in (proc._watching or {}).values()],
    }


def describe_actors(rt: Runtime) -> list[dict[str, Any]]:
    """What the snapshot shows of each process hosted by ``rt`` (the node's own context left out)."""
    actors: list[dict[str, Any]] = []
    for p in list(rt.procs.values()):
        if isinstance(p, NodeContext):
            continue
        mbox = len(p._mbox) if p._mbox else 0
        is_actor = isinstance(p, Actor)
        actors.append({
            "pid": repr(p.pid),
            "worker": rt.index,
            "name": None if p.name is None else str(p.name),
            "class": f"{type(p).__module__}.{type(p).__qualname__}" if is_actor
            else getattr(getattr(p, "_fn", None), "__qualname__", "process"),
            "key": None if p.key is None else str(p.key),
            "parent": None if p.parent is None else repr(p.parent),
            "status": "exiting" if p._exiting else ("running" if p._task is not None and is_actor
                                                    else "waiting"),
            "mailbox": mbox,
            "handled": p._handled,
            "restarts": getattr(p, "restarts", 0),
            "dropped": getattr(p, "dropped", 0),
            "links": sorted(repr(x) for x in (p._links or ())),
            "monitors": len(p._monitors or ()),
            "memory": sys.getsizeof(p) + (sys.getsizeof(p.__dict__) if hasattr(p, "__dict__") else 0),
            "supervisor": bool(getattr(type(p), "is_supervisor", False)),
            "children": [repr(c) for c in p.children()] if hasattr(p, "children") else None,
        })
        # A supervisor counts its children's restarts by child id; the child's key is "<sup key>/<id>".
        counts = getattr(p, "child_restarts", None)
        if isinstance(counts, dict) and p.key is not None:
            actors[-1]["child_restarts"] = {f"{p.key}/{cid}": n for cid, n in counts.items()}
        history = getattr(p, "child_exits", None)
        if isinstance(history, dict) and p.key is not None:
            actors[-1]["child_exits"] = {f"{p.key}/{cid}": [list(e) for e in h] for cid, h in history.items()}
    return actors
