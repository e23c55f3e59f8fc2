"""Cluster mode's checkpoint store: persistence's ``CheckpointBackend`` on PostgreSQL, fenced by the claim.

Promises (the SQLite store's, with the name's claim as the epoch):

* ``Activate(key)`` claims the key's name in ``pyotp_names`` for this node (its name and incarnation, a
  live member) and reads its checkpoint; the :class:`~kernel.persistence.store.Activation`'s epoch is the
  claim's fence. Every activation takes a new fence, also when this node already holds the name (a
  worker that replaces a dead or hung one of the same node must fence it off, as a new SQLite epoch
  does). A name held by another node whose lease is live is refused with
  :class:`~kernel.errors.HeldElsewhere` (who holds it, for routing); this node's own expired lease with
  :class:`~kernel.errors.LeaseExpired`. Either refuses that activation alone, not its batch.
* ``Write(key, epoch, ...)`` commits only while ``epoch`` is the name's current fence (the statement of
  :mod:`kernel.cluster.store`: the name's row is locked ``FOR SHARE``, so a takeover is ordered before or
  after it); otherwise it is refused with :class:`~kernel.errors.StaleEpoch`, and the service stops the
  actor, as with SQLite. An unchanged write (same bytes, same fence as this backend last committed) is
  not rewritten but still fenced, in the same transaction.
* ``apply`` runs its batch in one transaction, all or nothing; a failed one (server down, connection
  lost) raises :class:`~kernel.errors.CheckpointWriteFailed` and the next call connects again.
* Keys are stored as the SQLite store stores them (:func:`~kernel.persistence.codec.key_to_text`).

Why asyncpg on a private event loop: the :class:`~kernel.persistence.store.GroupCommitter` calls its
backend on one writer thread with blocking calls. asyncpg is already the cluster's client (one driver,
one set of error types, the statements of :mod:`kernel.cluster.store`); a loop owned by this object and
run only from the calling thread costs one ``run_until_complete`` per call, beside a network round trip.
A second client (psycopg) would be another dependency for no gain.

This is the one module of :mod:`kernel.cluster` that knows :mod:`kernel.persistence` (its protocol and
records; an ``ignore_imports`` line of the layers contract in pyproject.toml); the node layer wires it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Coroutine, Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from ..errors import CheckpointWriteFailed, HeldElsewhere, KernelError, LeaseExpired, StaleEpoch
from ..persistence.codec import key_from_text, key_to_text
from ..persistence.store import Activate, Activation, LatencyHistogram, Record, Write, _superseded
from .membership import DB_ERRORS
from .schema import _LOCK, install

__all__ = ["PgBackend"]

T = TypeVar("T")

# Columns and a table the SQLite store has and schema.py (version 1) does not: the codec and class a
# state was written with, its digest, and quarantined messages. Added here, idempotently, under the
# schema's advisory lock; they belong in schema.py's next version.
_NEEDS_DDL = """
SELECT to_regclass('pyotp_dead_letters') IS NULL OR (
    SELECT count(*) FROM pg_attribute WHERE attrelid = 'pyotp_checkpoints'::regclass
    AND attname = any(ARRAY['codec', 'class_name', 'digest']) AND NOT attisdropped) < 3
"""
_DDL = """
ALTER TABLE pyotp_checkpoints ADD COLUMN IF NOT EXISTS codec text NOT NULL DEFAULT 'pickle',
    ADD COLUMN IF NOT EXISTS class_name text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS digest bytea;
CREATE TABLE IF NOT EXISTS pyotp_dead_letters (
    id bigserial PRIMARY KEY,
    key text NOT NULL,
    message bytea NOT NULL,
    error text NOT NULL,
    count integer NOT NULL,
    node text NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);
