"""The seed's real question, measured: per-user entities vs the same API served statelessly over PostgreSQL
and over SQLite.

All three serve the same HTTP API (``POST /carts/{user}/items`` with an ``Idempotency-Key``, answered with
the cart; ``GET /carts/{user}``) on one port of 127.0.0.1, from the same number of server processes
(``--workers``, default 2) sharing the port with ``SO_REUSEPORT``, all with uvicorn and FastAPI, so that
the sides differ only in where the state lives:

* **entities**: ``python -m kernel run examples.cart.app:root --asgi examples.cart.app:app`` with
  ``--workers`` workers: each request calls the user's cart entity; the cart checkpoints durably
  (``Checkpoint(every=1, durable=True)``: the answer leaves once the change is committed to SQLite,
  WAL, synchronous=NORMAL) and keeps its last 64 keys in its state.
* **postgres**: ``--workers`` plain uvicorn processes of one FastAPI app (:func:`stateless_app`) over a
  real PostgreSQL server of its own (``kernel.pgserver``, PostgreSQL's default durable settings: fsync
  and synchronous_commit on), an asyncpg pool of ``--pg-pool`` connections per process. An add is one
  call of a PL/pgSQL function (one round trip, one READ COMMITTED transaction): ``INSERT INTO done ...
  ON CONFLICT DO NOTHING`` claims the key (a second request with the same key waits on the first's
  uncommitted row, then finds it); if it was new, a one-per-customer item must first win
  ``INSERT INTO limited`` (the rule is the table's primary key), and the item is upserted (``ON CONFLICT
  ... DO UPDATE qty = qty + excluded.qty``, atomic under concurrency); then the cart is read back.
* **sqlite**: the same app and statements over one SQLite file (WAL, synchronous=NORMAL), one
  ``BEGIN IMMEDIATE`` transaction per add, with the lock discipline of the kernel's checkpoint store
  (writers take turns on a ``flock`` polled every 50 us before SQLite's lock). ``--sql-threads 0`` (the
  default) runs it on the event loop, as a sync server's worker would; ``N`` on N threads per process.

Every side remembers a key, not its answer, and answers a retried key the same way: the cart as it is
now, with ``"replayed": true``, and nothing added; a refused add (409) is refused again.

The load comes from another process: wrk (``examples/cart/adds.lua``: every request adds one item with a
unique key, a "web" and a "mobile" connection hit the same user at once, over ``--users`` users), or, if
wrk is missing (Debian/Ubuntu: ``apt-get install wrk``), an aiohttp client printing the same lines.
Correctness, after each run (:func:`judge`): every 2xx add is in the user's cart; the adds still in
flight when the load stopped are retried with their key (as a client would); the last acknowledged add
of each user (per load thread) is sent again with its key, as a client that lost the answer would, and
must be answered as a replay showing the cart as it is; web and mobile then both add the one-per-customer
poster to every cart at once, and exactly one of each pair may succeed; then every cart holds exactly one
item per key accepted: nothing acknowledged lost, nothing doubled. The final counts are also read from
where the state lives (the checkpoints after the node stopped; the tables).

Run: ``python -m examples.cart.versus [--seconds 10] [--connections 64] [--workers 2] [--users 50]
[--runs 1] [--only entities|postgres|sqlite]``.
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
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from rich.console import Console
from rich.table import Table

import kernel
from kernel.checkpoints import WriterTurn
from kernel.pgserver import PostgresServer

from . import app
from .cart import CATALOG, ONE_PER_CUSTOMER
from .demo import running

LUA = Path(__file__).with_name("adds.lua")
SKUS = ("tee", "mug", "socks", "sticker")  # from the cart's catalog; none is one-per-customer
LIMITED = "poster"  # the one-per-customer item both devices race for after each run
SIDES = ("entities", "postgres", "sqlite")
WRK_MISSING = ("wrk is not installed (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk); "
               "the load comes from an aiohttp client in another process instead.")
console = Console(highlight=False)


# -- the stateless servers: one FastAPI app, a store over PostgreSQL or SQLite ---------------------------

#: The same tables on both databases. ``done`` remembers every key (and a refusal's reason, so that its
#: retry is refused again); ``limited`` holds the one-per-customer items a customer ever added: its
#: primary key is the rule, so two devices adding one at once cannot both win.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (customer TEXT NOT NULL, sku TEXT NOT NULL, qty INTEGER NOT NULL,
                                  PRIMARY KEY (customer, sku));
CREATE TABLE IF NOT EXISTS done (customer TEXT NOT NULL, key TEXT NOT NULL, refused TEXT,
                                 PRIMARY KEY (customer, key));
CREATE TABLE IF NOT EXISTS limited (customer TEXT NOT NULL, sku TEXT NOT NULL, PRIMARY KEY (customer, sku));
"""

