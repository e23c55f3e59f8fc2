"""The supervisor API: coroutines that ask a supervisor, by call, about its children.

Each function takes the supervisor's destination (pid or registered name), validates its own
arguments before anything is sent, and raises ``SupervisorError`` in the caller when the supervisor
refuses. Like OTP, requests that start or stop children run inside the supervisor and block it
meanwhile, so a child must never call them on its own supervisor about itself.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from kernel import Pid, call

from .errors import SupervisorError
from .spec import ChildSpec

__all__ = [
    "count_children",
    "delete_child",
    "restart_child",
    "start_child",
    "terminate_child",
    "which_children",
]

#: Seconds a request may take. Generous because starting a child waits for its ``init`` and stopping
#: one may wait for its ``shutdown`` time, but bounded, so a wedged supervisor shows as CallTimeout.
REQUEST_TIMEOUT = 60.0


def _check_id(child_id: object) -> None:
    try:
        hash(child_id)
    except TypeError:
        raise TypeError(f"child_id must be hashable, got {child_id!r}") from None


async def _ask(sup: Any, request: tuple[Any, ...]) -> Any:
    reply = await call(sup, request, timeout=REQUEST_TIMEOUT)
    if isinstance(reply, SupervisorError):
        raise reply
    return reply


async def which_children(sup: Any) -> list[tuple[Hashable, Pid | None, str]]:
    """``(id, pid | None, type)`` of every child, in start order; pid is None when not running."""
    result: list[tuple[Hashable, Pid | None, str]] = await _ask(sup, ("which_children",))
    return result


async def count_children(sup: Any) -> dict[str, int]:
    """Counts with keys ``specs``, ``active`` (running), ``supervisors`` and ``workers``."""
    result: dict[str, int] = await _ask(sup, ("count_children",))
    return result


async def start_child(sup: Any, spec: ChildSpec) -> Pid:
    """Add ``spec`` to the supervisor and start it; returns once its ``init`` finished.

    Raises:
        TypeError: ``spec`` is not a ``ChildSpec``.
        SupervisorError: the id is taken (``"already_started"``, ``"already_present"``,
            ``"restarting"``), the child failed to start (``"failed_to_start"``, the spec is not
            kept), or a ``DynamicSupervisor`` is full (``"max_children"``).
    """
    if not isinstance(spec, ChildSpec):
        raise TypeError(f"spec must be a ChildSpec, got {spec!r}")
    pid: Pid = await _ask(sup, ("start_child", spec))
    return pid


async def restart_child(sup: Any, child_id: Hashable) -> Pid:
    """Start again a child that was terminated with ``terminate_child``; returns its new pid.

    Raises:
        SupervisorError: unknown id, the child is running or restarting, or it failed to start.
    """
    _check_id(child_id)
    pid: Pid = await _ask(sup, ("restart_child", child_id))
    return pid


async def terminate_child(sup: Any, child_id: Hashable) -> None:
    """Stop a child per its shutdown spec and keep its spec (pid becomes None).

    A temporary child's spec is dropped, and a ``DynamicSupervisor`` forgets the child. Terminating a
    child that is already terminated succeeds.

    Raises:
        SupervisorError: unknown id.
    """
    _check_id(child_id)
    await _ask(sup, ("terminate_child", child_id))


async def delete_child(sup: Any, child_id: Hashable) -> None:
    """Remove the spec of a terminated child.

    Raises:
        SupervisorError: unknown id, or the child is running or restarting.
    """
    _check_id(child_id)
    await _ask(sup, ("delete_child", child_id))