"""

# Claims for activations, many names in one statement: Directory's claim, except that a name this
# (node, incarnation) holds is taken again too, with the next fence. Names are claimed in sorted order, so
# two batches of claims lock their rows in one order (no deadlock between them).
_ACTIVATE = """
WITH me AS (
    SELECT node, incarnation FROM pyotp_members
    WHERE node = $2 AND incarnation = $3 AND lease_expires > now()
), taken AS (
    INSERT INTO pyotp_names AS n (name, node, incarnation, fence)
    SELECT w.name, me.node, me.incarnation, 1 FROM unnest($1::text[]) AS w(name), me ORDER BY w.name
    ON CONFLICT (name) DO UPDATE SET node = excluded.node, incarnation = excluded.incarnation,
        fence = n.fence + 1
    WHERE n.node IS NULL OR (n.node = excluded.node AND n.incarnation = excluded.incarnation)
        OR NOT EXISTS (
            SELECT 1 FROM pyotp_members h
            WHERE h.node = n.node AND h.incarnation = n.incarnation AND h.lease_expires > now())
    RETURNING n.name, n.fence
)
SELECT w.name, t.fence, EXISTS (SELECT 1 FROM me) AS member
FROM unnest($1::text[]) AS w(name) LEFT JOIN taken t ON t.name = w.name
"""
_HOLDERS = """
SELECT n.name, n.node, m.address, n.fence, m.id
FROM pyotp_names n JOIN pyotp_members m ON m.node = n.node AND m.incarnation = n.incarnation
WHERE n.name = any($1::text[]) AND m.lease_expires > now()
"""
_COLUMNS = "key, fence, state, codec, class_name, version, extract(epoch FROM updated)::float8, digest"
_RECORD = f"SELECT {_COLUMNS} FROM pyotp_checkpoints WHERE key = $1"
_RECORDS = f"SELECT {_COLUMNS} FROM pyotp_checkpoints WHERE key = any($1::text[])"
# kernel.cluster.store's fenced batch write, with the SQLite record's columns; keys distinct per call.
_WRITE = """
WITH w AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::text[], $5::text[], $6::integer[],
                         $7::bytea[]) AS w(key, fence, state, codec, class_name, version, digest)
), ok AS (
    SELECT w.* FROM w
    JOIN pyotp_names n ON n.name = w.key AND n.fence = w.fence AND n.node IS NOT NULL
    FOR SHARE OF n
)
INSERT INTO pyotp_checkpoints AS c (key, fence, state, codec, class_name, version, digest, seq)
SELECT key, fence, state, codec, class_name, version, digest, 1 FROM ok
ON CONFLICT (key) DO UPDATE SET fence = excluded.fence, state = excluded.state, codec = excluded.codec,
    class_name = excluded.class_name, version = excluded.version, digest = excluded.digest,
    seq = c.seq + 1, updated = now()
