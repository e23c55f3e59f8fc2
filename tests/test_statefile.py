"""The state file (API.md section 6, issue 13): one owner, private, checked at start; nothing left behind.

Each test is one attack or mistake from issue 13, run against real nodes in real processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

import kernel
from kernel import Actor, Checkpoint, Node, StateFileInUse, UnsafeStateFile, checkpoints
from kernel.checkpoints import CheckpointStore, Write
from kernel.control import ControlError
from kernel.persistence import statefile
from kernel.persistence.codec import encode
from tests.support import BOUND

ROOT = Path(__file__).resolve().parents[1]


class Counter(Actor):
    checkpoint = Checkpoint(every=1, durable=True)

    async def init(self, n: int = 0) -> None:
        self.state = n

    async def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "get":
            return self.state
        self.state = request
        return "ok"


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(BOUND):
            return await coro

    return kernel.run(bounded())


@pytest.fixture
def umask() -> Iterator[None]:
    """The usual umask (022), under which SQLite alone made the database and -shm 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(autouse=True)
def private_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control sockets of this module's nodes go to a runtime dir of their own."""
    base = tmp_path / "xdg"
    base.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))


NODE_SCRIPT = """
import asyncio, sys, kernel
from kernel import Node

async def main():
    state = sys.argv[1] if sys.argv[1] != "-" else None
    async with Node(workers=1, state=state, name=sys.argv[2]) as node:
        print("up", node.state_path, flush=True)
        await asyncio.Event().wait()

kernel.run(main())
"""


