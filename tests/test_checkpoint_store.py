"""The SQLite checkpoint store alone: format, fencing, atomic batches, group commit, failures, crashes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

from kernel.errors import CheckpointWriteFailed, NotSerializable, StaleEpoch
from kernel.persistence import store as checkpoints
from kernel.persistence.codec import encode, key_from_text, key_to_text
from kernel.persistence.store import Activate, CheckpointStore, GroupCommitter, Write

ROOT = Path(__file__).resolve().parents[1]


def run(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "state.db")


@pytest.fixture
def store(db: str) -> Any:
    s = CheckpointStore(db)
    yield s
    s.close()


def child(code: str, *args: Any) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def connect(path: str) -> Iterator[sqlite3.Connection]:
    """A short-lived connection that commits on success and is closed either way.

    ``with sqlite3.connect(...)`` alone only commits: the connection is left to the collector, which
    Python 3.13 reports as a ``ResourceWarning`` (an error here).
    """
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        yield conn


def integrity(path: str) -> str:
    with connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


# -- format ---------------------------------------------------------------------------------------------

KEYS = ["wallet", "root/carts/u42", ("cart", 42), 7, None, b"raw", ("a", ("b", 1.5)), "~tilde",
        "('cart', 42)", frozenset({1, 2}), "~pickle:x", 2.0, True]


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_key_text_round_trips_and_is_one_to_one(key: Any) -> None:
    text = key_to_text(key)
    back = key_from_text(text)
    assert back == key and type(back) is type(key)
    others = {key_to_text(k) for k in KEYS if not (k == key and type(k) is type(key))}
    assert text not in others


def test_plain_str_keys_are_stored_as_themselves(store: CheckpointStore, db: str) -> None:
    store.write_batch([Write("root/carts/u42", 0, b"x"), Write(("cart", 42), 0, b"y")])
    with connect(db) as conn:
        stored = {r[0] for r in conn.execute("SELECT key FROM checkpoints")}
    assert stored == {"root/carts/u42", "~('cart', 42)"}


def test_round_trip_str_and_tuple_keys_offline(store: CheckpointStore, db: str) -> None:
    states = {"wallet": {"balance": 10}, ("cart", 42): ["apple", ("pear", 2)], "root/carts/u42": 42}
    store.write_batch([Write(k, 0, encode(k, v), class_name="Cart", version=3) for k, v in states.items()])
    assert sorted(checkpoints.keys(db), key=repr) == sorted(states, key=repr)
    for key, state in states.items():
        assert checkpoints.load(db, key) == state
        rec = store.load(key)
        assert rec is not None and rec.state() == state and rec.class_name == "Cart" and rec.version == 3
    with pytest.raises(KeyError, match="absent"):
        checkpoints.load(db, "absent")


def test_schema_wal_and_columns(store: CheckpointStore, db: str) -> None:
    conn = store.connection
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    cols = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(checkpoints)")}
    assert cols == {"key": "TEXT", "epoch": "INTEGER", "data": "BLOB", "codec": "TEXT",
                    "class_name": "TEXT", "version": "INTEGER", "updated": "REAL", "digest": "BLOB"}
    dl = [r[1] for r in conn.execute("PRAGMA table_info(dead_letters)")]
    assert dl == ["id", "key", "message", "error", "count", "created"]


def test_migration_adds_missing_columns(db: str) -> None:
    with connect(db) as conn:
        conn.execute("CREATE TABLE checkpoints (key TEXT PRIMARY KEY, epoch INTEGER, data BLOB)")
        conn.execute("INSERT INTO checkpoints VALUES ('old', 3, ?)", (pickle.dumps("kept"),))
    s = CheckpointStore(db)
    s.close()
    rec = checkpoints.record(db, "old")
    assert rec.state() == "kept"
    assert (rec.epoch, rec.codec, rec.class_name, rec.version) == (3, "pickle", "", 0)


def test_json_codec_is_recorded_and_used(store: CheckpointStore, db: str) -> None:
    store.write_batch([Write("plain", 0, encode("plain", {"a": [1, 2]}, "json"), codec="json")])
    assert checkpoints.record(db, "plain").data == b'{"a":[1,2]}'
    assert checkpoints.load(db, "plain") == {"a": [1, 2]}


def test_unpicklable_state_raises_not_serializable_naming_the_key() -> None:
    with pytest.raises(NotSerializable, match=r"\('cart', 42\)") as info:
        encode(("cart", 42), {"f": lambda: 1})
    assert "lambda" in str(info.value)
    with pytest.raises(NotSerializable, match="wallet"):
        encode("wallet", {1, 2}, "json")
    assert pickle.loads(pickle.dumps(info.value)).what == info.value.what


def test_unpicklable_state_keeps_the_previous_checkpoint(db: str) -> None:
    async def body() -> None:
        c = await GroupCommitter.open(db)
        await c.commit("wallet", 0, encode("wallet", 1))
        with pytest.raises(NotSerializable):
            await c.commit("wallet", 0, encode("wallet", threading.Lock()))
        await c.close()

    run(body())
    assert checkpoints.load(db, "wallet") == 1


# -- fencing --------------------------------------------------------------------------------------------

def test_epochs_strictly_increase_and_persist(db: str) -> None:
    s = CheckpointStore(db)
    first = [s.activate("k").epoch for _ in range(3)]
    s.close()
    s = CheckpointStore(db)
    assert first == [1, 2, 3] and s.activate("k").epoch == 4
    s.close()


def test_stale_epoch_is_refused_and_newer_state_kept(db: str) -> None:
    old, new = CheckpointStore(db), CheckpointStore(db)  # two incarnations, two connections
    e1 = old.activate("wallet").epoch
    assert old.write_batch([Write("wallet", e1, b"v1")]) == [True]
    act = new.activate("wallet")
    assert act.epoch > e1 and act.record is not None and act.record.data == b"v1"
    assert new.write_batch([Write("wallet", act.epoch, b"v2")]) == [True]
    [refused] = old.write_batch([Write("wallet", e1, b"zombie")])
    assert isinstance(refused, StaleEpoch) and refused.current == act.epoch
    assert checkpoints.record(db, "wallet").data == b"v2"
    old.close()
    new.close()


def test_zombie_whose_state_is_unchanged_is_not_told_its_write_is_durable(db: str) -> None:
    """A sets 1; B restores 1 and sets 2; A's ``set 1`` changes nothing of A's, but it must not be
    acknowledged: the file holds 2 and A no longer owns the key (API.md section 6)."""
    a, b = CheckpointStore(db), CheckpointStore(db)
    ea = a.activate("k").epoch
    assert a.write_batch([Write("k", ea, encode("k", 1))]) == [True]
    act = b.activate("k")
    assert act.record is not None and act.record.state() == 1
    assert b.write_batch([Write("k", act.epoch, encode("k", 2))]) == [True]
    transactions = a.transactions
    [refused] = a.write_batch([Write("k", ea, encode("k", 1))])
    assert isinstance(refused, StaleEpoch) and refused.current == act.epoch
    assert a.transactions == transactions  # still no write transaction: one read of the epoch
    assert checkpoints.load(db, "k") == 2

    async def durable() -> None:  # the same through the group committer a durable reply waits on
        c = GroupCommitter(a)
        with pytest.raises(StaleEpoch):
            await c.commit("k", ea, encode("k", 1))
        assert await c.commit("k", act.epoch, encode("k", 2)) is True
        await c.close()

    run(durable())
    b.close()


def test_zombie_refused_even_before_the_new_incarnation_writes(store: CheckpointStore, db: str) -> None:
    e1 = store.activate("k").epoch
    store.activate("k")
    [refused] = store.write_batch([Write("k", e1, b"zombie")])
    assert isinstance(refused, StaleEpoch)
    assert checkpoints.keys(db) == []


def test_committer_raises_stale_epoch(db: str) -> None:
    async def body() -> None:
        c = await GroupCommitter.open(db)
        e1 = (await c.activate("k")).epoch
        await c.commit("k", e1, b"a")
        e2 = (await c.activate("k")).epoch
        ok, stale = await asyncio.gather(c.commit("k", e2, b"b"), c.commit("k", e1, b"c"),
                                         return_exceptions=True)
        assert ok is True and isinstance(stale, StaleEpoch) and stale.epoch == e1
        assert c.statistics().stale == 1
        await c.close()

    run(body())
    assert checkpoints.record(db, "k").data == b"b"


def test_stale_write_amid_fresh_ones_refuses_only_itself(store: CheckpointStore, db: str) -> None:
    e1 = store.activate("k").epoch
    e2 = store.activate("k").epoch
    results = store.write_batch([Write("a", 0, b"a"), Write("k", e1, b"zombie"), Write("b", 0, b"b"),
                                 Write("k", e2, b"new"), Write("c", 0, b"c")])
    assert results[0] is True and isinstance(results[1], StaleEpoch) and results[2:] == [True] * 3
    assert {k: checkpoints.record(db, k).data for k in checkpoints.keys(db)} == {
        "a": b"a", "b": b"b", "k": b"new", "c": b"c"}
    assert store.rows_written == 4 and store.stale == 1
    [again] = store.write_batch([Write("k", e1, b"zombie")])  # the refused bytes were not remembered
    assert isinstance(again, StaleEpoch)


# -- batches --------------------------------------------------------------------------------------------

def test_batch_is_all_or_nothing(store: CheckpointStore, db: str) -> None:
    store.write_batch([Write("a", 0, b"a1")])
    with connect(db) as conn:  # fail the third row of the next batch, inside the transaction
        conn.execute("CREATE TRIGGER fail BEFORE INSERT ON checkpoints WHEN NEW.key = 'bad' "
                     "BEGIN SELECT RAISE(ABORT, 'injected'); END")
    with pytest.raises(CheckpointWriteFailed, match="injected") as info:
        store.write_batch([Write("a", 0, b"a2"), Write("b", 0, b"b1"), Write("bad", 0, b"x"),
                           Write("c", 0, b"c1")])
    assert info.value.count == 4
    assert not store.connection.in_transaction
    assert checkpoints.keys(db) == ["a"] and checkpoints.record(db, "a").data == b"a1"
    with connect(db) as conn:
        conn.execute("DROP TRIGGER fail")
    assert store.write_batch([Write("a", 0, b"a2")]) == [True]  # the failed batch was not remembered
    assert checkpoints.record(db, "a").data == b"a2"


def test_unchanged_data_is_not_rewritten(store: CheckpointStore, db: str) -> None:
    assert store.write_batch([Write("k", 0, b"same"), Write("j", 0, b"j")]) == [True, True]
    before = checkpoints.record(db, "k").updated
    transactions = store.transactions
    assert store.write_batch([Write("k", 0, b"same"), Write("j", 0, b"j")]) == [False, False]
    assert store.transactions == transactions and store.unchanged == 2
    assert checkpoints.record(db, "k").updated == before
    assert store.write_batch([Write("k", 0, b"other"), Write("j", 0, b"j")]) == [True, False]
    assert store.rows_written == 3


def test_later_write_of_same_key_supersedes_within_a_batch(store: CheckpointStore, db: str) -> None:
    e = store.activate("k").epoch
    results = store.apply([Write("k", e, b"1"), Write("k", e, b"2"), Activate("k"), Write("k", e, b"3")])
    assert results[:2] == [True, True] and isinstance(results[3], StaleEpoch)
    assert store.rows_written == 1 and checkpoints.record(db, "k").data == b"2"


# -- group commit ---------------------------------------------------------------------------------------

def test_writes_submitted_during_a_commit_share_the_next_transaction(db: str) -> None:
    async def body() -> None:
        writer = ThreadPoolExecutor(1)
        store = await asyncio.get_running_loop().run_in_executor(writer, CheckpointStore, db)
        c = GroupCommitter(store, executor=writer)
        gate = threading.Event()
        writer.submit(gate.wait)  # hold the writer thread: the first batch is in flight behind it
        try:
            first = c.submit("k0", 0, b"0")
            rest = [c.submit(f"k{i}", 0, b"x") for i in range(1, 200)]
            assert c.statistics().pending == 199
        finally:
            gate.set()
        assert await asyncio.gather(first, *rest) == [True] * 200
        stats = c.statistics()
        assert (stats.commits, stats.batches, stats.last_batch_size, stats.rows_written) == (2, 2, 199, 200)
        await c.close()
        writer.shutdown()

    run(body())


def test_many_concurrent_commits_need_few_transactions(db: str) -> None:
    async def body() -> None:
        c = await GroupCommitter.open(db)
        await asyncio.gather(*(c.commit(("actor", i), 0, pickle.dumps(i)) for i in range(1000)))
        stats = c.statistics()
        assert stats.rows_written == 1000 and stats.commits <= 5, stats
        await c.close()

    run(body())
    assert len(checkpoints.keys(db)) == 1000


def test_sqlite_full_keeps_previous_checkpoint_and_committer_recovers(db: str) -> None:
    async def body() -> None:
        c = await GroupCommitter.open(db)
        await c.commit("wallet", 0, encode("wallet", "good"))
        conn = c.store.connection
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        results = await asyncio.gather(c.commit("wallet", 0, os.urandom(200_000)),
                                       c.commit("other", 0, os.urandom(200_000)),
                                       return_exceptions=True)
        assert all(isinstance(r, CheckpointWriteFailed) and "SQLITE_FULL" in str(r) for r in results)
        assert (await c.load("wallet")).state() == "good"  # type: ignore[union-attr]
        assert c.statistics().failures >= 1
        conn.execute("PRAGMA max_page_count = 1073741823")
        assert await c.commit("wallet", 0, encode("wallet", "better")) is True
        await c.close()

    run(body())
    assert integrity(db) == "ok" and checkpoints.load(db, "wallet") == "better"


def test_locked_past_busy_timeout_fails_the_batch_then_recovers(db: str) -> None:
    CheckpointStore(db).close()
    blocker = sqlite3.connect(db, isolation_level=None)

    async def body() -> None:
        c = await GroupCommitter.open(db, busy_timeout=0.05)
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(CheckpointWriteFailed, match="SQLITE_BUSY"):
            await c.commit("k", 0, b"v")
        blocker.execute("ROLLBACK")
        assert await c.commit("k", 0, b"v") is True
        await c.close()

    run(body())
    blocker.close()


def test_offline_reader_works_while_a_writer_holds_the_lock(store: CheckpointStore, db: str) -> None:
    store.write_batch([Write("k", 0, encode("k", 1))])
    store.connection.execute("BEGIN IMMEDIATE")
    try:
        assert checkpoints.keys(db) == ["k"] and checkpoints.load(db, "k") == 1
    finally:
        store.connection.execute("ROLLBACK")


def test_every_connection_is_closed_even_when_opening_fails(
        store: CheckpointStore, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No connection is left to the garbage collector (Python 3.13 warns about each one it finds)."""
    opened: list[sqlite3.Connection] = []
    real = sqlite3.connect

    def connect_and_record(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append(real(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(sqlite3, "connect", connect_and_record)
    store.add_dead_letter("k", b"m", "E", 1)
    letter = checkpoints.dead_letters(db)[0].id
    assert checkpoints.keys(db) == [] and checkpoints.entries(db) == []
    with pytest.raises(KeyError):
        checkpoints.record(db, "k")
    assert checkpoints.drop_dead_letter(db, letter) is True
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database, but 512 bytes of it " * 16)
    with pytest.raises(sqlite3.DatabaseError):
        CheckpointStore(garbage)
    with pytest.raises(sqlite3.DatabaseError):
        checkpoints.keys(garbage)
    assert len(opened) == 7
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")


def test_dead_letters(store: CheckpointStore, db: str) -> None:
    first = store.add_dead_letter(("cart", 1), b"msg", "ValueError: bad", count=3)
    [dl] = checkpoints.dead_letters(db)
    assert (dl.id, dl.key, dl.message) == (first, ("cart", 1), b"msg")
    assert (dl.error, dl.count) == ("ValueError: bad", 3)


# -- several processes ----------------------------------------------------------------------------------

WRITER = """
import asyncio, pickle, sys
from kernel.checkpoints import GroupCommitter
path, wid, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def main():
    c = await GroupCommitter.open(path)
    for r in range(rounds):
        await asyncio.gather(*(c.commit(("w", wid, i), 0, pickle.dumps(r)) for i in range(20)))
    print(c.statistics().commits)
    await c.close()
asyncio.run(main())
"""


@pytest.mark.timeout(150)  # spawns interpreters; slow on a loaded 2-CPU host
def test_concurrent_writers_in_several_processes_lose_nothing(db: str) -> None:
    CheckpointStore(db).close()
    procs = [child(WRITER, db, w, 60) for w in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=50)
        assert p.returncode == 0, err
    assert integrity(db) == "ok"
    found = {k: checkpoints.load(db, k) for k in checkpoints.keys(db)}
    assert found == {("w", w, i): 59 for w in range(4) for i in range(20)}


CRASHER = """
import os, pickle, sys
from kernel.checkpoints import CheckpointStore, Write
store = CheckpointStore(sys.argv[1])
seq = 0
while True:
    seq += 1
    store.write_batch([Write(f"k{i}", 0, pickle.dumps(seq)) for i in range(20)])
    os.write(1, b"%d\\n" % seq)  # acknowledged only after COMMIT returned
"""


@pytest.mark.timeout(150)  # spawns interpreters; slow on a loaded 2-CPU host
def test_sigkill_while_committing_leaves_whole_batches(tmp_path: Path) -> None:
    rng = random.Random(4)
    for trial in range(20):
        path = str(tmp_path / f"crash{trial}.db")
        proc = child(CRASHER, path)
        assert proc.stdout is not None
        acked = 0
        target = rng.randint(1, 60)
        while acked < target:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            acked = int(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # read() drains what readline() already buffered; communicate() would read the fd past it
        rest = proc.stdout.read()
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
        acked = max([acked, *map(int, rest.split())])
        assert integrity(path) == "ok"
        seqs = {checkpoints.load(path, f"k{i}") for i in range(20)}
        assert len(seqs) == 1, f"torn batch in trial {trial}: {seqs}"
        [seq] = seqs
        # every acknowledged batch is there; at most one more was committed but not acknowledged
        assert acked <= seq <= acked + 1, (trial, acked, seq)


# -- operator CLI ---------------------------------------------------------------------------------------

def test_cli_lists_and_shows(store: CheckpointStore, db: str) -> None:
    from rich.console import Console

    from tools.checkpoints import main

    store.write_batch([Write(("cart", 42), 5, encode("c", {"items": ["apple"]}), class_name="Cart"),
                       Write("wallet", 0, encode("w", 10))])
    store.add_dead_letter("wallet", b"poison", "ZeroDivisionError: division by zero")
    out = StringIO()
    assert main([db], Console(file=out, width=150)) == 0
    text = out.getvalue()
    assert "~('cart', 42)" in text and "Cart" in text and "wallet" in text and "ZeroDivisionError" in text
    out = StringIO()
    assert main([db, "~('cart', 42)"], Console(file=out, width=150)) == 0
    assert "epoch=5" in out.getvalue() and "'apple'" in out.getvalue()
    out = StringIO()
    assert main([db, "nope"], Console(file=out, width=150)) == 1 and "nope" in out.getvalue()


def test_a_writer_lock_held_elsewhere_is_waited_for_at_most_busy_timeout(db: str) -> None:
    """Writers take turns on ``<file>-writer`` before SQLite's lock; one stuck holding it (alive, never
    releasing) delays a write by ``busy_timeout``, then SQLite's own lock decides, as before."""
    import fcntl

    CheckpointStore(db).close()
    assert os.path.exists(db + checkpoints.WRITER_LOCK)
    holder = os.open(db + checkpoints.WRITER_LOCK, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        store = CheckpointStore(db, busy_timeout=0.05)
        assert store.write_batch([Write("k", 0, encode("k", 1))]) == [True]
        store.close()
    finally:
        os.close(holder)
    assert checkpoints.load(db, "k") == 1


def test_a_state_file_whose_writer_lock_cannot_be_made_still_works(db: str) -> None:
    os.mkdir(db + checkpoints.WRITER_LOCK)  # opening a directory to write fails, as in a read-only dir
    store = CheckpointStore(db)
    assert store.write_batch([Write("k", 0, encode("k", 2))]) == [True]
    store.close()
    assert checkpoints.load(db, "k") == 2
