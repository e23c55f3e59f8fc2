"""``TcpAddress``: a worker's ``host:port`` for the cluster (issue 17), with TLS when given certificates.

Workers of different nodes talk over TCP with the same framing, batching and HMAC handshake as the Unix
sockets of one node (kernel/transport/sockets.py): only listening and connecting differ, which is all an
``Address`` (kernel/transport/address.py) is. There is no ``SO_PEERCRED`` on TCP, so the handshake
decides alone (kernel/transport/auth.py); with :class:`TLS` it runs inside the encrypted channel, after
both sides have shown a certificate signed by the cluster's CA.

Both ends set ``TCP_NODELAY`` (asyncio and uvloop set it on their TCP transports too; we do not rely on
it): the sockets batch a loop tick's messages into one write themselves, so Nagle's delay would only add
latency to a lone call. The listening socket has ``SO_REUSEADDR`` so that a replaced worker rebinds its
port at once, while the old connections sit in TIME_WAIT.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .address import Factory

if TYPE_CHECKING:
    import ssl

__all__ = ["TLS", "TLS_HANDSHAKE_TIMEOUT", "TcpAddress", "parse_listen"]

#: Seconds a TLS handshake may take before the connection is dropped (a plain-TCP client never starts
#: one: it waits for our greeting, and would otherwise hold the connection for asyncio's default 60 s).
TLS_HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class TLS:
    """The node's certificate and key (PEM) and the cluster CA's certificate that signed every node's.

    Plain paths, so it pickles into worker processes; the files are read when a context is made. Both
    sides require the other's certificate and check it against ``cafile`` (mutual TLS, >= 1.2). The
    client does not check the host name: nodes are addressed by IP, and the CA is the cluster's own, so
    a certificate it signed is what identifies a member; one signed by anyone else is refused.
    """

    certfile: str
    keyfile: str
    cafile: str

    def __post_init__(self) -> None:
        for name in ("certfile", "keyfile", "cafile"):
            path = getattr(self, name)
            if not isinstance(path, str) or not path:
                raise ValueError(f"tls {name} must be a file path (str), got {path!r}")
            if not os.path.isfile(path):
                raise ValueError(f"tls {name} {path!r} does not exist (or is not a file)")
            if not os.access(path, os.R_OK):
                raise ValueError(f"tls {name} {path!r} is not readable by this user")

    def _context(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        import ssl  # only nodes given certificates pay for loading it

        ctx = ssl.create_default_context(purpose, cafile=self.cafile)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # What Python 3.13's default context checks, on every version: a certificate 3.13 would refuse
        # fails here too, at once, not after an upgrade.
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        ctx.load_cert_chain(self.certfile, self.keyfile)
        return ctx

    def server_context(self) -> ssl.SSLContext:
        """The listening side's context: it requires a client certificate signed by ``cafile``."""
        import ssl

        ctx = self._context(ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """The connecting side's context: it requires a server certificate signed by ``cafile``.

        No host-name check: peers are dialled by IP, and only the cluster's own CA is trusted, so the
        signature is the identity that matters (the HMAC handshake inside then proves the secret).
        """
        import ssl

        ctx = self._context(ssl.Purpose.SERVER_AUTH)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def parse_listen(text: str, argument: str = "listen") -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` as (host, port); ValueError naming ``argument`` otherwise.

    Port 0 is refused: the peers must know the port to dial it.
    """
    if not isinstance(text, str):
        raise ValueError(f"{argument} must be a 'host:port' string, got {text!r}")
    if text != text.strip() or any(c.isspace() for c in text):
        raise ValueError(f"{argument} {text!r} contains whitespace; write 'host:port'")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{argument} {text!r}: an IPv6 address is written '[addr]:port'")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"{argument} {text!r} has no port; write 'host:port'")
        if ":" in host:
            raise ValueError(f"{argument} {text!r}: an IPv6 address is written '[addr]:port'")
    if not host:
        raise ValueError(f"{argument} {text!r} has no host; write 'host:port' (e.g. '10.0.0.5:7400')")
    if not port_text.isdigit():
        raise ValueError(f"{argument} {text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{argument} {text!r}: port {port} is out of 1..65535")
    return host, port


def _nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True, slots=True)
class TcpAddress:
    """A TCP ``host:port``; with ``tls``, every connection to and from it is mutual TLS."""

    host: str
    port: int
    tls: TLS | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"host must be a non-empty string, got {self.host!r}")
        if type(self.port) is not int or not 1 <= self.port <= 65535:
            raise ValueError(f"port must be an int in 1..65535, got {self.port!r}")
        if self.tls is not None and not isinstance(self.tls, TLS):
            raise ValueError(f"tls must be a TLS(certfile, keyfile, cafile) or None, got {self.tls!r}")

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def serve(self, loop: asyncio.AbstractEventLoop, factory: Factory) -> asyncio.AbstractServer:
        family, kind, proto, _, addr = (await loop.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE))[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _nodelay(sock)  # Linux passes it on to every accepted socket
            sock.bind(addr)
            sock.setblocking(False)
            tls = self.tls
            if tls is None:
                return await loop.create_server(factory, sock=sock)
            return await loop.create_server(factory, sock=sock, ssl=tls.server_context(),
                                            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except BaseException:
            sock.close()
            raise

    async def connect(self, loop: asyncio.AbstractEventLoop, factory: Factory) -> asyncio.Transport:
        family, kind, proto, _, addr = (await loop.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM))[0]
        sock = socket.socket(family, kind, proto)
        try:
            _nodelay(sock)
            sock.setblocking(False)
            await loop.sock_connect(sock, addr)
            tls = self.tls
            if tls is None:
                transport, _ = await loop.create_connection(factory, sock=sock)
            else:
                transport, _ = await loop.create_connection(
                    factory, sock=sock, ssl=tls.client_context(), server_hostname=self.host,
                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except BaseException:
            sock.close()
            raise
        return transport
