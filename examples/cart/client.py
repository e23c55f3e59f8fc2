"""The client the demo's "web" and "mobile" apps (and the tests) use to talk HTTP to the cart API."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp

#: How long a request is retried while the server cannot answer it (seconds, about).
RETRY_FOR = 15.0


class CartClient:
    """A device talking HTTP to the API; a change is retried with its idempotency key until the server
    answers, as a careful app would.

    Retried: a connection the server refused or dropped, mid-answer too (the front of a killed worker
    goes with it; the other worker's front takes the next connection) and a ``503`` (the cart's worker
    is being replaced). The same key makes the retry safe: a change the cart already committed is
    answered as a replay, not applied twice. ``retries`` counts them; ``server_errors`` counts the
    requests that got no answer at all in ``RETRY_FOR`` seconds, or a 5xx other than 503.
    """

    def __init__(self, session: aiohttp.ClientSession, base: str, device: str) -> None:
        self.session, self.base, self.device = session, base, device
        self.server_errors = 0
        self.retries = 0

    async def send(self, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
        """``(status, JSON body)``; a change gets a fresh ``Idempotency-Key`` unless ``key`` is given."""
        headers = {"Idempotency-Key": key or f"{self.device}-{uuid.uuid4().hex}"} if method != "GET" else {}
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + RETRY_FOR, 0.01
        while True:
            try:
                async with self.session.request(method, self.base + path, json=body, headers=headers) as resp:
                    if resp.status == 503 and loop.time() < deadline:
                        pass  # the cart is being restored elsewhere: same key again, below
                    elif resp.status >= 500:
                        self.server_errors += 1
                        return resp.status, {"error": await resp.text()}
                    else:
                        return resp.status, await resp.json()
            except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
                if loop.time() >= deadline:
                    self.server_errors += 1
                    return 599, {"error": "no answer"}
            self.retries += 1
            await asyncio.sleep(delay)  # a client's backoff, not a synchronisation
            delay = min(delay * 2, 0.5)

    async def view(self, user: str) -> dict[str, Any]:
        status, body = await self.send("GET", f"/carts/{user}")
        assert status == 200, body
        result: dict[str, Any] = body
        return result

    async def host(self, user: str) -> int:
        """The OS pid of the worker process hosting ``user``'s cart."""
        status, body = await self.send("GET", f"/carts/{user}/host")
        assert status == 200, body
        os_pid: int = body["os_pid"]
        return os_pid

    async def add(self, user: str, sku: str, qty: int = 1, key: str | None = None) -> tuple[int, Any]:
        return await self.send("POST", f"/carts/{user}/items", {"sku": sku, "qty": qty}, key)

    async def remove(self, user: str, sku: str, key: str | None = None) -> tuple[int, Any]:
        return await self.send("DELETE", f"/carts/{user}/items/{sku}", key=key)

    async def delete(self, user: str, key: str | None = None) -> tuple[int, Any]:
        return await self.send("DELETE", f"/carts/{user}", key=key)

    async def checkout(self, user: str, key: str | None = None) -> tuple[int, Any]:
        return await self.send("POST", f"/carts/{user}/checkout", key=key)
