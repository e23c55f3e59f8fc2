"""``Address``: where a process of the node listens, the one thing the transport needs to know of it.

The sockets (kernel/transport/sockets.py) authenticate, frame and batch bytes the same way over any
stream; only listening and connecting depend on the kind of address. There are two kinds:
:class:`UnixAddress` here, a Linux abstract name (``\\0pyotp-<random>/w0.sock``, what a node uses) or a
path in a private directory; and ``TcpAddress`` (kernel/transport/tcp.py), a ``host:port`` between the
nodes of a cluster (issue 17), TLS when given certificates. Over TCP the peer-uid check finds no
``SO_PEERCRED`` answer and the HMAC handshake decides alone, as kernel/transport/auth.py documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from . import auth

__all__ = ["Address", "UnixAddress", "as_address", "check_private_dir"]

Factory = Callable[[], asyncio.Protocol]


class Address(Protocol):
    """What the transport needs of an address: listen on it, connect to it, show it."""

    async def serve(self, loop: asyncio.AbstractEventLoop, factory: Factory) -> asyncio.AbstractServer: ...
    async def connect(self, loop: asyncio.AbstractEventLoop, factory: Factory) -> asyncio.Transport: ...
    def __str__(self) -> str: ...


def check_private_dir(path: str) -> None:
    """Refuse a socket directory that is a symlink, another user's, or open to others (``auth``)."""
    problem = auth.private_dir_problem(path)
    if problem is not None:
        raise PermissionError(f"socket directory {problem}")


#: Longest AF_UNIX address Linux accepts (sun_path is 108 bytes, one kept for the terminating NUL).
_MAX_ADDRESS = 107


def _check_address(path: str) -> None:
    if len(os.fsencode(path)) > _MAX_ADDRESS:
        raise ValueError(f"socket path {path!r} is longer than the {_MAX_ADDRESS} bytes AF_UNIX allows; "
                         "use a shorter directory")


def _abstract(path: str) -> bool:
    """A Linux abstract socket name (leading NUL): no file, gone when its process dies."""
    return path.startswith("\0")


async def _connect_abstract(loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol],
                            path: str) -> asyncio.Transport:
    # uvloop's create_unix_connection refuses abstract names (EINVAL): connect the socket ourselves.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, path)
        transport, _ = await loop.create_unix_connection(factory, sock=sock)
    except BaseException:
        sock.close()
        raise
    return transport


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """A Unix-domain socket: a Linux abstract name (leading NUL) or a path in a private 0700 directory."""

    path: str

    def __str__(self) -> str:
        return self.path

    async def serve(self, loop: asyncio.AbstractEventLoop, factory: Factory) -> asyncio.AbstractServer:
        path = self.path
        _check_address(path)
        if _abstract(path):  # no file to guard: the peer uid check and the handshake do
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
                sock.setblocking(False)
                return await loop.create_unix_server(factory, sock=sock)
            except BaseException:
                sock.close()
                raise
        check_private_dir(os.path.dirname(path))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left by a dead predecessor of the same worker
        server = await loop.create_unix_server(factory, path)
        os.chmod(path, 0o600)
        return server

    async def connect(self, loop: asyncio.AbstractEventLoop, factory: Factory) -> asyncio.Transport:
        if _abstract(self.path):
            return await _connect_abstract(loop, factory, self.path)
        transport, _ = await loop.create_unix_connection(factory, self.path)
        return transport


def as_address(address: str | Address) -> Address:
    """A socket path or abstract name (str) as a :class:`UnixAddress`; an ``Address`` as itself."""
    return UnixAddress(address) if isinstance(address, str) else address
