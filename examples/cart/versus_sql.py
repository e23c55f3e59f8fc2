"""The seed's real question, measured: per-user cart actors vs a stateless server with SQLite per request.

Both serve the same HTTP route (``POST /carts/{user}/items`` with an idempotency key) on 127.0.0.1 and
are driven by the same load: every user has a "web" and a "mobile" client adding items at once.

* **actors**: the cart example's front (``examples.cart.web``): each request goes to the user's cart
  actor, found by name; the cart checkpoints durably (``Checkpoint(every=1, durable=True)``).
* **stateless**: each request runs one SQLite transaction (``BEGIN IMMEDIATE``: read the cart, apply the
  add unless its key was seen, write it back) on a worker thread; the same WAL file settings
  (``synchronous=NORMAL``).

Both must be correct under the races (every acknowledged add present exactly once); the figures are
requests/s and latency percentiles. Run: ``python -m examples.cart.versus_sql [--users N] [--adds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from typing import Any

import aiohttp
from aiohttp import web
from rich.console import Console
from rich.table import Table

import kernel
from kernel import Node

from .web import start_server


def _stateless_app(path: str) -> web.Application:
    local = threading.local()

    def db() -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            local.conn = conn
        return conn

    def add(user: str, key: str, sku: str, qty: int) -> dict[str, Any]:
        conn = db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT body FROM carts WHERE user = ?", (user,)).fetchone()
            cart = json.loads(row[0]) if row else {"items": {}, "keys": []}
            if key not in cart["keys"]:
                cart["items"][sku] = cart["items"].get(sku, 0) + qty
                cart["keys"].append(key)
                conn.execute("INSERT OR REPLACE INTO carts(user, body) VALUES (?, ?)",
                             (user, json.dumps(cart)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return {"items": cart["items"]}

    def view(user: str) -> dict[str, Any]:
        row = db().execute("SELECT body FROM carts WHERE user = ?", (user,)).fetchone()
        return {"items": json.loads(row[0])["items"] if row else {}}

    routes = web.RouteTableDef()

    @routes.post("/carts/{user}/items")
    async def post(request: web.Request) -> web.Response:
        body = await request.json()
        key = request.headers.get("Idempotency-Key") or uuid.uuid4().hex
        return web.json_response(await asyncio.to_thread(
            add, request.match_info["user"], key, body["sku"], int(body.get("qty", 1))))

    @routes.get("/carts/{user}")
    async def get(request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(view, request.match_info["user"]))

    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS carts (user TEXT PRIMARY KEY, body TEXT)")
    app = web.Application()
    app.add_routes(routes)
    return app


async def _serve_stateless(path: str) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(_stateless_app(path), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    return runner, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


_SKUS = ("tee", "mug", "socks", "sticker")  # from the cart's catalog; none is one-per-customer


async def _load(url: str, users: int, adds: int) -> dict[str, Any]:
    """users x 2 devices, each adding ``adds`` distinct items; returns rates, latencies, correctness."""
    latencies: list[float] = []
    acked: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def device(user: str, name: str) -> None:
            for i in range(adds):
                t0 = time.perf_counter()
                async with session.post(f"{url}/carts/{user}/items", json={"sku": _SKUS[i % 4], "qty": 1},
                                        headers={"Idempotency-Key": f"{user}-{name}-{i}"}) as resp:
                    resp.raise_for_status()
                    await resp.read()
                latencies.append(time.perf_counter() - t0)
                acked[user] = acked.get(user, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(device(f"u{u}", d) for u in range(users) for d in ("web", "mobile")))
        seconds = time.perf_counter() - started
        exact = 0
        for u in range(users):
            async with session.get(f"{url}/carts/u{u}") as resp:
                items = (await resp.json())["items"]
            exact += sum(items.values()) == acked.get(f"u{u}", 0) == 2 * adds
    latencies.sort()
    n = len(latencies)
    return {"requests": n, "per_s": n / seconds, "p50_ms": latencies[n // 2] * 1e3,
            "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1e3, "carts_exact": exact, "users": users}


async def compare(users: int = 50, adds: int = 40, workers: int = 2) -> dict[str, dict[str, Any]]:
    folder = tempfile.mkdtemp(prefix="cart-vs-sql-")
    results: dict[str, dict[str, Any]] = {}
    async with Node(workers=workers, state=os.path.join(folder, "actors.db")):
        runner, url = await start_server(0)
        try:
            results["actors"] = await _load(url, users, adds)
        finally:
            await runner.cleanup()
    runner, url = await _serve_stateless(os.path.join(folder, "stateless.db"))
    try:
        results["stateless"] = await _load(url, users, adds)
    finally:
        await runner.cleanup()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.cart.versus_sql",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=50, help="users, each with a web and a mobile client")
    parser.add_argument("--adds", type=int, default=40, help="adds per device")
    args = parser.parse_args(argv)
    results = kernel.run(compare(args.users, args.adds))
    table = Table(title=f"{args.users} users x 2 devices x {args.adds} adds, same HTTP route")
    for col in ("server", "requests", "req/s", "p50 ms", "p99 ms", "carts exact"):
        table.add_column(col, justify="right" if col != "server" else "left")
    for name, r in results.items():
        table.add_row(name, f"{r['requests']:,}", f"{r['per_s']:,.0f}", f"{r['p50_ms']:.1f}",
                      f"{r['p99_ms']:.1f}", f"{r['carts_exact']}/{r['users']}")
    Console().print(table)
    ok = all(r["carts_exact"] == r["users"] for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
