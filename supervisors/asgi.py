"""An ASGI front in every worker (API section 14): uvicorn, one ``SO_REUSEPORT`` socket per worker.

Why one server per worker rather than one in the node: each worker's event loop accepts its own share of
the connections (the kernel spreads them over the listening sockets of one port), so every core serves
requests, and a request handler calls actors from the worker's own context (``kernel.call``, an
``Entities`` declaration), a local hand-off when the actor lives on the same worker. Each front is an
actor supervised like any other: a worker's death costs that worker's front, which its supervisor
starts again on the replacement; the sockets it owns are closed on any exit, a kill included, so the
restart binds the port again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from kernel import Actor

from .spec import ChildSpec
from .supervisor import Supervisor

__all__ = ["AsgiFront", "asgi_front", "reuseport_socket"]


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other processes may bind too (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class AsgiFront(Actor):
    """Serves an ASGI application with uvicorn on this worker's event loop.

    ``app`` is ``"module:attr"`` (imported in the worker) or the application itself. The server is
    started in ``init``, so connection handlers inherit this actor as their current process. A shutdown
    from the supervisor lets open requests finish (``terminate``, up to ``graceful`` seconds); any exit
    closes the listening socket at once (``own``).
    """

    trap_exits = True

    async def init(self, app: Any, host: str = "127.0.0.1", port: int = 8000, graceful: float = 5.0) -> None:
        import uvicorn  # only the workers that serve HTTP load it

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="auto",
                                timeout_graceful_shutdown=int(graceful) or 1)
        config.load()  # imports "module:attr" here: a bad app fails this start, naming it
        self._asgi_sock = self.own(reuseport_socket(host, port))
        server = self._asgi_server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        self._asgi_ticker: asyncio.Task[None] | None = None
        self.own(self._asgi_abort)
        # Not server.serve(): that installs signal handlers, and a worker's signals are the node's.
        await server.startup(sockets=[self._asgi_sock])
        if server.should_exit:
            raise RuntimeError(f"the ASGI application {app!r} failed its lifespan startup")
        self.port = self._asgi_sock.getsockname()[1]
        self._asgi_ticker = asyncio.get_running_loop().create_task(server.main_loop())

    async def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "port":
            return self.port
        return await super().handle_call(request, caller)

    async def terminate(self, reason: Any) -> None:
        server = self._asgi_server
        server.should_exit = True
        if self._asgi_ticker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._asgi_ticker
            self._asgi_ticker = None
        await server.shutdown(sockets=[self._asgi_sock])

    def _asgi_abort(self) -> None:
        """Every exit: stop accepting and drop the connections now (after ``terminate`` when it ran)."""
        server = self._asgi_server
        server.should_exit = server.force_exit = True
        if self._asgi_ticker is not None:
            self._asgi_ticker.cancel()
        for listener in getattr(server, "servers", ()):
            listener.close()
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()


def asgi_front(app: Any, *, port: int, workers: int, host: str = "127.0.0.1", id: Any = "asgi",
               graceful: float = 5.0) -> ChildSpec:
    """A supervisor of one :class:`AsgiFront` per worker, all on ``host:port``, as a child of your tree.

    ``workers`` is the node's worker count (``len(node.workers)``); ``python -m kernel run ... --asgi``
    builds this spec for you.

    Raises:
        TypeError, ValueError: a bad ``port``, ``workers`` or ``host`` (named in the message).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be a TCP port number 1..65535, got {port!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be the node's worker count (an int >= 1), got {workers!r}")
    if not isinstance(host, str) or not host:
        raise TypeError(f"host must be an address such as '127.0.0.1', got {host!r}")
    fronts = [ChildSpec(("front", i), AsgiFront, args=(app, host, port, graceful), worker=i,
                        shutdown=graceful + 2.0) for i in range(workers)]
    return ChildSpec(id, Supervisor, kwargs={"strategy": "one_for_one", "children": fronts,
                                             "max_restarts": 10, "max_seconds": 10.0},
                     type="supervisor")
