"""The control socket: only the same user with the secret gets in, and nothing is ever unpickled.

Every wait is on a fact (a reply, an EOF, a log record written before the hang-up), bounded by
``asyncio.timeout``; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import pickle
import socket
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel.node import control
from kernel.node.control import (
    AuthenticationFailed,
    ControlClient,
    ControlError,
    ControlServer,
    NodeBusy,
    NodeNotFound,
    UnsafeRuntimeDir,
    list_nodes,
    runtime_dir,
)
from tests.support import BOUND
from tests.support.nodes import probe_as_nobody


@pytest.fixture(autouse=True)
def private_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own XDG_RUNTIME_DIR (and HOME, for the fallback), so no real node is touched."""
    base = tmp_path / "xdg"
    base.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    yield base / "pyotp"


def home_fallback(tmp_path: Path) -> Path:
    return tmp_path / "home" / ".cache" / "pyotp" / "run"


class Recorder:
    """A handler that answers like a node would and records what reached it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, req: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(req)
        if req["op"] == "ping":
            return {"pong": True}
        if req["op"] == "state":
            if req["pid"] == "<9.9>":
                raise ControlError("noproc", "no process <9.9>")
            return {"repr": "{'n': 1}"}
        if req["op"] == "kill":
            if req["pid"] == "<6.6>":
                raise RuntimeError("handler bug")
            return {"killed": req["pid"]}
        return {"node": "t", "actors": [], "workers": []}


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(20):
            await coro_fn()

    asyncio.run(bounded())


async def raw_connect(name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(runtime_dir() / f"{name}.sock"))


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(BOUND):
        return await reader.read()


async def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, BrokenPipeError):
        pass


def key_of(name: str) -> bytes:
    return bytes.fromhex((runtime_dir() / f"{name}.key").read_text().strip())


def answer_line(key: bytes, challenge_line: bytes) -> bytes:
    nonce = bytes.fromhex(json.loads(challenge_line)["challenge"])
    mac = hmac.new(key, b"client:" + nonce, "sha256").hexdigest()
    return json.dumps({"answer": mac, "challenge": os.urandom(32).hex()}).encode() + b"\n"


async def assert_serves(name: str) -> None:
    """A correct client still gets correct answers: the node is unharmed."""
    async with asyncio.timeout(BOUND), ControlClient() as client:
        await client.connect(name)
        assert await client.request({"op": "ping"}) == {"pong": True}


class FileCreator:
    """Unpickling this runs ``open(path, "w")``: proof that a pickle was loaded, if the file appears."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


# ---------------------------------------------------------------------------------------------- basics


def test_round_trip_and_file_modes(private_runtime: Path) -> None:
    handler = Recorder()

    async def main() -> None:
        async with ControlServer("alpha", handler) as server:
            d = runtime_dir()
            assert d == private_runtime
            assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
            assert stat.S_IMODE(os.stat(d / "alpha.sock").st_mode) == 0o600
            assert stat.S_ISSOCK(os.stat(d / "alpha.sock").st_mode)
            assert stat.S_IMODE(os.stat(d / "alpha.key").st_mode) == 0o600
            assert len(key_of("alpha")) == 32
            assert server.socket_path == d / "alpha.sock"
            async with asyncio.timeout(BOUND), ControlClient() as client:
                await client.connect("alpha")
                assert await client.request({"op": "ping"}) == {"pong": True}
                assert await client.request({"op": "snapshot"}) == {"node": "t", "actors": [], "workers": []}
                assert await client.request({"op": "state", "pid": "<0.3>"}) == {"repr": "{'n': 1}"}
                assert await client.request({"op": "kill", "pid": "<1.4.2>"}) == {"killed": "<1.4.2>"}
        assert not (private_runtime / "alpha.sock").exists()
        assert not (private_runtime / "alpha.key").exists()

    run(main)
    assert [r["op"] for r in handler.seen] == ["ping", "snapshot", "state", "kill"]


