"""The cart API on aiohttp, by hand. The cart example itself is :mod:`examples.cart.app`, FastAPI under
``python -m kernel run --asgi`` (what ``examples.cart.versus`` measures); this module shows what that
front does for you.

Where it listens, and why: one aiohttp server on 127.0.0.1 in the node process, on the node's own
event loop (:func:`start_server`). The carts live on the workers; a request handler finds the user's
cart by name (``registry.get_or_spawn``) and calls it. Killing a worker does not take the front down: a
request for a cart that was on the dead worker gets ``NoProc``/``ActorExited``, and the front asks
again, which starts the cart anew from its checkpoint.

When the one front is the limit, :func:`start_fronts` runs one server per worker instead, inside the
runtime as Erlang runs cowboy's acceptors inside the VM: an :class:`HttpFront` actor on every worker
listens on the same port with ``SO_REUSEPORT`` (the OS spreads connections over them) and its
handlers call the carts exactly as above: a name resolves the same from anywhere.

API (JSON): ``GET /carts/{user}``; ``POST /carts/{user}/items`` ``{"sku", "qty"}``;
``DELETE /carts/{user}/items/{sku}``; ``DELETE /carts/{user}`` (empty it);
``POST /carts/{user}/checkout``. Changes take an ``Idempotency-Key`` header: resend it on retry. A
retried key is not applied again: the answer has ``"replayed": true`` and shows the cart as it is now
(add, remove), the order placed (checkout) or what was removed (delete). A refused change (empty cart,
limited item...) is ``409`` with ``{"error": why}``, and so is its retry.
"""

from __future__ import annotations

import asyncio
import uuid
import zlib
from typing import Any

from aiohttp import web

import kernel
import registry
from kernel import Actor, ActorExited, CallTimeout, Node, NoProc, Pid

from .cart import Cart, cart_name

_ATTEMPTS = 20


def home_worker(user: str) -> int:
    """Each user's cart lives on a worker chosen from the user id, so carts spread over every worker
    whatever order the devices race in (round-robin would count the losers' spawns too)."""
    return zlib.crc32(user.encode()) % kernel.worker_count()


async def ask_cart(user: str, request: tuple[Any, ...]) -> tuple[str, Any]:
    """Send ``request`` to the user's cart, starting (or restoring) it if it is not running.

    A cart can vanish between finding it and calling it (its worker was killed, it passivated): then
    it is looked up again; a short backoff lets a replaced worker come up.
    """
    for attempt in range(_ATTEMPTS):
        try:
            cart = await registry.get_or_spawn(Cart, user, name=cart_name(user), worker=home_worker(user))
            answer: tuple[str, Any] = await kernel.call(cart, request, timeout=5.0)
            return answer
        except (NoProc, ActorExited, CallTimeout):
            await asyncio.sleep(0.02 * attempt)  # client retry backoff, not synchronisation
    raise RuntimeError(f"cart of {user} did not answer after {_ATTEMPTS} attempts")


def _reply(answer: tuple[str, Any]) -> web.Response:
    status, value = answer
    if status == "ok":
        return web.json_response(value)
    return web.json_response({"error": value}, status=409)


def _key(request: web.Request) -> str:
    return request.headers.get("Idempotency-Key") or uuid.uuid4().hex


@web.middleware
async def echo_key(request: web.Request, handler: Any) -> web.StreamResponse:
    """Answer with the request's ``Idempotency-Key``: a client (wrk's script) matches answers to requests."""
    response: web.StreamResponse = await handler(request)
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        response.headers["Idempotency-Key"] = key
    return response


