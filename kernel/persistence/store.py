"""The SQLite checkpoint store: durable actor states, fenced by epoch, group-committed.

Promises:

* One SQLite file in WAL mode: a write reported as done survives SIGKILL of any process. With
  ``synchronous="FULL"`` (this class's default) it also survives power loss, if the disk honours fsync;
  ``Node`` opens its store with ``"NORMAL"`` unless told ``Node(synchronous="FULL")``, and then a power cut
  or a kernel panic may lose the last few commits (never corrupt the file). Every write of a
  :class:`CheckpointStore` runs in a short ``BEGIN IMMEDIATE`` transaction, so writers from several
  processes queue instead of failing with ``SQLITE_BUSY_SNAPSHOT``: first on :class:`WriterTurn`, an
  advisory ``flock`` of ``<file>-writer`` (polled every 50 us), then on SQLite's lock, for at most
  ``busy_timeout``. The one write outside a store, :func:`drop_dead_letter` (a rare one-row delete by the
  file's owner), waits on SQLite's lock alone.
* A batch is all-or-nothing. A failed transaction (``SQLITE_FULL``, read-only or locked file) raises
  :class:`~kernel.errors.CheckpointWriteFailed` naming the SQLite error, and leaves every row committed
  before it intact.
* Fencing: :meth:`CheckpointStore.activate` takes a new epoch for a key, greater than any before, and
  persists it; a write carrying an older epoch (a zombie incarnation) is refused with
  :class:`~kernel.errors.StaleEpoch`, so it can never overwrite newer state.
* A write whose bytes equal what this store last wrote for the key at the same epoch writes nothing (and
  costs no write transaction), but it is still fenced: one read of the key's epoch, so a zombie whose
  state happens to be unchanged learns it was replaced instead of being told its write is durable.

Layout: the schema is created and migrated with sqlite-utils; the hot path uses the ``sqlite3`` module
directly, because it needs ``BEGIN IMMEDIATE`` and a fenced ``INSERT ... SELECT ... WHERE ... ON CONFLICT``
that sqlite-utils cannot express (its ``atomic()`` issues a deferred BEGIN), and because it is faster:
``tools/bench/checkpoint_store.py`` measured 100-row upsert batches (synchronous=FULL) at 78k-109k rows/s
with raw ``executemany``, 56k-97k rows/s through this store's fenced ``write_batch``, and 39k-46k rows/s
through sqlite-utils' ``Table.upsert_all`` (two runs on a 2-CPU VM).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import fcntl
import functools
import hashlib
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import sqlite_utils

from ..errors import CheckpointCorrupt, CheckpointWriteFailed, KernelError, StaleEpoch
from .codec import decode, key_from_text, key_to_text
from .statefile import OWNER_LOCK, check_private

__all__ = [
    "COMMIT_BUCKETS", "SCHEMA_VERSION", "STATE_FILES", "WRITER_LOCK", "Activate", "Activation",
    "CheckpointBackend", "CheckpointStore", "CommitterStats", "DeadLetter", "Entry", "GroupCommitter",
    "LatencyHistogram", "Record", "Write", "WriterTurn", "dead_letters", "drop_dead_letter", "entries",
    "keys", "load", "record", "remove_state_file",
]

SCHEMA_VERSION = 2
_SCHEMA: dict[str, tuple[dict[str, Any], str]] = {
    "checkpoints": ({"key": str, "epoch": int, "data": bytes, "codec": str, "class_name": str,
                     "version": int, "updated": float, "digest": bytes}, "key"),
    "epochs": ({"key": str, "epoch": int}, "key"),
    "dead_letters": ({"id": int, "key": str, "message": bytes, "error": str, "count": int,
                      "created": float}, "id"),
}
_DEFAULTS: dict[str, Any] = {"epoch": 0, "codec": "pickle", "class_name": "", "version": 0, "updated": 0.0,
                             "count": 1, "created": 0.0}
# Fenced upsert: written only if the epoch is not older than the key's activation epoch (the WHERE of the
# SELECT) nor older than the stored checkpoint's (the WHERE of the UPDATE); rowcount 0 means refused.
# Plain ``?`` placeholders, each bound once (the derived table names them): Python 3.12 deprecates binding
# a tuple to numbered ``?NNN`` ones, and 3.14 refuses it.
_UPSERT = """
INSERT INTO checkpoints(key, epoch, data, codec, class_name, version, updated, digest)
SELECT * FROM (SELECT ? AS key, ? AS epoch, ? AS data, ? AS codec, ? AS class_name, ? AS version,
                      ? AS updated, ? AS digest) AS w