def test_errors_are_replies_and_bad_requests_never_reach_the_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = Recorder()
    caplog.set_level(logging.WARNING, "kernel.control")

    async def main() -> None:
        async with ControlServer("beta", handler), ControlClient() as client:
            await client.connect("beta")
            cases: list[tuple[dict[str, Any], str]] = [
                ({"op": "eval", "code": "1"}, "unknown_op"),
                ({"nop": 1}, "unknown_op"),
                ({"op": "kill", "pid": "os.system('x')"}, "bad_request"),
                ({"op": "state"}, "bad_request"),
                ({"op": "state", "pid": "<9.9>"}, "noproc"),
                ({"op": "kill", "pid": "<6.6>"}, "internal"),
            ]
            for req, code in cases:
                with pytest.raises(ControlError) as info:
                    await client.request(req)
                assert info.value.code == code, req
            assert await client.request({"op": "ping"}) == {"pong": True}  # same connection still fine

    run(main)
    assert [r.get("pid") for r in handler.seen] == ["<9.9>", "<6.6>", None]
    assert any("kill <6.6> requested by pid" in r.getMessage() for r in caplog.records)
    assert any("handler failed" in r.getMessage() for r in caplog.records)


def test_sync_request_list_nodes_and_name_in_use() -> None:
    async def main() -> None:
        assert await asyncio.to_thread(list_nodes) == []
        async with ControlServer("gamma", Recorder()), ControlServer("delta", Recorder()):
            assert await asyncio.to_thread(list_nodes) == ["delta", "gamma"]
            result = await asyncio.to_thread(control.request, "gamma", {"op": "ping"}, timeout=BOUND)
            assert result == {"pong": True}
            with pytest.raises(ControlError) as info:
                await ControlServer("gamma", Recorder()).start()
            assert info.value.code == "name_in_use"
            await assert_serves("gamma")  # the failed second start did not disturb the first
        assert await asyncio.to_thread(list_nodes) == []
        with pytest.raises(NodeNotFound):
            await ControlClient().connect("gamma")

    run(main)


def test_stale_socket_is_not_listed_and_is_replaced() -> None:
    d = runtime_dir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(d / "old.sock"))
    stale.close()  # the file stays, nobody listens: a node that died without cleaning up
    assert list_nodes() == []

    async def main() -> None:
        async with ControlServer("old", Recorder()):
            await assert_serves("old")

    run(main)


def test_bad_names_are_refused() -> None:
    for bad in ["", "../x", ".hidden", "-x", "a/b", "x" * 65, "a b"]:
        with pytest.raises(ValueError, match="name"):
            ControlServer(bad, Recorder())
    with pytest.raises(TypeError, match="name"):
        ControlServer(3, Recorder())  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ runtime dir


def test_runtime_dir_refuses_group_bits(private_runtime: Path, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "kernel.control")
    private_runtime.mkdir(mode=0o700)
    os.chmod(private_runtime, 0o750)
    assert runtime_dir() == home_fallback(tmp_path)  # never used, never repaired: skipped, and said so
    assert "0700" in caplog.text and str(private_runtime) in caplog.text
    assert list(private_runtime.iterdir()) == []
    home_fallback(tmp_path).rmdir()
    home_fallback(tmp_path).symlink_to(tmp_path)  # when no candidate is usable, the first refusal says why
    with pytest.raises(UnsafeRuntimeDir, match="0700"):
        runtime_dir()
    with pytest.raises(UnsafeRuntimeDir):
        run(lambda: ControlServer("x", Recorder()).start())
    assert list(private_runtime.iterdir()) == []


