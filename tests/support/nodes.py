"""Node helpers for the suite: ``kernel.testing.run_node`` with the suite's body bound, a peer-uid probe."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import kernel.testing
from kernel import Node
from tests.support import BODY_BOUND, BOUND


def run_node(body: Callable[[Node], Awaitable[Any]], workers: int = 2, bound: float = BODY_BOUND,
             **kw: Any) -> Any:
    """Start a node, run ``body(node)`` inside it bounded by ``bound`` seconds, shut it down.

    The plugin's ``run_node`` with the suite's bound (inside pytest-timeout's), so a hung body fails
    with its own traceback rather than the timeout's.
    """
    return kernel.testing.run_node(body, workers, bound, **kw)


def probe_as_nobody(path: str, timeout: float = BOUND) -> bytes:
    """Fork a child that becomes uid 65534, connects to the Unix socket ``path``, reports what it got.

    Root walks into the (0700) directory first (an abstract name has none), then drops privileges, so
    only the peer-uid check (SO_PEERCRED) stands between the child and the socket. Returns
    ``b"got:..."`` or ``b"error:..."``.
    """
    import os
    import socket

    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child only
        try:
            os.close(rfd)
            abstract = path.startswith("\0")  # a Linux abstract name: no directory to walk into
            if not abstract:
                os.chdir(os.path.dirname(path))
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(path if abstract else os.path.basename(path))
                os.write(wfd, b"got:" + s.recv(1024))
        except BaseException as exc:
            os.write(wfd, f"error:{exc!r}".encode())
        finally:
            os._exit(0)
    os.close(wfd)
    try:
        with os.fdopen(rfd, "rb") as f:
            return f.read()
    finally:
        os.waitpid(child, 0)
