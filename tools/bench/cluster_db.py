"""``python -m tools.bench.cluster_db``: the cluster's database layer beside its floor (issue 17, step 1).

Against a PostgreSQL server of its own (``kernel.pgserver``, PostgreSQL's durable default settings:
fsync on, ``synchronous_commit=on``), or ``--dsn``. One asyncpg connection, sequential, so each figure is
a round trip's latency. Rows, each as p50/p99 and as a ratio of the p50 to the floor's:

* floor: a bare ``SELECT 1`` round trip;
* claim (free name): :meth:`Directory.claim` of a name nobody holds (the insert path);
* claim (held: route): a claim of a name another live node holds (the claim, then the lookup);
* renew: :meth:`Membership.renew`;
* writes/s through :meth:`PgCheckpointStore.write_batch` with batches of 1, 16 and 128 (~300-byte states,
  one durable commit per batch), beside an unfenced upsert of the same rows in one transaction
  (what fencing costs) and the ``SELECT 1`` floor (per batch).

The best of ``--rounds`` rounds is reported (the machine is shared: the best is the least disturbed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import pickle
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg

from kernel.cluster import Directory, Membership, PgCheckpointStore, Write, install
from kernel.pgserver import PostgresServer

_RAW_UPSERT = """
INSERT INTO pyotp_checkpoints AS c (key, fence, state, version, seq)
SELECT key, fence, state, 0, 1 FROM unnest($1::text[], $2::bigint[], $3::bytea[]) AS w(key, fence, state)
ON CONFLICT (key) DO UPDATE SET fence = excluded.fence, state = excluded.state, seq = c.seq + 1
"""


def _state(i: int) -> bytes:
    return pickle.dumps({"user": f"u{i}", "items": [("apple", 3), ("pear", 1)] * 10, "n": i}, protocol=5)


async def _latencies(n: int, op: Callable[[int], Awaitable[Any]]) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        await op(i)
        out.append(time.perf_counter() - t)
    return out


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(dsn: str, n: int, rounds: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    conn, other = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        await install(conn)
        me = Membership(conn, "bench-a", "127.0.0.1:1", lease=60.0)
        holder = Membership(other, "bench-b", "127.0.0.1:2", lease=60.0)
        await me.join()
        await holder.join()
        mine, theirs = Directory(conn, me), Directory(other, holder)
        store = PgCheckpointStore(conn)
        tag = f"{time.time_ns():x}"
        held = [f"held-{tag}-{i}" for i in range(n)]
        for name in held:
            await theirs.claim(name)
        keys = [f"w-{tag}-{i}" for i in range(max(sizes))]
        fences = [(await mine.claim(k)).fence for k in keys]
        lat: dict[str, list[float]] = {}
        rates: dict[str, float] = {}
        for r in range(rounds):
            rows: dict[str, list[float]] = {
                "SELECT 1 (floor)": await _latencies(n, lambda i: conn.fetchval("SELECT 1")),
                "claim (free name)": await _latencies(n, lambda i, r=r: mine.claim(f"free-{tag}-{r}-{i}")),
                "claim (held: route)": await _latencies(n, lambda i: mine.claim(held[i])),
                "renew": await _latencies(n, lambda i: me.renew()),
            }
            for row, values in rows.items():
                if row not in lat or statistics.median(values) < statistics.median(lat[row]):
                    lat[row] = values
            for size in sizes:
                batches = max(3, n // size)
                states = [_state(i) for i in range(size)]
                items = [Write(keys[i], fences[i], states[i]) for i in range(size)]
                t = time.perf_counter()
                for _ in range(batches):
                    await store.write_batch(items)
                rates[f"fenced {size}"] = max(rates.get(f"fenced {size}", 0.0),
                                              batches * size / (time.perf_counter() - t))
                t = time.perf_counter()
                for _ in range(batches):
                    async with conn.transaction():
                        await conn.execute(_RAW_UPSERT, keys[:size], fences[:size], states)
                rates[f"raw {size}"] = max(rates.get(f"raw {size}", 0.0),
                                           batches * size / (time.perf_counter() - t))
        return {"latency": lat, "rates": rates}
    finally:
        await conn.close()
        await other.close()


@contextlib.contextmanager
def _server(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    with PostgresServer() as server:
        yield server.dsn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="operations per latency row (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best is reported (default 3)")
    parser.add_argument("--dsn", default=None, help="an existing database (default: a server of its own)")
    args = parser.parse_args(argv)
    sizes = (1, 16, 128)
    with _server(args.dsn) as dsn:
        result = asyncio.run(_measure(dsn, args.n, args.rounds, sizes))
    lat, rates = result["latency"], result["rates"]
    floor = statistics.median(lat["SELECT 1 (floor)"])
    print(f"{'row':28s} {'p50':>9s} {'p99':>9s}  p50 / SELECT 1")
    for row, values in lat.items():
        p50, p99 = statistics.median(values), _p(values, 0.99)
        print(f"{row:28s} {p50 * 1e6:7.0f}us {p99 * 1e6:7.0f}us  {p50 / floor:6.2f}x")
    print(f"{'batch':>6s} {'fenced writes/s':>16s} {'raw upsert/s':>13s}  fenced/raw  batch time / SELECT 1")
    for size in sizes:
        fenced, raw = rates[f"fenced {size}"], rates[f"raw {size}"]
        print(f"{size:6d} {fenced:16.0f} {raw:13.0f}  {fenced / raw:9.2f}x  {size / fenced / floor:8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