def test_runtime_dir_refuses_a_symlink(private_runtime: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    private_runtime.symlink_to(target)
    assert runtime_dir() == home_fallback(tmp_path)
    home_fallback(tmp_path).chmod(0o755)
    with pytest.raises(UnsafeRuntimeDir, match="symlink"):
        runtime_dir()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to chown to another user")
def test_runtime_dir_refuses_another_owner(private_runtime: Path, tmp_path: Path) -> None:
    private_runtime.mkdir(mode=0o700)
    os.chown(private_runtime, 65534, 65534)
    with pytest.raises(UnsafeRuntimeDir, match="owned by uid 65534"):
        runtime_dir(create=False)  # nothing usable exists yet: the refusal says why
    assert runtime_dir() == home_fallback(tmp_path)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to chown to another user")
def test_a_runtime_dir_pre_created_by_another_user_does_not_stop_nodes(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Local DoS: another user makes /tmp/pyotp-<uid> first. The node falls back to a private directory
    under the home, says so, and the observer's client finds it there (API.md section 6, issue 13)."""
    caplog.set_level(logging.WARNING, "kernel.control")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setattr(control, "_SHARED_TMP", str(shared))
    squatted = shared / f"pyotp-{os.getuid()}"
    squatted.mkdir(mode=0o777)
    os.chown(squatted, 65534, 65534)
    handler = Recorder()

    async def main() -> None:
        async with ControlServer("victim", handler) as server:
            assert server.socket_path == home_fallback(tmp_path) / "victim.sock"
            async with ControlClient() as client:
                await client.connect("victim")
                assert await client.request({"op": "ping"}) == {"pong": True}
            assert await asyncio.to_thread(list_nodes) == ["victim"]

    run(main)
    assert "owned by uid 65534" in caplog.text and str(home_fallback(tmp_path)) in caplog.text
    assert list(squatted.iterdir()) == []


def test_falls_back_to_tmp_when_xdg_is_unusable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/nonexistent/run")
    assert control._candidate_dir() == Path(f"/tmp/pyotp-{os.getuid()}")


# ------------------------------------------------------------------------------- hostile peers


def test_peer_without_the_secret_is_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "kernel.control")
    handler = Recorder()

    async def main() -> None:
        async with ControlServer("eps", handler):
            reader, writer = await raw_connect("eps")
            hello = await reader.readline()
            writer.write(answer_line(os.urandom(32), hello))  # a guessed key
            assert await read_to_eof(reader) == b""  # no welcome, just a hang-up
            await hang_up(writer)
            await assert_serves("eps")

    run(main)
    assert handler.seen == [{"op": "ping"}]
    assert any("handshake failed: wrong answer" in r.getMessage() for r in caplog.records)


def test_random_bytes_and_oversize_lines_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "kernel.control")

    async def main() -> None:
        async with ControlServer("zeta", Recorder()):
            for junk in [os.urandom(4096), b"\xff" * 100 + b"\n", b"{" * 300, b"[1,2]\n", b'{"answer": 1}\n']:
                reader, writer = await raw_connect("zeta")
                await reader.readline()
                writer.write(junk)
                assert await read_to_eof(reader) == b""
                await hang_up(writer)
            await assert_serves("zeta")

    run(main)
    assert sum("handshake failed" in r.getMessage() for r in caplog.records) == 5


def test_replayed_handshake_answer_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    """An answer recorded from a good session is worthless later: the nonce is fresh per connection."""
    caplog.set_level(logging.WARNING, "kernel.control")

    async def main() -> None:
        async with ControlServer("eta", Recorder()):
            key = key_of("eta")
            reader, writer = await raw_connect("eta")
            first_hello = await reader.readline()
            recorded = answer_line(key, first_hello)
            writer.write(recorded)
            welcome = json.loads(await reader.readline())
            assert welcome["welcome"] is True
            await hang_up(writer)

            reader, writer = await raw_connect("eta")
            second_hello = await reader.readline()
            assert json.loads(second_hello)["challenge"] != json.loads(first_hello)["challenge"]
            writer.write(recorded)  # the replay
            assert await read_to_eof(reader) == b""
            await hang_up(writer)
            await assert_serves("eta")

    run(main)
    assert any("wrong answer" in r.getMessage() for r in caplog.records)


def test_nothing_is_unpickled_before_or_after_the_handshake(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(FileCreator(proof))).close()  # the payload works when unpickled...
    assert proof.exists()
    payload = pickle.dumps(FileCreator(canary), protocol=0)  # protocol 0 is line-based: worst case
    handler = Recorder()

    async def main() -> None:
        async with ControlServer("theta", handler):
            # Before authentication: the payload instead of the answer, with and without a newline.
            for data in [payload, payload + b"\n", pickle.dumps(FileCreator(canary)) + b"\n"]:
                reader, writer = await raw_connect("theta")
                await reader.readline()
                writer.write(data)
                assert await read_to_eof(reader) == b""
                await hang_up(writer)
            # After authentication: the payload as a request line.
            async with ControlClient() as client:
                await client.connect("theta")
                assert client._writer is not None and client._reader is not None
                client._writer.write(pickle.dumps(FileCreator(canary)).replace(b"\n", b" ") + b"\n")
                reply = json.loads(await client._reader.readline())
                assert reply["ok"] is False and reply["error"] == "bad_request"
                assert await client.request({"op": "ping"}) == {"pong": True}
            await assert_serves("theta")

    run(main)
    assert not canary.exists()  # ...but the node never unpickled it
    assert handler.seen == [{"op": "ping"}, {"op": "ping"}]


