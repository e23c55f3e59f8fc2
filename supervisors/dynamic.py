"""``DynamicSupervisor``: children added at run time, one per user, cart or upload."""

from __future__ import annotations

from collections.abc import Hashable

from kernel import Pid

from .base import SupervisorBase
from .errors import SupervisorError
from .intensity import RestartIntensity
from .shutdown import shutdown_many
from .spec import ChildSpec

__all__ = ["DynamicSupervisor"]


class DynamicSupervisor(SupervisorBase):
    """A one-for-one supervisor with no static children (Elixir's ``DynamicSupervisor``).

    Spawn it, then add children with ``supervisors.start_child(sup, spec)``. Each child restarts per
    its own spec's ``restart``; the restart intensity is shared. ``which_children`` reports each child
    by its spec id, in start order; ids must be unique among the current children because the id is
    also the last part of the child's checkpoint key.

    Promises:
        - Bookkeeping per exit is O(1) (dicts keyed by pid and id), so thousands of children are
          cheap; at shutdown all children are signalled at once and waited for together.
        - ``terminate_child(sup, id)`` stops the child and forgets it; ``restart_child`` and
          ``delete_child`` are not supported (``SupervisorError``), as in Elixir.
        - ``start_child`` beyond ``max_children`` raises ``SupervisorError`` (``"max_children"``).
    """

    max_children: int | None

    @classmethod
    def check_args(cls, strategy: str = "one_for_one", max_restarts: int = 3, max_seconds: float = 5.0,
                   max_children: int | None = None) -> None:
        """Checked in the spawner: bad flags fail before anything starts."""
        _check_flags(strategy, max_children)
        RestartIntensity(max_restarts, max_seconds)

    async def init(
        self,
        strategy: str = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        max_children: int | None = None,
    ) -> None:
        """Validate the flags; no child starts here.

        Raises:
            TypeError, ValueError: a bad argument (the message names it).
        """
        _check_flags(strategy, max_children)
        self.max_children = max_children
        self._sup_setup(max_restarts, max_seconds)

    def _sup_refuse_new_child(self, spec: ChildSpec) -> SupervisorError | None:
        if self.max_children is not None and len(self._sup_children) >= self.max_children:
            return SupervisorError("max_children", spec.id, self.max_children)
        return None

    async def _sup_terminate_child(self, child_id: Hashable) -> SupervisorError | None:
        # Elixir's terminate_child also accepts the child's pid.
        if isinstance(child_id, Pid) and child_id in self._sup_by_pid:
            child_id = self._sup_by_pid[child_id]
        child = self._sup_children.pop(child_id, None)
        if child is None:
            return SupervisorError("not_found", child_id)
        await self._sup_terminate(child)
        return None

    async def _sup_restart_child(self, child_id: Hashable) -> Pid | SupervisorError:
        return SupervisorError("not_supported", child_id)

    def _sup_delete_child(self, child_id: Hashable) -> SupervisorError | None:
        return SupervisorError("not_supported", child_id)

    async def _sup_terminate_all(self) -> None:
        """Stop all children concurrently, each killed when its own shutdown time runs out."""
        running: list[tuple[Pid, float | None]] = []
        for child in self._sup_children.values():
            if child.pid is not None:
                running.append((child.pid, child.spec.shutdown_timeout))
        self._sup_children.clear()
        self._sup_by_pid.clear()
        await shutdown_many(self, running)


def _check_flags(strategy: str, max_children: int | None) -> None:
    if strategy != "one_for_one":
        raise ValueError(f"strategy of a DynamicSupervisor must be 'one_for_one', got {strategy!r}")
    if max_children is not None:
        if isinstance(max_children, bool) or not isinstance(max_children, int):
            raise TypeError(f"max_children must be an int >= 0 or None, got {max_children!r}")
        if max_children < 0:
            raise ValueError(f"max_children must be an int >= 0 or None, got {max_children!r}")
