"""The seed's real question, measured: per-user cart actors vs a stateless server with SQLite per request.

Both serve the same HTTP route (``POST /carts/{user}/items`` with an ``Idempotency-Key``, answered with
the cart) on one port of 127.0.0.1, from the same number of HTTP fronts (``--workers``, default 2), each
its own process sharing the port with ``SO_REUSEPORT``, so that no single front is the limit:

* **actors**: a node with ``--workers`` workers; an ``HttpFront`` actor on every worker runs the cart
  example's aiohttp app inside the runtime (``examples.cart.web.start_fronts``). A request goes to the
  user's cart actor, found by name; the cart checkpoints durably (``Checkpoint(every=1, durable=True)``:
  the answer leaves only once the change is committed to SQLite, synchronous=NORMAL, WAL).
* **stateless**: ``--workers`` plain aiohttp processes; each request runs one SQLite transaction
  (``BEGIN IMMEDIATE``: remember the key, one row; if it was new add the item; read the cart; ``COMMIT``)
  on the same file settings (WAL, synchronous=NORMAL), and the same lock discipline as the kernel's
  checkpoint store (writers take turns on a ``flock`` polled every 50 us before SQLite's lock).
  ``--sql-threads 0`` (the default) runs it on the event loop, as a sync server's worker would; ``N``
  runs it on N threads per process (a flock is per open file, so threads of one process share the turn
  and SQLite's lock orders them).

Both remember a key, not its answer, and answer a retried key the same way: the cart as it is now, with
``"replayed": true``, and nothing added. The cart keeps its last 64 keys in its state (``_KEEP_KEYS`` in
``cart.py``); the database keeps a row per key (a real one would delete old rows by age, out of the
request's way).

The load comes from another process: wrk (``examples/cart/adds.lua``: every request adds one item with a
unique key, a "web" and a "mobile" connection hit the same user at once, over ``--users`` users), or, if
wrk is missing, an aiohttp client. Correctness, after each run: every 2xx add is in the user's cart; the
adds still in flight when the load stopped are retried with their key (as a client would); the last
acknowledged add of each user (per load thread) is sent again with its key, as a client that lost the
answer would, and must be answered as a replay showing the cart as it is; then every cart holds exactly
one item per key sent: nothing acknowledged lost, nothing doubled. The final counts are read from the
files (the checkpoints after the node stopped; the stateless database).

Run: ``python -m examples.cart.versus_sql [--seconds 10] [--connections 64] [--workers 2] [--users 50]
[--runs 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from rich.console import Console
from rich.table import Table

import kernel
from kernel import Node
from kernel.persistence.store import WriterTurn

from .cart import cart_name
from .web import echo_key, start_fronts

LUA = Path(__file__).with_name("adds.lua")
SKUS = ("tee", "mug", "socks", "sticker")  # from the cart's catalog; none is one-per-customer
console = Console(highlight=False)


# -- the stateless server -------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (user TEXT, sku TEXT, qty INTEGER, PRIMARY KEY (user, sku));
CREATE TABLE IF NOT EXISTS done (user TEXT, key TEXT, PRIMARY KEY (user, key)) WITHOUT ROWID;
"""


