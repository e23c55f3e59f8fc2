"""Membership leases in PostgreSQL, by the database's clock (Orleans' ADO.NET membership table, anchored).

Promises:

* :meth:`Membership.join` puts this node's row in ``pyotp_members`` with a new incarnation (the database's
  clock, later than any incarnation the node had before), so every name its previous incarnation held
  counts as expired at once.
* The lease runs out at the database's ``now() + lease``; :meth:`Membership.renew` extends it only while
  it has not run out (an expired lease stays expired: the node must join again), and :meth:`live` lists
  the members whose lease the database's clock has not passed. No node's clock is ever compared with
  another's, so client clock skew does not matter. (Orleans writes ``IAmAliveTime`` from the silo's own
  clock; this table never does.)
* :class:`LeaseKeeper` renews in the background and, when it cannot, calls ``on_lost`` *before* the lease
  runs out: it gives up at ``lease - margin`` after the start of the last successful renew, measured on
  this host's monotonic clock. The database stamped that renew after it started, so its expiry by the
  database's clock is later still: the margin is the time the node has to stop its persistent actors.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg

from ..errors import LeaseExpired, NodeNameInUse

__all__ = ["LeaseKeeper", "Member", "Membership"]

_JOIN = """
INSERT INTO pyotp_members AS m (node, id, address, workers, incarnation, lease_expires)
VALUES ($1, $4, $2, $5, clock_timestamp(), now() + make_interval(secs => $3))
ON CONFLICT (node) DO UPDATE SET id = excluded.id, address = excluded.address, workers = excluded.workers,
    incarnation = greatest(excluded.incarnation, m.incarnation + interval '1 microsecond'),
    lease_expires = excluded.lease_expires
WHERE m.id = excluded.id OR m.lease_expires <= now()
RETURNING node, address, incarnation, lease_expires, id, workers
"""
# Only a lease that has not run out is extended: once the database's clock passed it, others may have
# taken this node's names, so the node is dead until it joins again.
_RENEW = """
UPDATE pyotp_members SET lease_expires = now() + make_interval(secs => $3)
WHERE node = $1 AND incarnation = $2 AND lease_expires > now()
RETURNING lease_expires
"""
_LEAVE = """
WITH gone AS (DELETE FROM pyotp_members WHERE node = $1 AND incarnation = $2 RETURNING node)
UPDATE pyotp_names SET node = NULL, incarnation = NULL WHERE node = $1 AND incarnation = $2
"""
_LIVE = """
SELECT node, address, incarnation, lease_expires, id, workers FROM pyotp_members WHERE lease_expires > now()
ORDER BY node
"""

#: What a renew may fail with when the database is unreachable or the connection broke.
DB_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, asyncpg.PostgresError,
                                              asyncpg.InterfaceError)


class Member(NamedTuple):
    """One node's row: its name, address, incarnation (when it joined) and lease expiry (database clock),
    its id (the node part of its pids) and how many workers it runs."""

    node: str
    address: str
    incarnation: datetime
    lease_expires: datetime
    id: int = 0
    workers: int = 0


class Membership:
    """This node's lease in the cluster's ``pyotp_members`` table.

    ``db`` is an asyncpg connection or pool. The lease keeper should have a connection of its own (a pool
    busy with checkpoint writes must not delay a renew past the lease).
    """

    def __init__(self, db: Any, node: str, address: str, lease: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, *, workers: int = 0) -> None:
        if not isinstance(node, str) or not node:
            raise ValueError(f"node must be a non-empty string, not {node!r}")
        if not isinstance(address, str) or not address:
            raise ValueError(f"address must be a non-empty string such as 'host:port', not {address!r}")
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not 0 < lease < 86400:
            raise ValueError(f"lease must be a number of seconds in (0, 86400), not {lease!r}")
        self.db = db
        self.node = node
        self.address = address
        self.lease = float(lease)
        self.clock = clock
        self.workers = workers
        #: This node's id, drawn from ``pyotp_node_ids`` at the first join and kept by every rejoin of
        #: this object (one node process): pids carry it, so they stay valid across a rejoin, as
        #: Erlang's stay valid across a reconnection, and never match a restarted node's.
        self.id: int | None = None
        self.incarnation: datetime | None = None
        #: This host's monotonic clock when the last successful join or renew was sent (None: not joined).
        self.renewed_at: float | None = None

    async def join(self) -> Member:
        """Take (or replace) this node's row with a new incarnation and a fresh lease.

        Raises:
            NodeNameInUse: another node process (another id) holds this name and its lease is live.
        """
        if self.id is None:
            self.id = int(await self.db.fetchval("SELECT nextval('pyotp_node_ids')"))
        started = self.clock()
        row = await self.db.fetchrow(_JOIN, self.node, self.address, self.lease, self.id, self.workers)
        if row is None:  # the name's row belongs to another node process whose lease is live
            holder = await self.db.fetchval("SELECT address FROM pyotp_members WHERE node = $1", self.node)
            raise NodeNameInUse(self.node, holder or "?")
        self.incarnation = row["incarnation"]
        self.renewed_at = started
        return Member(*row)

    async def renew(self) -> datetime:
        """Extend the lease to the database's ``now() + lease``; returns the new expiry.

        Raises:
            LeaseExpired: the lease had already run out (or this incarnation was replaced, or never joined).
        """
        if self.incarnation is None:
            raise LeaseExpired(self.node, "it has not joined")
        started = self.clock()
        expires: datetime | None = await self.db.fetchval(_RENEW, self.node, self.incarnation, self.lease)
        if expires is None:
            raise LeaseExpired(self.node, "the database's clock passed it before this renew")
        self.renewed_at = started
        return expires

    async def leave(self) -> None:
        """Remove this node's row and free the names it holds (a clean stop: no lease to wait out)."""
        if self.incarnation is not None:
            await self.db.execute(_LEAVE, self.node, self.incarnation)
        self.incarnation = self.renewed_at = None

    async def live(self) -> list[Member]:
        """The members whose lease the database's clock has not passed, by node name."""
        return [Member(*row) for row in await self.db.fetch(_LIVE)]

    def deadline(self, margin: float) -> float:
        """The monotonic time by which this node must have stopped its persistent actors."""
        if self.renewed_at is None:
            return -float("inf")
        return self.renewed_at + self.lease - margin


