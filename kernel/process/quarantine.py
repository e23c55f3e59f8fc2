"""Poison-message quarantine: a message that keeps crashing an actor is set aside, not retried forever.

Supervision bounds a crash loop by escalating, which takes a whole subtree down over one bad message
that a client keeps re-sending. Here, when the same message (same pickled bytes) has crashed the
actor with the same key ``Actor.quarantine_after`` times, it is written to the state file's
dead-letter table and, from then on, set aside on arrival: a call gets ``Quarantined`` at once, a cast
or raw send is dropped. ``python -m tools.checkpoints PATH`` lists dead letters; the observer's control
socket can replay or drop one (``{"op": "replay" | "drop", "id": N}``).

Bookkeeping is per worker and in memory (crash counts, blocked digests), so a healthy message costs
one dict truthiness test; the dead-letter rows are the durable record.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any, Protocol

from ..transport.serialize import dumps

if TYPE_CHECKING:
    from .base import Host

__all__ = ["Quarantine"]

log = logging.getLogger("kernel.quarantine")


class _Subject(Protocol):
    """What the quarantine reads of an actor (``Actor``): its key, its limit and its runtime's store."""

    @property
    def key(self) -> Any: ...
    @property
    def quarantine_after(self) -> int | None: ...
    @property
    def _rt(self) -> Host: ...


def _digest(kind: int, message: Any) -> bytes | None:
    try:
        return hashlib.blake2b(dumps((kind, message), "message"), digest_size=16).digest()
    except Exception:
        return None


class Quarantine:
    """One per worker runtime."""

    def __init__(self) -> None:
        self.crashes: dict[tuple[Any, bytes], int] = {}
        #: key -> digests set aside; empty (falsy) in a healthy node, which is the fast path.
        self.blocked: dict[Any, set[bytes]] = {}

    def is_blocked(self, actor: _Subject, kind: int, message: Any) -> bool:
        digests = self.blocked.get(actor.key)
        return bool(digests) and _digest(kind, message) in digests  # type: ignore[operator]

    def crashed(self, actor: _Subject, kind: int, message: Any, error: str) -> None:
        """Count a crash of ``actor`` on ``message``; at the limit, quarantine it."""
        limit = actor.quarantine_after
        if actor.key is None or not limit:
            return
        digest = _digest(kind, message)
        if digest is None:
            return
        count = self.crashes.get((actor.key, digest), 0) + 1
        self.crashes[(actor.key, digest)] = count
        if count < limit:
            return
        del self.crashes[(actor.key, digest)]
        self.blocked.setdefault(actor.key, set()).add(digest)
        log.error("message to %r crashed it %d times: quarantined (%s)", actor.key, count, error)
        store = actor._rt.store
        if store is not None:
            store.dead_letter(actor.key, dumps((kind, message), "message"), error, count)

    def release(self, key: Any, kind: int, message: Any) -> None:
        """Let a quarantined message through again (replay, or after a fix)."""
        digest = _digest(kind, message)
        digests = self.blocked.get(key)
        if digests is not None and digest is not None:
            digests.discard(digest)
            if not digests:
                del self.blocked[key]
