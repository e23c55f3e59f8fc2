"""Row 15: abuse of the worker sockets (kernel/transport/sockets.py's Listener), before authentication.

Attacks: a client without the secret that sends a pickle frame at once, a wrong-key HMAC, a replayed
handshake answer (recorded from a real authenticated connection), random bytes, a peer of another
uid. The frame is a pickle whose unpickling creates a file: the file must never appear. A positive
control (the same frame after a correct handshake) shows the probe works: that file does appear.
Also: the socket is 0600 in a 0700 directory, and the worker survives every attack.

Figure: unpickles before auth = 0 (counted in-process by patching the Listener's ``loads``; on the real
workers, by the marker file).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import pickle
import random
import socket
import stat
import struct
from pathlib import Path
from typing import Any

import pytest

from kernel import Actor, Node
from kernel.transport import sockets as transport
from tests.reliability.support import record, run_node, scale
from tests.support import BOUND
from tests.support.nodes import probe_as_nobody

MAGIC = b"PYOTP1"
NONCE = 32
IDENT = transport._IDENT  # (index, incarnation, node id), as a real peer sends it
HEADER = struct.Struct("!I")


class _Touch:
    """Unpickling this creates ``path``: the probe for 'was anything unpickled?'."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def evil_frame(path: str) -> bytes:
    data = pickle.dumps(_Touch(path), 5)
    assert b"_Touch" not in data  # unpickling needs nothing from this test module
    return HEADER.pack(len(data)) + data


def answer(secret: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, b"client:" + nonce, hashlib.sha256).digest()


async def _eof(reader: asyncio.StreamReader) -> bool:
    """True once the server hung up on us; False if it kept the connection open for the bound."""
    try:
        async with asyncio.timeout(BOUND / 2):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    return True