Answer = tuple[int, dict[str, Any]]  # HTTP status, JSON body
_PG_SCHEMA = "cart_versus"

# An add's statements on SQLite (:func:`add_item`); PostgreSQL's cart_add (:data:`_PG_ADD`) runs the same.
_CLAIM = "INSERT INTO done (customer, key) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING true"
_REFUSED = "SELECT refused FROM done WHERE customer = ? AND key = ?"
_LIMIT = "INSERT INTO limited (customer, sku) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING true"
_REFUSE = "UPDATE done SET refused = ? WHERE customer = ? AND key = ?"
_UPSERT = ("INSERT INTO items (customer, sku, qty) VALUES (?, ?, ?) "
           "ON CONFLICT (customer, sku) DO UPDATE SET qty = items.qty + excluded.qty")
_CART = "SELECT sku, qty FROM items WHERE customer = ?"


def add_item(conn: sqlite3.Connection, user: str, key: str, sku: str, qty: int) -> Answer:
    """One add inside the caller's SQLite transaction (PostgreSQL runs the same statements in
    :data:`_PG_ADD`).

    Claiming the key first makes a retry a no-op; a refusal is remembered with the key. A one-per-customer
    item must win the ``limited`` row: the primary key decides between two devices.
    """
    new = bool(conn.execute(_CLAIM, (user, key)).fetchall())
    if not new:  # a retry of an add already made (or refused): no second effect
        why = conn.execute(_REFUSED, (user, key)).fetchall()[0][0]
    else:
        why = _check(sku, qty)
        if why is None and sku in ONE_PER_CUSTOMER and not conn.execute(_LIMIT, (user, sku)).fetchall():
            why = f"{sku} is limited to one per customer"
        if why is not None:
            conn.execute(_REFUSE, (why, user, key))
        else:
            conn.execute(_UPSERT, (user, sku, qty))
    if why is not None:
        return 409, {"error": why}
    return _answer(user, dict(conn.execute(_CART, (user,)).fetchall()), new)


def _check(sku: str, qty: int) -> str | None:
    """Why an add is refused before it touches the database (the cart's own rules), or None."""
    if sku not in CATALOG:
        return f"no such item: {sku}"
    if qty < 1 or (sku in ONE_PER_CUSTOMER and qty > 1):
        return f"bad quantity {qty} of {sku} (one per customer)" if qty > 1 else f"bad quantity: {qty}"
    return None


def _answer(user: str, items: dict[str, int], new: bool) -> Answer:
    return 200, ({"user": user, "items": items} if new else {"user": user, "items": items, "replayed": True})


class Store(Protocol):
    async def add(self, user: str, key: str, sku: str, qty: int) -> Answer: ...
    async def view(self, user: str) -> dict[str, Any]: ...
    async def close(self) -> None: ...


#: :func:`add_item`'s statements as one PostgreSQL function: an add is then one round trip (one
#: statement, so one READ COMMITTED transaction) instead of seven (BEGIN, four statements, COMMIT).
_PG_ADD = """
CREATE FUNCTION cart_add(p_user text, p_key text, p_sku text, p_qty integer, p_why text, p_limited boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    claimed boolean;
    won boolean;
    why text := p_why;
BEGIN
    INSERT INTO done (customer, key) VALUES (p_user, p_key) ON CONFLICT DO NOTHING
        RETURNING true INTO claimed;
    IF claimed IS NULL THEN  -- a retry of an add already made (or refused): no second effect
        SELECT refused INTO why FROM done WHERE customer = p_user AND key = p_key;
    ELSE
        IF why IS NULL AND p_limited THEN
            INSERT INTO limited (customer, sku) VALUES (p_user, p_sku) ON CONFLICT DO NOTHING
                RETURNING true INTO won;
            IF won IS NULL THEN why := p_sku || ' is limited to one per customer'; END IF;
        END IF;
        IF why IS NOT NULL THEN
            UPDATE done SET refused = why WHERE customer = p_user AND key = p_key;
        ELSE
            INSERT INTO items (customer, sku, qty) VALUES (p_user, p_sku, p_qty)
                ON CONFLICT (customer, sku) DO UPDATE SET qty = items.qty + excluded.qty;
        END IF;
    END IF;
    IF why IS NOT NULL THEN
        RETURN jsonb_build_object('error', why);
    END IF;
    RETURN jsonb_build_object('user', p_user, 'items', COALESCE(
        (SELECT jsonb_object_agg(sku, qty) FROM items WHERE customer = p_user), '{}'::jsonb))
        || CASE WHEN claimed IS NULL THEN '{"replayed": true}'::jsonb ELSE '{}'::jsonb END;
END $$;
"""


