"""The transport over TCP between nodes: framing and batching as on Unix sockets, the HMAC handshake
deciding alone, routing by node id, mutual TLS with the cluster's own CA, and ``listen`` parsing."""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import socket
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from kernel.transport import auth
from kernel.transport.sockets import _IDENT, _MAGIC, Listener, Peer
from kernel.transport.tcp import TLS, TcpAddress, parse_listen
from kernel.transport.wire import HEADER

SECRET = b"s" * 32
BOUND = 30.0
HOST = "127.0.0.1"
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def _run(main: Callable[[], Coroutine[Any, Any, None]], loop: str = "uvloop") -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), BOUND)

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(bounded())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _address(tls: TLS | None = None) -> TcpAddress:
    return TcpAddress(HOST, _free_port(), tls)


class _Collect:
    """A dispatch that records envelopes and lets a test wait for the n-th."""

    def __init__(self) -> None:
        self.got: list[Any] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __call__(self, envelope: Any) -> None:
        self.got.append(envelope)
        for n, fut in self._waiters:
            if len(self.got) >= n and not fut.done():
                fut.set_result(None)

    async def wait(self, n: int) -> list[Any]:
        if len(self.got) < n:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append((n, fut))
            await fut
        return self.got


class _Marker:
    """A pickle whose unpickling creates a directory: proof that bytes were (not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def _evil_frame(marker: Path) -> bytes:
    data = pickle.dumps(("cast", _Marker(marker)), 5)
    return HEADER.pack(len(data)) + data


async def _raw_client(address: TcpAddress, secret: bytes, ident: tuple[int, int, int],
                      payload: bytes) -> bool:
    """Speak the handshake by hand, sending ``payload`` right behind it; True if the server answered.

    Returns once the server has closed the connection (or answered), so the test can check what happened.
    """
    reader, writer = await asyncio.open_connection(address.host, address.port)
    try:
        head = await reader.readexactly(len(_MAGIC) + auth.NONCE_BYTES)
        nonce = os.urandom(auth.NONCE_BYTES)
        writer.write(auth.mac(secret, "client", head[len(_MAGIC):]) + nonce + _IDENT.pack(*ident) + payload)
        answer = await reader.read(32)
        return len(answer) == 32 and auth.verify(secret, "server", nonce, answer)
    except (ConnectionError, asyncio.IncompleteReadError):
        return False
    finally:
        writer.close()


# ---------------------------------------------------------------- plain TCP


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_many_envelopes_batched_packed_and_large_arrive_in_order(loop: str) -> None:
    big = ("big", b"\x07" * 6_000_000)

    async def main() -> None:
        address = _address()
        got = _Collect()
        listener = Listener(address, SECRET, got, lambda *a: None)
        await listener.start()
        peer = Peer(address, SECRET, (1, 0))
        try:
            assert await peer.connected()
            expected: list[Any] = []
            for i in range(5000):  # one tick: batched into few frames, plain ones pickled as lists
                peer.post(("cast", i))
                expected.append(("cast", i))
            for i in range(3000):
                envelope = ("packed", i, "x" * (i % 50))
                peer.send(pickle.dumps(envelope, 5))
                expected.append(envelope)
            peer.send(pickle.dumps(big, 5))
            expected.append(big)
            for i in range(100):
                peer.post(("after", i))
                expected.append(("after", i))
            assert await got.wait(len(expected)) == expected
        finally:
            peer.close()
            listener.close()

    _run(main, loop)


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_nodelay_is_on_for_accepted_and_connected_sockets(loop: str) -> None:
    async def main() -> None:
        lp = asyncio.get_running_loop()
        address = _address()
        accepted: asyncio.Future[asyncio.BaseTransport] = lp.create_future()

        class Server(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.set_result(transport)

        server = await address.serve(lp, Server)
        client = await address.connect(lp, asyncio.Protocol)
        try:
            for transport in (client, await accepted):
                sock = transport.get_extra_info("socket")
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                assert auth.peer_credentials(sock) is None  # TCP: no SO_PEERCRED, the handshake decides
        finally:
            client.close()
            (await accepted).close()
            server.close()

    _run(main, loop)


def test_wrong_secret_is_refused_before_anything_is_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    async def main() -> None:
        address = _address()
        got = _Collect()
        listener = Listener(address, SECRET, got, lambda *a: None)
        await listener.start()
        bad = Peer(address, b"x" * 32, (2, 0))
        try:
            assert not await _raw_client(address, b"x" * 32, (2, 0, 0), _evil_frame(marker))
            assert not await bad.connected()
            good = Peer(address, SECRET, (1, 0))
            assert await good.connected()  # the listener still serves the right secret
            good.post(("ok",))
            assert await got.wait(1) == [("ok",)]
            good.close()
        finally:
            bad.close()
            listener.close()

    _run(main)
    assert not marker.exists()


def test_frames_are_routed_by_the_node_id_of_the_handshake(tmp_path: Path) -> None:
    """Our node's peers -> dispatch; another node's -> remote(node, index, inc), asked once per link."""

    async def main() -> None:
        address = _address()
        local = _Collect()
        remote_got = _Collect()
        asked: list[tuple[int, int, int]] = []
        lost: list[tuple[int, int]] = []
        lost_local: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def remote(node: int, index: int, inc: int) -> Callable[[Any], None]:
            asked.append((node, index, inc))
            return remote_got

        def on_lost(index: int, inc: int) -> None:
            lost.append((index, inc))
            if (index, inc) == (0, 4) and not lost_local.done():
                lost_local.set_result(None)

        listener = Listener(address, SECRET, local, on_lost, node=1, remote=remote)
        await listener.start()
        ours, theirs = Peer(address, SECRET, (0, 4), node=1), Peer(address, SECRET, (3, 7), node=2)
        try:
            for i in range(200):
                ours.post(("ours", i))
                theirs.post(("theirs", i))
            assert await local.wait(200) == [("ours", i) for i in range(200)]
            assert await remote_got.wait(200) == [("theirs", i) for i in range(200)]
            assert asked == [(2, 3, 7)]
        finally:
            theirs.close()
            ours.close()
            listener.close()
        await lost_local
        assert (0, 4) in lost  # a local peer's loss is reported as (index, inc) ...
        assert (3, 7) not in lost  # ... a remote one's is not: the membership lease decides

    _run(main)


def test_another_nodes_peer_is_refused_without_remote(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    async def main() -> None:
        address = _address()
        got = _Collect()
        listener = Listener(address, SECRET, got, lambda *a: None)  # node 0, no remote
        await listener.start()
        stranger = Peer(address, SECRET, (1, 0), node=9)
        try:
            assert not await _raw_client(address, SECRET, (1, 0, 9), _evil_frame(marker))
            assert not await stranger.connected()
            same = Peer(address, SECRET, (1, 0))
            assert await same.connected()
            same.post(("local",))
            assert await got.wait(1) == [("local",)]
            same.close()
        finally:
            stranger.close()
            listener.close()

    _run(main)
    assert not marker.exists()


def test_a_replaced_listener_rebinds_its_port_at_once() -> None:
    async def main() -> None:
        address = _address()
        first, second = _Collect(), _Collect()
        old = Listener(address, SECRET, first, lambda *a: None)
        await old.start()
        peer = Peer(address, SECRET, (1, 0))
        try:
            peer.post(("to old",))
            assert await first.wait(1) == [("to old",)]
            old.close()  # the accepted connection is still open on the port, as a dying worker's is
            new = Listener(address, SECRET, second, lambda *a: None)
            await new.start()  # EADDRINUSE without SO_REUSEADDR
            peer.mark_down()
            peer.mark_up()
            assert await peer.connected()
            peer.post(("to new",))
            assert await second.wait(1) == [("to new",)]
            new.close()
        finally:
            peer.close()
            old.close()

    _run(main)


# ---------------------------------------------------------------- parse_listen and TLS arguments


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:7400", ("127.0.0.1", 7400)),
    ("node-a.example:1", ("node-a.example", 1)),
    ("[::1]:65535", ("::1", 65535)),
    ("0.0.0.0:8080", ("0.0.0.0", 8080)),
])
def test_parse_listen_accepts_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(("text", "says"), [
    ("127.0.0.1", "no port"),
    (":7400", "no host"),
    ("[]:7400", "no host"),
    ("host:http", "not a number"),
    ("host:-1", "not a number"),
    ("host:0", "out of 1..65535"),
    ("host:65536", "out of 1..65535"),
    (" host:7400", "whitespace"),
    ("host: 7400", "whitespace"),
    ("::1:7400", "IPv6"),
    ("[::1]7400", "IPv6"),
])
def test_parse_listen_refuses_bad_input_naming_the_argument(text: str, says: str) -> None:
    with pytest.raises(ValueError, match="listen") as info:
        parse_listen(text)
    assert says in str(info.value)
    with pytest.raises(ValueError, match=r"^peer "):
        parse_listen(text, "peer")


def test_tcp_address_shows_host_port_and_checks_its_fields() -> None:
    assert str(TcpAddress("127.0.0.1", 7400)) == "127.0.0.1:7400"
    assert str(TcpAddress("::1", 7400)) == "[::1]:7400"
    with pytest.raises(ValueError, match="port"):
        TcpAddress(HOST, 0)
    with pytest.raises(ValueError, match="host"):
        TcpAddress("", 7400)


def test_tls_names_the_missing_file(tmp_path: Path) -> None:
    real = tmp_path / "real.pem"
    real.write_text("x")
    for name in ("certfile", "keyfile", "cafile"):
        files = {"certfile": str(real), "keyfile": str(real), "cafile": str(real)}
        files[name] = str(tmp_path / "missing.pem")
        with pytest.raises(ValueError, match=f"tls {name} .* does not exist"):
            TLS(**files)


# ---------------------------------------------------------------- TLS

_EXT = ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n")  # as docs/guides/tls.md: no name, none is checked


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(d: Path, name: str, usage: bool = True) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
             *(("-addext", "keyUsage=critical,keyCertSign,cRLSign") if usage else ()), cwd=d)


def _make_node(d: Path, ca: str, name: str) -> TLS:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-extfile", "node.ext", "-out", f"{name}.pem", cwd=d)
    return TLS(str(d / f"{name}.pem"), str(d / f"{name}.key"), str(d / f"{ca}.pem"))


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TLS]:
    """A throwaway cluster CA with two node certificates, and a stranger signed by another CA."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: cannot make test certificates")
    d = tmp_path_factory.mktemp("tls")
    (d / "node.ext").write_text(_EXT)
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    a, b = _make_node(d, "ca", "node-a"), _make_node(d, "ca", "node-b")
    stranger = _make_node(d, "other-ca", "stranger")
    _make_ca(d, "lax-ca", usage=False)  # what OpenSSL's strict checks (Python 3.13's default) refuse
    lax_a, lax_b = _make_node(d, "lax-ca", "lax-a"), _make_node(d, "lax-ca", "lax-b")
    # The stranger trusts our CA, so only its own certificate can be what gets it refused.
    return {"a": a, "b": b, "stranger": TLS(stranger.certfile, stranger.keyfile, a.cafile),
            "lax-a": lax_a, "lax-b": lax_b}