WHERE w.epoch >= coalesce((SELECT epoch FROM epochs WHERE epochs.key = w.key), 0)
ON CONFLICT(key) DO UPDATE SET epoch = excluded.epoch, data = excluded.data, codec = excluded.codec,
    class_name = excluded.class_name, version = excluded.version, updated = excluded.updated,
    digest = excluded.digest
WHERE excluded.epoch >= checkpoints.epoch
"""
_CURRENT_EPOCH = """SELECT max(coalesce((SELECT epoch FROM epochs WHERE key = :key), 0),
                               coalesce((SELECT epoch FROM checkpoints WHERE key = :key), 0))"""
_RECORD = "SELECT key, epoch, data, codec, class_name, version, updated, digest FROM checkpoints"


class Record(NamedTuple):
    """One stored checkpoint; ``state()`` decodes it with the codec that wrote it."""

    key: Any
    epoch: int
    data: bytes
    codec: str
    class_name: str
    version: int
    updated: float
    digest: bytes | None = None

    def state(self) -> Any:
        """The decoded state; a blob that no longer matches its digest raises ``CheckpointCorrupt``.

        The digest catches corruption that still decodes (a flipped byte inside a string), which would
        otherwise restore silently as a different state. Rows written before digests existed have none.
        """
        if self.digest is not None and _digest(self.data) != self.digest:
            raise CheckpointCorrupt(self.key)
        return decode(self.data, self.codec)


class Activation(NamedTuple):
    """A new incarnation of a key: its fencing epoch, and its last checkpoint (None when it has none)."""

    epoch: int
    record: Record | None


class Write(NamedTuple):
    """One checkpoint to write: the encoded state of ``key`` produced by incarnation ``epoch``."""

    key: Any
    epoch: int
    data: bytes
    codec: str = "pickle"
    class_name: str = ""
    version: int = 0


class Activate(NamedTuple):
    """Take a new epoch for ``key`` inside a batch (see :meth:`CheckpointStore.apply`)."""

    key: Any


class Entry(NamedTuple):
    """A checkpoint without its bytes, for listings."""

    key: Any
    epoch: int
    class_name: str
    codec: str
    version: int
    size: int
    updated: float


@dataclass(frozen=True)
class DeadLetter:
    """A quarantined poison message: the pickled message, the error it caused, how often."""

    id: int
    key: Any
    message: bytes
    error: str
    count: int
    created: float


def _record(row: tuple[Any, ...]) -> Record:
    return Record(key_from_text(row[0]), *row[1:])


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _superseded(ops: Sequence[Write | Activate], texts: Sequence[str]) -> dict[int, int]:
    """Writes followed by a write of the same key and epoch, with no activation of the key between.

    Only the later one is written; the earlier one shares its outcome. Maps earlier index -> later.
    """
    superseded: dict[int, int] = {}
    later: dict[str, dict[int, int]] = {}
    for i in reversed(range(len(ops))):
        op = ops[i]
        if isinstance(op, Activate):
            later.pop(texts[i], None)
        elif op.epoch in (seen := later.setdefault(texts[i], {})):
            superseded[i] = seen[op.epoch]
        else:
            seen[op.epoch] = i
    return superseded


def _failure(e: sqlite3.Error, count: int) -> CheckpointWriteFailed:
    name = getattr(e, "sqlite_errorname", type(e).__name__)
    return CheckpointWriteFailed(f"{name}: {e}", count)


#: Suffix of the advisory lock file beside a state file (with SQLite's own ``-wal`` and ``-shm``).
WRITER_LOCK = "-writer"
#: A state file and the files that live beside it.
STATE_FILES = ("", "-wal", "-shm", WRITER_LOCK, OWNER_LOCK)


def remove_state_file(path: str | os.PathLike[str]) -> None:
    """Delete a state file and its companions (a temporary one, once nothing has it open)."""
    for suffix in STATE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.fspath(path) + suffix)


#: WriterTurn's poll interval while the holder looks like a sub-millisecond transaction, how long it
#: spins at that rate, and the interval after that (a slow or hung holder).
_TURN_POLL = 0.00005
_TURN_SPIN = 0.01
_TURN_POLL_SLOW = 0.002


class WriterTurn:
    """The stores writing one state file take turns on a ``flock`` of ``<file>-writer`` before SQLite's lock.

    Two workers commit to one file. Waiting on SQLite's own lock means its busy handler, which sleeps 1,
    2, 5, 10... ms between tries, while a transaction holds the lock for well under a millisecond: the
    waiter oversleeps it several times over. This lock is polled every 50 us instead. Past ``timeout``
    the writer goes on without it and SQLite's lock decides, as before; where the lock file cannot be
    made (a read-only directory), SQLite's lock alone decides, as it always may.
    """

    def __init__(self, path: str, timeout: float) -> None:
        self._timeout = timeout
        try:
            self._fd = os.open(path + WRITER_LOCK,
                               os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            self._fd = -1

    def acquire(self) -> bool:
        """Wait for the turn; False if there is no lock file or ``timeout`` passed (then do not release)."""
        if self._fd < 0:
            return False
        start = time.monotonic()
        deadline = start + self._timeout
        pause = _TURN_POLL
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                now = time.monotonic()
                if now > deadline:
                    return False
                if now - start > _TURN_SPIN:
                    # Not a sub-millisecond transaction: the holder is slow or hung (until the node's
                    # heartbeat kills it), so stop spinning at 20,000 polls a second.
                    pause = _TURN_POLL_SLOW
                time.sleep(pause)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class CheckpointStore:
    """One connection to a state file, for one thread at a time (a worker's writer thread).

    Several stores, in one process or many, may share a file: writers serialize on SQLite's write lock,
    waiting up to ``busy_timeout`` seconds. Open it in the process that uses it, never across ``fork()``.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0,
                 synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.path = os.fspath(path)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves; Python's implicit BEGIN is deferred.
        self._conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None,
                                     check_same_thread=False)
        self._turn = WriterTurn(self.path, busy_timeout)
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._migrate()
            self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        except BaseException:  # a file we cannot open or migrate: leave no connection to the collector
            self.close()
            raise
        self._last: dict[str, tuple[int, bytes]] = {}  # key text -> (epoch, digest) last committed here
        self.transactions = 0
        #: Seconds per committed transaction (the lock wait included), for ``Node(metrics_port=)``.
        self.commit_latency = LatencyHistogram()
        self.rows_written = 0
        self.unchanged = 0
        self.stale = 0

    def _migrate(self) -> None:
        """Create or upgrade the schema under the write lock, so concurrent openers do it once."""
        db = sqlite_utils.Database(self._conn, execute_plugins=False)
        db.enable_wal()
        if self._conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        with self._transaction():
            if self._conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return  # another process migrated while we waited for the lock
            for name, (columns, pk) in _SCHEMA.items():
                table = db.table(name)
                if not table.exists():
                    table.create(columns, pk=pk)
                for column, kind in columns.items():
                    if column not in table.columns_dict:  # older rows get the neutral value
                        table.add_column(column, kind, not_null_default=_DEFAULTS.get(column))
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        turn = self._turn.acquire()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # SQLITE_FULL on COMMIT has already rolled back
                    self._conn.execute("ROLLBACK")
                raise
        finally:
            if turn:
                self._turn.release()

    @property
    def connection(self) -> sqlite3.Connection:
        """The raw connection, for diagnostics and fault injection (``PRAGMA max_page_count``)."""
        return self._conn

    def load(self, key: Any) -> Record | None:
        """The last committed checkpoint of ``key``, or None."""
        row = self._conn.execute(f"{_RECORD} WHERE key = ?", (key_to_text(key),)).fetchone()
        return None if row is None else _record(row)

    def activate(self, key: Any) -> Activation:
        """Start a new incarnation of ``key``: a new persisted epoch, and the checkpoint to restore."""
        result = self.apply([Activate(key)])[0]
        assert isinstance(result, Activation)
        return result

    def write_batch(self, items: Sequence[Write]) -> list[bool | StaleEpoch]:
        """Write ``items`` in one transaction, all or nothing.

        Returns, per item: True (written), False (unchanged, or superseded by a later item of the same
        key and epoch: nothing to write), or the :class:`StaleEpoch` that refused it.

        Raises:
            CheckpointWriteFailed: the transaction failed; nothing of the batch was written.
        """
        results = self.apply(items)
        return [r for r in results if not isinstance(r, Activation)]

    def apply(self, ops: Sequence[Write | Activate], texts: Sequence[str] | None = None,
              ) -> list[bool | StaleEpoch | Activation]:
        """Apply writes and activations in order, in one transaction (none if nothing changes).

        ``texts`` may give the keys' stored text forms, already computed by the caller.
        """
        texts = [key_to_text(op.key) for op in ops] if texts is None else texts
        results: list[bool | StaleEpoch | Activation] = [False] * len(ops)
        superseded = _superseded(ops, texts) if len(set(texts)) < len(texts) else {}
        pending: dict[str, tuple[int, bytes]] = {}
        digests: dict[int, bytes] = {}
        todo: list[int] = []
        unchanged: list[int] = []
        for i, op in enumerate(ops):
            if i in superseded:
                continue
            if isinstance(op, Activate):
                todo.append(i)
                continue
            if not isinstance(op.data, bytes):
                raise TypeError(f"data of {op.key!r} must be bytes, got {type(op.data).__name__}")
            digest = _digest(op.data)
            if pending.get(texts[i], self._last.get(texts[i])) == (op.epoch, digest):
                self.unchanged += 1
                unchanged.append(i)
            else:
                pending[texts[i]] = (op.epoch, digest)
                digests[i] = digest
                todo.append(i)
        if todo:
            began = time.perf_counter()
            try:
                with self._transaction():
                    self._run(ops, texts, todo, results)
            except sqlite3.Error as e:
                raise _failure(e, len(todo)) from e
            self.transactions += 1
            self.commit_latency.observe(time.perf_counter() - began)
            for i in todo:  # remember only what is now committed, in order
                op = ops[i]
                if isinstance(op, Activate):
                    self._last.pop(texts[i], None)
                elif results[i] is True:
                    self._last[texts[i]] = (op.epoch, digests[i])
        if unchanged:
            try:
                self._fence_unchanged(ops, texts, unchanged, results)
            except sqlite3.Error as e:
                raise _failure(e, len(unchanged)) from e
        for i, j in superseded.items():
            results[i] = results[j]
        return results

    def _fence_unchanged(self, ops: Sequence[Write | Activate], texts: Sequence[str], unchanged: list[int],
                         results: list[bool | StaleEpoch | Activation]) -> None:
        """An unchanged write is refused like a real one if its key was activated again meanwhile."""
        for i in unchanged:
            op = ops[i]
            assert isinstance(op, Write)
            current = self._conn.execute(_CURRENT_EPOCH, {"key": texts[i]}).fetchone()[0]
            if op.epoch < current:
                results[i] = StaleEpoch(op.key, op.epoch, current)
                self._last.pop(texts[i], None)
                self.stale += 1

    def _run(self, ops: Sequence[Write | Activate], texts: Sequence[str], todo: list[int],
             results: list[bool | StaleEpoch | Activation]) -> None:
        now = time.time()
        run: list[int] = []  # consecutive writes, sent with one executemany
        for i in [*todo, -1]:
            op = ops[i] if i >= 0 else None
            if isinstance(op, Write):
                run.append(i)
                continue
            if run:
                self._write_run(ops, texts, run, results, now)
                run = []
            if isinstance(op, Activate):
                text = texts[i]
                epoch = self._conn.execute(_CURRENT_EPOCH, {"key": text}).fetchone()[0] + 1
                self._conn.execute("INSERT INTO epochs(key, epoch) VALUES (?, ?) ON CONFLICT(key) "
                                   "DO UPDATE SET epoch = excluded.epoch", (text, epoch))
                row = self._conn.execute(f"{_RECORD} WHERE key = ?", (text,)).fetchone()
                results[i] = Activation(epoch, None if row is None else _record(row))

    def _write_run(self, ops: Sequence[Write | Activate], texts: Sequence[str], run: list[int],
                   results: list[bool | StaleEpoch | Activation], now: float) -> None:
        writes = [(i, ops[i]) for i in run]
        rows = [(texts[i], w.epoch, w.data, w.codec, w.class_name, w.version, now, _digest(w.data))
                for i, w in writes if isinstance(w, Write)]
        if len(rows) > 1:  # fast path: no write refused (zombies are rare); else redo row by row
            self._conn.execute("SAVEPOINT run")
            if self._conn.executemany(_UPSERT, rows).rowcount == len(rows):
                self._conn.execute("RELEASE run")
                for i in run:
                    results[i] = True
                self.rows_written += len(rows)
                return
            self._conn.execute("ROLLBACK TO run")
            self._conn.execute("RELEASE run")
        for (i, w), row in zip(writes, rows, strict=True):
            if self._conn.execute(_UPSERT, row).rowcount == 1:
                results[i] = True
                self.rows_written += 1
            else:
                current = self._conn.execute(_CURRENT_EPOCH, {"key": row[0]}).fetchone()[0]
                results[i] = StaleEpoch(w.key, row[1], current)
                self.stale += 1

    def forget(self, key: Any) -> None:
        """Drop what this store remembers of ``key`` (call it when the actor passivates: saves memory)."""
        self._last.pop(key_to_text(key), None)

    def add_dead_letter(self, key: Any, message: bytes, error: str, count: int = 1) -> int:
        """Quarantine a poison message for ``key``; returns its id."""
        try:
            with self._transaction():
                cur = self._conn.execute(
                    "INSERT INTO dead_letters(key, message, error, count, created) VALUES (?, ?, ?, ?, ?)",
                    (key_to_text(key), message, error, count, time.time()))
        except sqlite3.Error as e:
            raise _failure(e, 1) from e
        assert cur.lastrowid is not None
        return cur.lastrowid

    def close(self) -> None:
        self._conn.close()
        self._turn.close()


