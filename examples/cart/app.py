"""The cart API as a FastAPI app served by the runtime, one ``Entities`` of carts behind it.

Run it::

    python -m kernel run examples.cart.app:root --asgi examples.cart.app:app --port 8080

``root`` is the tree (one ``Entities("carts", Cart)``); ``--asgi`` adds uvicorn in every worker, all on
one port with ``SO_REUSEPORT``. A request handler runs on the worker that accepted the connection and
calls ``carts.call(user, ...)`` from that worker's context: the first message for a user starts their
cart (exactly one, however many devices race for it) on the worker a stable hash of the user picks;
the cart answers only once its new state is committed to SQLite (``Checkpoint(every=1, durable=True)``).
A killed worker takes its carts and its front with it: the next request for such a cart starts it on
the replacement worker from its checkpoint, and the other worker's front keeps answering meanwhile.

API (JSON): ``GET /carts/{user}``; ``POST /carts/{user}/items`` ``{"sku", "qty"}``;
``DELETE /carts/{user}/items/{sku}``; ``DELETE /carts/{user}`` (empty it);
``POST /carts/{user}/checkout``. Changes take an ``Idempotency-Key`` header, echoed on the answer:
resend it on retry. A retried key is not applied again: the answer has ``"replayed": true`` and shows
the cart as it is now (add, remove), the order placed (checkout) or what was removed (delete). A
refused change (empty cart, limited item...) is ``409`` with ``{"error": why}``, and so is its retry.
``503`` means the cart could not be reached for a few seconds (its worker is being replaced): retry
with the same key. ``GET /carts/{user}/host`` says which worker process hosts the cart (the demo and
the tests kill it).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from kernel import ActorExited, CallTimeout
from supervisors import ChildSpec, Entities

from .cart import Cart

#: The carts: one actor per user, registered as ``("carts", user)`` (also its checkpoint key).
carts = Entities("carts", Cart, idle_timeout=60.0)
#: The tree ``python -m kernel run examples.cart.app:root`` starts; ``--asgi`` adds the fronts after it.
root: list[ChildSpec] = [carts.child_spec()]

#: How long a handler keeps trying a cart whose worker died before answering 503 (seconds, about).
_RETRY_FOR = 10.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def ask(user: str, request: tuple[Any, ...]) -> tuple[str, Any] | None:
    """The cart's answer, or None when it could not be reached for ``_RETRY_FOR`` seconds.

    A call in flight when the cart's worker dies fails (``ActorExited("worker_down")``); the change may
    or may not have been committed, so it is sent again with the same idempotency key: a committed one
    is answered as a replay, never applied twice. The short backoff leaves time for the replacement
    worker to come up (a client retry, not a synchronisation).
    """
    loop = asyncio.get_running_loop()
    deadline, delay = loop.time() + _RETRY_FOR, 0.01
    while True:
        try:
            answer: tuple[str, Any] = await carts.call(user, request, timeout=5.0)
            return answer
        except (ActorExited, CallTimeout):
            if loop.time() + delay > deadline:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


def _reply(answer: tuple[str, Any] | None) -> JSONResponse:
    if answer is None:
        return JSONResponse({"error": "the cart is not reachable now: retry with the same Idempotency-Key"},
                            status_code=503)
    status, value = answer
    if status == "ok":
        return JSONResponse(value)
    return JSONResponse({"error": value}, status_code=409)


def _key(request: Request) -> str:
    return request.headers.get("Idempotency-Key") or uuid.uuid4().hex


class EchoKey:
    """Answer with the request's ``Idempotency-Key``, spelled so: a client (wrk's script, which reads
    headers case-sensitively) matches answers to requests. Plain ASGI, as Starlette's headers would
    lower-case the name."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = None
        if scope["type"] == "http":
            key = next((v for k, v in scope["headers"] if k == b"idempotency-key"), None)
        if key is None:
            await self.app(scope, receive, send)
            return

        async def send_with_key(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"Idempotency-Key", key)]
            await send(message)

        await self.app(scope, receive, send_with_key)


app = FastAPI(title="Carts, one actor per user", openapi_url=None)
app.add_middleware(EchoKey)


@app.get("/carts/{user}")
async def view(user: str) -> JSONResponse:
    return _reply(await ask(user, ("view",)))


@app.get("/carts/{user}/host")
async def host(user: str) -> JSONResponse:
    """Which worker hosts the cart (activating it): ``{"worker": index, "os_pid": pid}``."""
    answer = await ask(user, ("host",))
    if answer is None:
        return _reply(None)
    return JSONResponse(answer[1])


@app.post("/carts/{user}/items")
async def add(user: str, request: Request) -> JSONResponse:
    try:
        body = await request.json()
    except ValueError:  # not JSON: the client's mistake, a 400, not a 500 with a traceback
        body = None
    sku, qty = (body.get("sku"), body.get("qty", 1)) if isinstance(body, dict) else (None, None)
    if not isinstance(sku, str) or isinstance(qty, bool) or not isinstance(qty, int):
        return JSONResponse({"error": "body must be {\"sku\": str, \"qty\": int}"}, status_code=400)
    return _reply(await ask(user, ("add", _key(request), sku, qty)))


@app.delete("/carts/{user}/items/{sku}")
async def remove(user: str, sku: str, request: Request) -> JSONResponse:
    return _reply(await ask(user, ("remove", _key(request), sku)))


@app.delete("/carts/{user}")
async def delete(user: str, request: Request) -> JSONResponse:
    return _reply(await ask(user, ("delete", _key(request))))


@app.post("/carts/{user}/checkout")
async def checkout(user: str, request: Request) -> JSONResponse:
    return _reply(await ask(user, ("checkout", _key(request))))