def _stateless_app(path: str, sql_threads: int) -> web.Application:
    local = threading.local()
    opened: list[sqlite3.Connection] = []  # every thread's connection, closed with the app

    def db() -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            opened.append(conn)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            local.conn = conn
        return conn

    # The same discipline as the kernel's checkpoint store: writers take turns on a polled flock
    # before SQLite's lock, whose busy handler sleeps 1, 2, 5, 10... ms between tries.
    turn = WriterTurn(path, timeout=30.0)

    def add(user: str, key: str, sku: str, qty: int) -> str:
        held = turn.acquire()
        try:
            return _add(db(), user, key, sku, qty)
        finally:
            if held:
                turn.release()

    def _add(conn: sqlite3.Connection, user: str, key: str, sku: str, qty: int) -> str:
        conn.execute("BEGIN IMMEDIATE")
        try:
            new = conn.execute("INSERT INTO done (user, key) VALUES (?, ?) ON CONFLICT DO NOTHING",
                               (user, key)).rowcount == 1
            if new:  # else a retry of an add already made: no second effect
                conn.execute("INSERT INTO items (user, sku, qty) VALUES (?, ?, ?) ON CONFLICT (user, sku) "
                             "DO UPDATE SET qty = qty + excluded.qty", (user, sku, qty))
            items = dict(conn.execute("SELECT sku, qty FROM items WHERE user = ?", (user,)).fetchall())
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return json.dumps({"user": user, "items": items} if new else
                          {"user": user, "items": items, "replayed": True})

    def view(user: str) -> str:
        items = dict(db().execute("SELECT sku, qty FROM items WHERE user = ?", (user,)).fetchall())
        return json.dumps({"user": user, "items": items})

    pool = None
    if sql_threads > 0:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(sql_threads, thread_name_prefix="sql")

        async def run(fn: Any, *args: Any) -> str:
            result: str = await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
            return result
    else:
        async def run(fn: Any, *args: Any) -> str:
            result: str = fn(*args)  # blocks the loop for one transaction, as a sync worker would
            return result

    routes = web.RouteTableDef()

    @routes.post("/carts/{user}/items")
    async def post(request: web.Request) -> web.Response:
        body = await request.json()
        key = request.headers["Idempotency-Key"]
        answer = await run(add, request.match_info["user"], key, body["sku"], int(body.get("qty", 1)))
        return web.Response(text=answer, content_type="application/json")

    @routes.get("/carts/{user}")
    async def get(request: web.Request) -> web.Response:
        return web.Response(text=await run(view, request.match_info["user"]), content_type="application/json")

    async def close(_app: web.Application) -> None:
        if pool is not None:  # no transaction may still run on a connection we close
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
        for conn in opened:
            conn.close()
        turn.close()

    app = web.Application(middlewares=[echo_key])
    app.add_routes(routes)
    app.on_cleanup.append(close)
    return app


async def _serve_stateless(path: str, port: int, sql_threads: int) -> None:
    """One stateless front process: serve until stdin closes (the parent ended or died)."""
    runner = web.AppRunner(_stateless_app(path, sql_threads), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_port=True)
    await site.start()
    server = site._server
    assert server is not None
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)  # type: ignore[union-attr]
    loop = asyncio.get_running_loop()
    closed = loop.create_future()
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(closed.set_result, None)),
                     daemon=True).start()
    await closed
    await runner.cleanup()