#: Upper bounds (seconds) of the commit-latency buckets: group commits take ~0.1 ms to tens of ms.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LatencyHistogram:
    """Counts per bucket (not cumulative; the last is +Inf) and the sum: one add per commit, read when
    scraped. Plain ints, written by one thread; a reader may see one commit late, never a torn value."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(COMMIT_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(COMMIT_BUCKETS, seconds)] += 1
        self.total += seconds


@dataclass(frozen=True)
class CommitterStats:
    """A snapshot of a :class:`GroupCommitter`'s counters, for the observer."""

    commits: int  # transactions committed
    rows_written: int
    unchanged: int  # writes skipped because the bytes had not changed
    stale: int  # writes refused by fencing
    failures: int  # batches whose transaction failed
    batches: int
    last_batch_size: int
    max_batch_size: int
    pending: int  # submitted, not yet in a transaction


class CheckpointBackend(Protocol):
    """What :class:`GroupCommitter` needs of a checkpoint store, called on its writer thread (blocking).

    Two implementations: :class:`CheckpointStore` (one SQLite file) and, in cluster mode,
    ``kernel.cluster.backend.PgBackend`` (PostgreSQL). ``apply`` runs a batch of fenced writes and
    activations in one transaction, all or nothing (a failed transaction raises
    :class:`CheckpointWriteFailed`); per op it returns True/False for a write (written/unchanged), an
    :class:`Activation`, or a :class:`~kernel.errors.KernelError` that refuses that op alone:
    :class:`StaleEpoch` for a write of a replaced incarnation, or the backend's reason not to activate a
    key (PostgreSQL: ``HeldElsewhere``, ``LeaseExpired``). The counters feed ``statistics`` and metrics.
    """

    transactions: int
    rows_written: int
    unchanged: int
    stale: int
    commit_latency: LatencyHistogram

    def load(self, key: Any) -> Record | None: ...
    def apply(self, ops: Sequence[Write | Activate], texts: Sequence[str] | None = None,
              ) -> Sequence[bool | Activation | KernelError]: ...
    def add_dead_letter(self, key: Any, message: bytes, error: str, count: int = 1) -> int: ...
    def close(self) -> None: ...


