"""One supervised child: its spec, its current pid, and how to start it.

Starting is the only place where a supervisor runs anything of the child's: the spawn waits for the
child's ``init`` (or ``restore``), and any failure there is turned into data (``StartFailed`` with an
exit reason) so the supervisor decides, instead of crashing with the child's exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kernel import Actor, ActorExited, Crash, Pid

from .spec import ChildSpec

__all__ = ["Child", "StartFailed", "child_key", "start_child_process"]


@dataclass(slots=True, eq=False)
class Child:
    """A supervisor's record of one child (compared by identity: one record per child).

    Invariant: ``pid`` is set only while the supervisor believes the child runs (it is linked and
    appears in the supervisor's pid index); ``restarting`` is True only while a failed restart waits
    for its retry message, and then ``pid`` is None.
    """

    spec: ChildSpec
    pid: Pid | None = None
    restarting: bool = False


class StartFailed(Exception):
    """The child's spawn or ``init`` failed; ``reason`` is its exit reason (usually a ``Crash``)."""

    def __init__(self, reason: Any) -> None:
        self.reason = reason
        super().__init__(f"failed to start: {reason!r}")


def child_key(sup_key: str | None, spec: ChildSpec) -> str:
    """The child's checkpoint key: the supervisor's path plus the child id (``"root/carts/u42"``)."""
    return f"{sup_key}/{spec.id}" if sup_key else str(spec.id)


async def start_child_process(sup: Actor, spec: ChildSpec) -> Pid:
    """Spawn the child linked to ``sup`` and wait until its ``init`` has finished.

    Raises:
        StartFailed: the spawn failed for any reason (``init`` raised, the name was taken, the
            arguments could not be pickled...). A linked child that died in ``init`` also sends
            ``sup`` an ``Exit``, which the supervisor ignores because the pid was never recorded.
    """
    try:
        pid: Pid = await sup.spawn_opt(
            spec.start,
            spec.args,
            dict(spec.kwargs),
            name=spec.name,
            worker=spec.worker,
            link=True,
            key=child_key(sup.key, spec),
        )
    except ActorExited as exc:
        raise StartFailed(exc.reason) from None
    except Exception as exc:  # a start failure of any kind is the supervisor's to handle
        raise StartFailed(Crash.from_exception(exc)) from None
    return pid
