"""The cluster's checkpoint store in PostgreSQL: a write commits only under its name's current fence.

Promises:

* A write of ``key`` under ``fence`` commits only if ``fence`` is the current claim of the name ``key``
  in ``pyotp_names`` (and the name is held); otherwise it is refused with :class:`~kernel.errors.Fenced`
  and writes nothing. The write locks the name's row (``FOR SHARE``) for its transaction, so a takeover
  (which updates that row) is ordered either after the write, and then the new holder reads it, or
  before it, and then the write re-checks the new fence and is refused: a paused or zombie holder can
  never commit after it was taken over.
* :meth:`PgCheckpointStore.write_batch` writes many checkpoints in one transaction (all or nothing, one
  commit for the whole batch), each refused or committed on its own fence, as the SQLite store's
  ``write_batch`` does; :class:`PgGroupCommitter` batches concurrent writers into such transactions.
* A transaction that fails (connection lost, server down) raises
  :class:`~kernel.errors.CheckpointWriteFailed` naming the cause; nothing of it was written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, NamedTuple

from ..errors import CheckpointWriteFailed, Fenced
from .membership import DB_ERRORS

__all__ = ["Checkpoint", "PgCheckpointStore", "PgGroupCommitter", "Write"]

# One statement for a batch of distinct keys: the names whose claim matches are locked and re-checked
# (READ COMMITTED re-evaluates a locked row's condition on its latest version); only their writes reach
# the INSERT. The checkpoint's own fence never goes down, as a second line of defence.
_WRITE = """
WITH w AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::integer[])
        AS w(key, fence, state, version)
), ok AS (
    SELECT w.key, w.fence, w.state, w.version FROM w
    JOIN pyotp_names n ON n.name = w.key AND n.fence = w.fence AND n.node IS NOT NULL
    FOR SHARE OF n
)
INSERT INTO pyotp_checkpoints AS c (key, fence, state, version, seq)
SELECT key, fence, state, version, 1 FROM ok
ON CONFLICT (key) DO UPDATE SET fence = excluded.fence, state = excluded.state, version = excluded.version,
    seq = c.seq + 1, updated = now()
WHERE c.fence <= excluded.fence
RETURNING c.key, c.seq
"""
_WRITE_ONE = """
INSERT INTO pyotp_checkpoints AS c (key, fence, state, version, seq)
SELECT n.name, n.fence, $3, $4, 1 FROM pyotp_names n
WHERE n.name = $1 AND n.fence = $2 AND n.node IS NOT NULL
FOR SHARE OF n
ON CONFLICT (key) DO UPDATE SET fence = excluded.fence, state = excluded.state, version = excluded.version,
    seq = c.seq + 1, updated = now()
WHERE c.fence <= excluded.fence
RETURNING c.seq
"""
_CURRENT = """SELECT name, CASE WHEN node IS NULL THEN NULL ELSE fence END FROM pyotp_names
WHERE name = any($1)"""
_READ = "SELECT key, fence, state, version, seq FROM pyotp_checkpoints WHERE key = $1"


class Write(NamedTuple):
    """One checkpoint to write: ``state`` of ``key`` by the holder of claim ``fence``."""

    key: str
    fence: int
    state: bytes
    version: int = 0


class Checkpoint(NamedTuple):
    """A committed checkpoint: the fence it was written under and its write count ``seq`` (1, 2, ...)."""

    key: str
    fence: int
    state: bytes
    version: int
    seq: int


def _check(item: Write) -> None:
    if not isinstance(item.key, str) or not item.key:
        raise ValueError(f"key must be a non-empty string, not {item.key!r}")
    if isinstance(item.fence, bool) or not isinstance(item.fence, int) or item.fence < 1:
        raise ValueError(f"fence of {item.key!r} must be an int >= 1 (from a claim), not {item.fence!r}")
    if not isinstance(item.state, bytes):
        raise TypeError(f"state of {item.key!r} must be bytes, got {type(item.state).__name__}")


class PgCheckpointStore:
    """Fenced checkpoints in ``pyotp_checkpoints``; ``db`` is an asyncpg connection or pool."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.transactions = 0
        self.rows_written = 0
        self.fenced = 0

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        if hasattr(self.db, "acquire"):
            async with self.db.acquire() as conn:
                yield conn
        else:
            yield self.db

    async def write(self, key: str, fence: int, state: bytes, version: int = 0) -> int:
        """Commit one checkpoint; returns its ``seq``.

        Raises:
            Fenced: ``fence`` is not the current claim of ``key``.
            CheckpointWriteFailed: the database failed; nothing was written.
        """
        _check(Write(key, fence, state, version))
        try:
            seq: int | None = await self.db.fetchval(_WRITE_ONE, key, fence, state, version)
            self.transactions += 1
            if seq is None:
                current = await self.db.fetchrow(_CURRENT, [key])
        except DB_ERRORS as e:
            raise CheckpointWriteFailed(f"{type(e).__name__}: {e}") from e
        if seq is None:
            self.fenced += 1
            raise Fenced(key, fence, None if current is None else current[1])
        self.rows_written += 1
        return seq

    async def write_batch(self, items: Sequence[Write]) -> list[int | Fenced]:
        """Write ``items`` in one transaction, in order; per item its new ``seq`` or the :class:`Fenced`.

        Raises:
            CheckpointWriteFailed: the transaction failed; nothing of the batch was written.
        """
        for item in items:
            _check(item)
        results: list[int | Fenced] = []
        if not items:
            return results
        # Invariant: a round holds each key at most once (one row can be upserted once per statement);
        # a key written twice in the batch goes to the next round, so the later write wins, in order.
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            n = seen.get(item.key, 0)
            seen[item.key] = n + 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(i)
        out: list[int | Fenced | None] = [None] * len(items)
        try:
            async with self._connection() as conn, conn.transaction():
                for batch in rounds:
                    these = [items[i] for i in batch]
                    rows = await conn.fetch(_WRITE, [w.key for w in these], [w.fence for w in these],
                                            [w.state for w in these], [w.version for w in these])
                    written = {row["key"]: row["seq"] for row in rows}
                    refused = [w.key for w in these if w.key not in written]
                    current = dict(await conn.fetch(_CURRENT, refused)) if refused else {}
                    for i, w in zip(batch, these, strict=True):
                        out[i] = written[w.key] if w.key in written else Fenced(w.key, w.fence,
                                                                                current.get(w.key))
        except DB_ERRORS as e:
            raise CheckpointWriteFailed(f"{type(e).__name__}: {e}", len(items)) from e
        self.transactions += 1
        for result in out:
            assert result is not None
            if isinstance(result, Fenced):
                self.fenced += 1
            else:
                self.rows_written += 1
            results.append(result)
        return results

    async def read(self, key: str) -> Checkpoint | None:
        """The last committed checkpoint of ``key`` (None if it has none)."""
        row = await self.db.fetchrow(_READ, key)
        return None if row is None else Checkpoint(*row)