async def open_unix(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a socket path or a Linux abstract name (uvloop refuses those by path: EINVAL)."""
    if not path.startswith("\0"):
        return await asyncio.open_unix_connection(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, path)
    return await asyncio.open_unix_connection(sock=sock)


async def attack(path: str, secret: bytes, marker: str, kind: str, rnd: random.Random,
                 replay: bytes | None = None) -> bool:
    """Run one attack; returns True if the server hung up (as it must)."""
    reader, writer = await open_unix(path)
    try:
        hello = await asyncio.wait_for(reader.readexactly(len(MAGIC) + NONCE), BOUND)
        nonce = hello[len(MAGIC):]
        frame = evil_frame(marker)
        if kind == "no_secret":
            payload = frame + frame  # straight to business: no handshake at all
        elif kind == "bad_hmac":
            payload = answer(os.urandom(32), nonce) + os.urandom(NONCE) + IDENT.pack(0, 0, 0) + frame
        elif kind == "replay":
            assert replay is not None
            payload = replay + frame
        elif kind == "random":
            junk = rnd.randbytes(rnd.randrange(72, 4096))
            cut = rnd.randrange(len(junk))
            payload = junk[:cut] + frame + junk[cut:]
        else:
            raise ValueError(kind)
        writer.write(payload)
        await writer.drain()
        return await _eof(reader)
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        writer.close()


async def legit_handshake(path: str, secret: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                                              bytes]:
    """A correct client handshake; returns the streams and the bytes we sent (to replay them)."""
    reader, writer = await open_unix(path)
    hello = await asyncio.wait_for(reader.readexactly(len(MAGIC) + NONCE), BOUND)
    sent = answer(secret, hello[len(MAGIC):]) + os.urandom(NONCE) + IDENT.pack(90, 0, 0)
    writer.write(sent)
    await asyncio.wait_for(reader.readexactly(32), BOUND)  # the server's answer: we are in
    return reader, writer, sent


async def wait_file(path: str) -> None:
    async with asyncio.timeout(BOUND):
        while not os.path.exists(path):
            await asyncio.sleep(0.01)


class Ping(Actor):
    async def handle_call(self, request: Any, caller: Any) -> Any:
        return request


def _attacks(n_random: int) -> list[str]:
    return ["no_secret", "bad_hmac", "replay"] + ["random"] * n_random


def test_inprocess_listener_unpickles_nothing_before_auth(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    n_random = scale(200, 20_000)
    loads_calls: list[bytes] = []
    real_loads = transport.loads

    def counting_loads(data: Any) -> Any:
        loads_calls.append(bytes(data))
        return real_loads(data)

    monkeypatch.setattr(transport, "loads", counting_loads)
    sockdir = tmp_path / "sock"
    sockdir.mkdir(mode=0o700)
    path = str(sockdir / "w0.sock")
    marker = str(tmp_path / "pwned")
    secret = os.urandom(32)
    got: list[Any] = []

    async def main() -> dict[str, Any]:
        listener = transport.Listener(path, secret, got.append, lambda *a: None)
        await listener.start()
        rnd = random.Random(15)
        try:
            _, w, recorded = await legit_handshake(path, secret)
            w.close()
            hung_up = 0
            attacks = _attacks(n_random)
            for kind in attacks:
                if not await attack(path, secret, marker, kind, rnd, recorded):
                    break  # accepted: the assertions below say what leaked
                hung_up += 1
            before_auth = len(loads_calls)
            # Positive control: after a correct handshake the very same frame is unpickled.
            control = str(tmp_path / "control")
            _, w, _ = await legit_handshake(path, secret)
            w.write(evil_frame(control))
            await wait_file(control)
            w.close()
            for obj in got:  # the control's unpickled file object
                getattr(obj, "close", lambda: None)()
            return {"attacks": len(attacks), "hung_up": hung_up, "unpickles_before_auth": before_auth,
                    "marker_exists": os.path.exists(marker), "control_unpickled": len(loads_calls)}
        finally:
            listener.close()

    res = asyncio.run(main())
    assert res["unpickles_before_auth"] == 0 and not res["marker_exists"], res
    assert res["hung_up"] == res["attacks"], res
    assert res["control_unpickled"] == 1, res
    mode = os.stat(path).st_mode if os.path.exists(path) else None
    assert mode is None or stat.S_IMODE(mode) == 0o600
    record(15, "test_inprocess_listener_unpickles_nothing_before_auth", **res)


def test_worker_sockets_reject_abuse_before_unpickling(tmp_path: Path) -> None:
    n_random = scale(100, 10_000)
    marker = str(tmp_path / "pwned")

    async def body(node: Node) -> dict[str, Any]:
        rt = node.context._rt
        sockdir, secret = rt.sockdir, rt.secret
        assert sockdir.startswith("\0")  # abstract names: no file on disk, no mode to get wrong
        pings = [await node.spawn(Ping, worker=w) for w in (0, 1)]
        os_pids = list(node.workers)
        rnd = random.Random(15)
        hung_up = attacks = 0
        for w in (0, 1):
            path = os.path.join(sockdir, f"w{w}.sock")
            _, writer, recorded = await legit_handshake(path, secret)
            writer.close()
            for kind in _attacks(n_random):
                attacks += 1
                if not await attack(path, secret, marker, kind, rnd, recorded):
                    break  # accepted: the assertions below say what leaked
                hung_up += 1
        uid_refused = None
        if os.getuid() == 0 and hasattr(socket, "SO_PEERCRED"):
            # An abstract name has no file-system fence: SO_PEERCRED alone must keep uid 65534 out.
            path = os.path.join(sockdir, "w0.sock")
            out = await asyncio.to_thread(probe_as_nobody, path, BOUND)
            uid_refused = out == b"got:"  # hung up on without even a challenge
            assert uid_refused, out
        # The workers survived and still serve; then the positive control on worker 1's socket.
        assert node.workers == os_pids
        for p in pings:
            assert await node.call(p, "still") == "still"
        assert not os.path.exists(marker), "a pre-auth frame was unpickled"
        control = str(tmp_path / "control")
        _, writer, _ = await legit_handshake(os.path.join(sockdir, "w1.sock"), secret)
        writer.write(evil_frame(control))
        await wait_file(control)
        writer.close()
        return {"attacks": attacks, "hung_up": hung_up, "marker_exists": os.path.exists(marker),
                "other_uid_refused": uid_refused, "workers_replaced": node.workers != os_pids}

    res = run_node(body)
    assert not res["marker_exists"] and res["hung_up"] == res["attacks"], res
    assert not res["workers_replaced"], res
    record(15, "test_worker_sockets_reject_abuse_before_unpickling", unpickles_before_auth=0, **res)
