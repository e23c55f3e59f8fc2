"""``Supervisor``: a static list of children restarted by one of OTP's three strategies."""

from __future__ import annotations

from collections.abc import Iterable

from .base import SupervisorBase
from .child import Child, StartFailed
from .errors import SupervisorError
from .intensity import RestartIntensity
from .spec import ChildSpec, check_children

__all__ = ["STRATEGIES", "Supervisor"]

STRATEGIES: tuple[str, ...] = ("one_for_one", "one_for_all", "rest_for_one")


class Supervisor(SupervisorBase):
    """Starts its children in list order and keeps them running, as OTP's ``supervisor``.

    Spawn it like any actor::

        root = await node.spawn(Supervisor, strategy="rest_for_one", children=[...],
                                max_restarts=3, max_seconds=5.0, name="root")

    Promises:
        - Children start one after another in list order; the spawn of the supervisor returns once
          all have finished ``init``. If one fails, the ones already started are stopped (reverse
          order) and the supervisor's own ``init`` raises, so its spawn raises ``ActorExited`` with a
          ``Crash`` naming the child id.
        - When a child exits, its restart type decides (``permanent``/``transient``/``temporary``),
          and the strategy decides which children restart: only it (``one_for_one``), all of them
          (``one_for_all``), or it and the ones started after it (``rest_for_one``). Children that
          are restarted together are first stopped in reverse start order.
        - More than ``max_restarts`` restarts within ``max_seconds``: all children are stopped, last
          started first, and the supervisor exits ``"shutdown"`` so its own supervisor decides.
        - On shutdown (from its parent, ``kernel.stop`` or node exit) children stop in reverse start
          order, each per its ``shutdown`` spec.
    """

    strategy: str

    @classmethod
    def check_args(cls, strategy: str = "one_for_one", children: Iterable[ChildSpec] = (),
                   max_restarts: int = 3, max_seconds: float = 5.0) -> None:
        """Checked in the spawner: a bad strategy, flag or child spec fails before anything starts."""
        if not isinstance(strategy, str) or strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if not isinstance(children, (list, tuple)):
            raise TypeError(f"children must be a list of ChildSpec, got {type(children).__name__}")
        check_children(children)
        RestartIntensity(max_restarts, max_seconds)

    async def init(
        self,
        strategy: str = "one_for_one",
        children: Iterable[ChildSpec] = (),
        max_restarts: int = 3,
        max_seconds: float = 5.0,
    ) -> None:
        """Validate the flags and the child list, then start the children in order.

        Raises:
            TypeError, ValueError: a bad argument (the message names it).
            SupervisorError: a duplicate child id, or a child that failed to start.
        """
        if not isinstance(strategy, str) or strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.strategy = strategy
        self._sup_setup(max_restarts, max_seconds)
        for spec in check_children(children):
            child = Child(spec)
            self._sup_children[spec.id] = child
            try:
                await self._sup_start(child)
            except StartFailed as exc:
                # Stop what did start before failing, so nothing outlives the failed supervisor.
                await self._sup_terminate_all()
                raise SupervisorError("failed_to_start", spec.id, exc.reason) from None

    def _sup_restart_group(self, child: Child) -> list[Child]:
        if self.strategy == "one_for_all":
            return list(self._sup_children.values())
        if self.strategy == "rest_for_one":
            members = list(self._sup_children.values())
            return members[members.index(child) :]
        return [child]
