"""The cart demo: the FastAPI app of :mod:`examples.cart.app` under ``python -m kernel run --asgi``, two
devices per household racing on one cart over HTTP, and the worker hosting a cart killed mid-run.

:func:`demo` returns :class:`CartReport` (what was measured); :func:`show` prints it. :func:`running`
starts the app as a user would, in a process of its own, and stops it with SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import aiohttp

import kernel

from .._cli import Claim, all_hold, console, show_claims
from .app import carts
from .client import CartClient

PLAIN = ("tee", "mug", "socks", "sticker")


@dataclass(frozen=True, slots=True)
class CartReport:
    url: str
    households: int
    checkout_won: int  # households where the husband's checkout came first
    delete_won: int  # ... where the wife's delete came first
    race_consistent: int  # households whose outcome was all-or-nothing and left an empty cart
    posters_bought: dict[str, int]  # per household, how many one-per-customer posters they got
    shoppers: int
    adds_acknowledged: int
    items_in_carts: int
    carts_exact: int  # carts whose content equals exactly what their devices were told
    carts_restored: int  # carts that came back from their checkpoint after the kill
    worker_killed: tuple[int, int]  # (old OS pid, new OS pid)
    carts_on_disk: int
    server_errors: int  # requests the API could not answer (5xx)
    retries: int  # requests sent again with their key (a dropped connection, a 503)
    stopped_cleanly: bool  # SIGINT stopped `kernel run` with exit status 0
    seconds: float
    claims: tuple[Claim, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all_hold(self.claims)


async def husband_and_wife(web: CartClient, mobile: CartClient, user: str) -> tuple[str, bool]:
    """Fill the cart, then check out on the web while the mobile app deletes the cart, at once."""
    for sku in ("tee", "mug"):
        assert (await web.add(user, sku))[0] == 200
    (c_status, order), (d_status, deleted) = await asyncio.gather(web.checkout(user), mobile.delete(user))
    left = (await web.view(user))["items"]
    both = {"tee": 1, "mug": 1}
    if c_status == 200 and d_status == 409:
        return "checkout", order["items"] == both and not left
    if d_status == 200 and c_status == 409:
        return "delete", deleted["removed"] == both and not left
    return "both" if c_status == d_status == 200 else "neither", False


async def one_per_customer(web: CartClient, mobile: CartClient, user: str) -> int:
    """Both devices add the limited poster and check out at once, then try again; returns posters bought."""
    await asyncio.gather(web.add(user, "poster"), mobile.add(user, "poster"))
    await asyncio.gather(web.checkout(user), mobile.checkout(user))
    await asyncio.gather(web.add(user, "poster"), mobile.add(user, "poster"))  # refused: bought already
    await asyncio.gather(web.checkout(user), mobile.checkout(user))
    orders = (await web.view(user))["orders"]
    return sum(o["items"].get("poster", 0) for o in orders)


async def shopper(device: CartClient, user: str, adds: int, acked: Counter[tuple[str, str]],
                  progress: list[int], half: asyncio.Event, target: int, rng: random.Random) -> None:
    """Add ``adds`` items, one request at a time; count each add the server acknowledged."""
    for _ in range(adds):
        sku = rng.choice(PLAIN)
        status, _ = await device.add(user, sku)
        if status == 200:
            acked[(user, sku)] += 1
            progress[0] += 1
            if progress[0] >= target:
                half.set()


def command(port: int, *, workers: int = 2, state: str | None = None) -> list[str]:
    """The command that serves the cart app, as the README gives it."""
    argv = [sys.executable, "-m", "kernel", "run", "examples.cart.app:root",
            "--asgi", "examples.cart.app:app", "--port", str(port), "--workers", str(workers)]
    return argv if state is None else [*argv, "--state", state]


def app_env() -> dict[str, str]:
    """The environment with this package's root first on ``PYTHONPATH``: ``examples`` imports in the
    node and its workers from whatever directory the demo was started in."""
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (``kernel run --port`` takes no 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running(*, workers: int = 2, state: str | None = None, port: int | None = None,
                  ready_timeout: float = 60.0) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """Run :func:`command` in a process of its own; yield the base URL and the process once it serves.

    Ready means its root supervisor, and so the fronts, have started ("watch it live" is printed after
    that). On exit it gets SIGINT, as Ctrl-C would, and is waited for; ``process.returncode`` is then 0
    if it stopped cleanly.
    """
    port = free_port() if port is None else port
    env = {**app_env(), "COLUMNS": "200"}  # one log line a line: "watch it live" is not wrapped
    process = await asyncio.create_subprocess_exec(*command(port, workers=workers, state=state), env=env,
                                                   stdin=asyncio.subprocess.DEVNULL,
                                                   stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(ready_timeout):
            while not lines or "watch it live" not in lines[-1]:
                line = await process.stderr.readline()
                if not line:
                    raise RuntimeError("the cart app exited before serving:\n" + "".join(lines))
                lines.append(line.decode(errors="replace"))
        drain = asyncio.ensure_future(_drain(process.stderr, lines))
        try:
            yield f"http://127.0.0.1:{port}", process
        finally:
            process.send_signal(signal.SIGINT)
            async with asyncio.timeout(30):
                await process.wait()
            await drain
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _drain(stream: asyncio.StreamReader, lines: list[str]) -> None:
    """Keep reading the app's log so its pipe never fills (the last lines are kept for an error)."""
    while line := await stream.readline():
        lines.append(line.decode(errors="replace"))
        del lines[:-50]