class PgGroupCommitter:
    """Group commit: one transaction serves every write submitted while the previous one ran.

    The first write goes to the database at once; what is submitted meanwhile waits for that transaction
    and then goes, in submission order, in the next (at most ``max_batch`` writes each), as the SQLite
    :class:`~kernel.persistence.store.GroupCommitter` does. A failed transaction fails each of its writes and
    every queued write of the same key and fence. Use it from one event loop.
    """

    def __init__(self, store: PgCheckpointStore, max_batch: int = 2000) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, not {max_batch!r}")
        self.store = store
        self.max_batch = max_batch
        self._queue: list[tuple[Write, asyncio.Future[int]]] = []
        self._inflight: asyncio.Task[None] | None = None
        self.batches = 0

    async def commit(self, key: str, fence: int, state: bytes, version: int = 0) -> int:
        """Commit a checkpoint in the next batch; returns its ``seq`` once the batch committed.

        Raises:
            Fenced: ``fence`` is not the current claim of ``key``.
            CheckpointWriteFailed: the batch's transaction failed.
        """
        item = Write(key, fence, state, version)
        _check(item)
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((item, waiter))
        self._kick()
        return await waiter

    def _kick(self) -> None:
        if self._inflight is None and self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            self._inflight = asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[Write, asyncio.Future[int]]]) -> None:
        self.batches += 1
        try:
            results = await self.store.write_batch([item for item, _ in batch])
        except BaseException as e:  # handed to each waiter (each its own copy: tracebacks are per raise)
            cause, count = (e.cause, e.count) if isinstance(e, CheckpointWriteFailed) else \
                (str(e), len(batch))

            def failure() -> CheckpointWriteFailed:
                return CheckpointWriteFailed(cause, count)

            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(failure())
            # A later write of the same claim was built on the state that just failed to commit: letting
            # it through would put the refused change in the database anyway. Fail it too (as the SQLite
            # committer does); writes of other keys, or under another fence, are tried afresh.
            failed = {(item.key, item.fence) for item, _ in batch}
            kept = []
            for item, waiter in self._queue:
                if (item.key, item.fence) in failed:
                    if not waiter.done():
                        waiter.set_exception(failure())
                else:
                    kept.append((item, waiter))
            self._queue[:] = kept
            if not isinstance(e, Exception):
                raise
        else:
            for (_, waiter), result in zip(batch, results, strict=True):
                if not waiter.done():
                    if isinstance(result, Fenced):
                        waiter.set_exception(result)
                    else:
                        waiter.set_result(result)
        finally:
            self._inflight = None
            self._kick()

    async def flush(self) -> None:
        """Wait until everything submitted so far has committed or failed."""
        while self._inflight is not None:
            await asyncio.shield(self._inflight)
