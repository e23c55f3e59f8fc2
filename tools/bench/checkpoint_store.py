"""Micro-benchmark of the checkpoint store (not a test): ``python tools/bench/checkpoint_store.py``.

Prints, on a temporary file in WAL mode with synchronous=FULL:

* the hot-path choice: 100-row upsert batches through raw ``sqlite3`` vs sqlite-utils' ``upsert_all``;
* ``CheckpointStore.write_batch``: transactions/s with 1 row each, rows/s with 100 rows each;
* ``GroupCommitter``: durable commits/s when N asyncio tasks each await ``commit`` in a loop, with the
  transactions/s and rows per transaction that group commit turned them into;
* the same from several worker processes on one file (``--procs``), as a node would run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import sqlite_utils  # noqa: E402

from kernel.persistence.store import CheckpointStore, GroupCommitter, Write  # noqa: E402

STATE = {"user": "u42", "items": [("apple", 3), ("pear", 1)] * 10, "total": 12.5}


def _state(i: int, n: int) -> bytes:
    return pickle.dumps({**STATE, "n": n, "i": i}, protocol=5)  # ~300 bytes, changes every call


def hot_path_choice(path: str, batches: int = 300) -> dict[str, float]:
    """Rows/s for 100-row upsert batches of the same rows: plain upsert on raw sqlite3 (executemany in
    BEGIN IMMEDIATE), sqlite-utils' upsert_all, and the store's fenced write_batch."""
    rows = [[(f"k{i}", 0, _state(i, b), "pickle", "", 0, 0.0) for i in range(100)] for b in range(batches)]
    rates: dict[str, float] = {}
    store = CheckpointStore(path)
    conn = store.connection
    sql = ("INSERT INTO checkpoints(key, epoch, data, codec, class_name, version, updated) "
           "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET epoch = excluded.epoch, "
           "data = excluded.data, updated = excluded.updated")
    start = time.perf_counter()
    for batch in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, batch)
        conn.execute("COMMIT")
    rates["raw sqlite3"] = batches * 100 / (time.perf_counter() - start)
    start = time.perf_counter()
    for batch in rows[1:] + rows[:1]:  # different bytes than the last round, so every row is written
        store.write_batch([Write(r[0], 0, r[2]) for r in batch])
    rates["CheckpointStore (fenced)"] = batches * 100 / (time.perf_counter() - start)
    store.close()
    db = sqlite_utils.Database(path)
    db.execute("PRAGMA synchronous = FULL")
    table = db.table("checkpoints")
    names = ("key", "epoch", "data", "codec", "class_name", "version", "updated")
    start = time.perf_counter()
    for batch in rows:
        table.upsert_all([dict(zip(names, r, strict=True)) for r in batch], pk="key")
    rates["sqlite-utils upsert_all"] = batches * 100 / (time.perf_counter() - start)
    db.close()
    return rates


def store_rates(path: str, seconds: float) -> tuple[float, float]:
    store = CheckpointStore(path)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        store.write_batch([Write("single", 0, _state(0, n))])
        n += 1
    single = n / (time.perf_counter() - start)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        store.write_batch([Write(("b", i), 0, _state(i, n)) for i in range(100)])
        n += 1
    batched = n * 100 / (time.perf_counter() - start)
    store.close()
    return single, batched


async def committer_rate(path: str, waiters: int, seconds: float, tag: str = "") -> dict[str, float]:
    """N tasks, each awaiting durable commits of its own key in a loop, for ``seconds``."""
    committer = await GroupCommitter.open(path)
    done = 0
    deadline = time.perf_counter() + seconds

    async def waiter(i: int) -> None:
        nonlocal done
        n = 0
        while time.perf_counter() < deadline:
            await committer.commit((tag, i), 0, _state(i, n))
            n += 1
            done += 1

    before = committer.statistics()
    start = time.perf_counter()
    await asyncio.gather(*(waiter(i) for i in range(waiters)))
    elapsed = time.perf_counter() - start
    stats = committer.statistics()
    await committer.close()
    commits = stats.commits - before.commits
    return {"durable_per_s": done / elapsed, "commits_per_s": commits / elapsed,
            "rows_per_commit": (stats.rows_written - before.rows_written) / max(commits, 1)}


def multi_process(path: str, procs: int, waiters: int, seconds: float) -> dict[str, float]:
    CheckpointStore(path).close()
    code = ("import asyncio, json, sys; from tools.bench.checkpoint_store import committer_rate; "
            "print(json.dumps(asyncio.run(committer_rate(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), "
            "sys.argv[4]))))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    children = [subprocess.Popen([sys.executable, "-c", code, path, str(waiters), str(seconds), f"p{p}"],
                                 cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for p in range(procs)]
    results = [json.loads(c.communicate()[0]) for c in children]
    return {key: sum(r[key] for r in results) for key in ("durable_per_s", "commits_per_s")} | {
        "rows_per_commit": sum(r["rows_per_commit"] for r in results) / procs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--waiters", type=int, nargs="*", default=[1, 10, 100, 1000])
    parser.add_argument("--procs", type=int, default=2)
    args = parser.parse_args()
    print(f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}, WAL, synchronous=FULL")
    with tempfile.TemporaryDirectory() as tmp:
        rates = hot_path_choice(os.path.join(tmp, "choice.db"))
        print("hot path, 100-row upsert batches: "
              + ", ".join(f"{name} {rate:,.0f} rows/s" for name, rate in rates.items()))
        single, batched = store_rates(os.path.join(tmp, "store.db"), args.seconds)
        print(f"CheckpointStore.write_batch: {single:,.0f} commits/s (1 row), "
              f"{batched:,.0f} rows/s (100 rows)")
        for n in args.waiters:
            r = asyncio.run(committer_rate(os.path.join(tmp, f"gc{n}.db"), n, args.seconds))
            print(f"GroupCommitter, {n:>5} waiters: {r['durable_per_s']:>9,.0f} durable commits/s, "
                  f"{r['commits_per_s']:>7,.0f} transactions/s, {r['rows_per_commit']:>6.1f} rows/commit")
        if args.procs > 1:
            n = max(args.waiters)
            r = multi_process(os.path.join(tmp, "procs.db"), args.procs, n, args.seconds)
            print(f"GroupCommitter, {args.procs} processes x {n} waiters on one file: "
                  f"{r['durable_per_s']:,.0f} durable commits/s in total, {r['commits_per_s']:,.0f} "
                  f"transactions/s, {r['rows_per_commit']:.1f} rows/commit")


if __name__ == "__main__":
    main()
