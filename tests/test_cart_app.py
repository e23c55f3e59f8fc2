"""The cart example as a user runs it: ``python -m kernel run examples.cart.app:root --asgi
examples.cart.app:app --port N --workers 2`` in a process of its own, over real HTTP.

The seed's three races are held by construction (one ``Entities`` actor per cart, one message at a
time): each test races two devices on the same carts and checks the one clear outcome; the last kills
the worker hosting a cart and finds the acknowledged cart again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import pytest

import kernel
from examples.cart.client import CartClient
from examples.cart.demo import app_env, command, free_port

Body = Callable[[CartClient, CartClient], Awaitable[None]]


class App:
    """The running app: its base URL and process."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], log: list[str]) -> None:
        self.url, self.process, self.log = url, process, log

    def run(self, body: Body) -> None:
        """Run ``body(web, mobile)``: two devices with sessions of their own (different connections)."""

        async def main() -> None:
            async with aiohttp.ClientSession() as s1, aiohttp.ClientSession() as s2:
                await body(CartClient(s1, self.url, "web"), CartClient(s2, self.url, "mobile"))

        kernel.run(main())


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    state = str(tmp_path_factory.mktemp("cart-app") / "carts.db")
    port = free_port()
    process = subprocess.Popen(command(port, workers=2, state=state), env={**app_env(), "COLUMNS": "200"},
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line.decode(errors="replace"))
            if "watch it live" in log[-1]:
                ready.set()
        ready.set()  # exited: the test below says so with its log

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(45) and process.poll() is None, "".join(log)
        yield App(f"http://127.0.0.1:{port}", process, log)
        # Ctrl-C, as a user stops it: the tree shuts down in order and the exit status is 0.
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0, "".join(log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(5)
        if process.stderr is not None:
            process.stderr.close()


def raw_post(url: str, path: str, body: bytes, key: str) -> bytes:
    """One HTTP/1.1 request on a plain socket: the answer's header names exactly as sent on the wire."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Idempotency-Key: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (path.encode(), key.encode(), len(body), body))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_the_routes_and_json_of_the_aiohttp_front_are_kept(app: App) -> None:
    answer = raw_post(app.url, "/carts/routes/items", b'{"sku": "tee", "qty": 2}', "routes-1")
    assert answer.startswith(b"HTTP/1.1 200 ") and b"\r\nIdempotency-Key: routes-1\r\n" in answer, answer

    async def body(web: CartClient, mobile: CartClient) -> None:
        cart = {"user": "routes", "items": {"tee": 2}, "orders": [], "restores": 0}
        assert await web.view("routes") == cart
        # A retry from the other device: no second effect, answered with the cart as it is.
        assert await mobile.add("routes", "tee", 2, key="routes-1") == (200, {**cart, "replayed": True})
        assert await web.send("POST", "/carts/routes/items", {"qty": 1}) == (
            400, {"error": "body must be {\"sku\": str, \"qty\": int}"})
        assert await web.add("routes", "nothing") == (409, {"error": "no such item: nothing"})
        assert (await web.add("routes", "mug"))[0] == 200
        status, now = await web.remove("routes", "mug")
        assert status == 200 and now["items"] == {"tee": 2}
        assert await web.remove("routes", "mug") == (409, {"error": "mug is not in the cart"})
        assert await web.checkout("routes", key="routes-c") == (
            200, {"number": 1, "items": {"tee": 2}, "total_cents": 3000})
        assert await web.checkout("routes", key="routes-c") == (
            200, {"number": 1, "items": {"tee": 2}, "total_cents": 3000, "replayed": True})
        assert await web.checkout("routes") == (409, {"error": "the cart is empty: nothing to check out"})
        assert (await web.add("routes", "socks"))[0] == 200
        removed = {"removed": {"socks": 1}}
        assert await web.delete("routes", key="routes-d") == (200, removed)
        assert await web.delete("routes", key="routes-d") == (200, {**removed, "replayed": True})
        assert await web.delete("routes") == (409, {"error": "the cart is already empty"})

    app.run(body)


def test_web_and_mobile_adding_to_one_cart_at_once_lose_and_double_nothing(app: App) -> None:
    async def body(web: CartClient, mobile: CartClient) -> None:
        users = [f"both{i}" for i in range(4)]  # first messages race too: one cart each is activated
        sends = [(device, user, f"{user}.{device.device}.{n}", ("tee", "mug", "socks")[n % 3])
                 for user in users for device in (web, mobile) for n in range(15)]
        firsts = await asyncio.gather(*(d.add(u, sku, key=k) for d, u, k, sku in sends))
        assert all(status == 200 and "replayed" not in cart for status, cart in firsts)
        # Every device resends every change (as after a lost answer): each is a replay, nothing doubles.
        again = await asyncio.gather(*(d.add(u, sku, key=k) for d, u, k, sku in sends))
        assert all(status == 200 and cart["replayed"] is True for status, cart in again)
        for user in users:
            assert (await web.view(user))["items"] == {"tee": 10, "mug": 10, "socks": 10}

    app.run(body)


def test_one_per_customer_bought_from_two_devices_at_once_sells_exactly_one(app: App) -> None:
    async def body(web: CartClient, mobile: CartClient) -> None:
        for user in (f"poster{i}" for i in range(5)):
            adds = await asyncio.gather(web.add(user, "poster"), mobile.add(user, "poster"))
            assert sorted(status for status, _ in adds) == [200, 409], adds
            limited = {"error": "poster is limited to one per customer"}
            assert limited in [b for _, b in adds]
            checkouts = await asyncio.gather(web.checkout(user), mobile.checkout(user))
            assert sorted(status for status, _ in checkouts) == [200, 409], checkouts
            assert await mobile.add(user, "poster") == (409, limited)  # bought already
            orders = (await web.view(user))["orders"]
            assert [o["items"] for o in orders] == [{"poster": 1}]

    app.run(body)


def test_checkout_racing_a_delete_of_the_same_cart_has_one_clear_outcome(app: App) -> None:
    async def body(web: CartClient, mobile: CartClient) -> None:
        outcomes = set()
        for user in (f"couple{i}" for i in range(8)):
            assert (await web.add(user, "tee"))[0] == (await mobile.add(user, "mug"))[0] == 200
            race = await asyncio.gather(web.checkout(user), mobile.delete(user))
            (c_status, order), (d_status, deleted) = race
            cart = await web.view(user)
            assert cart["items"] == {}, cart  # consistent afterwards, whichever won
            if c_status == 200:
                assert (d_status, deleted) == (409, {"error": "the cart is already empty"})
                assert cart["orders"] == [order] and order["items"] == {"tee": 1, "mug": 1}
                outcomes.add("checkout")
            else:
                assert (c_status, order) == (409, {"error": "the cart is empty: nothing to check out"})
                assert (d_status, deleted) == (200, {"removed": {"tee": 1, "mug": 1}})
                assert cart["orders"] == []
                outcomes.add("delete")
        assert outcomes  # every household had one of the two outcomes, never both, never neither

    app.run(body)


def test_a_cart_survives_sigkill_of_the_worker_hosting_it(app: App) -> None:
    async def body(web: CartClient, mobile: CartClient) -> None:
        for sku in ("tee", "mug", "sticker"):
            assert (await web.add("killed", sku, key=f"killed-{sku}"))[0] == 200
        host = await web.host("killed")
        os.kill(host, signal.SIGKILL)
        # The next request answers with the acknowledged cart, restored from its checkpoint on the
        # replacement worker (the client retries a connection the dead worker's front dropped).
        cart = await mobile.view("killed")
        assert cart["items"] == {"tee": 1, "mug": 1, "sticker": 1} and cart["restores"] == 1, cart
        assert await web.host("killed") != host
        status, again = await mobile.add("killed", "tee", key="killed-tee")  # remembered across the kill
        assert status == 200 and again["replayed"] is True and again["items"]["tee"] == 1
        assert web.server_errors == mobile.server_errors == 0

    app.run(body)
    assert app.process.poll() is None  # the node replaced its worker: the app is still up
