"""kernel/transport/auth.py, the one set of checks both the transport and the control socket use."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from kernel.node import control
from kernel.transport import auth
from kernel.transport.sockets import Listener, Peer, check_private_dir

BOUND = 10.0
SECRET = b"s" * 32


def test_a_symlink_to_a_private_directory_is_refused_by_both_users(tmp_path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert auth.private_dir_problem(real) is None
    assert "symlink" in (auth.private_dir_problem(link) or "")
    with pytest.raises(PermissionError, match="symlink"):
        check_private_dir(str(link))  # the transport's check used to follow it (os.stat)
    with pytest.raises(control.UnsafeRuntimeDir, match="symlink"):
        control._check_private_dir(link)


def test_a_directory_open_to_others_is_refused_with_its_mode(tmp_path) -> None:
    tmp_path.chmod(0o755)
    with pytest.raises(PermissionError, match=r"0o755.*0700"):
        check_private_dir(str(tmp_path))


def test_the_two_sides_answers_differ_and_verify_only_their_own() -> None:
    nonce = os.urandom(auth.NONCE_BYTES)
    client = auth.mac(SECRET, "client", nonce)
    assert client != auth.mac(SECRET, "server", nonce)  # so an answer cannot be reflected back
    assert auth.verify(SECRET, "client", nonce, client)
    assert not auth.verify(SECRET, "server", nonce, client)
    assert not auth.verify(b"t" * 32, "client", nonce, client)


def test_peer_credentials_name_our_own_uid_over_a_socketpair() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        creds = auth.peer_credentials(a)
        assert creds is not None and creds[0] == os.getpid() and creds[1] == os.getuid()


def test_without_so_peercred_the_transport_relies_on_the_handshake(tmp_path, monkeypatch) -> None:
    """One behaviour where the platform cannot tell the peer's uid: None, and the HMAC decides.

    The transport's own uid lookup used to raise AttributeError here (the control socket's returned None).
    """
    monkeypatch.delattr(socket, "SO_PEERCRED")
    with socket.socket(socket.AF_UNIX) as sock:
        assert auth.peer_credentials(sock) is None
    directory = tmp_path / "s"
    directory.mkdir(mode=0o700)
    path = str(directory / "w0.sock")

    async def main() -> None:
        got: asyncio.Queue = asyncio.Queue()
        listener = Listener(path, SECRET, got.put_nowait, lambda *a: None)
        await listener.start()
        good, bad = Peer(path, SECRET, (1, 0)), Peer(path, b"x" * 32, (2, 0))
        try:
            assert await good.connected()
            good.post(("hello", 1))
            assert await got.get() == ("hello", 1)
            assert not await bad.connected()  # a wrong secret is refused all the same
        finally:
            good.close()
            bad.close()
            listener.close()

    asyncio.run(asyncio.wait_for(main(), BOUND))


class _Loopback:
    """A host:port address on 127.0.0.1, as the cluster's would be: the transport's seam takes it as is."""

    def __init__(self) -> None:
        self.port = 0

    def __str__(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def serve(self, loop, factory):
        server = await loop.create_server(factory, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def connect(self, loop, factory):
        transport, _ = await loop.create_connection(factory, "127.0.0.1", self.port)
        return transport


def test_the_transport_runs_over_any_address_the_handshake_deciding_without_a_uid() -> None:
    async def main() -> None:
        got: asyncio.Queue = asyncio.Queue()
        address = _Loopback()
        listener = Listener(address, SECRET, got.put_nowait, lambda *a: None)
        await listener.start()
        good, bad = Peer(address, SECRET, (1, 0)), Peer(address, b"x" * 32, (2, 0))
        try:
            assert await good.connected()
            good.post(("over tcp", 1))
            assert await got.get() == ("over tcp", 1)
            assert not await bad.connected()
        finally:
            good.close()
            bad.close()
            listener.close()

    asyncio.run(asyncio.wait_for(main(), BOUND))