class GroupCommitter:
    """Group commit for one worker: one transaction, one fsync, serves every write submitted meanwhile.

    The first write goes to the writer thread at once; everything submitted while that transaction runs
    is written by the next one, in submission order. Blocking SQLite work runs on one dedicated thread,
    so the event loop keeps collecting the next batch. A failed batch fails each of its waiters with
    :class:`CheckpointWriteFailed`; later batches are tried afresh. Use it from one event loop.
    """

    def __init__(self, store: CheckpointBackend, *, executor: ThreadPoolExecutor | None = None,
                 max_batch: int = 2000) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
        self._store = store
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="checkpoint-writer")
        self._max_batch = max_batch
        self._queue: list[tuple[Write | Activate, str, asyncio.Future[Any]]] = []
        self._inflight: asyncio.Future[Any] | None = None
        self._last: asyncio.Future[Any] | None = None
        self._failures = self._batches = self._last_size = self._max_size = 0

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, max_batch: int = 2000,
                   **store_options: Any) -> GroupCommitter:
        """Open the store on the writer thread (opening may wait for the lock) and return a committer."""
        executor = ThreadPoolExecutor(1, thread_name_prefix="checkpoint-writer")
        opener = functools.partial(CheckpointStore, path, **store_options)
        store = await asyncio.get_running_loop().run_in_executor(executor, opener)
        committer = cls(store, executor=executor, max_batch=max_batch)
        committer._own_executor = True
        return committer

    @classmethod
    async def open_backend(cls, opener: Callable[[], CheckpointBackend], *,
                           max_batch: int = 2000) -> GroupCommitter:
        """Build the store with ``opener()`` on the writer thread (it may block, connect, and is then
        called only from that thread) and return a committer over it."""
        executor = ThreadPoolExecutor(1, thread_name_prefix="checkpoint-writer")
        try:
            store = await asyncio.get_running_loop().run_in_executor(executor, opener)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        committer = cls(store, executor=executor, max_batch=max_batch)
        committer._own_executor = True
        return committer

    @property
    def store(self) -> CheckpointBackend:
        return self._store

    def submit(self, key: Any, epoch: int, data: bytes, *, codec: str = "pickle", class_name: str = "",
               version: int = 0) -> asyncio.Future[bool]:
        """Queue a write without waiting (non-durable); the future says how it ended.

        Its result is True (written) or False (unchanged); it fails with :class:`StaleEpoch` or
        :class:`CheckpointWriteFailed`. Add a done-callback to learn of failures.
        """
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        # A key that cannot be stored fails here, not the whole batch; the writer reuses the text.
        return self._enqueue(Write(key, epoch, data, codec, class_name, version), key_to_text(key))

    async def commit(self, key: Any, epoch: int, data: bytes, *, codec: str = "pickle",
                     class_name: str = "", version: int = 0) -> bool:
        """Write and return once the write is committed (durable as the store's ``synchronous`` says).

        Returns True if written, False if the bytes were unchanged. Raises :class:`StaleEpoch` or
        :class:`CheckpointWriteFailed`.
        """
        return await self.submit(key, epoch, data, codec=codec, class_name=class_name, version=version)

    async def activate(self, key: Any) -> Activation:
        """Take a new epoch for ``key`` (batched with concurrent writes) and return its checkpoint."""
        result: Activation = await self._enqueue(Activate(key), key_to_text(key))
        return result

    async def load(self, key: Any) -> Record | None:
        """The last committed checkpoint of ``key``; not ordered after writes still queued."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._store.load, key)

    async def dead_letter(self, key: Any, message: bytes, error: str, count: int) -> int:
        """Record a quarantined message on the writer thread; returns its id."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._store.add_dead_letter, key, message, error, count)

    async def flush(self) -> None:
        """Wait until everything submitted so far has been committed or has failed."""
        if self._last is not None and not self._last.done():
            await asyncio.wait([self._last])

    async def close(self) -> None:
        """Flush, then close the store and the writer thread."""
        await self.flush()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._store.close)
        if self._own_executor:
            self._executor.shutdown(wait=False)

    def statistics(self) -> CommitterStats:
        s = self._store
        return CommitterStats(s.transactions, s.rows_written, s.unchanged, s.stale, self._failures,
                              self._batches, self._last_size, self._max_size, len(self._queue))

    def _enqueue(self, op: Write | Activate, text: str) -> asyncio.Future[Any]:
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((op, text, waiter))
        self._last = waiter
        self._kick()
        return waiter

    def _kick(self) -> None:
        if self._inflight is not None or not self._queue:
            return
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        self._batches += 1
        self._last_size = len(batch)
        self._max_size = max(self._max_size, len(batch))
        ops = [op for op, _, _ in batch]
        texts = [text for _, text, _ in batch]
        self._inflight = asyncio.get_running_loop().run_in_executor(
            self._executor, self._store.apply, ops, texts)
        self._inflight.add_done_callback(functools.partial(self._finished, batch))

    def _finished(self, batch: list[tuple[Write | Activate, str, asyncio.Future[Any]]],
                  done: asyncio.Future[Sequence[bool | Activation | KernelError]]) -> None:
        self._inflight = None
        if done.cancelled() or done.exception() is not None:
            self._failures += 1
            exc = done.exception() if not done.cancelled() else CheckpointWriteFailed("cancelled", len(batch))
            for _, _, waiter in batch:
                if not waiter.done():  # each waiter gets its own copy: tracebacks are per raise
                    waiter.set_exception(_copy_exception(exc))
            # A later write of the same incarnation was built on top of the state that just failed to
            # commit: letting it through would put the refused change in the file anyway. Fail it too.
            failed = {(text, op.epoch) for op, text, _ in batch if isinstance(op, Write)}
            kept = []
            for item in self._queue:
                op, text, waiter = item
                if isinstance(op, Write) and (text, op.epoch) in failed:
                    if not waiter.done():
                        waiter.set_exception(_copy_exception(exc))
                else:
                    kept.append(item)
            self._queue[:] = kept
        else:
            for (_, _, waiter), result in zip(batch, done.result(), strict=True):
                if waiter.done():
                    continue
                if isinstance(result, KernelError):  # StaleEpoch, or an activation refused
                    waiter.set_exception(result)
                else:
                    waiter.set_result(result)
        self._kick()


