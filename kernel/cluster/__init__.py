"""Cluster mode's database layer: membership leases, the fenced name directory, fenced checkpoints.

PostgreSQL is the cluster's only shared component (API.md section 15, DESIGN.md "Beyond one host"); this
package is everything the nodes keep there, and nothing else: the node integration (``Node(cluster=...)``,
TCP peers, ``"node_down"``) is built on it later. It depends on asyncpg and ``kernel.errors`` only.

* :mod:`~kernel.cluster.schema`: the tables, one idempotent versioned set (:func:`install`).
* :mod:`~kernel.cluster.membership`: :class:`Membership` (join, renew, leave, live, all by the database's
  clock) and :class:`LeaseKeeper` (renews, and calls ``on_lost`` before the lease runs out).
* :mod:`~kernel.cluster.directory`: :class:`Directory` (claim, lookup, release; fences only grow).
* :mod:`~kernel.cluster.store`: :class:`PgCheckpointStore` (a write commits only under the current
  fence) and :class:`PgGroupCommitter`.
* :mod:`~kernel.cluster.backend`: ``PgBackend``, persistence's ``CheckpointBackend`` on these tables (the
  claim's fence is the epoch); the one module that sees :mod:`kernel.persistence`, imported by the node
  layer only (not from here).
"""

from .directory import Directory, Holder
from .membership import LeaseKeeper, Member, Membership
from .schema import SCHEMA_VERSION, install, secret
from .store import Checkpoint, PgCheckpointStore, PgGroupCommitter, Write

__all__ = ["SCHEMA_VERSION", "Checkpoint", "Directory", "Holder", "LeaseKeeper", "Member", "Membership",
           "PgCheckpointStore", "PgGroupCommitter", "Write", "install", "secret"]
