"""``Entities``: one actor per key, activated on demand, supervised (API section 13).

Orleans' virtual actors and Akka's sharded entities on OTP's supervision. The declaration is plain,
picklable data; one supervisor per declaration (``EntitiesSupervisor``, in the node process) is the
only place that starts an entity, so activation is decided once, in order:

* A message for key ``K`` goes straight to the holder of the name ``(name, K)`` when this process's
  replica knows it (a call costs what a call by name costs). Otherwise it goes to the supervisor, which
  starts the entity on the worker its ``Placement`` picks, hands it the messages that asked for it, and
  only then registers ``(name, K)`` at the name authority. So of any number of concurrent first
  messages, from the node and every worker, exactly one activation happens; and a message sent while
  the entity was passive reaches it before any message sent directly once the name is known.
* The entity is linked to the supervisor: a crash restarts it (its checkpoint key is ``(name, K)``, so
  it comes back with its last checkpoint) within a restart intensity of its own; a clean exit, a
  passivation (``idle_timeout``) or the death of its worker (``"worker_down"``) leaves it passive until
  its next message, which activates it again (on the replacement worker).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

import kernel
from kernel import Actor, ActorExited, AlreadyStarted, CallTimeout, Crash, Down, Exit, NoProc, Pid
from kernel.errors import HeldElsewhere

from .errors import SupervisorError
from .intensity import RestartIntensity, check_intensity
from .placement import Placement, as_placement, place_member
from .shutdown import shutdown_many
from .spec import ChildSpec, is_clean_exit

__all__ = ["Entities", "EntitiesSupervisor"]

log = logging.getLogger("supervisors")

#: Seconds an activation may take (the entity's ``init`` or ``restore`` included); bounded so a wedged
#: supervisor shows as ``CallTimeout`` rather than a hang.
ACTIVATE_TIMEOUT = 30.0
#: How many times a call is routed when its entity passivated between the lookup and the delivery.
_ROUTE_ATTEMPTS = 5
#: How many times a forwarded activation asks the owner node for its supervisor (CallTimeout each).
_FORWARD_ATTEMPTS = 3
#: Unclaimed exits kept (an entity that died before its start was recorded, or whose init failed).
_EARLY_KEPT = 1024


class Entities:
    """A keyed family of actors: ``Entities("carts", Cart, idle_timeout=60.0)``.

    Args:
        name: names the family; the entity for key ``K`` is registered as ``(name, K)``.
        cls: the ``Actor`` subclass; the entity for ``K`` starts with ``init(K, *args, **kwargs)``, or
            ``restore(state)`` when ``cls`` sets ``checkpoint`` and ``(name, K)`` has a checkpoint.
        args, kwargs: the rest of ``init``'s arguments, the same for every key.
        idle_timeout: seconds without a message after which a checkpointed entity passivates (final
            checkpoint, exit ``"normal"``); None keeps ``cls.idle_timeout``.
        placement: None (a stable hash of the key over the workers), a ``Placement`` or a function
            ``(key, workers) -> worker index``.
        max_restarts, max_seconds: the restart intensity of each entity; past it the entity is left
            passive (its next message starts it afresh from its checkpoint).

    Raises:
        TypeError, ValueError: a bad argument, named in the message.
    """

    __slots__ = ("args", "cls", "idle_timeout", "kwargs", "max_restarts", "max_seconds", "name",
                 "placement")

    def __init__(self, name: Hashable, cls: type[Actor], *, args: tuple[Any, ...] = (),
                 kwargs: Mapping[str, Any] | None = None, idle_timeout: float | None = None,
                 placement: Placement | Any = None, max_restarts: int = 3, max_seconds: float = 5.0) -> None:
        if name is None or isinstance(name, Pid):
            raise TypeError(f"name must be a hashable value such as 'carts', got {name!r}")
        try:
            hash(name)
        except TypeError:
            raise TypeError(f"name must be hashable, got {name!r}") from None
        if not (isinstance(cls, type) and issubclass(cls, Actor)):
            raise TypeError(f"cls must be an Actor subclass, got {cls!r}")
        if not isinstance(args, tuple | list):
            raise TypeError(f"args must be a tuple, got {args!r}")
        if kwargs is not None and (not isinstance(kwargs, Mapping)
                                   or not all(isinstance(k, str) for k in kwargs)):
            raise TypeError(f"kwargs must be a mapping with str keys or None, got {kwargs!r}")
        if idle_timeout is not None:
            if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, int | float):
                raise TypeError(f"idle_timeout must be seconds > 0 or None, got {idle_timeout!r}")
            if not idle_timeout > 0 or math.isinf(idle_timeout):
                raise ValueError(f"idle_timeout must be a finite number of seconds > 0, got {idle_timeout!r}")
        check_intensity(max_restarts, max_seconds)
        self.name = name
        self.cls = cls
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.idle_timeout = float(idle_timeout) if idle_timeout is not None else None
        self.placement: Placement = as_placement(placement)
        self.max_restarts = max_restarts
        self.max_seconds = float(max_seconds)

    def __repr__(self) -> str:
        return f"Entities({self.name!r}, {self.cls.__qualname__})"

    def __getstate__(self) -> dict[str, Any]:
        return {slot: getattr(self, slot) for slot in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for slot, value in state.items():
            object.__setattr__(self, slot, value)

    # -- names -----------------------------------------------------------------------------------

    @property
    def supervisor_name(self) -> tuple[str, Hashable]:
        """The registered name of this family's supervisor."""
        return ("supervisors.entities", self.name)

    def entity_name(self, key: Hashable) -> tuple[Hashable, Hashable]:
        """The registered name (and checkpoint key) of the entity for ``key``: ``(name, key)``."""
        return (self.name, key)

    def child_spec(self, id: Hashable | None = None) -> ChildSpec:
        """The supervisor of this family as a child of your tree (it runs in the node process)."""
        return ChildSpec(self.name if id is None else id, EntitiesSupervisor, kwargs={"entities": self},
                         type="supervisor", name=self.supervisor_name)

    # -- messages --------------------------------------------------------------------------------

    async def call(self, key: Hashable, request: Any, timeout: float = 5.0) -> Any:
        """Request-reply with the entity for ``key``, activating it if it is not running.

        Raises:
            CallTimeout, ActorExited: as ``kernel.call``, naming ``(name, key)``; ``ActorExited`` also
                when the entity failed to start (its reason is the start's failure).
            SupervisorError: no supervisor runs this family (``"not_running"``).
        """
        name = self.entity_name(key)
        for attempt in range(_ROUTE_ATTEMPTS):
            # After a NoProc this replica may still hold the exited holder: the supervisor knows better.
            pid = kernel.lookup(name) if attempt == 0 else None
            if pid is None:
                pid = await self._activate(key)
            try:
                return await kernel.call(pid, request, timeout)
            except NoProc:
                continue  # it passivated before the call reached it: route again
            except ActorExited as exc:
                raise ActorExited(exc.reason, name) from None
            except CallTimeout as exc:
                raise CallTimeout(name, exc.timeout) from None
        raise ActorExited("noproc", name)

    def cast(self, key: Hashable, message: Any) -> None:
        """Send to the entity's ``handle_cast``, activating it if needed; never blocks."""
        self._post(key, "cast", message)

    def send(self, key: Hashable, message: Any) -> None:
        """Send a raw message (``handle_info``) to the entity, activating it if needed; never blocks."""
        self._post(key, "send", message)

    async def whereis(self, key: Hashable) -> Pid | None:
        """The running entity for ``key``, or None; never activates it."""
        return await kernel.whereis(self.entity_name(key))

    async def stop(self, key: Hashable, timeout: float = 5.0) -> None:
        """Passivate now: ``terminate`` runs, the final checkpoint is written, the entity exits
        ``"normal"`` and is not restarted. A passive entity is left as it is."""
        try:
            await kernel.stop(self.entity_name(key), "normal", timeout)
        except NoProc:
            return

    def _post(self, key: Hashable, how: str, message: Any) -> None:
        pid = kernel.lookup(self.entity_name(key))
        if pid is not None:
            (kernel.cast if how == "cast" else kernel.send)(pid, message)
            return
        sup = kernel.lookup(self.supervisor_name)
        if sup is None:
            raise SupervisorError("not_running", self.name)
        kernel.cast(sup, ("deliver", key, how, message))

    async def _activate(self, key: Hashable) -> Pid:
        sup = kernel.lookup(self.supervisor_name)
        if sup is None:
            raise SupervisorError("not_running", self.name)
        reply = await kernel.call(sup, ("activate", key), timeout=ACTIVATE_TIMEOUT)
        if isinstance(reply, Pid):
            return reply
        raise ActorExited(reply, self.entity_name(key))