def test_silent_peer_is_dropped_after_the_handshake_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "HANDSHAKE_TIMEOUT", 0.2)

    async def main() -> None:
        async with ControlServer("iota", Recorder()):
            reader, writer = await raw_connect("iota")
            await reader.readline()
            assert await read_to_eof(reader) == b""  # said nothing: dropped, bounded by the timeout
            await hang_up(writer)
            await assert_serves("iota")

    run(main)


def test_oversize_request_after_auth_is_refused() -> None:
    async def main() -> None:
        async with ControlServer("kappa", Recorder()):
            async with ControlClient() as client:
                await client.connect("kappa")
                with pytest.raises(ControlError) as info:
                    await client.request({"op": "ping", "pad": "x" * (control.MAX_REQUEST + 10)})
                assert info.value.code == "too_large"
            await assert_serves("kappa")

    run(main)


def test_client_refuses_a_squatter_that_lacks_the_key() -> None:
    """Mutual authentication: a fake socket in our dir cannot pass as the node."""

    served = asyncio.Event()

    async def squatter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps({"pyotp": 1, "challenge": os.urandom(32).hex()}).encode() + b"\n")
        await reader.readline()
        writer.write(json.dumps({"welcome": True, "answer": "00" * 32}).encode() + b"\n")
        await writer.drain()
        await hang_up(writer)
        served.set()

    async def main() -> None:
        d = runtime_dir()
        (d / "fake.key").write_text(os.urandom(32).hex())
        os.chmod(d / "fake.key", 0o600)
        server = await asyncio.start_unix_server(squatter, path=str(d / "fake.sock"))
        try:
            with pytest.raises(AuthenticationFailed, match="did not prove"):
                async with asyncio.timeout(BOUND):
                    await ControlClient().connect("fake")
            async with asyncio.timeout(BOUND):
                await served.wait()
        finally:
            server.close()
            await server.wait_closed()

    run(main)