def test_tls_config_pickles_for_the_workers(certs: dict[str, TLS]) -> None:
    address = TcpAddress(HOST, 7400, certs["a"])
    assert pickle.loads(pickle.dumps(address)) == address


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_tls_round_trip_between_two_nodes_of_one_ca(certs: dict[str, TLS], loop: str) -> None:
    async def main() -> None:
        port = _free_port()
        got = _Collect()
        listener = Listener(TcpAddress(HOST, port, certs["a"]), SECRET, got, lambda *a: None)
        await listener.start()
        peer = Peer(TcpAddress(HOST, port, certs["b"]), SECRET, (1, 0))
        try:
            assert await peer.connected()
            expected = [("tls", i) for i in range(2000)] + [("big", b"\x01" * 3_000_000)]
            for envelope in expected[:-1]:
                peer.post(envelope)
            peer.send(pickle.dumps(expected[-1], 5))
            assert await got.wait(len(expected)) == expected
        finally:
            peer.close()
            listener.close()

    _run(main, loop)


def test_tls_refuses_a_certificate_of_another_ca(certs: dict[str, TLS]) -> None:
    async def main() -> None:
        port = _free_port()
        got = _Collect()
        listener = Listener(TcpAddress(HOST, port, certs["a"]), SECRET, got, lambda *a: None)
        await listener.start()
        stranger = Peer(TcpAddress(HOST, port, certs["stranger"]), SECRET, (1, 0))
        member = Peer(TcpAddress(HOST, port, certs["b"]), SECRET, (2, 0))
        try:
            stranger.post(("from stranger",))
            assert not await stranger.connected()
            member.post(("from member",))
            assert await member.connected()
            assert await got.wait(1) == [("from member",)]
        finally:
            stranger.close()
            member.close()
            listener.close()

    _run(main)


