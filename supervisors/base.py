"""What every supervisor does: keep its children, restart them, count restarts, stop them.

``Supervisor`` and ``DynamicSupervisor`` differ only in which children a restart touches, how
children are added and how they are stopped at the end; the bookkeeping, the restart loop and the
request handling they share live here. Both are plain actors that trap exits, built on the
kernel's public API only (as OTP builds ``supervisor.erl`` on ``gen_server``).
"""

from __future__ import annotations

import logging
import reprlib
import time
from collections import deque
from collections.abc import Hashable
from typing import Any, NamedTuple

from kernel import Actor, Exit, Pid

from .child import Child, StartFailed, start_child_process
from .errors import SupervisorError
from .intensity import RestartIntensity
from .shutdown import shutdown_child
from .spec import ChildSpec, wants_restart

__all__ = ["SupervisorBase", "TryAgain"]

#: OTP's supervisor reports, as log records: start errors and giving up are for operators to see.
log = logging.getLogger("supervisors")

#: Exits kept per child for the observer (restart history, last exit reason).
EXIT_HISTORY = 10
_reason_repr = reprlib.Repr()
_reason_repr.maxstring = _reason_repr.maxother = 200


class TryAgain(NamedTuple):
    """Sent by a supervisor to itself after a failed restart: retry once the mailbox had its turn.

    Retrying through the mailbox (OTP's ``try_again_restart``) keeps the supervisor responsive: a
    ``terminate_child``, a shutdown or ``which_children`` gets in between two attempts.
    """

    child_id: Hashable


