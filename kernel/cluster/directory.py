"""The cluster's name directory: at most one live holder per name, each claim with a growing fence.

Promises:

* :meth:`Directory.claim` is one statement: it takes the name only if it is free (never claimed, or
  released) or its holder's lease has run out by the database's clock, and then sets the name's fence to
  the previous fence + 1. Concurrent claims of one name from any number of connections leave exactly one
  holder (PostgreSQL's ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` locks the name's row and re-checks
  the condition on its latest version). A name held by a live node is not an error: the claim returns
  that holder, for the caller to route to.
* A name's fence only grows (its row is never deleted), so a holder's fence says which claim it is. The
  checkpoint store (:mod:`kernel.cluster.store`) commits a write only under the name's current fence:
  the lease decides who may claim, the fence decides whose writes commit.
* Only a live member takes a name: a node whose own lease ran out gets :class:`~kernel.errors.LeaseExpired`
  when it would take one (it is still told a live holder's address).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from ..errors import LeaseExpired
from .membership import Membership

__all__ = ["Directory", "Holder"]

# The holder may keep the name while its own (node, incarnation) is a live member: the same check as
# the claimer's own membership, both by the database's clock.
_CLAIM = """
WITH me AS (
    SELECT node, incarnation FROM pyotp_members
    WHERE node = $2 AND incarnation = $3 AND lease_expires > now()
), taken AS (
    INSERT INTO pyotp_names AS n (name, node, incarnation, fence)
    SELECT $1, me.node, me.incarnation, 1 FROM me
    ON CONFLICT (name) DO UPDATE SET node = excluded.node, incarnation = excluded.incarnation,
        fence = n.fence + 1
    WHERE n.node IS NULL OR NOT EXISTS (
        SELECT 1 FROM pyotp_members h
        WHERE h.node = n.node AND h.incarnation = n.incarnation AND h.lease_expires > now())
    RETURNING n.fence
)
SELECT (SELECT fence FROM taken) AS fence, EXISTS (SELECT 1 FROM me) AS member
"""
_LOOKUP = """
SELECT n.name, n.node, m.address, n.incarnation, n.fence, m.id
FROM pyotp_names n JOIN pyotp_members m ON m.node = n.node AND m.incarnation = n.incarnation
WHERE n.name = $1 AND m.lease_expires > now()
"""
_RELEASE = """
UPDATE pyotp_names SET node = NULL, incarnation = NULL
WHERE name = $1 AND fence = $2 AND node IS NOT NULL
RETURNING fence
"""

#: A claim retries when the holder it lost to was gone again before it could read it (rare).
_ATTEMPTS = 20


class Holder(NamedTuple):
    """A name's live holder: node, address and incarnation, the claim's fence, whether it is us, and the
    holder's node id (the node part of its pids)."""

    name: str
    node: str
    address: str
    incarnation: datetime
    fence: int
    mine: bool
    id: int = 0


class Directory:
    """Names claimed by one node (its :class:`Membership`), in the cluster's ``pyotp_names`` table.

    ``db`` is an asyncpg connection or pool.
    """

    def __init__(self, db: Any, membership: Membership) -> None:
        self.db = db
        self.membership = membership

    async def claim(self, name: str) -> Holder:
        """Take ``name`` if it is free or its holder's lease ran out; else return its live holder.

        Claiming a name this node already holds returns its current claim (same fence). A name with a
        live holder is answered by one read; only a free or expired one runs the claiming statement.

        Raises:
            LeaseExpired: the name is free but this node's own lease ran out (it may not take names until
                it joins again).
        """
        _check_name(name)
        m = self.membership
        if m.incarnation is None:
            raise LeaseExpired(m.node, "it has not joined")
        for _ in range(_ATTEMPTS):
            # Most claims find a live holder (routing): one read, no row lock, no commit to wait for.
            holder = await self.lookup(name)
            if holder is not None:
                return holder
            row = await self.db.fetchrow(_CLAIM, name, m.node, m.incarnation)
            if not row["member"]:
                raise LeaseExpired(m.node, f"found when claiming {name!r}")
            if row["fence"] is not None:
                return Holder(name, m.node, m.address, m.incarnation, row["fence"], True, m.id or 0)
            holder = await self.lookup(name)
            if holder is not None:
                return holder
        raise RuntimeError(f"claim of {name!r} lost {_ATTEMPTS} times to holders that were gone at once")

    async def lookup(self, name: str) -> Holder | None:
        """The live holder of ``name``, or None when it is free or its holder's lease ran out."""
        _check_name(name)
        row = await self.db.fetchrow(_LOOKUP, name)
        if row is None:
            return None
        m = self.membership
        mine = (row["node"], row["incarnation"]) == (m.node, m.incarnation)
        return Holder(row["name"], row["node"], row["address"], row["incarnation"], row["fence"], mine,
                      row["id"])

    async def release(self, name: str, fence: int) -> bool:
        """Free ``name`` if ``fence`` is still its claim; False when it was already taken over or freed."""
        _check_name(name)
        return await self.db.fetchval(_RELEASE, name, fence) is not None


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, not {name!r}")