@pytest.mark.skipif(os.getuid() != 0 or not hasattr(socket, "SO_PEERCRED"), reason="root + Linux only")
def test_peer_of_another_uid_is_refused_by_peercred(
    private_runtime: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Even with the file modes loosened (as if the fs fence failed), SO_PEERCRED keeps uid 65534 out."""
    caplog.set_level(logging.WARNING, "kernel.control")

    async def main() -> None:
        async with ControlServer("lam", Recorder()):
            d = runtime_dir()
            loosened = [d]
            for p in loosened:
                os.chmod(p, 0o711)
            os.chmod(d / "lam.sock", 0o666)
            try:
                async with asyncio.timeout(BOUND):
                    out = await asyncio.to_thread(probe_as_nobody, str(d / "lam.sock"), BOUND)
            finally:
                for p in loosened:
                    os.chmod(p, 0o700)
                os.chmod(d / "lam.sock", 0o600)
            assert out == b"got:"  # connected, then hung up on without even a challenge
            await assert_serves("lam")

    run(main)
    assert any("uid 65534: not our uid" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------ nobody locks others out


class Blocker(Recorder):
    """A handler whose snapshots hang until ``release`` is set (a snapshot stuck on a hung worker)."""

    def __init__(self, waiting_for: int = 1) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.waiting_for = waiting_for
        self.all_waiting = asyncio.Event()  # ``waiting_for`` snapshots are in progress
        self.cancelled = asyncio.Event()
        self.waiting = 0

    async def __call__(self, req: dict[str, Any]) -> dict[str, Any]:
        if req["op"] != "snapshot":
            return await super().__call__(req)
        self.waiting += 1
        if self.waiting >= self.waiting_for:
            self.all_waiting.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return {"node": "t", "actors": [], "workers": []}


def test_forty_idle_connections_do_not_stop_ping() -> None:
    """Past the limit a newcomer closes the longest-idle connection; it is not refused."""

    async def main() -> None:
        async with ControlServer("mu", Recorder()) as server:
            clients = [ControlClient() for _ in range(40)]
            try:
                for client in clients:
                    async with asyncio.timeout(BOUND):
                        await client.connect("mu")
                        assert await client.request({"op": "ping"}) == {"pong": True}
                await assert_serves("mu")
                assert len(server._connections) <= control.MAX_CONNECTIONS + 1  # one may be leaving
                async with asyncio.timeout(BOUND):  # the newest idle ones were kept
                    assert await clients[-1].request({"op": "ping"}) == {"pong": True}
                with pytest.raises((ConnectionError, ControlError)):  # the oldest was closed
                    async with asyncio.timeout(BOUND):
                        await clients[0].request({"op": "ping"})
            finally:
                for client in clients:
                    client.close()

    run(main)


def test_a_client_past_the_limit_of_busy_connections_gets_busy() -> None:
    handler = Blocker(waiting_for=control.MAX_CONNECTIONS)

    async def main() -> None:
        async with ControlServer("nu", handler):
            clients = [ControlClient() for _ in range(control.MAX_CONNECTIONS)]
            try:
                async with asyncio.timeout(BOUND):
                    for client in clients:
                        await client.connect("nu")
                    requests = [asyncio.ensure_future(c.request({"op": "snapshot"})) for c in clients]
                    await handler.all_waiting.wait()
                with pytest.raises(NodeBusy, match="each mid-request") as info:
                    async with asyncio.timeout(BOUND):
                        await ControlClient().connect("nu")
                assert info.value.code == "busy"
                handler.release.set()
                async with asyncio.timeout(BOUND):
                    assert all(r["node"] == "t" for r in await asyncio.gather(*requests))
                await assert_serves("nu")
            finally:
                for client in clients:
                    client.close()

    run(main)


def test_an_idle_authenticated_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "IDLE_TIMEOUT", 0.2)

    async def main() -> None:
        async with ControlServer("xi", Recorder()), ControlClient() as client:
            async with asyncio.timeout(BOUND):
                await client.connect("xi")
                assert await client.request({"op": "ping"}) == {"pong": True}
            assert client._reader is not None
            assert await read_to_eof(client._reader) == b""  # no request for IDLE_TIMEOUT: hung up
            await assert_serves("xi")

    run(main)


def test_a_client_that_hangs_up_mid_request_cancels_its_handler() -> None:
    handler = Blocker()

    async def main() -> None:
        async with ControlServer("omicron", handler) as server:
            client = ControlClient()
            async with asyncio.timeout(BOUND):
                await client.connect("omicron")
                request = asyncio.ensure_future(client.request({"op": "snapshot"}))
                await handler.all_waiting.wait()
            client.close()
            async with asyncio.timeout(BOUND):
                await handler.cancelled.wait()
                with pytest.raises(ConnectionError):
                    await request
                while server._connections:  # its slot is free again (each pass yields to the server)
                    await asyncio.wait(list(server._connections))
            await assert_serves("omicron")

    run(main)


def test_a_slowloris_writes_a_bounded_number_of_log_lines(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """40 sockets that reconnect as soon as they are dropped, silent or sending junk, 1,000 times."""
    monkeypatch.setattr(control, "HANDSHAKE_TIMEOUT", 0.5)
    monkeypatch.setattr(control, "LOG_WINDOW", 3600.0)  # one window, however slow the machine
    caplog.set_level(logging.INFO, "kernel.control")
    rounds = 25

    async def loris(i: int) -> None:
        for n in range(rounds):
            try:
                reader, writer = await raw_connect("pi")
                await reader.readline()
                if (i + n) % 2:
                    writer.write(b"{" * 10 + b"\n")  # junk: handshake failed at once
                await read_to_eof(reader)  # silent: displaced by newcomers, or timed out
                await hang_up(writer)
            except ConnectionError:
                pass

    async def main() -> None:
        async with ControlServer("pi", Recorder()):
            await asyncio.gather(*(loris(i) for i in range(40)))
            await assert_serves("pi")

    run(main)
    lines = [r for r in caplog.records if r.name == "kernel.control"]
    kinds = {"handshake", "evicted", "busy", "idle", "gone", "too_large", "uid"}
    assert len(lines) <= len(kinds) * (control.LOG_BURST + 1) + 1, len(lines)  # +1: "control socket at"
    assert any("more 'handshake' events" in r.getMessage() for r in lines)


def test_log_limiter_counts_what_it_does_not_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "kernel.control")
    now = [0.0]
    limiter = control._LogLimiter("rho", clock=lambda: now[0])
    for i in range(control.LOG_BURST + 7):
        limiter.warning("junk", "junk %d", i)
    assert [r.getMessage() for r in caplog.records] == [f"junk {i}" for i in range(control.LOG_BURST)]
    now[0] = control.LOG_WINDOW
    limiter.warning("junk", "junk again")
    assert [r.getMessage() for r in caplog.records[-2:]] == [
        f"control 'rho': 7 more 'junk' events in {control.LOG_WINDOW:.0f} s, not logged one by one",
        "junk again",
    ]
    limiter.flush()  # nothing was left uncounted
    assert len(caplog.records) == control.LOG_BURST + 2
