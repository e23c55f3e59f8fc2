"""``Ops``: what one process's runtime runs when another asks (an rpc, answered) or tells (a notice).

One typed table, declared here, instead of string-keyed dicts that four modules filled in: each field
says which side serves it and who implements it, so "who handles ``shutdown``?" has one answer (the
field's comment). The runtime builds the entries every process serves; the node process
(node/node.py ``Node._start``) and each worker (node/worker.py ``_serve``) add their side's, each in
one place. A field left None is not served on that side: the request is answered "unknown operation".
On the wire an operation is still its field's name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any

from ..process.trace import TraceLog
from ..terms import Pid

__all__ = ["NOTES", "RPCS", "Ops"]


@dataclass(frozen=True, slots=True)
class Ops:
    # -- rpcs every process serves (built by Runtime, routing/runtime.py) ---------------------------
    #: Start an actor here for a spawner elsewhere (``Spawner.spawn_local``, routing/spawning.py).
    spawn: Callable[..., Awaitable[Pid]]
    #: Nothing: its answer proves everything sent before it was handled (causal set-up).
    sync: Callable[[], None]
    #: Register a local actor's name in this process's own table (``Inbound.adopt``, routing/inbound.py).
    adopt: Callable[[int, int, Any], bool]
    #: The local actor with a checkpoint key (``Inbound.by_key``).
    by_key: Callable[[Any], Pid | None]
    #: Start a message trace of a local actor, and read one (``Inbound.trace``, ``trace_log``).
    trace: Callable[[int, int, int], None]
    trace_log: Callable[[int, int], TraceLog]
    # -- notices every process serves (built by Runtime) -----------------------------------------
    #: The authority added or removed a name: update this replica (``NameTable.add``, ``names.remove``).
    name_add: Callable[[Any, Pid], None]
    name_del: Callable[[Any, Pid], None]
    #: A worker died or came back (``WorkerSlots.worker_down``, ``worker_up``, routing/workers.py).
    worker_down: Callable[[int, int], None]
    worker_up: Callable[[int, int], None]
    #: Let a quarantined message through again (``Quarantine.release``).
    unquarantine: Callable[[Any, int, Any], None]
    # -- rpcs the node process serves: the name authority (routing/authority.py) -------------------
    register: Callable[[Any, Pid, bool], Awaitable[None]] | None = None
    unregister: Callable[[Any], bool] | None = None
    whereis: Callable[[Any], Pid | None] | None = None
    registered: Callable[[], dict[Any, Pid]] | None = None
    # -- notices the node process serves ----------------------------------------------------------
    #: A send by a name the sender's replica did not know yet (routing/authority.py).
    send_name: Callable[[Any, int, Any], None] | None = None
    #: A worker finished starting (node/node.py ``Node._on_ready``).
    ready: Callable[[int, int, int], None] | None = None
    #: A worker answered a heartbeat (node/heartbeat.py ``Heartbeat._pong``).
    pong: Callable[[int, int, float], None] | None = None
    # -- rpcs the node process serves to the other nodes of its cluster ------------------------------
    #: This node's snapshot (``Node.snapshot``), or with True only its counts, for an observer attached
    #: to another node (``Node._node_snapshot``).
    node_snapshot: Callable[[bool], Awaitable[dict[str, Any]]] | None = None
    # -- rpcs a worker serves (node/worker.py) ----------------------------------------------------
    #: Stop every actor, close the checkpoint store, then exit.
    shutdown: Callable[[], Awaitable[None]] | None = None
    #: This worker's part of the observer's snapshot, its metrics, one actor's state.
    snapshot: Callable[[], dict[str, Any]] | None = None
    metrics: Callable[[], dict[str, Any]] | None = None
    state: Callable[[int, int], dict[str, Any] | None] | None = None
    #: Self-fencing: stop every persistent actor here, now (``Runtime.fence``; the node lost its lease).
    fence: Callable[[], None] | None = None
    # -- notices a worker serves (node/worker.py) -------------------------------------------------
    #: The whole name table, sent once at start.
    names: Callable[[list[Any]], None] | None = None
    #: The node's heartbeat: answered ``pong`` from this loop, so a blocked loop cannot answer.
    ping: Callable[[float], None] | None = None
    #: A cluster node is live at an address, or down (``Remote.node_up``, ``Remote.node_down``).
    node_up: Callable[[int, str, int, int], None] | None = None
    node_down: Callable[[int], None] | None = None
    #: A worker of another cluster node died (``Remote.worker_down``; the node process relays it here).
    node_worker_down: Callable[[int, int, int], None] | None = None
    #: The node joined its cluster again, with this incarnation (ISO text): claims are made under it.
    rejoined: Callable[[str], None] | None = None

    def rpc(self, op: Any) -> Callable[..., Any] | None:
        """The handler of rpc ``op`` on this side, or None (unknown here, or a notice's name)."""
        return getattr(self, op, None) if op in RPCS else None

    def note(self, op: Any) -> Callable[..., None] | None:
        """The handler of notice ``op`` on this side, or None."""
        return getattr(self, op, None) if op in NOTES else None


#: Which fields are answered rpcs and which one-way notices (a notice's name is refused as an rpc).
NOTES = frozenset({"name_add", "name_del", "worker_down", "worker_up", "unquarantine", "send_name", "ready",
                   "pong", "names", "ping", "node_up", "node_down", "rejoined", "node_worker_down"})
RPCS = frozenset(f.name for f in fields(Ops)) - NOTES