class PostgresStore:
    """An asyncpg pool of ``size`` connections; every add is one call of ``cart_add`` (:data:`_PG_ADD`)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, dsn: str, size: int) -> PostgresStore:
        import asyncpg

        return cls(await asyncpg.create_pool(dsn, min_size=size, max_size=size))

    async def add(self, user: str, key: str, sku: str, qty: int) -> Answer:
        answer: dict[str, Any] = json.loads(await self.pool.fetchval(
            "SELECT cart_add($1, $2, $3, $4, $5, $6)", user, key, sku, qty, _check(sku, qty),
            sku in ONE_PER_CUSTOMER))
        return (409 if "error" in answer else 200), answer

    async def view(self, user: str) -> dict[str, Any]:
        rows = await self.pool.fetch("SELECT sku, qty FROM items WHERE customer = $1", user)
        return {"user": user, "items": dict(rows)}

    async def close(self) -> None:
        await self.pool.close()


class SqliteStore:
    """One SQLite file; an add is one ``BEGIN IMMEDIATE`` transaction, on the loop (``threads=0``, as a
    sync server's worker would) or on ``threads`` threads (a flock is per open file, so the threads of one
    process share the turn and SQLite's lock orders them)."""

    def __init__(self, path: str, threads: int) -> None:
        self.path = path
        self.local = threading.local()
        self.opened: list[sqlite3.Connection] = []  # every thread's connection, closed with the store
        # The same discipline as the kernel's checkpoint store: writers take turns on a polled flock
        # before SQLite's lock, whose busy handler sleeps 1, 2, 5, 10... ms between tries.
        self.turn = WriterTurn(path, timeout=30.0)
        self.pool = None
        if threads > 0:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(threads, thread_name_prefix="sql")

    def db(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self.local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self.opened.append(conn)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self.local.conn = conn
        return conn

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.pool is None:
            return fn(*args)  # blocks the loop for one transaction, as a sync worker would
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def add(self, user: str, key: str, sku: str, qty: int) -> Answer:
        result: Answer = await self._run(self._add, user, key, sku, qty)
        return result

    def _add(self, user: str, key: str, sku: str, qty: int) -> Answer:
        held = self.turn.acquire()
        try:
            conn = self.db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                answer = add_item(conn, user, key, sku, qty)
                conn.execute("COMMIT")
                return answer
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            if held:
                self.turn.release()

    async def view(self, user: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._run(self._view, user)
        return result

    def _view(self, user: str) -> dict[str, Any]:
        return {"user": user, "items": dict(self.db().execute(_CART, (user,)).fetchall())}

    async def close(self) -> None:
        if self.pool is not None:  # no transaction may still run on a connection we close
            await asyncio.get_running_loop().run_in_executor(None, self.pool.shutdown)
        for conn in self.opened:
            conn.close()
        self.turn.close()


def stateless_app(open_store: Callable[[], Awaitable[Store]]) -> FastAPI:
    """The cart API's add and view as a FastAPI app over a store opened at its lifespan's start: the
    shape of :mod:`examples.cart.app` (the same middleware, body checks and answers), another state."""
    stores: list[Store] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stores.append(await open_store())
        try:
            yield
        finally:
            await stores.pop().close()

    api = FastAPI(title="Carts, stateless", openapi_url=None, lifespan=lifespan)
    api.add_middleware(app.EchoKey)

    @api.get("/carts/{user}")
    async def view(user: str) -> JSONResponse:
        return JSONResponse(await stores[0].view(user))

    @api.post("/carts/{user}/items")
    async def add(user: str, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        sku, qty = (body.get("sku"), body.get("qty", 1)) if isinstance(body, dict) else (None, None)
        if not isinstance(sku, str) or isinstance(qty, bool) or not isinstance(qty, int):
            return JSONResponse({"error": "body must be {\"sku\": str, \"qty\": int}"}, status_code=400)
        status, answer = await stores[0].add(user, request.headers.get("Idempotency-Key") or uuid.uuid4().hex,
                                             sku, qty)
        return JSONResponse(answer, status_code=status)

    return api


async def _serve_stateless(kind: str, target: str, port: int, args: argparse.Namespace) -> None:
    """One stateless server process, uvicorn as the entities' ASGI front runs it (one ``SO_REUSEPORT``
    socket): serve until stdin closes (the parent ended or died)."""
    import uvicorn

    from supervisors.asgi import reuseport_socket

    if kind == "postgres":
        app = stateless_app(lambda: PostgresStore.open(target, args.pg_pool))
    else:
        async def open_sqlite() -> Store:
            return SqliteStore(target, args.sql_threads)
        app = stateless_app(open_sqlite)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    sock = reuseport_socket("127.0.0.1", port)
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()

    def watch_stdin() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(setattr, server, "should_exit", True)

    threading.Thread(target=watch_stdin, daemon=True).start()
    config.load()  # as the ASGI front does: not server.serve(), which takes the process's signals
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    if server.should_exit:
        raise SystemExit(f"the {kind} server failed its startup")
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    await server.main_loop()
    await server.shutdown(sockets=[sock])


@contextlib.asynccontextmanager
async def _stateless_fronts(kind: str, target: str, args: argparse.Namespace) -> AsyncIterator[str]:
    """``args.workers`` stateless server processes on one port; yields the base URL."""
    procs: list[asyncio.subprocess.Process] = []
    port = 0
    try:
        for _ in range(args.workers):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "examples.cart.versus", "--serve", kind, target, "--port", str(port),
                "--sql-threads", str(args.sql_threads), "--pg-pool", str(args.pg_pool),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            procs.append(proc)
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60.0)
            if not line.startswith(b"PORT "):
                raise RuntimeError(f"the {kind} server did not start (its error is above): {line!r}")
            port = int(line.split()[1])
        yield f"http://127.0.0.1:{port}"
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


async def _generate(url: str, seconds: float, connections: int, users: int, tool: str) -> Load:
    """Run the load in another process: wrk if ``tool`` is "wrk" and it is installed, otherwise the
    aiohttp client."""
    env = {**os.environ, "CART_USERS": str(users)}
    wrk = shutil.which("wrk") if tool == "wrk" else None
    if wrk is not None:
        args = [wrk, f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                "--timeout", "30s", "-s", str(LUA), url]
        tool = "wrk"
    else:
        args = [sys.executable, "-m", "examples.cart.versus", "--load-client", url, "--seconds",
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
    before: dict[str, int] = field(default_factory=dict)  # items per cart right after the load
    sent: dict[str, int] = field(default_factory=dict)  # per cart: acknowledged adds + retried ones
    after: dict[str, int] = field(default_factory=dict)  # items per cart after the retries and resends
    limited_won: dict[str, int] = field(default_factory=dict)  # per cart: poster adds answered 2xx (of 2)
    final: dict[str, int] = field(default_factory=dict)  # items per cart at the end, over HTTP
    on_disk: dict[str, int] = field(default_factory=dict)  # ... and where the state lives
    replays_ok: bool = False  # every acknowledged add sent again was answered as a replay, with the cart
    retried: int = 0
    retried_replayed: int = 0  # in-flight adds that had been made: their retry was answered as a replay
    resent: int = 0  # acknowledged adds sent again
    state_bytes: int = 0  # entities: the largest cart checkpoint after the run
    problems: list[str] = field(default_factory=list)  # filled by judge(): empty means correct

    @property
    def correct(self) -> bool:
        return not self.problems


def judge(run: Run) -> Run:
    """Say what is wrong with a run, from its counts (``run.problems``; empty: correct)."""
    acked, problems = run.load.acked, run.problems
    if run.load.statuses:
        problems.append(f"answers that were not 2xx: {dict(run.load.statuses)}")
    lost = {u: (run.before.get(u, 0), n) for u, n in acked.items() if run.before.get(u, 0) < n}
    if lost:
        problems.append(f"acknowledged adds lost (in cart, acknowledged): {_few(lost)}")
    if not run.replays_ok:
        problems.append("an acknowledged add sent again was not answered as a replay of the cart as it is")
    if run.after != run.sent or sum(acked.values()) + run.retried != sum(run.after.values()):
        problems.append(f"carts (items, adds sent) that differ: {_few(_diff(run.after, run.sent))}")
    wrong = {u: n for u, n in run.limited_won.items() if n != 1}
    if len(run.limited_won) != len(run.sent) or wrong:
        problems.append(f"one-per-customer adds won from two devices (must be 1 each): {_few(wrong)}")
    expected = {u: n + run.limited_won.get(u, 0) for u, n in run.sent.items()}
    if run.final != expected:
        problems.append(f"carts at the end (items, expected): {_few(_diff(run.final, expected))}")
    if {u: n for u, n in run.on_disk.items() if n} != {u: n for u, n in expected.items() if n}:
        problems.append(f"stored state (items, expected): {_few(_diff(run.on_disk, expected))}")
    return run


def _diff(got: dict[str, int], want: dict[str, int]) -> dict[str, tuple[int, int]]:
    return {u: (got.get(u, 0), want.get(u, 0)) for u in got.keys() | want.keys()
            if got.get(u, 0) != want.get(u, 0)}


def _few(d: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(d.items())[:5])


async def _view(session: aiohttp.ClientSession, url: str, user: str) -> int:
    async with session.get(f"{url}/carts/{user}") as resp:
        resp.raise_for_status()
        return sum((await resp.json())["items"].values())


async def _counts(session: aiohttp.ClientSession, url: str, users: int) -> dict[str, int]:
    """Items per cart; the first call also starts the carts and opens the connections before the clock."""
    return {f"u{u}": await _view(session, url, f"u{u}") for u in range(users)}


async def _add(session: aiohttp.ClientSession, url: str, key: str, user: str, sku: str) -> tuple[int, Any]:
    async with session.post(f"{url}/carts/{user}/items", json={"sku": sku, "qty": 1},
                            headers={"Idempotency-Key": key}) as resp:
        if resp.status >= 500:
            resp.raise_for_status()
        return resp.status, await resp.json()


async def _measure(server: str, url: str, args: argparse.Namespace) -> Run:
    """Warm up, load, then check the carts over HTTP: retry what was in flight, resend the acknowledged
    adds last seen, race two devices for the poster; :func:`judge` once the stored state is read."""
    async with aiohttp.ClientSession() as session:
        await _counts(session, url, args.users)
        loadavg = os.getloadavg()[0]
        load = await _generate(url, args.seconds, args.connections, args.users, args.load)
        run = Run(server, load, loadavg, before=await _counts(session, url, args.users))
        sent = Counter({f"u{u}": 0 for u in range(args.users)}) + load.acked
        for key, user, sku in load.pending:  # a client retries what it got no answer for, same key
            status, answer = await _add(session, url, key, user, sku)
            if 200 <= status < 300:
                run.retried_replayed += bool(answer.get("replayed"))
                sent[user] += 1
        run.retried = len(load.pending)
        run.replays_ok = True
        for key, user, sku in load.last_acked:  # a client that lost an answer that was sent: not again
            status, answer = await _add(session, url, key, user, sku)
            now = sum(answer["items"].values()) if status == 200 else -1  # the cart as it is: every add once
            run.replays_ok &= answer.get("replayed") is True and now == sent[user]
        run.resent = len(load.last_acked)
        run.sent = {f"u{u}": sent[f"u{u}"] for u in range(args.users)}
        run.after = await _counts(session, url, args.users)

        async def race(user: str) -> int:  # web and mobile add the one-per-customer item at once
            answers = await asyncio.gather(*(_add(session, url, f"{user}.{device}.{LIMITED}", user, LIMITED)
                                             for device in ("web", "mobile")))
            return sum(200 <= status < 300 for status, _ in answers)

        won = await asyncio.gather(*(race(user) for user in run.sent))
        run.limited_won = dict(zip(run.sent, won, strict=True))
        run.final = await _counts(session, url, args.users)
    return run


async def run_entities(args: argparse.Namespace, folder: str) -> Run:
    """The cart app as a user runs it (``python -m kernel run ... --asgi``, the demo's :func:`running`)."""
    path = os.path.join(folder, "entities.db")
    async with running(workers=args.workers, state=path) as (url, process):
        run = await _measure("entities", url, args)
    if process.returncode != 0:
        run.problems.append(f"the app exited {process.returncode} on SIGINT")
    carts = {}
    for entry in kernel.checkpoints.entries(path):  # the carts' checkpoints, read once the node stopped
        if isinstance(entry.key, tuple) and entry.key[0] == app.carts.name and entry.key[1] in run.sent:
            carts[entry.key[1]] = sum(kernel.checkpoints.load(path, entry.key)["items"].values())
            run.state_bytes = max(run.state_bytes, entry.size)
    run.on_disk = carts
    return judge(run)


async def run_postgres(args: argparse.Namespace, folder: str) -> Run:
    """In a schema of its own (dropped afterwards), so that a server shared with others is left as it was."""
    import asyncpg

    dsn = f"{args.postgres}{'&' if '?' in args.postgres else '?'}search_path={_PG_SCHEMA}"
    conn = await asyncpg.connect(args.postgres)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {_PG_SCHEMA} CASCADE; CREATE SCHEMA {_PG_SCHEMA}; "
                           f"SET search_path = {_PG_SCHEMA}; {_SCHEMA}; {_PG_ADD}")
        async with _stateless_fronts("postgres", dsn, args) as url:
            run = await _measure("postgres", url, args)
        rows = await conn.fetch("SELECT customer, SUM(qty) AS n FROM items GROUP BY customer")
        run.on_disk = {r["customer"]: r["n"] for r in rows}
        await conn.execute(f"DROP SCHEMA {_PG_SCHEMA} CASCADE")
    finally:
        await conn.close()
    return judge(run)


async def run_sqlite(args: argparse.Namespace, folder: str) -> Run:
    path = os.path.join(folder, "stateless.db")
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
    async with _stateless_fronts("sqlite", path, args) as url:
        run = await _measure("sqlite", url, args)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        run.on_disk = dict(conn.execute("SELECT customer, SUM(qty) FROM items GROUP BY customer").fetchall())
    return judge(run)


RUNNERS = {"entities": run_entities, "postgres": run_postgres, "sqlite": run_sqlite}


async def compare(args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        if "postgres" in args.sides and not args.postgres:  # a server of our own, durable defaults
            server = stack.enter_context(PostgresServer())
            args.postgres = server.dsn
        for i in range(args.runs):
            for side in args.sides:
                folder = tempfile.mkdtemp(prefix="cart-versus-")
                try:
                    run = await RUNNERS[side](args, folder)
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
                runs.append(run)
                ld = run.load
                size = f", cart checkpoint <= {run.state_bytes:,} B" if run.state_bytes else ""
                console.print(f"[dim]run {i + 1} {side}: {ld.requests:,} requests, {ld.per_s:,.0f}/s, "
                              f"p50 {ld.p50_ms:.1f} ms, p99 {ld.p99_ms:.1f} ms, retried {run.retried} "
                              f"({run.retried_replayed} replays), resent {run.resent} acknowledged{size}, "
                              f"load avg {run.loadavg:.2f}: "
                              f"{'correct' if run.correct else '; '.join(run.problems)}[/]")
    return runs


def show(runs: list[Run], args: argparse.Namespace) -> None:
    tool = runs[0].load.tool
    table = Table(title=f"{args.users} users, {args.connections} connections ({tool}), {args.seconds:g} s, "
                        f"{args.workers} server processes each; median of {args.runs}")
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
    parser = argparse.ArgumentParser(prog="python -m examples.cart.versus",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load duration per run (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (default 64)")
    parser.add_argument("--workers", type=int, default=2,
                        help="server processes on each side: node workers, uvicorn processes (default 2)")
    parser.add_argument("--users", type=int, default=50, help="carts the load spreads over (default 50)")
    parser.add_argument("--runs", type=int, default=1, help="runs per side; the table shows medians")
    parser.add_argument("--only", choices=SIDES, action="append", help="measure this side (repeatable)")
    parser.add_argument("--load", choices=("wrk", "aiohttp"), default="wrk",
                        help="load generator (default wrk; the aiohttp client when wrk is missing)")
    parser.add_argument("--postgres", metavar="DSN",
                        help="postgres: use this server (default: start one of its own, durable settings)")
    parser.add_argument("--pg-pool", type=int, default=10,
                        help="postgres: asyncpg connections per server process (default 10)")
    parser.add_argument("--sql-threads", type=int, default=0,
                        help="sqlite: SQLite threads per process (0: on the event loop, the default)")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "TARGET"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--load-client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        kernel.run(_serve_stateless(args.serve[0], args.serve[1], args.port, args))
        return 0
    if args.load_client:
        kernel.run(_client(args.load_client, args.seconds, args.connections, args.users))
        return 0
    if args.load == "wrk" and shutil.which("wrk") is None:
        console.print(f"[yellow]{WRK_MISSING}[/]")
    args.sides = [side for side in SIDES if side in (args.only or SIDES)]
    runs = kernel.run(compare(args))
    show(runs, args)
    return 0 if all(r.correct for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