WHERE c.fence <= excluded.fence
RETURNING c.key
"""
# An unchanged write's fence check, locking the names as a write would.
_STILL_HELD = """
SELECT w.key, w.fence FROM unnest($1::text[], $2::bigint[]) AS w(key, fence)
JOIN pyotp_names n ON n.name = w.key AND n.fence = w.fence AND n.node IS NOT NULL
FOR SHARE OF n
"""
_FENCES = "SELECT name, fence FROM pyotp_names WHERE name = any($1::text[])"
_DEAD_LETTER = """INSERT INTO pyotp_dead_letters (key, message, error, count, node)
VALUES ($1, $2, $3, $4, $5) RETURNING id"""

#: An activation claims again when the holder it lost to was gone before it could be read (rare).
_ATTEMPTS = 20


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _rounds(run: list[int], texts: Sequence[str]) -> list[list[int]]:
    """``run`` in rounds that hold each key once, in order: a statement upserts one row once.

    A key's second op (a write under another fence: same-fence repeats were superseded; or another
    activation) goes to the next round, so it lands after the first.
    """
    rounds: list[list[int]] = []
    seen: dict[str, int] = {}
    for i in run:
        n = seen.get(texts[i], 0)
        seen[texts[i]] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(i)
    return rounds


class PgBackend:
    """Checkpoints of node ``node`` (its ``incarnation``: what its join returned) in PostgreSQL at ``dsn``.

    For one thread at a time (the group committer's writer thread): every method blocks. The node must
    have joined the cluster (and keep its lease); it connects at construction and after a failure.
    ``timeout`` bounds the connect and each statement (seconds).
    """

    def __init__(self, dsn: str, node: str, incarnation: datetime | str, *, timeout: float = 10.0) -> None:
        if not isinstance(dsn, str) or not dsn.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"dsn must be a 'postgresql://...' string, not {dsn!r}")
        if not isinstance(node, str) or not node:
            raise ValueError(f"node must be the member's non-empty name, not {node!r}")
        if isinstance(incarnation, str):
            incarnation = datetime.fromisoformat(incarnation)
        if not isinstance(incarnation, datetime) or incarnation.tzinfo is None:
            raise ValueError("incarnation must be the timezone-aware datetime (or its ISO text) that the "
                             f"node's join returned, not {incarnation!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, not {timeout!r}")
        self.dsn = dsn
        self.node = node
        self.incarnation = incarnation
        self.timeout = float(timeout)
        self.transactions = 0
        self.rows_written = 0
        self.unchanged = 0
        self.stale = 0
        self.commit_latency = LatencyHistogram()
        self._last: dict[str, tuple[int, bytes]] = {}  # key text -> (fence, digest) last committed here
        self._loop = asyncio.new_event_loop()
        self._conn: Any = None
        self._installed = False
        try:
            self._run(self._connection())
        except DB_ERRORS as e:
            self._loop.close()
            raise CheckpointWriteFailed(f"cannot connect to the cluster database: {type(e).__name__}: {e}",
                                        0) from e
        except BaseException:
            self._loop.close()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    async def _connection(self) -> Any:
        """The open connection, connecting (and installing the tables once) when there is none."""
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        self._conn = None
        conn = await asyncpg.connect(self.dsn, timeout=self.timeout, command_timeout=self.timeout)
        try:
            if not self._installed:
                await install(conn)
                if await conn.fetchval(_NEEDS_DDL):
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                        await conn.execute(_DDL)
                self._installed = True
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        return conn

    def _broken(self) -> None:
        """After a failure the connection may be mid-statement: drop it, the next call connects again."""
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    # ------------------------------------------------------------------------------------- the protocol

    def load(self, key: Any) -> Record | None:
        """The last committed checkpoint of ``key``, or None."""
        try:
            row = self._run(self._fetchrow(_RECORD, key_to_text(key)))
        except DB_ERRORS as e:
            self._broken()
            raise CheckpointWriteFailed(f"{type(e).__name__}: {e}", 0) from e
        return None if row is None else Record(key_from_text(row[0]), *row[1:])

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        return await (await self._connection()).fetchrow(sql, *args)

    def apply(self, ops: Sequence[Write | Activate], texts: Sequence[str] | None = None,
              ) -> list[bool | Activation | KernelError]:
        """Apply writes and activations in order, in one transaction (none if nothing is to be done).

        Per op: True (written), False (unchanged, or superseded by a later write of the key under the
        same fence), :class:`StaleEpoch` (refused), an :class:`Activation`, or the
        :class:`HeldElsewhere` / :class:`LeaseExpired` that refused an activation.

        Raises:
            CheckpointWriteFailed: the transaction failed; nothing of the batch was written.
        """
        texts = [key_to_text(op.key) for op in ops] if texts is None else texts
        results: list[bool | Activation | KernelError] = [False] * len(ops)
        superseded = _superseded(ops, texts) if len(set(texts)) < len(texts) else {}
        todo: list[int] = []
        unchanged: set[int] = set()
        digests: dict[int, bytes] = {}
        pending: dict[str, tuple[int, bytes]] = {}
        for i, op in enumerate(ops):
            if i in superseded:
                continue
            todo.append(i)
            if isinstance(op, Activate):
                pending[texts[i]] = (-1, b"")
                continue
            if not isinstance(op.data, bytes):
                raise TypeError(f"data of {op.key!r} must be bytes, got {type(op.data).__name__}")
            digests[i] = _digest(op.data)
            if pending.get(texts[i], self._last.get(texts[i])) == (op.epoch, digests[i]):
                unchanged.add(i)
            pending[texts[i]] = (op.epoch, digests[i])
        if todo:
            began = time.perf_counter()
            try:
                self._run(self._transaction(ops, texts, todo, unchanged, digests, results))
            except DB_ERRORS as e:
                self._broken()
                raise CheckpointWriteFailed(f"{type(e).__name__}: {e}", len(todo)) from e
            if len(unchanged) < len(todo):  # not only fence checks
                self.transactions += 1
                self.commit_latency.observe(time.perf_counter() - began)
            for i in todo:  # remember only what is now committed, in order
                op = ops[i]
                if isinstance(op, Activate):
                    self._last.pop(texts[i], None)
                elif results[i] is True or (i in unchanged and results[i] is False):
                    self._last[texts[i]] = (op.epoch, digests[i])
                else:
                    self._last.pop(texts[i], None)
        for i, j in superseded.items():
            results[i] = results[j]
        return results

    async def _transaction(self, ops: Sequence[Write | Activate], texts: Sequence[str], todo: list[int],
                           unchanged: set[int], digests: dict[int, bytes],
                           results: list[bool | Activation | KernelError]) -> None:
        conn = await self._connection()
        async with conn.transaction():
            # Consecutive writes, or consecutive activations, go in as few statements as their keys allow.
            run: list[int] = []
            for i in [*todo, -1]:
                op = ops[i] if i >= 0 else None
                if run and type(op) is not type(ops[run[0]]):
                    if isinstance(ops[run[0]], Write):
                        await self._write_run(conn, ops, texts, run, unchanged, digests, results)
                    else:
                        await self._activate_run(conn, ops, texts, run, results)
                    run = []
                if op is not None:
                    run.append(i)

    async def _activate_run(self, conn: Any, ops: Sequence[Write | Activate], texts: Sequence[str],
                            run: list[int], results: list[bool | Activation | KernelError]) -> None:
        for batch in _rounds(run, texts):
            pending = batch
            for _ in range(_ATTEMPTS):
                names = [texts[i] for i in pending]
                claims = {row["name"]: row for row in
                          await conn.fetch(_ACTIVATE, names, self.node, self.incarnation)}
                taken = [i for i in pending if claims[texts[i]]["fence"] is not None]
                if taken:
                    records = {row[0]: Record(key_from_text(row[0]), *row[1:]) for row in
                               await conn.fetch(_RECORDS, [texts[i] for i in taken])}
                    for i in taken:
                        results[i] = Activation(claims[texts[i]]["fence"], records.get(texts[i]))
                refused = [i for i in pending if claims[texts[i]]["fence"] is None]
                if not refused:
                    break
                holders = {row["name"]: row for row in
                           await conn.fetch(_HOLDERS, [texts[i] for i in refused])}
                pending = []
                for i in refused:
                    holder = holders.get(texts[i])
                    if holder is not None:
                        results[i] = HeldElsewhere(ops[i].key, holder["node"], holder["address"],
                                                   holder["fence"], holder["id"])
                    elif not claims[texts[i]]["member"]:
                        results[i] = LeaseExpired(self.node, f"found when activating {ops[i].key!r}")
                    else:  # its holder's lease ran out between the claim and the read: claim again
                        pending.append(i)
                if not pending:
                    break
            else:
                raise RuntimeError(f"activation of {[ops[i].key for i in pending]!r} lost {_ATTEMPTS} "
                                   "times to holders that were gone at once")

    async def _write_run(self, conn: Any, ops: Sequence[Write | Activate], texts: Sequence[str],
                         run: list[int], unchanged: set[int], digests: dict[int, bytes],
                         results: list[bool | Activation | KernelError]) -> None:
        checks = [i for i in run if i in unchanged]
        refused: list[int] = []
        writes = {i: op for i in run if isinstance(op := ops[i], Write)}
        for batch in _rounds([i for i in run if i not in unchanged], texts):
            these = [writes[i] for i in batch]
            rows = await conn.fetch(_WRITE, [texts[i] for i in batch], [w.epoch for w in these],
                                    [w.data for w in these], [w.codec for w in these],
                                    [w.class_name for w in these], [w.version for w in these],
                                    [digests[i] for i in batch])
            written = {row["key"] for row in rows}
            for i in batch:
                if texts[i] in written:
                    results[i] = True
                    self.rows_written += 1
                else:
                    refused.append(i)
        if checks:
            self.unchanged += len(checks)
            held = {(row["key"], row["fence"]) for row in await conn.fetch(
                _STILL_HELD, [texts[i] for i in checks], [writes[i].epoch for i in checks])}
            refused += [i for i in checks if (texts[i], writes[i].epoch) not in held]
        if refused:
            current = dict(await conn.fetch(_FENCES, [texts[i] for i in refused]))
            for i in refused:
                results[i] = StaleEpoch(writes[i].key, writes[i].epoch, current.get(texts[i], 0))
                self.stale += 1

    def add_dead_letter(self, key: Any, message: bytes, error: str, count: int = 1) -> int:
        """Quarantine a poison message for ``key`` in ``pyotp_dead_letters``; returns its id."""
        try:
            found: int = self._run(self._fetchval(_DEAD_LETTER, key_to_text(key), message, error, count,
                                                  self.node))
        except DB_ERRORS as e:
            self._broken()
            raise CheckpointWriteFailed(f"{type(e).__name__}: {e}", 1) from e
        return found

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        return await (await self._connection()).fetchval(sql, *args)

    def close(self) -> None:
        """Close the connection and the private event loop. Idempotent."""
        if self._loop.is_closed():
            return
        try:
            if self._conn is not None and not self._conn.is_closed():
                self._run(asyncio.wait_for(self._conn.close(), self.timeout))
        except DB_ERRORS:
            self._conn.terminate()
        finally:
            self._conn = None
            self._loop.close()