def test_tls_listener_refuses_plain_tcp(certs: dict[str, TLS], tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    async def main() -> None:
        port = _free_port()
        got = _Collect()
        listener = Listener(TcpAddress(HOST, port, certs["a"]), SECRET, got, lambda *a: None)
        await listener.start()
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"\0" * 72 + _evil_frame(marker))  # not a TLS ClientHello: dropped at once
            assert await reader.read() == b""
            writer.close()
            # and a plain kernel listener is no TLS server: a TLS client gives up on our greeting
            plain_port = _free_port()
            plain = Listener(TcpAddress(HOST, plain_port), SECRET, got, lambda *a: None)
            await plain.start()
            tls_peer = Peer(TcpAddress(HOST, plain_port, certs["b"]), SECRET, (1, 0))
            assert not await tls_peer.connected()
            tls_peer.close()
            plain.close()
        finally:
            listener.close()
        assert got.got == []

    _run(main)
    assert not marker.exists()


def test_tls_checks_certificates_strictly_on_every_python(certs: dict[str, TLS]) -> None:
    """A CA without keyUsage passes Python 3.11's default checks but not 3.13's: refused on all."""

    async def main() -> None:
        port = _free_port()
        listener = Listener(TcpAddress(HOST, port, certs["lax-a"]), SECRET, _Collect(), lambda *a: None)
        await listener.start()
        peer = Peer(TcpAddress(HOST, port, certs["lax-b"]), SECRET, (1, 0))
        try:
            assert not await peer.connected()
        finally:
            peer.close()
            listener.close()

    _run(main)