class _Started(NamedTuple):
    """The supervisor's own note that an activation's spawn finished (``pid``) or failed (``reason``)."""

    key: Hashable
    pid: Pid | None
    reason: Any


def entity_class(cls: type[Actor], idle_timeout: float | None) -> type[Actor]:
    """``cls`` itself, or a subclass of it whose only change is ``idle_timeout`` (the kernel reads the
    passivation timeout from the class). Cached, so every activation of a family uses one class."""
    if idle_timeout is None or cls.idle_timeout == idle_timeout:
        return cls
    found = _IDLE_CLASSES.get((cls, idle_timeout))
    if found is None:
        found = type(cls.__name__, (cls,), {
            "idle_timeout": idle_timeout, "__module__": cls.__module__,
            "__qualname__": cls.__qualname__, "__doc__": cls.__doc__,
        })
        _IDLE_CLASSES[(cls, idle_timeout)] = found
    return found


_IDLE_CLASSES: dict[tuple[type[Actor], float], type[Actor]] = {}


def restarts_for(reason: Any) -> bool:
    """Whether an entity that exited with ``reason`` is restarted now (a crash, a kill) rather than left
    passive until its next message (a clean exit, a passivation, its worker's or node's death, its node
    losing its cluster lease)."""
    return not (is_clean_exit(reason) or reason in _PASSIVE_REASONS)