def start_node(state: str | None, name: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A node in a process of its own; returns once it is up (its first line is read)."""
    proc = subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, state or "-", name], cwd=ROOT,
                            env=dict(env or os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("up"):
        kill(proc)
        raise AssertionError(f"the node did not start: {line!r}")
    return proc


def kill(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> int:
    proc.send_signal(sig)
    code = proc.wait(BOUND)
    assert proc.stdout is not None
    proc.stdout.close()
    return code


# -- 1. one owner -------------------------------------------------------------------------------------

def test_a_second_node_on_the_same_file_is_refused_and_a_sigkilled_owner_is_taken_over(
        tmp_path: Path) -> None:
    db = str(tmp_path / "app.db")
    owner = start_node(db, "owner")
    try:
        with pytest.raises(StateFileInUse) as info:
            run(Node(workers=1, state=db).start())
        assert info.value.path == db and info.value.owner == owner.pid
        assert db in str(info.value) and str(owner.pid) in str(info.value)
        # The offline tool that writes the file (dropping a dead letter) is held off the same way.
        from rich.console import Console

        from tools.checkpoints import main
        out = StringIO()
        assert main([db, "--drop", "1"], Console(file=out, width=200)) == 1
        assert "in use" in out.getvalue() and str(owner.pid) in out.getvalue()
    finally:
        kill(owner)  # SIGKILL: the OS drops the lock with the process, no stale-lock guessing

    async def take_over() -> Any:
        async with Node(workers=1, state=db) as node:
            assert int(Path(db + statefile.OWNER_LOCK).read_text()) == os.getpid()
            pid = await node.spawn(Counter, 7, name="c")
            return await node.call(pid, "get")

    assert run(take_over()) == 7
    assert not os.path.exists(db + statefile.OWNER_LOCK)  # a clean close removes the lock file


def test_owner_lock_in_process() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.db")
        with statefile.OwnerLock(path) as lock:
            assert lock.held
            with pytest.raises(StateFileInUse) as info:
                statefile.OwnerLock(path).acquire()  # flock is per open file: a second open conflicts
            assert info.value.owner == os.getpid()
        assert not lock.held and os.listdir(d) == []


# -- 2. private files ---------------------------------------------------------------------------------

def test_the_database_and_every_companion_are_0600(tmp_path: Path, umask: None) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = str(data / "app.db")

    async def body() -> dict[str, int]:
        async with Node(workers=2, state=db) as node:
            for w in (0, 1):  # both workers open the file: -wal, -shm and -writer exist now
                pid = await node.spawn(Counter, w, name=f"c{w}", worker=w)
                assert await node.call(pid, w + 10) == "ok"
            return {name: stat.S_IMODE(os.lstat(data / name).st_mode) for name in os.listdir(data)}

    modes = run(body())
    assert set(modes) == {"app.db", "app.db-wal", "app.db-shm", "app.db-writer", "app.db-owner"}, modes
    assert set(modes.values()) == {0o600}, modes


def test_wal_and_shm_stay_in_place_and_private_for_the_nodes_life(tmp_path: Path, umask: None) -> None:
    """SQLite removes -wal and -shm when its last connection closes and re-creates them without O_EXCL:
    in a shared directory another user could plant them between two opens. The node keeps them."""
    db = tmp_path / "app.db"

    async def body() -> dict[str, int]:
        async with Node(workers=1, state=db) as node:  # no persistent actor: no worker opens the file
            await node.call(await node.spawn(Counter), "get")
            return {s: stat.S_IMODE(os.lstat(f"{db}{s}").st_mode) for s in ("", "-wal", "-shm")}

    assert run(body()) == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
    assert sorted(os.listdir(tmp_path)) == ["app.db", "xdg"]  # -wal, -shm, -owner removed at close


def test_our_own_looser_state_file_is_tightened(tmp_path: Path, umask: None) -> None:
    db = tmp_path / "app.db"
    CheckpointStore(db).close()  # made by SQLite alone: 0644
    assert stat.S_IMODE(db.stat().st_mode) == 0o644
    statefile.create_private(str(db))
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def _refused(state: str | Path, match: str) -> UnsafeStateFile:
    with pytest.raises(UnsafeStateFile, match=match) as info:
        run(Node(workers=1, state=state).start())
    return info.value


def test_a_symlinked_state_file_or_companion_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "chosen-by-someone-else.db"
    link = tmp_path / "app.db"
    link.symlink_to(elsewhere)  # dangling: the node must not create the target
    assert _refused(link, "symlink").path == str(link)
    assert not elsewhere.exists()
    link.unlink()
    db = tmp_path / "real.db"
    Path(str(db) + "-writer").symlink_to(tmp_path / "victim")
    assert _refused(db, "symlink").path == str(db) + "-writer"
    assert not (tmp_path / "victim").exists() and not db.exists()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to chown to another user")
def test_a_state_file_of_another_user_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    db.touch(mode=0o600)
    os.chown(db, 65534, 65534)
    err = _refused(db, "owned by uid 65534")
    assert err.path == str(db) and str(db) in str(err)


def test_a_group_or_world_writable_state_file_is_refused_by_node_and_tool(tmp_path: Path) -> None:
    """Issue 13's code execution: a 0666 file with a row whose key unpickles into code of the attacker's."""
    from rich.console import Console

    from tools.checkpoints import main

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))  # stands for os.system: runs on unpickling

    marker = tmp_path / "pwned"
    db = tmp_path / "shared.db"
    store = CheckpointStore(db)
    store.write_batch([Write(Evil(), 0, encode("k", 1))])
    store.close()
    os.chmod(db, 0o666)
    assert "0o666" in str(_refused(db, "group or others write"))
    out = StringIO()
    assert main([str(db)], Console(file=out, width=200)) == 1  # listing only: still refused
    assert "group or others write" in out.getvalue()
    with pytest.raises(UnsafeStateFile):
        checkpoints.keys(db)
    assert not marker.exists()


# -- 4. unusable paths --------------------------------------------------------------------------------

def test_unusable_state_paths_are_refused_at_start_naming_state_and_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="state"):
        Node(state="")
    missing = tmp_path / "no-such-dir" / "app.db"
    directory = tmp_path / "a-dir"
    directory.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    for path, why in [(missing, "does not exist"), (directory, "is a directory"),
                      (text, "not an SQLite database")]:
        before = sorted(os.listdir(tmp_path))
        with pytest.raises(ValueError, match=why) as info:
            run(Node(workers=1, state=path).start())
        assert "state" in str(info.value) and str(path) in str(info.value)
        assert sorted(os.listdir(tmp_path)) == before  # nothing created beside it
    assert os.listdir(directory) == []


# -- 5. nothing left behind ---------------------------------------------------------------------------

def test_no_litter_after_two_sigkilled_nodes_and_one_clean_start(tmp_path: Path) -> None:
    tmp, xdg = tmp_path / "tmp", tmp_path / "xdg2"
    tmp.mkdir()
    xdg.mkdir(mode=0o700)
    env = dict(os.environ, TMPDIR=str(tmp), XDG_RUNTIME_DIR=str(xdg))
    for name in ("killed-1", "killed-2"):
        kill(start_node(None, name, env))
    # The second start swept the first one's litter; the second one's is there until the next start.
    [temporary] = os.listdir(tmp)
    assert temporary.startswith("pyotp-state-")
    assert sorted(os.listdir(xdg / "pyotp")) == ["killed-2.key", "killed-2.sock"]
    assert kill(start_node(None, "clean", env), signal.SIGTERM) == 128 + signal.SIGTERM
    assert os.listdir(tmp) == [] and os.listdir(xdg / "pyotp") == []


def test_sighup_closes_a_plain_program_the_orderly_way(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    db = str(tmp_path / "app.db")
    assert kill(start_node(db, "hup", env), signal.SIGHUP) == 128 + signal.SIGHUP
    assert os.listdir(tmp) == [] and not os.path.exists(db + statefile.OWNER_LOCK)


def test_a_start_that_fails_cleans_what_it_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    db = str(tmp_path / "app.db")

    async def body() -> None:
        async with Node(workers=1, name="taken"):
            mine = os.listdir(tmp)
            for state in (None, db):
                with pytest.raises(ControlError, match="already running"):
                    await Node(workers=1, name="taken", state=state).start()
                assert os.listdir(tmp) == mine  # the failed node's temporary state is gone
            assert not os.path.exists(db + statefile.OWNER_LOCK)
            with statefile.OwnerLock(db):  # the failed node gave the file up
                pass

    run(body())
    assert os.listdir(tmp) == []


def test_a_long_tmpdir_does_not_stop_a_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was ``OSError: AF_UNIX path too long`` (without the path), leaking the socket directory."""
    deep = tmp_path / ("d" * 100) / ("e" * 100)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))

    async def body() -> str:
        async with Node(workers=1) as node:
            pid = await node.spawn(Counter, 3, name="deep")
            assert await node.call(pid, "get") == 3
            return node.state_path

    assert run(body()).startswith(str(deep))
    assert os.listdir(deep) == []