@contextlib.asynccontextmanager
async def _stateless_fronts(path: str, count: int, sql_threads: int) -> AsyncIterator[tuple[list[int], str]]:
    """``count`` stateless front processes on one port; yields their OS pids and the base URL."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
    procs: list[asyncio.subprocess.Process] = []
    port = 0
    try:
        for _ in range(count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "examples.cart.versus_sql", "--serve-stateless", path, "--port",
                str(port), "--sql-threads", str(sql_threads), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE)
            procs.append(proc)
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30.0)
            if not line.startswith(b"PORT "):
                raise RuntimeError(f"stateless front did not start: {line!r}")
            port = int(line.split()[1])
        yield [p.pid for p in procs], f"http://127.0.0.1:{port}"
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 10.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# -- the load -------------------------------------------------------------------------------------------

@dataclass(slots=True)
class Load:
    """What the load generator saw: counts per user, the adds left without a 2xx, latencies."""

    tool: str
    requests: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: int = 0  # socket errors and timeouts
    acked: Counter[str] = field(default_factory=Counter)
    pending: list[tuple[str, str, str]] = field(default_factory=list)  # (key, user, sku)
    last_acked: list[tuple[str, str, str]] = field(default_factory=list)  # per user and load thread
    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _parse(tool: str, text: str) -> Load:
    load = Load(tool)
    for line in text.splitlines():
        word, *rest = line.split() or [""]
        if word == "ACKED":
            load.acked[rest[0]] += int(rest[1])
        elif word == "PENDING":
            load.pending.append((rest[0], rest[1], rest[2]))
        elif word == "LASTACK":
            load.last_acked.append((rest[0], rest[1], rest[2]))
        elif word == "STATUS":
            load.statuses[int(rest[0])] += int(rest[1])
        elif word == "SUMMARY":
            n = [int(x) for x in rest]
            load.requests, load.seconds, load.errors = n[0], n[1] / 1e6, sum(n[2:4]) + n[4] + n[6]
        elif word == "LATENCY":
            load.p50_ms, load.p90_ms, load.p99_ms, load.max_ms = (int(x) / 1e3 for x in rest)
    if load.seconds == 0.0:
        raise RuntimeError(f"{tool} printed no summary:\n{text}")
    return load


async def _generate(url: str, seconds: float, connections: int, users: int) -> Load:
    """Run the load in another process: wrk if it is installed, otherwise the aiohttp client."""
    env = {**os.environ, "CART_USERS": str(users)}
    wrk = shutil.which("wrk")
    if wrk is not None:
        args = [wrk, f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                "--timeout", "30s", "-s", str(LUA), url]
        tool = "wrk"
    else:
        args = [sys.executable, "-m", "examples.cart.versus_sql", "--load-client", url, "--seconds",
                f"{seconds:g}", "--connections", str(connections), "--users", str(users)]
        tool = "aiohttp client"
    proc = await asyncio.create_subprocess_exec(*args, env=env, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} exited {proc.returncode}")
    return _parse(tool, out.decode())


async def _client(url: str, seconds: float, connections: int, users: int) -> None:
    """The fallback load generator (without wrk): the same requests as adds.lua, same printed lines."""
    latencies: list[float] = []
    acked: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    pending: dict[str, tuple[str, str]] = {}
    last: dict[str, tuple[str, str]] = {}  # user -> (key, sku) of its last acknowledged add
    errors = 0
    n = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def connection() -> None:
            nonlocal n, errors
            while time.perf_counter() < deadline:
                n += 1
                pair = n // 2
                user, device, sku = f"u{pair % users}", "web" if n % 2 == 0 else "mobile", SKUS[pair % 4]
                key = f"{user}.{device}.1.{n}"
                pending[key] = (user, sku)
                t0 = time.perf_counter()
                try:
                    async with session.post(f"{url}/carts/{user}/items", json={"sku": sku, "qty": 1},
                                            headers={"Idempotency-Key": key}) as resp:
                        await resp.read()
                except aiohttp.ClientError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if 200 <= resp.status < 300:
                    del pending[key]
                    acked[user] += 1
                    last[user] = (key, sku)
                else:
                    statuses[resp.status] += 1

        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(connection() for _ in range(connections)))
        took = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> int:
        return int(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1e6) if latencies else 0

    lines = [f"ACKED {user} {count}" for user, count in acked.items()]
    lines += [f"PENDING {key} {user} {sku}" for key, (user, sku) in pending.items()]
    lines += [f"LASTACK {key} {user} {sku}" for user, (key, sku) in last.items()]
    lines += [f"STATUS {status} {count}" for status, count in statuses.items()]
    lines.append(f"SUMMARY {len(latencies)} {int(took * 1e6)} 0 {errors} 0 0 0")
    lines.append(f"LATENCY {pct(0.5)} {pct(0.9)} {pct(0.99)} {pct(1.0)}")
    print("\n".join(lines), flush=True)


# -- one measured run -----------------------------------------------------------------------------------

@dataclass(slots=True)
class Run:
    server: str
    load: Load
    loadavg: float  # 1-minute load average when the run started
    acked_kept: bool = False  # every 2xx add was in its cart before the retries
    replays_ok: bool = False  # every acknowledged add sent again was answered as a replay, with the cart
    exact: bool = False  # after retrying the in-flight keys: one item per key sent, in every cart
    on_disk: bool = False  # ... and the file (checkpoints, or the database) says the same
    retried: int = 0
    retried_replayed: int = 0  # in-flight adds that had been made: their retry was answered as a replay
    resent: int = 0  # acknowledged adds sent again
    state_bytes: int = 0  # actors: the largest cart checkpoint after the run
    sent: dict[str, int] = field(default_factory=dict)  # per user: acknowledged adds + retried ones
    detail: str = ""

    @property
    def correct(self) -> bool:
        return (self.acked_kept and self.replays_ok and self.exact and self.on_disk
                and not self.load.statuses)


async def _warm(session: aiohttp.ClientSession, url: str, users: int) -> None:
    """One view per user before the clock starts: the carts are started, the connections are open."""
    for u in range(users):
        async with session.get(f"{url}/carts/u{u}") as resp:
            resp.raise_for_status()


async def _counts(session: aiohttp.ClientSession, url: str, users: int) -> dict[str, int]:
    counts = {}
    for u in range(users):
        async with session.get(f"{url}/carts/u{u}") as resp:
            resp.raise_for_status()
            counts[f"u{u}"] = sum((await resp.json())["items"].values())
    return counts


async def _add(session: aiohttp.ClientSession, url: str, key: str, user: str, sku: str) -> dict[str, Any]:
    async with session.post(f"{url}/carts/{user}/items", json={"sku": sku, "qty": 1},
                            headers={"Idempotency-Key": key}) as resp:
        resp.raise_for_status()
        answer: dict[str, Any] = await resp.json()
        return answer


async def _measure(server: str, url: str, args: argparse.Namespace) -> Run:
    """Warm up, load, then check the carts over HTTP, retry what was in flight, resend some acknowledged
    adds, check again."""
    async with aiohttp.ClientSession() as session:
        await _warm(session, url, args.users)
        loadavg = os.getloadavg()[0]
        load = await _generate(url, args.seconds, args.connections, args.users)
        result = Run(server, load, loadavg)
        before = await _counts(session, url, args.users)
        sent = Counter({f"u{u}": 0 for u in range(args.users)}) + load.acked
        for key, user, sku in load.pending:  # a client retries what it got no answer for, same key
            result.retried_replayed += bool((await _add(session, url, key, user, sku)).get("replayed"))
            sent[user] += 1
        result.retried = len(load.pending)
        result.replays_ok = True
        for key, user, sku in load.last_acked:  # a client that lost an answer that was sent: not again
            answer = await _add(session, url, key, user, sku)
            now = sum(answer["items"].values())  # the cart as it is: every add sent so far, once
            result.replays_ok &= answer.get("replayed") is True and now == sent[user]
        result.resent = len(load.last_acked)
        result.sent = {f"u{u}": sent[f"u{u}"] for u in range(args.users)}
        after = await _counts(session, url, args.users)
    result.acked_kept = all(before[u] >= load.acked[u] for u in before)
    result.exact = after == result.sent and sum(load.acked.values()) + result.retried == sum(after.values())
    if not result.exact:
        wrong = {u: (after[u], result.sent.get(u)) for u in after if after[u] != result.sent.get(u)}
        result.detail = f"carts (items, sent) that differ: {dict(list(wrong.items())[:5])}"
    return result


async def run_actors(args: argparse.Namespace, folder: str) -> Run:
    path = os.path.join(folder, "actors.db")
    async with Node(workers=args.workers, state=path) as node:
        _, url = await start_fronts(node)
        result = await _measure("actors", url, args)
    on_disk = {}
    for user in result.sent:
        try:
            on_disk[user] = sum(kernel.checkpoints.load(path, cart_name(user))["items"].values())
        except KeyError:
            on_disk[user] = 0
    result.on_disk = on_disk == result.sent
    result.state_bytes = max((e.size for e in kernel.checkpoints.entries(path)
                              if isinstance(e.key, tuple) and e.key[0] == "cart"), default=0)
    return result


async def run_stateless(args: argparse.Namespace, folder: str) -> Run:
    path = os.path.join(folder, "stateless.db")
    async with _stateless_fronts(path, args.workers, args.sql_threads) as (_, url):
        result = await _measure("stateless", url, args)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = dict(conn.execute("SELECT user, SUM(qty) FROM items GROUP BY user").fetchall())
    result.on_disk = {u: n for u, n in result.sent.items() if n} == rows
    return result


async def compare(args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    for i in range(args.runs):
        for side in args.sides:
            folder = tempfile.mkdtemp(prefix="cart-vs-sql-")
            try:
                run = await (run_actors if side == "actors" else run_stateless)(args, folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            runs.append(run)
            ld = run.load
            size = f", cart checkpoint <= {run.state_bytes:,} B" if run.state_bytes else ""
            console.print(f"[dim]run {i + 1} {side}: {ld.requests:,} requests, {ld.per_s:,.0f}/s, "
                          f"p50 {ld.p50_ms:.1f} ms, p99 {ld.p99_ms:.1f} ms, retried {run.retried} "
                          f"({run.retried_replayed} replays), resent {run.resent} acknowledged "
                          f"(replays {run.replays_ok}){size}, correct {run.correct} "
                          f"(load avg {run.loadavg:.2f}) {run.detail}[/]")
    return runs


def show(runs: list[Run], args: argparse.Namespace) -> None:
    tool = runs[0].load.tool
    table = Table(title=f"{args.users} users, {args.connections} connections ({tool}), {args.seconds:g} s, "
                        f"{args.workers} fronts each; median of {args.runs}")
    for col in ("server", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "load avg", "correct"):
        table.add_column(col, justify="left" if col == "server" else "right")
    for side in args.sides:
        mine = [r for r in runs if r.server == side]

        def med(attr: str, mine: list[Run] = mine) -> float:
            return statistics.median(getattr(r.load, attr) for r in mine)

        table.add_row(side, f"{med('requests'):,.0f}", f"{med('per_s'):,.0f}", f"{med('p50_ms'):.1f}",
                      f"{med('p99_ms'):.1f}", f"{med('max_ms'):.1f}",
                      f"{statistics.median(r.loadavg for r in mine):.2f}",
                      f"{sum(r.correct for r in mine)}/{len(mine)}")
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.cart.versus_sql",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load duration per run (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (default 64)")
    parser.add_argument("--workers", type=int, default=2,
                        help="node workers = HTTP fronts on each side (default 2)")
    parser.add_argument("--users", type=int, default=50, help="carts the load spreads over (default 50)")
    parser.add_argument("--runs", type=int, default=1, help="runs per side; the table shows medians")
    parser.add_argument("--sql-threads", type=int, default=0,
                        help="stateless: SQLite threads per front (0: on the event loop, the default)")
    parser.add_argument("--only", choices=("actors", "stateless"), help="measure one side only")
    parser.add_argument("--serve-stateless", metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--load-client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_stateless:
        kernel.run(_serve_stateless(args.serve_stateless, args.port, args.sql_threads))
        return 0
    if args.load_client:
        kernel.run(_client(args.load_client, args.seconds, args.connections, args.users))
        return 0
    if shutil.which("wrk") is None:
        console.print("[yellow]wrk is not installed (Debian/Ubuntu: sudo apt-get install wrk); "
                      "the load comes from an aiohttp client in another process instead.[/]")
    args.sides = [args.only] if args.only else ["actors", "stateless"]
    runs = kernel.run(compare(args))
    show(runs, args)
    return 0 if all(r.correct for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
