"""Which process the running code acts for.

Each actor's handler task, each raw process and the node's own code run with ``current`` set to their
process, so the module-level functions (``kernel.send``, ``kernel.call``...) act for the right sender.
A ContextVar (not a global) keeps several nodes, one after another, in one interpreter apart.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

from ..errors import KernelError

if TYPE_CHECKING:
    from .base import Proc

__all__ = ["current", "current_or_none"]

_current: ContextVar[Proc | None] = ContextVar("kernel_current", default=None)


def current_or_none() -> Proc | None:
    return _current.get()


def current() -> Proc:
    """The acting process; raises ``KernelError`` outside actors, processes and ``async with Node()``."""
    proc = _current.get()
    if proc is None or not proc.alive:
        raise KernelError(
            "no current actor, process or node: call this inside an actor's handler, a process "
            "spawned by the kernel, or inside `async with Node(...)`"
        )
    return proc