def test_an_over_long_socket_path_is_named() -> None:
    from kernel.transport.sockets import Listener

    path = "/tmp/" + "x" * 120 + "/w0.sock"
    with pytest.raises(ValueError, match="x" * 120):
        run(Listener(path, b"k" * 32, lambda e: None, lambda a, b: None).start())


# -- 3. a fenced zombie whose state did not change -----------------------------------------------------

class _Rt:
    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.failures: list[BaseException] = []

    def reply_from_handler(self, actor: Any, caller: Any, reply: Any) -> None:
        self.replies.append(reply)

    def fail_caller_with(self, caller: Any, exc: BaseException) -> None:
        self.failures.append(exc)


class _Incarnation:
    """What the checkpoint service sees of a durable actor: key, state, the runtime it replies through."""

    _policy = Checkpoint(every=1, durable=True)

    def __init__(self) -> None:
        self.key = "wallet"
        self.state: Any = None
        self.alive = True
        self.pid = "<0.1>"
        self._rt = _Rt()
        self.reason: Any = None

    def _die(self, reason: Any) -> None:
        self.alive, self.reason = False, reason


def test_a_replaced_incarnation_is_not_acknowledged_for_an_unchanged_durable_state(tmp_path: Path) -> None:
    """A sets 1; B restores 1 and sets 2; A's ``set 1`` leaves A's state as it was. Its reply used to be
    released without a write (so without the epoch check): the zombie acknowledged a durable write
    that never happened, while the file held 2."""
    from kernel.persistence.service import CheckpointService

    db = str(tmp_path / "app.db")

    async def body() -> None:
        sa, sb = CheckpointService(db), CheckpointService(db)  # two workers, two connections
        a, b = _Incarnation(), _Incarnation()

        async def handled(service: CheckpointService, actor: _Incarnation, state: Any) -> None:
            actor.state = state
            service.after_message(actor, ("caller", "ok"))  # type: ignore[arg-type]
            last = service._slots[id(actor)].last
            if last is not None:
                await asyncio.wait([last])

        assert await sa.activate(a) is None  # type: ignore[arg-type]
        await handled(sa, a, 1)
        assert a._rt.replies == ["ok"]
        assert await sb.activate(b) == (1, 0)  # type: ignore[arg-type]
        await handled(sb, b, 2)
        await handled(sa, a, 1)  # unchanged for A
        assert a._rt.replies == ["ok"], "the zombie acknowledged a durable write it never made"
        assert a._rt.failures and not a.alive and "StaleEpoch" in str(a.reason)
        await sa.close()
        await sb.close()

    run(body())
    assert checkpoints.load(db, "wallet") == 2
