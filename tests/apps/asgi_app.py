"""A raw ASGI app served by ``python -m kernel run tests.apps.asgi_app:children --asgi
tests.apps.asgi_app:app --port N`` in the ASGI front test (tests/test_asgi.py).

Each front's lifespan startup records ``("up", os pid, worker index)`` in the ``fronts`` facts, so the
test waits for a restarted front on a fact (``GET /wait/N``) rather than a clock. ``GET /hit/KEY``
counts in an entity.
"""

from __future__ import annotations

import json
import os
from typing import Any

import kernel
from kernel import Actor
from kernel.testkit import Facts
from supervisors import ChildSpec, Entities


class Hits(Actor):
    async def init(self, key: str) -> None:
        self.state = 0

    async def handle_call(self, request: Any, caller: Any) -> Any:
        self.state += 1
        return self.state


hits = Entities("hits", Hits)
children = [ChildSpec("fronts", Facts, name="fronts"), hits.child_spec()]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                kernel.cast("fronts", ("up", os.getpid(), kernel.self_pid().worker))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    parts = scope["path"].strip("/").split("/")
    if parts[0] == "wait":
        answer: Any = await kernel.call("fronts", ("wait", int(parts[1])), timeout=30.0)
    elif parts[0] == "fronts-home":  # the worker index of the facts' actor
        answer = (await kernel.whereis("fronts")).worker  # type: ignore[union-attr]
    else:
        answer = await hits.call(parts[1], "hit")
    body = json.dumps({"os_pid": os.getpid(), "answer": answer}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