class LeaseKeeper:
    """Renews a :class:`Membership` every ``interval`` seconds; calls ``on_lost`` once when it cannot.

    A failed renew (database unreachable, connection broken, statement stuck) is retried every ``retry``
    seconds, each attempt bounded by the time left. At ``deadline = last renew's start + lease - margin``
    (monotonic) the keeper stops trying and calls ``on_lost`` with a :class:`LeaseExpired`; it does so at
    once when the database says the lease is gone. Defaults: renew every lease/3, margin lease/4.
    """

    def __init__(self, membership: Membership,
                 on_lost: Callable[[LeaseExpired], Awaitable[None] | None], *,
                 interval: float | None = None, margin: float | None = None, retry: float = 0.05) -> None:
        lease = membership.lease
        self.interval = lease / 3 if interval is None else interval
        self.margin = lease / 4 if margin is None else margin
        if not 0 < self.margin < lease:
            raise ValueError(f"margin must be in (0, lease={lease}), not {self.margin!r}")
        if not 0 < self.interval < lease - self.margin:
            raise ValueError(f"interval must be in (0, lease - margin = {lease - self.margin}), "
                             f"not {self.interval!r}: the lease would run out between two renews")
        if not retry > 0:
            raise ValueError(f"retry must be > 0 seconds, not {retry!r}")
        self.membership = membership
        self.on_lost = on_lost
        self.retry = retry
        self.renewals = 0
        self.failures = 0
        self.lost: LeaseExpired | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start renewing (the membership must have joined)."""
        if self.membership.renewed_at is None:
            raise LeaseExpired(self.membership.node, "join() before starting the lease keeper")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lease-keeper")

    async def stop(self) -> None:
        """Stop renewing (the lease then runs out unless the node leaves)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        m = self.membership
        while True:
            assert m.renewed_at is not None
            await asyncio.sleep(max(0.0, m.renewed_at + self.interval - m.clock()))
            lost = await self._renew()
            if lost is not None:
                self.lost = lost
                result = self.on_lost(lost)
                if inspect.isawaitable(result):
                    await result
                return

    async def _renew(self) -> LeaseExpired | None:
        """Renew, retrying until the deadline; the reason the lease is lost, or None once renewed."""
        m = self.membership
        error: BaseException | None = None
        while (left := m.deadline(self.margin) - m.clock()) > 0:
            try:
                async with asyncio.timeout(left):
                    await m.renew()
            except LeaseExpired as expired:
                return expired
            except DB_ERRORS as failed:
                self.failures += 1
                error = failed
                await asyncio.sleep(min(self.retry, max(0.0, m.deadline(self.margin) - m.clock())))
            else:
                self.renewals += 1
                return None
        why = f"no renew succeeded within lease - margin ({type(error).__name__}: {error})" if error else \
            "no renew succeeded within lease - margin"
        return LeaseExpired(m.node, why)