def _copy_exception(exc: BaseException | None) -> BaseException:
    assert exc is not None
    try:
        return copy.copy(exc)
    except Exception:
        return exc


# Offline readers: read-only URI, so inspecting a live file never takes a write lock; each call opens,
# reads and closes, so it never holds a read transaction that would stall WAL checkpoints. Keys and
# states may be pickles, so a file that others could have written is refused before it is opened.

@contextlib.contextmanager
def _reader(path: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    full = os.path.abspath(os.fspath(path))
    if not os.path.lexists(full):
        raise FileNotFoundError(f"no checkpoint file at {full!r}")
    check_private(full)  # UnsafeStateFile: a symlink, another uid's, or group/other-writable
    conn = sqlite3.connect(f"file:{urllib.parse.quote(full)}?mode=ro", uri=True, timeout=5.0)
    try:
        yield conn
    finally:
        conn.close()


def record(path: str | os.PathLike[str], key: Any) -> Record:
    """The stored checkpoint of ``key`` in the file at ``path``; ``KeyError`` names a missing key."""
    with _reader(path) as conn:
        row = conn.execute(f"{_RECORD} WHERE key = ?", (key_to_text(key),)).fetchone()
    if row is None:
        raise KeyError(f"no checkpoint for key {key!r} in {os.fspath(path)!r}")
    return _record(row)


def load(path: str | os.PathLike[str], key: Any) -> Any:
    """The decoded state of ``key`` in the file at ``path``; ``KeyError`` names a missing key."""
    return record(path, key).state()


def keys(path: str | os.PathLike[str]) -> list[Any]:
    """Every key that has a checkpoint, as the original values, in stored-text order."""
    with _reader(path) as conn:
        return [key_from_text(t) for (t,) in conn.execute("SELECT key FROM checkpoints ORDER BY key")]


def entries(path: str | os.PathLike[str]) -> list[Entry]:
    """Every checkpoint's metadata (no state bytes), in stored-text order."""
    with _reader(path) as conn:
        rows = conn.execute("SELECT key, epoch, class_name, codec, version, length(data), updated "
                            "FROM checkpoints ORDER BY key").fetchall()
    return [Entry(key_from_text(r[0]), *r[1:]) for r in rows]


def dead_letters(path: str | os.PathLike[str]) -> list[DeadLetter]:
    """Every quarantined message, oldest first."""
    with _reader(path) as conn:
        rows = conn.execute("SELECT id, key, message, error, count, created FROM dead_letters "
                            "ORDER BY id").fetchall()
    return [DeadLetter(r[0], key_from_text(r[1]), *r[2:]) for r in rows]


def drop_dead_letter(path: str | os.PathLike[str], letter_id: int) -> bool:
    """Delete one dead letter (after a replay, or to discard it); False if there was none.

    The caller owns the file: the node that runs on it, or a tool holding its
    :class:`~kernel.persistence.statefile.OwnerLock` (``python -m tools.checkpoints --drop`` does). It does
    not take the stores' :class:`WriterTurn`: one delete waits on SQLite's lock (up to 5 s) instead.
    """
    if not isinstance(letter_id, int) or isinstance(letter_id, bool):
        raise TypeError(f"letter_id must be an int, got {letter_id!r}")
    conn = sqlite3.connect(os.fspath(path), timeout=5.0, isolation_level=None)
    try:
        cur = conn.execute("DELETE FROM dead_letters WHERE id = ?", (letter_id,))
        return cur.rowcount > 0
    finally:
        conn.close()
