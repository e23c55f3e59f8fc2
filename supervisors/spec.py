"""Child specifications: checked data, as OTP's ``check_childspec``.

A ``ChildSpec`` is validated when it is built, in the caller, so a typo (``restart="permanant"``)
fails at once with a ``TypeError``/``ValueError`` naming the field and the bad value, instead of
surfacing later as a supervisor that cannot restart its child. Specs travel to the supervisor inside
spawn arguments and calls, so they are frozen, picklable values.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kernel import Actor

from .errors import SupervisorError

__all__ = [
    "CHILD_TYPES",
    "RESTART_TYPES",
    "ChildSpec",
    "check_children",
    "is_clean_exit",
    "wants_restart",
]

RestartType = Literal["permanent", "transient", "temporary"]
ChildType = Literal["worker", "supervisor"]
Shutdown = float | Literal["brutal_kill", "infinity"]

RESTART_TYPES: tuple[str, ...] = ("permanent", "transient", "temporary")
CHILD_TYPES: tuple[str, ...] = ("worker", "supervisor")
#: Default seconds a worker gets to run ``terminate`` before it is killed (OTP: 5000 ms).
DEFAULT_WORKER_SHUTDOWN = 5.0


@dataclass(frozen=True)
class ChildSpec:
    """How a supervisor starts, restarts and stops one child.

    Args:
        id: names the child inside its supervisor (any hashable value, unique per supervisor); it
            is also the last part of the child's checkpoint key (``"root/carts/cart-42"``).
        start: an ``Actor`` subclass, or an ``async def fn(ctx, *args)`` raw process.
        args: positional arguments for the child's ``init`` (or the function).
        kwargs: keyword arguments for the child's ``init``.
        restart: ``"permanent"`` (always restarted), ``"transient"`` (restarted unless it exits
            ``"normal"``, ``"shutdown"`` or ``("shutdown", term)``) or ``"temporary"`` (never
            restarted; removed from the supervisor when it exits).
        shutdown: seconds the child gets after the shutdown signal before it is killed,
            ``"brutal_kill"`` (killed at once) or ``"infinity"`` (waited for). ``None`` means OTP's
            default: 5.0 for a worker, ``"infinity"`` for a supervisor (so a subtree is never cut
            short while it stops its own children).
        type: ``"worker"`` or ``"supervisor"``.
        worker: worker index to start the child on; ``None`` means the supervisor's own worker.
        name: optional registered name for the child (its checkpoint key stays its child id path).

    Raises:
        TypeError: a field has the wrong type; the message names the field and shows the value.
        ValueError: a field has a value outside its range; the message names field and value.
    """

    id: Hashable
    start: Any
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    restart: RestartType = "permanent"
    shutdown: Shutdown | None = None
    type: ChildType = "worker"
    worker: int | None = None
    name: Hashable | None = None

    def __post_init__(self) -> None:
        _check_hashable("id", self.id)
        _check_start(self.start)
        if not isinstance(self.args, tuple | list):
            raise TypeError(f"ChildSpec args must be a tuple, got {self.args!r}")
        if not isinstance(self.kwargs, Mapping) or not all(isinstance(k, str) for k in self.kwargs):
            raise TypeError(f"ChildSpec kwargs must be a mapping with str keys, got {self.kwargs!r}")
        if not isinstance(self.restart, str) or self.restart not in RESTART_TYPES:
            raise ValueError(f"ChildSpec restart must be one of {RESTART_TYPES}, got {self.restart!r}")
        if not isinstance(self.type, str) or self.type not in CHILD_TYPES:
            raise ValueError(f"ChildSpec type must be one of {CHILD_TYPES}, got {self.type!r}")
        _check_worker(self.worker)
        if self.name is not None:
            _check_hashable("name", self.name)
        # Normalised copies: the spec owns its own tuple and dict, so a caller mutating theirs
        # later cannot change what a restart does.
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        object.__setattr__(self, "shutdown", _check_shutdown(self.shutdown, self.type))

    @property
    def shutdown_timeout(self) -> float | None:
        """Seconds to wait for an orderly exit: 0 for ``"brutal_kill"``, None for ``"infinity"``."""
        if self.shutdown == "infinity":
            return None
        if self.shutdown == "brutal_kill":
            return 0.0
        assert isinstance(self.shutdown, float)
        return self.shutdown


def _check_hashable(what: str, value: object) -> None:
    try:
        hash(value)
    except TypeError:
        raise TypeError(f"ChildSpec {what} must be hashable, got {value!r}") from None


def _check_start(start: object) -> None:
    if inspect.isclass(start) and issubclass(start, Actor):
        return
    if inspect.iscoroutinefunction(start):
        return
    raise TypeError(
        f"ChildSpec start must be an Actor subclass or an async function (ctx, *args), got {start!r}"
    )


def _check_worker(worker: object) -> None:
    if worker is None:
        return
    if isinstance(worker, bool) or not isinstance(worker, int):
        raise TypeError(f"ChildSpec worker must be a worker index (int) or None, got {worker!r}")
    if worker < 0:
        raise ValueError(f"ChildSpec worker must be a worker index >= 0, got {worker!r}")


def _check_shutdown(shutdown: object, child_type: str) -> Shutdown:
    if shutdown is None:
        return "infinity" if child_type == "supervisor" else DEFAULT_WORKER_SHUTDOWN
    if shutdown in ("brutal_kill", "infinity"):
        return "infinity" if shutdown == "infinity" else "brutal_kill"
    if isinstance(shutdown, bool) or not isinstance(shutdown, int | float):
        raise TypeError(f"ChildSpec shutdown must be seconds, 'brutal_kill' or 'infinity', got {shutdown!r}")
    if math.isnan(shutdown) or shutdown < 0:
        raise ValueError(f"ChildSpec shutdown must be seconds >= 0, got {shutdown!r}")
    return "infinity" if math.isinf(shutdown) else float(shutdown)


def check_children(children: object) -> list[ChildSpec]:
    """Validate a supervisor's static child list (OTP's ``check_startspec``).

    Raises:
        TypeError: ``children`` is not an iterable of ``ChildSpec`` (names the bad entry).
        SupervisorError: two specs share an id (``reason == "duplicate"``).
    """
    if isinstance(children, str | bytes | Mapping) or not isinstance(children, Iterable):
        raise TypeError(f"children must be a list of ChildSpec, got {children!r}")
    specs = list(children)
    seen: set[Hashable] = set()
    for i, spec in enumerate(specs):
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"children[{i}] must be a ChildSpec, got {spec!r}")
        if spec.id in seen:
            raise SupervisorError("duplicate", spec.id)
        seen.add(spec.id)
    return specs


def is_clean_exit(reason: object) -> bool:
    """True for the exit reasons a transient child is not restarted for, as in OTP."""
    if reason in ("normal", "shutdown"):
        return True
    return isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown"


def wants_restart(restart: str, reason: object) -> bool:
    """Whether a child with restart type ``restart`` that exited with ``reason`` is restarted."""
    if restart == "permanent":
        return True
    if restart == "transient":
        return not is_clean_exit(reason)
    return False
