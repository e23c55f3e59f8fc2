"""The one error type of the supervisors layer.

A supervisor answers a bad request (unknown id, duplicate id, a running child that should have been
terminated first, a full ``DynamicSupervisor``) with an error *reply*, never by raising inside its own
handler: raising there would crash the supervisor and, with it, every child it watches. The API
coroutines turn that reply into a ``SupervisorError`` in the caller, so the fault lands with whoever
asked for the impossible.
"""

from __future__ import annotations

from typing import Any

from kernel import KernelError

__all__ = ["SupervisorError"]

#: Why a request failed -> what the caller should do about it.
_EXPLAIN: dict[str, str] = {
    "not_found": "no child with this id; which_children(sup) lists the ids",
    "duplicate": "duplicate child id; every child of one supervisor needs its own id",
    "already_present": "a terminated child with this id is present; restart_child or delete_child it",
    "already_started": "a child with this id is already running",
    "running": "the child is running; terminate_child it first",
    "restarting": "the child is being restarted after a failed start; terminate_child it first",
    "failed_to_start": "the child failed to start",
    "max_children": "the supervisor already runs max_children children",
    "not_supported": "this operation is not supported by a DynamicSupervisor",
    "bad_request": "not a supervisor request",
    "not_running": "no supervisor runs these entities; add entities.child_spec() to a supervision tree",
}


class SupervisorError(KernelError):
    """A supervisor refused a request about one child.

    Attributes:
        reason: a short tag: ``"not_found"``, ``"duplicate"``, ``"already_present"``,
            ``"already_started"``, ``"running"``, ``"restarting"``, ``"failed_to_start"``,
            ``"max_children"``, ``"not_supported"``, ``"bad_request"`` or ``"not_running"`` (an
            ``Entities`` family whose supervisor is not running; ``child_id`` is the family's name).
        child_id: the child id the request named (always shown in the message).
        detail: extra data: the running pid for ``"already_started"``, the exit reason for
            ``"failed_to_start"``, the cap for ``"max_children"``.
    """

    def __init__(self, reason: str, child_id: Any, detail: Any = None) -> None:
        self.reason = reason
        self.child_id = child_id
        self.detail = detail
        text = _EXPLAIN.get(reason, reason)
        extra = f" ({detail!r})" if detail is not None else ""
        if reason == "bad_request":
            super().__init__(f"{text}: {detail!r}")
        else:
            super().__init__(f"child {child_id!r}: {text}{extra}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Crosses process boundaries inside Crash texts and replies: rebuild from the fields.
        return (type(self), (self.reason, self.child_id, self.detail))
