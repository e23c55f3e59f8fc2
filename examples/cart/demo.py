"""The cart demo: two devices per household racing on one cart over HTTP, and a worker killed mid-run.

:func:`demo` returns :class:`CartReport` (what was measured); :func:`show` prints it.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

import kernel
from kernel import Node

from .._cli import Claim, all_hold, console, show_claims
from .web import CartClient, start_server

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


async def demo(*, workers: int = 2, households: int = 12, shoppers: int = 30, adds: int = 10,
               seed: int = 1) -> CartReport:
    """Run the races and the worker kill against a real HTTP server; return what was measured."""
    rng = random.Random(seed)
    folder = tempfile.mkdtemp(prefix="cart-demo-")
    state = os.path.join(folder, "carts.db")
    started = time.perf_counter()
    async with asyncio.timeout(50), Node(workers=workers, state=state) as node:
        runner, url = await start_server(0)
        try:
            async with aiohttp.ClientSession() as session:
                web, mobile = CartClient(session, url, "web"), CartClient(session, url, "mobile")
                homes = [f"household{i}" for i in range(households)]
                races = await asyncio.gather(*(husband_and_wife(web, mobile, h) for h in homes))
                posters = await asyncio.gather(*(one_per_customer(web, mobile, h) for h in homes))

                users = [f"shopper{i}" for i in range(shoppers)]
                acked: Counter[tuple[str, str]] = Counter()
                progress, half = [0], asyncio.Event()
                total = shoppers * 2 * adds
                crowd = asyncio.gather(*(
                    shopper(device, user, adds, acked, progress, half, total // 2, rng)
                    for user in users for device in (web, mobile)))
                await half.wait()  # half the adds are acknowledged: now pull the plug on worker 1
                victim = node.workers[1 % workers]
                os.kill(victim, signal.SIGKILL)
                await crowd
                carts = {u: await web.view(u) for u in users}
        finally:
            await runner.cleanup()
        replacement = node.workers[1 % workers]
    on_disk = len([k for k in kernel.checkpoints.keys(state) if isinstance(k, tuple) and k[0] == "cart"])
    seconds = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)

    exact = sum(
        carts[u]["items"] == {sku: n for (user, sku), n in acked.items() if user == u} for u in users)
    report = CartReport(
        url=url, households=households,
        checkout_won=sum(w == "checkout" for w, _ in races), delete_won=sum(w == "delete" for w, _ in races),
        race_consistent=sum(ok for _, ok in races), posters_bought=dict(zip(homes, posters, strict=True)),
        shoppers=shoppers, adds_acknowledged=sum(acked.values()),
        items_in_carts=sum(sum(c["items"].values()) for c in carts.values()), carts_exact=exact,
        carts_restored=sum(c["restores"] > 0 for c in carts.values()),
        worker_killed=(victim, replacement), carts_on_disk=on_disk,
        server_errors=web.server_errors + mobile.server_errors, seconds=seconds)
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
    )
    return CartReport(**{f: getattr(r, f) for f in r.__dataclass_fields__ if f != "claims"}, claims=claims)


def show(report: CartReport) -> None:
    console.rule("[bold]Shopping carts, one actor each, behind HTTP")
    console.print(
        f"An aiohttp server on {report.url} (in the node process) sends each request to the user's cart "
        "actor, found or started by name. Each cart checkpoints every change to SQLite before it "
        "answers. Two apps, [bold]web[/] and [bold]mobile[/], hit the same carts at the same time.\n")
    console.print(f"  1. {report.households} couples: he checks out on the web while she deletes the cart "
                  "on her phone.")
    console.print("  2. Both devices grab the last [italic]one-per-customer[/] poster and check out at once.")
    console.print(f"  3. {report.shoppers} shoppers add items from both devices; halfway through, worker 1 "
                  "is killed with SIGKILL. The kernel starts a new worker; carts come back on demand.\n")
    show_claims(report.claims)
    console.print(f"\n[dim]{report.carts_on_disk} carts are in the checkpoint file; whole demo "
                  f"{report.seconds:.1f}s.[/]")
    console.print("\nTry it yourself: [cyan]python -m examples.cart --serve[/] prints a URL to curl.")


async def serve(workers: int = 2, port: int = 8080, state: str | None = None) -> int:
    """Run the API until Ctrl-C (the node is named "cart" for the observer)."""
    async with Node(workers=workers, state=state, name="cart") as node:
        runner, url = await start_server(port)
        try:
            console.print(f"[bold]Cart API on {url}[/] ({len(node.workers)} workers). Try:")
            console.print(f"  curl -X POST {url}/carts/ann/items -H 'content-type: application/json' "
                          "-d '{\"sku\": \"tee\", \"qty\": 2}'")
            console.print(f"  curl {url}/carts/ann")
            console.print(f"  curl -X POST {url}/carts/ann/checkout")
            console.print("Watch: [cyan]python -m tools.observer --node cart[/]. Ctrl-C stops.")
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
    return 0