def make_app() -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/carts/{user}")
    async def view(request: web.Request) -> web.Response:
        return _reply(await ask_cart(request.match_info["user"], ("view",)))

    @routes.post("/carts/{user}/items")
    async def add(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:  # not JSON: the client's mistake, a 400, not a 500 with a traceback
            body = None
        sku, qty = (body.get("sku"), body.get("qty", 1)) if isinstance(body, dict) else (None, None)
        if not isinstance(sku, str) or not isinstance(qty, int):
            return web.json_response({"error": "body must be {\"sku\": str, \"qty\": int}"}, status=400)
        return _reply(await ask_cart(request.match_info["user"], ("add", _key(request), sku, qty)))

    @routes.delete("/carts/{user}/items/{sku}")
    async def remove(request: web.Request) -> web.Response:
        user, sku = request.match_info["user"], request.match_info["sku"]
        return _reply(await ask_cart(user, ("remove", _key(request), sku)))

    @routes.delete("/carts/{user}")
    async def delete(request: web.Request) -> web.Response:
        return _reply(await ask_cart(request.match_info["user"], ("delete", _key(request))))

    @routes.post("/carts/{user}/checkout")
    async def checkout(request: web.Request) -> web.Response:
        return _reply(await ask_cart(request.match_info["user"], ("checkout", _key(request))))

    app = web.Application(middlewares=[echo_key])
    app.add_routes(routes)
    return app


async def _listen(host: str, port: int, *, reuse_port: bool = False, shutdown_timeout: float = 60.0
                  ) -> tuple[web.AppRunner, int]:
    """Serve the API on ``host:port`` (``port=0``: any free port); returns the runner and the bound port."""
    runner = web.AppRunner(make_app(), access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only through the asyncio server
    assert server is not None
    bound: int = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, bound


async def start_server(port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve the API on 127.0.0.1 (``port=0``: any free port); returns the runner and the base URL."""
    runner, bound = await _listen("127.0.0.1", port)
    return runner, f"http://127.0.0.1:{bound}"


class HttpFront(Actor):
    """The API served from inside a worker: ``init`` starts an aiohttp server on ``host:port`` with
    ``SO_REUSEPORT`` on this worker's event loop, ``terminate`` closes it (open connections get
    ``shutdown_timeout`` seconds to finish their request), and the port it owns is freed on any exit,
    a kill included. ``port=0`` takes a free port: ask the first
    front for it (call ``"port"``) and give it to the others.

    The request handlers run as tasks of this worker's loop, outside the actor's mailbox: many
    requests are in flight at once, while the actor itself only answers ``"port"``. They act for this
    actor (``kernel.call`` and ``registry.get_or_spawn`` inside them see it as the current process)
    because the server's connection tasks are created in the context of ``init``, where the kernel set
    it. The carts they start are this actor's children, unlinked: stopping a front leaves them running.
    """

    async def init(self, host: str = "127.0.0.1", port: int = 0, shutdown_timeout: float = 2.0) -> None:
        self.runner, self.port = await _listen(host, port, reuse_port=True, shutdown_timeout=shutdown_timeout)
        self.own(self._close_listeners)  # a kill runs no terminate: the kernel still frees the port

    def _close_listeners(self) -> None:
        for site in self.runner.sites:
            server = site._server  # the asyncio server; closing it frees the port at once
            if server is not None:
                server.close()

    async def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "port":
            return self.port
        return await super().handle_call(request, caller)

    async def terminate(self, reason: Any) -> None:
        await self.runner.cleanup()


async def start_fronts(node: Node, host: str = "127.0.0.1", port: int = 0) -> tuple[list[Pid], str]:
    """One :class:`HttpFront` per worker, all on one port; returns their pids and the base URL.

    They are the node's top-level actors: leaving ``async with Node()`` stops them the orderly way
    (``terminate`` closes the server) before the workers go; ``node.stop`` each one to stop serving
    earlier.
    """
    first = await node.spawn(HttpFront, host, port, worker=0)
    bound: int = await node.call(first, "port")
    rest = [await node.spawn(HttpFront, host, bound, worker=w) for w in range(1, len(node.workers))]
    return [first, *rest], f"http://{host}:{bound}"