#: Exits after which an entity waits for its next message (on a live worker, or another node).
_PASSIVE_REASONS = frozenset({"worker_down", "node_down", "lease_lost"})


class EntitiesSupervisor(Actor):
    """Starts, restarts and stops the entities of one ``Entities`` family (see the module docstring).

    ``supervisors.which_children`` and ``count_children`` work on it (the running entities, by key);
    children are added by messages, not by ``start_child``.

    Activations run in tasks of their own and report back through the mailbox, so the supervisor keeps
    answering while an entity's ``init`` runs (an ``init`` may message another entity of the family).

    Invariant: a key is in at most one of ``_ent_active`` (running, pid known) and ``_ent_waiting``
    (an activation is under way; the callers and messages that wait for it, in arrival order).
    """

    trap_exits = True
    #: Hosted by the node process, as every supervisor (API section 12).
    is_supervisor = True

    entities: Entities
    child_restarts: dict[Hashable, int]

    async def init(self, entities: Entities) -> None:
        if not isinstance(entities, Entities):
            raise TypeError(f"entities must be an Entities declaration, got {entities!r}")
        self.entities = entities
        self._ent_cls = entity_class(entities.cls, entities.idle_timeout)
        self._ent_active: dict[Hashable, Pid] = {}
        self._ent_keys: dict[Pid, Hashable] = {}
        self._ent_waiting: dict[Hashable, list[tuple[str, Any]]] = {}
        self._ent_intensity: dict[Hashable, RestartIntensity] = {}
        #: Exits of entities whose ``_Started`` note is still queued behind them.
        self._ent_early: dict[Pid, Any] = {}
        self._ent_tasks: set[asyncio.Task[None]] = set()
        #: Monitors of entities another cluster node hosts for this one's callers: ref -> key.
        self._ent_remote: dict[Any, Hashable] = {}
        self.child_restarts = {}

    # -- introspection (the snapshot and the observer read these) --------------------------------

    def children(self) -> list[Pid]:
        return [pid for pid in self._ent_active.values() if not pid.node]

    def _ent_local(self) -> dict[Hashable, Pid]:
        """The running entities this supervisor supervises (not the routes to other nodes' entities)."""
        return {key: pid for key, pid in self._ent_active.items() if not pid.node}

    # -- requests --------------------------------------------------------------------------------

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("activate", key):
                pid = self._ent_active.get(key)
                if pid is not None:
                    return pid
                self._ent_want(key, ("call", caller))
                return kernel.NoReply
            case ("activate_here", key):  # from another cluster node that placed the key on this one
                pid = self._ent_active.get(key)
                if pid is not None and not pid.node:
                    return pid
                if pid is not None:  # a route from before a membership change: this node hosts it now
                    del self._ent_active[key]
                self._ent_want(key, ("call", caller), here=True)
                return kernel.NoReply
            case ("active",):
                return self._ent_local()
            case ("which_children",):
                return [(key, pid, "worker") for key, pid in self._ent_local().items()]
            case ("count_children",):
                n = len(self._ent_local())
                return {"specs": n, "active": n, "supervisors": 0, "workers": n}
        return SupervisorError("bad_request", None, request)

    async def handle_cast(self, message: Any) -> None:
        match message:
            case ("deliver", key, how, payload):
                pid = self._ent_active.get(key)
                if pid is None:
                    self._ent_want(key, (how, payload))
                else:
                    (self.cast if how == "cast" else self.send)(pid, payload)

    async def handle_info(self, message: Any) -> None:
        if isinstance(message, _Started):
            await self._ent_started(message)
        elif isinstance(message, Down):
            key = self._ent_remote.pop(message.ref, None)
            if key is not None and self._ent_active.get(key) == message.pid:
                del self._ent_active[key]  # its node hosts it no more (or is down): route again
                self._ent_keys.pop(message.pid, None)
        elif isinstance(message, Exit):
            key = self._ent_keys.pop(message.pid, None)
            if key is None:
                self._ent_early[message.pid] = message.reason
                if len(self._ent_early) > _EARLY_KEPT:  # exits of starts that failed are never claimed
                    del self._ent_early[next(iter(self._ent_early))]
                return
            if self._ent_active.get(key) == message.pid:
                del self._ent_active[key]
            self._ent_exited(key, message.reason)

    # -- activation ------------------------------------------------------------------------------

    def _ent_want(self, key: Hashable, waiter: tuple[str, Any], here: bool = False) -> None:
        waiting = self._ent_waiting.get(key)
        if waiting is not None:
            waiting.append(waiter)
            return
        self._ent_waiting[key] = [waiter]
        task = asyncio.get_running_loop().create_task(self._ent_spawn(key, here))
        self._ent_tasks.add(task)
        task.add_done_callback(self._ent_tasks.discard)

    async def _ent_spawn(self, key: Hashable, here: bool = False) -> None:
        ents = self.entities
        try:
            if not here:
                owner = self._ent_owner(key)
                if owner is not None:
                    pid = await self._ent_forward(owner, key)
                    self.send(self.pid, _Started(key, pid, None))
                    return
            workers = kernel.worker_count()
            worker = ents.placement.place(key, workers)
            if isinstance(worker, bool) or not isinstance(worker, int) or not 0 <= worker < workers:
                raise ValueError(f"placement of {ents.name!r} returned {worker!r} for key {key!r}; "
                                 f"it must be a worker index in 0..{workers - 1}")
            try:
                pid = await self.spawn_opt(self._ent_cls, (key, *ents.args), dict(ents.kwargs),
                                           worker=worker, link=True, key=ents.entity_name(key))
            except HeldElsewhere as held:
                # Another cluster node activated it (membership views differed for a moment): its
                # checkpoint claim is the truth, so route there.
                if not held.id or held.id == kernel.node_id():
                    raise
                pid = await self._ent_forward(held.id, key)
        except ActorExited as exc:
            self.send(self.pid, _Started(key, None, exc.reason))
        except Exception as exc:
            self.send(self.pid, _Started(key, None, Crash.from_exception(exc)))
        else:
            self.send(self.pid, _Started(key, pid, None))

    def _ent_owner(self, key: Hashable) -> int | None:
        """In a cluster, the id of the node that hosts ``key`` when it is another node; else None.

        Rendezvous hashing over the live members' ids (``place_member``): every node derives the same
        owner from the same membership, so concurrent first messages from every node meet at one
        supervisor, and a node joining or leaving moves only its share of the keys. The owner then
        places the entity on one of its own workers with the family's ``placement``.
        """
        members = kernel.cluster_members()
        me = kernel.node_id()
        if me == 0 or len(members) == 1:
            return None
        owner = place_member(key, [node for node, _ in members])
        return None if owner == me else owner

    async def _ent_forward(self, node: int, key: Hashable) -> Pid:
        """Have the entities supervisor of cluster node ``node`` activate ``key``; its entity's pid."""
        ents = self.entities
        for attempt in range(_FORWARD_ATTEMPTS):
            try:
                sup = await kernel.whereis(ents.supervisor_name, node=node)
                break
            except CallTimeout:
                # This node was paused or cut off past its lease: the others drop what they send it
                # until they see it rejoin (within a membership poll). Ask again.
                if attempt == _FORWARD_ATTEMPTS - 1:
                    raise
        if sup is None:
            raise SupervisorError("not_running", (ents.name, node))
        reply = await kernel.call(sup, ("activate_here", key), timeout=ACTIVATE_TIMEOUT)
        if isinstance(reply, Pid):
            return reply
        raise ActorExited(reply, ents.entity_name(key))

    async def _ent_started(self, note: _Started) -> None:
        key = note.key
        waiting = self._ent_waiting.pop(key, [])
        if note.pid is None:
            log.error("entity %r failed to start: %r", self.entities.entity_name(key), note.reason)
            for how, who in waiting:
                if how == "call":
                    self.reply(who, note.reason)
            return
        pid = note.pid
        self._ent_active[key] = pid
        self._ent_keys[pid] = key
        if pid.node:  # hosted by another node, which supervises it: watch it, to route again once gone
            self._ent_remote[self.monitor(pid)] = key
        # The messages that asked for the activation go first, then the name: whoever learns the name
        # and sends directly is behind them on the entity's mailbox.
        for how, who in waiting:
            if how == "cast":
                self.cast(pid, who)
            elif how == "send":
                self.send(pid, who)
        try:
            await kernel.register(self.entities.entity_name(key), pid)
        except AlreadyStarted as taken:
            log.error("entity name %r was registered by hand to %r; that actor serves it",
                      self.entities.entity_name(key), taken.pid)
        except NoProc:
            pass  # it exited already; its Exit is (or will be) in the mailbox
        for how, who in waiting:
            if how == "call":
                self.reply(who, pid)
        early = self._ent_early.pop(pid, None)
        if early is not None:
            del self._ent_keys[pid]
            if self._ent_active.get(key) == pid:
                del self._ent_active[key]
            self._ent_exited(key, early)

    def _ent_exited(self, key: Hashable, reason: Any) -> None:
        if not restarts_for(reason):
            self._ent_intensity.pop(key, None)
            return  # passive until its next message
        intensity = self._ent_intensity.get(key)
        if intensity is None:
            ents = self.entities
            intensity = self._ent_intensity[key] = RestartIntensity(ents.max_restarts, ents.max_seconds)
        if not intensity.add():
            log.error("entity %r: reached its restart intensity (%d in %ss); passive until its next message",
                      self.entities.entity_name(key), intensity.max_restarts, intensity.max_seconds)
            del self._ent_intensity[key]
            return
        self.child_restarts[key] = self.child_restarts.get(key, 0) + 1
        if key not in self._ent_waiting and key not in self._ent_active:
            self._ent_want(key, ("restart", None))

    async def terminate(self, reason: Any) -> None:
        """Stop every running entity at once (final checkpoints written), as a ``DynamicSupervisor``."""
        for task in self._ent_tasks:
            task.cancel()
        running = [(pid, 5.0) for pid in self._ent_local().values()]
        self._ent_active.clear()
        self._ent_keys.clear()
        await shutdown_many(self, running)