async def demo(*, workers: int = 2, households: int = 12, shoppers: int = 30, adds: int = 10,
               seed: int = 1) -> CartReport:
    """Run the races and the worker kill against the app under ``kernel run --asgi``; return what was
    measured."""
    rng = random.Random(seed)
    folder = tempfile.mkdtemp(prefix="cart-demo-")
    state = os.path.join(folder, "carts.db")
    started = time.perf_counter()
    try:
        async with asyncio.timeout(120), running(workers=workers, state=state) as (url, process), \
                aiohttp.ClientSession() as session:
            web, mobile = CartClient(session, url, "web"), CartClient(session, url, "mobile")
            homes = [f"household{i}" for i in range(households)]
            races = await asyncio.gather(*(husband_and_wife(web, mobile, h) for h in homes))
            posters = await asyncio.gather(*(one_per_customer(web, mobile, h) for h in homes))

            users = [f"shopper{i}" for i in range(shoppers)]
            victim = await web.host(users[0])  # the worker hosting the first shopper's cart
            acked: Counter[tuple[str, str]] = Counter()
            progress, half = [0], asyncio.Event()
            total = shoppers * 2 * adds
            crowd = asyncio.gather(*(
                shopper(device, user, adds, acked, progress, half, total // 2, rng)
                for user in users for device in (web, mobile)))
            await half.wait()  # half the adds are acknowledged: now pull the plug on that worker
            os.kill(victim, signal.SIGKILL)
            await crowd
            carts_now = {u: await web.view(u) for u in users}
            replacement = await web.host(users[0])
        stopped_cleanly = process.returncode == 0
        prefix = carts.name
        on_disk = len([k for k in kernel.checkpoints.keys(state) if isinstance(k, tuple) and k[0] == prefix])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = time.perf_counter() - started

    exact = sum(
        carts_now[u]["items"] == {sku: n for (user, sku), n in acked.items() if user == u} for u in users)
    report = CartReport(
        url=url, households=households,
        checkout_won=sum(w == "checkout" for w, _ in races), delete_won=sum(w == "delete" for w, _ in races),
        race_consistent=sum(ok for _, ok in races), posters_bought=dict(zip(homes, posters, strict=True)),
        shoppers=shoppers, adds_acknowledged=sum(acked.values()),
        items_in_carts=sum(sum(c["items"].values()) for c in carts_now.values()), carts_exact=exact,
        carts_restored=sum(c["restores"] > 0 for c in carts_now.values()),
        worker_killed=(victim, replacement), carts_on_disk=on_disk,
        server_errors=web.server_errors + mobile.server_errors, retries=web.retries + mobile.retries,
        stopped_cleanly=stopped_cleanly, seconds=seconds)
    return _judge(report)


def _judge(r: CartReport) -> CartReport:
    claims = (
        Claim("Checkout on the web vs delete on the phone, at the same moment: one wins whole, never both",
              r.race_consistent == r.households,
              f"{r.households} households: checkout first in {r.checkout_won}, delete first in "
              f"{r.delete_won}; every cart left empty, every order complete"),
        Claim("A one-per-customer poster, added and bought from two devices at once, was sold once",
              all(n == 1 for n in r.posters_bought.values()),
              f"posters per household: {sorted(set(r.posters_bought.values()))}"),
        Claim("A worker was killed (SIGKILL) mid-run and no acknowledged item was lost or doubled",
              r.carts_exact == r.shoppers and r.items_in_carts == r.adds_acknowledged
              and r.server_errors == 0,
              f"{r.adds_acknowledged} adds acknowledged, {r.items_in_carts} items in the carts, "
              f"{r.server_errors} requests failed"),
        Claim("The carts that lived on the killed worker came back from their checkpoints",
              r.carts_restored > 0,
              f"{r.carts_restored} of {r.shoppers} carts restored; worker OS pid "
              f"{r.worker_killed[0]} -> {r.worker_killed[1]}"),
        Claim("Ctrl-C (SIGINT) stopped `kernel run` cleanly: every cart's final checkpoint, exit status 0",
              r.stopped_cleanly),
    )
    return CartReport(**{f: getattr(r, f) for f in r.__dataclass_fields__ if f != "claims"}, claims=claims)


def show(report: CartReport) -> None:
    console.rule("[bold]Shopping carts, one actor each, behind a FastAPI app")
    console.print(
        "[cyan]python -m kernel run examples.cart.app:root --asgi examples.cart.app:app[/] serves "
        f"{report.url} from every worker (uvicorn, one port). A handler calls "
        "[bold]carts.call(user, ...)[/]: "
        "[bold]Entities(\"carts\", Cart)[/] starts the user's cart on first use, one per user however "
        "many requests race, and each cart checkpoints every change to SQLite before it answers. Two "
        "apps, [bold]web[/] and [bold]mobile[/], hit the same carts at the same time.\n")
    console.print(f"  1. {report.households} couples: he checks out on the web while she deletes the cart "
                  "on her phone.")
    console.print("  2. Both devices grab the last [italic]one-per-customer[/] poster and check out at once.")
    console.print(f"  3. {report.shoppers} shoppers add items from both devices; halfway through, the worker "
                  "hosting the first shopper's cart is killed with SIGKILL. The kernel starts a new worker; "
                  "its carts come back from their checkpoints on their next request.\n")
    show_claims(report.claims)
    console.print(f"\n[dim]{report.carts_on_disk} carts are in the checkpoint file; {report.retries} "
                  "requests were sent again with their key across the kill; whole demo "
                  f"{report.seconds:.1f}s.[/]")
    console.print("\nTry it yourself: [cyan]python -m examples.cart --serve[/] runs the app and prints "
                  "what to curl.")


def serve(workers: int = 2, port: int = 8080, state: str | None = None) -> NoReturn:
    """Become ``python -m kernel run ... --asgi ...`` (the node is named "cart" for the observer): Ctrl-C
    stops it and exits 0."""
    url = f"http://127.0.0.1:{port}"
    console.print(f"[bold]Cart API on {url}[/] ({workers} workers), once the node is up. Try:")
    console.print(f"  curl -X POST {url}/carts/ann/items -H 'content-type: application/json' "
                  "-H 'Idempotency-Key: ann-1' -d '{\"sku\": \"tee\", \"qty\": 2}'")
    console.print(f"  curl {url}/carts/ann")
    console.print(f"  curl -X POST {url}/carts/ann/checkout")
    console.print(f"  kill -9 $(curl -s {url}/carts/ann/host | python -c 'import json,sys; "
                  "print(json.load(sys.stdin)[\"os_pid\"])')   # then curl the cart again")
    console.print("Watch: [cyan]python -m tools.observer --node cart[/]. Ctrl-C stops.")
    sys.stdout.flush()
    argv = [*command(port, workers=workers, state=state), "--name", "cart"]
    os.execve(argv[0], argv, app_env())