class SupervisorBase(Actor):
    """Shared machinery of ``Supervisor`` and ``DynamicSupervisor``.

    Attributes:
        child_restarts: child id -> how many times this supervisor restarted that child (for the
            observer; named apart from the kernel's own per-actor ``restarts`` counter).
        child_exits: child id -> its last :data:`EXIT_HISTORY` exits as ``(time.time(), repr(reason))``,
            oldest first (the observer's restart history and last exit reason).
        intensity: the restart budget (``max_restarts`` within ``max_seconds``).
    """

    trap_exits = True
    #: Read by the kernel: a spawn without ``worker=`` places the supervisor in the node process (which
    #: outlives every worker, API section 12), and the snapshot shows the supervision tree from it.
    is_supervisor = True

    # Every private member carries the ``_sup_`` prefix: an Actor subclass shares its namespace with
    # the kernel's private members (``_start``, ``_run``...), and a clash there breaks the actor.
    # Invariant: ``_by_pid`` maps exactly the pids of the children whose ``pid`` is set.
    _sup_children: dict[Hashable, Child]
    _sup_by_pid: dict[Pid, Hashable]
    child_restarts: dict[Hashable, int]
    child_exits: dict[Hashable, deque[tuple[float, str]]]
    intensity: RestartIntensity

    def _sup_setup(self, max_restarts: int, max_seconds: float) -> None:
        self._sup_children = {}
        self._sup_by_pid = {}
        self.child_restarts = {}
        self.child_exits = {}
        self.intensity = RestartIntensity(max_restarts, max_seconds)

    # -- introspection -------------------------------------------------------------------------

    def child_list(self) -> list[tuple[Hashable, Pid | None, str]]:
        """``(id, pid | None, type)`` for every child, in start order (what ``which_children`` returns)."""
        return [(cid, c.pid, c.spec.type) for cid, c in self._sup_children.items()]

    def children(self) -> list[Pid]:
        """Pids of the running children, in start order (the snapshot's ``children`` field)."""
        return [c.pid for c in self._sup_children.values() if c.pid is not None]

    def child_counts(self) -> dict[str, int]:
        """The ``count_children`` answer: ``specs``, ``active``, ``supervisors``, ``workers``."""
        sups = sum(1 for c in self._sup_children.values() if c.spec.type == "supervisor")
        return {
            "specs": len(self._sup_children),
            "active": len(self._sup_by_pid),
            "supervisors": sups,
            "workers": len(self._sup_children) - sups,
        }

    # -- starting and stopping one child -------------------------------------------------------

    async def _sup_start(self, child: Child) -> Pid:
        pid = await start_child_process(self, child.spec)
        child.pid = pid
        child.restarting = False
        self._sup_by_pid[pid] = child.spec.id
        return pid

    async def _sup_terminate(self, child: Child) -> None:
        """Stop ``child`` (if it runs) per its shutdown spec; a temporary child's spec goes too."""
        child.restarting = False
        pid = child.pid
        if pid is not None:
            child.pid = None
            del self._sup_by_pid[pid]
            await shutdown_child(self, pid, child.spec.shutdown_timeout)
        if child.spec.restart == "temporary":
            self._sup_children.pop(child.spec.id, None)

    async def _sup_terminate_all(self) -> None:
        """Stop every child, last started first (OTP's ``terminate_children``)."""
        for child in reversed(list(self._sup_children.values())):
            await self._sup_terminate(child)

    # -- exits and restarts --------------------------------------------------------------------

    async def handle_info(self, message: Any) -> None:
        """Exits of children drive restarts; exits from unknown pids are ignored, as in OTP.

        Unknown pids include a child whose ``init`` failed (its pid was never recorded) and a child
        that was already stopped on purpose. The parent's exit signal never arrives here: the
        kernel turns it into ``terminate``.
        """
        if isinstance(message, Exit):
            child_id = self._sup_by_pid.pop(message.pid, None)
            if child_id is not None:
                await self._sup_child_exited(self._sup_children[child_id], message.reason)
        elif isinstance(message, TryAgain):
            child = self._sup_children.get(message.child_id)
            if child is not None and child.restarting:
                await self._sup_restart(child)

    async def _sup_child_exited(self, child: Child, reason: Any) -> None:
        child.pid = None
        exits = self.child_exits.get(child.spec.id)
        if exits is None:
            exits = self.child_exits[child.spec.id] = deque(maxlen=EXIT_HISTORY)
        exits.append((time.time(), _reason_repr.repr(reason)))
        if wants_restart(child.spec.restart, reason):
            await self._sup_restart(child)
        elif child.spec.restart == "temporary":
            del self._sup_children[child.spec.id]
        # A transient child that exited cleanly keeps its spec with pid None, as in OTP.

    def _sup_restart_group(self, child: Child) -> list[Child]:
        """The children a restart of ``child`` stops and starts again, in start order.

        One-for-one by default; ``Supervisor`` widens it for ``one_for_all`` and ``rest_for_one``.
        """
        return [child]

    async def _sup_restart(self, child: Child) -> None:
        """Restart ``child`` (and its group), or escalate when the intensity is used up.

        A start that fails counts as one more restart and is retried through the mailbox, so a child
        that can never start ends in escalation instead of a tight loop.
        """
        if not self.intensity.add():
            # Escalation: terminate() stops the children, last started first; the parent decides.
            log.error(
                "supervisor %r: reached max restart intensity (%d in %ss) restarting child %r; shutting down",
                self.pid,
                self.intensity.max_restarts,
                self.intensity.max_seconds,
                child.spec.id,
            )
            self.stop("shutdown")
            return
        group = self._sup_restart_group(child)
        for other in reversed(group):
            if other is not child:
                await self._sup_terminate(other)
        for member in group:
            if self._sup_children.get(member.spec.id) is not member:
                continue  # a temporary bystander: stopped for good, as in OTP
            try:
                await self._sup_start(member)
            except StartFailed as exc:
                log.error(
                    "supervisor %r: child %r failed to restart: %r", self.pid, member.spec.id, exc.reason
                )
                member.restarting = True
                self.send(self.pid, TryAgain(member.spec.id))
                return
            self.child_restarts[member.spec.id] = self.child_restarts.get(member.spec.id, 0) + 1

    async def terminate(self, reason: Any) -> None:
        """Stop all children before the supervisor itself goes (shutdown, stop or escalation)."""
        await self._sup_terminate_all()

    # -- requests ------------------------------------------------------------------------------

    async def handle_call(self, request: Any, caller: Any) -> Any:
        """Answer the ``supervisors`` API. Errors are *returned* as ``SupervisorError`` values (the
        API raises them in the caller): a bad request must never crash the supervisor."""
        match request:
            case ("which_children",):
                return self.child_list()
            case ("count_children",):
                return self.child_counts()
            case ("start_child", ChildSpec() as spec):
                return await self._sup_start_child(spec)
            case ("terminate_child", child_id):
                return await self._sup_terminate_child(child_id)
            case ("restart_child", child_id):
                return await self._sup_restart_child(child_id)
            case ("delete_child", child_id):
                return self._sup_delete_child(child_id)
        return SupervisorError("bad_request", None, request)

    async def _sup_start_child(self, spec: ChildSpec) -> Pid | SupervisorError:
        existing = self._sup_children.get(spec.id)
        if existing is not None:
            if existing.pid is not None:
                return SupervisorError("already_started", spec.id, existing.pid)
            return SupervisorError("restarting" if existing.restarting else "already_present", spec.id)
        refused = self._sup_refuse_new_child(spec)
        if refused is not None:
            return refused
        child = Child(spec)
        try:
            pid = await self._sup_start(child)
        except StartFailed as exc:
            return SupervisorError("failed_to_start", spec.id, exc.reason)
        self._sup_children[spec.id] = child
        return pid

    def _sup_refuse_new_child(self, spec: ChildSpec) -> SupervisorError | None:
        """Hook for a cap on children (``DynamicSupervisor.max_children``)."""
        return None

    async def _sup_terminate_child(self, child_id: Hashable) -> SupervisorError | None:
        child = self._sup_children.get(child_id)
        if child is None:
            return SupervisorError("not_found", child_id)
        await self._sup_terminate(child)
        return None

    def _sup_terminated(self, child_id: Hashable) -> Child | SupervisorError:
        """The child, if it exists and is terminated (what restart_child and delete_child require)."""
        child = self._sup_children.get(child_id)
        if child is None:
            return SupervisorError("not_found", child_id)
        if child.restarting:
            return SupervisorError("restarting", child_id)
        if child.pid is not None:
            return SupervisorError("running", child_id)
        return child

    async def _sup_restart_child(self, child_id: Hashable) -> Pid | SupervisorError:
        child = self._sup_terminated(child_id)
        if isinstance(child, SupervisorError):
            return child
        try:
            return await self._sup_start(child)
        except StartFailed as exc:
            return SupervisorError("failed_to_start", child_id, exc.reason)

    def _sup_delete_child(self, child_id: Hashable) -> SupervisorError | None:
        child = self._sup_terminated(child_id)
        if isinstance(child, SupervisorError):
            return child
        del self._sup_children[child_id]
        return None
