"""The node: the user's process, its worker OS processes, and their lifecycle.

Start method, chosen deliberately: each worker is a fresh interpreter running ``python -m
kernel.worker``. ``fork`` of a process with a running event loop (and threads) is unsafe, and
multiprocessing's ``spawn``/``forkserver`` re-import the user's ``__main__``, which breaks a script
with no ``if __name__ == "__main__"`` guard. Our workers import only the kernel; user classes reach them
by reference when importable, by value (cloudpickle) when not.

No orphans: a worker asks the OS to SIGKILL it when its parent dies (PR_SET_PDEATHSIG) and also
exits when its stdin pipe from the node reaches EOF, which happens whenever the node dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import reprlib
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

from . import wire
from .authority import Authority
from .context import _current
from .control import ControlError, ControlServer, validate_node_name
from .errors import CallTimeout, KernelError, NoProc
from .names import check_name
from .process import NodeContext
from .runtime import Runtime
from .terms import NODE, Pid, Ref
from .wire import MAX_MESSAGE, MIN_MESSAGE, SEND_BUFFER

__all__ = ["Node"]

log = logging.getLogger("kernel.node")

_PID = re.compile(r"^<(node|\d+)\.(\d+)(?:\.(\d+))?>$")
_READY_TIMEOUT = 30.0
#: Put on the workers' PYTHONPATH so `python -m kernel.worker` finds this very kernel.
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Node:
    """The running system on one host; use as ``async with Node(workers=2) as node``.

    Leaving the block stops every actor (the node's own spawns in reverse start order, each with
    ``terminate``), flushes checkpoints and reaps every worker process.

    ``max_message`` bounds one encoded message. ``synchronous`` is SQLite's setting for checkpoint
    commits: "NORMAL" (default) keeps every committed checkpoint through any process crash, SIGKILL of
    a worker or of the node included, and may lose the last few to a power cut or kernel panic; "FULL"
    adds an fsync per commit so they survive those too, at a lower commit rate.

    ``send_buffer`` bounds the bytes buffered towards any one worker (and each worker's towards any
    other): past it an actor that sends is paused between messages until the peer drains, and node code
    can ``await node.drain()``; past 4x, ``send``/``cast``/``call`` raise ``Overloaded``.
    """

    def __init__(self, workers: int | None = None, state: str | os.PathLike[str] | None = None,
                 name: str | None = None, max_message: int = MAX_MESSAGE,
                 synchronous: str = "NORMAL", send_buffer: int = SEND_BUFFER) -> None:
        if workers is None:
            workers = os.cpu_count() or 1
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be a positive int or None, got {workers!r}")
        if state is not None and not isinstance(state, (str, os.PathLike)):
            raise TypeError(f"state must be a path (str or os.PathLike) or None, got {type(state).__name__}")
        if name is not None:
            validate_node_name(name)  # TypeError/ValueError naming `name`
        if not isinstance(max_message, int) or isinstance(max_message, bool) or max_message < MIN_MESSAGE:
            raise ValueError(f"max_message must be an int of at least {MIN_MESSAGE} bytes (64 KiB), "
                             f"got {max_message!r}")
        self.max_message = max_message
        if not isinstance(send_buffer, int) or isinstance(send_buffer, bool) or send_buffer < MIN_MESSAGE:
            raise ValueError(f"send_buffer must be an int of at least {MIN_MESSAGE} bytes (64 KiB), "
                             f"got {send_buffer!r}")
        self.send_buffer = send_buffer
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(
                "synchronous must be 'NORMAL' (committed checkpoints survive any process crash; a power "
                "cut may lose the last few) or 'FULL' (they survive a power cut too, fewer commits/s), "
                f"got {synchronous!r}")
        self.synchronous = synchronous
        self.name = name or f"node-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self.size = workers
        self.state = os.fspath(state) if state is not None else None
        self._tmp_state: str | None = None
        self._rt: Runtime | None = None
        self._ctx: NodeContext | None = None
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._ready: dict[tuple[int, int], asyncio.Future[int]] = {}
        self._os_pids: list[int] = [0] * workers
        self._watchers: list[asyncio.Task[None]] = []
        self._closing = False
        self._token: Any = None
        self._sockdir = ""
        self._started = 0.0
        self._control: ControlServer | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._rt is not None:
            raise KernelError("this node is already started")
        self._started = time.time()
        self._sockdir = tempfile.mkdtemp(prefix="pyotp-")  # mkdtemp makes it 0700
        secret = os.urandom(32)
        rt = self._rt = Runtime(NODE, 0, self._sockdir, secret, self.size)
        rt.listener.max_message = self.max_message
        rt.send_buffer = self.send_buffer
        Authority(rt)
        rt.note_ops["ready"] = self._on_ready
        await rt.start()
        if self.state is None:
            fd, self._tmp_state = tempfile.mkstemp(prefix="pyotp-state-", suffix=".db")
            os.close(fd)
        ctx = self._ctx = NodeContext()
        ctx._bind(rt, rt.next_pid(), None, None, None)
        ctx._start_context()
        rt.procs[ctx.pid.serial] = ctx
        try:
            await asyncio.gather(*(self._launch(i, 0) for i in range(self.size)))
            self._control = ControlServer(self.name, self._control_request)
            await self._control.start()
        except BaseException:
            await self.close()
            raise
        self._token = _current.set(ctx)

    @property
    def state_path(self) -> str:
        path = self.state or self._tmp_state
        assert path is not None
        return path

    async def _launch(self, index: int, inc: int) -> None:
        rt = self._rt
        assert rt is not None
        ready: asyncio.Future[int] = rt.loop.create_future()
        self._ready[(index, inc)] = ready
        config = {
            "index": index,
            "incarnation": inc,
            "workers": self.size,
            "incarnations": rt.incarnations,
            "sockdir": self._sockdir,
            "secret": rt.secret.hex(),
            "parent": os.getpid(),
            "sys_path": [p for p in sys.path if p],
            "state": self.state_path,
            "node": self.name,
            "max_message": self.max_message,
            "send_buffer": self.send_buffer,
            "synchronous": self.synchronous,
        }
        env = dict(os.environ)
        here = _PROJECT_ROOT
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH", "")]))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kernel.worker", stdin=asyncio.subprocess.PIPE, env=env)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(config).encode() + b"\n")
        self._procs[index] = proc
        self._watchers.append(rt.loop.create_task(self._watch(index, inc, proc)))
        try:
            os_pid = await asyncio.wait_for(ready, _READY_TIMEOUT)
        finally:
            self._ready.pop((index, inc), None)
        self._os_pids[index] = os_pid

    def _on_ready(self, index: int, inc: int, os_pid: int) -> None:
        fut = self._ready.get((index, inc))
        if fut is not None and not fut.done():
            fut.set_result(os_pid)

    async def _watch(self, index: int, inc: int, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        fut = self._ready.get((index, inc))
        if fut is not None and not fut.done():
            fut.set_exception(KernelError(f"worker {index} exited with code {code} while starting"))
        if self._closing:
            return
        log.warning("worker %d (os pid %s) died with code %s; replacing it", index, proc.pid, code)
        rt = self._rt
        assert rt is not None
        rt.worker_down(index, inc)
        for other in range(self.size):
            if other != index and other not in rt.down:
                rt.note(other, "worker_down", index, inc)
        # Messages the node buffered for the dead worker are dropped: its pids are all dead now.
        rt.peers.pop(index, None)
        try:
            await self._launch(index, inc + 1)
        except Exception:
            if not self._closing:
                log.exception("could not replace worker %d", index)
            return
        rt.note(index, "names", rt.names.items_list())
        rt.worker_up(index, inc + 1)
        for other in range(self.size):
            if other != index and other not in rt.down:
                rt.note(other, "worker_up", index, inc + 1)

    async def close(self) -> None:
        """Stop every actor in order, flush checkpoints, reap every worker. Idempotent."""
        if self._closing or self._rt is None:
            return
        rt = self._rt
        ctx = self._ctx
        if self._control is not None:
            await self._control.close()
            self._control = None
        if ctx is not None and ctx.alive:
            for pid in reversed(rt.top_level):
                with contextlib.suppress(NoProc, CallTimeout, KernelError):
                    await rt.stop(ctx, pid, "shutdown", 10.0)
        self._closing = True
        for index, proc in self._procs.items():
            if proc.returncode is None and index not in rt.down:
                try:
                    await asyncio.wait_for(rt.rpc(index, "shutdown", ()), 10.0)
                except Exception as exc:
                    log.warning("worker %d did not shut down cleanly: %s", index, exc)
        for proc in self._procs.values():
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
        for task in self._watchers:
            task.cancel()
        if ctx is not None:
            ctx._finish("shutdown")
        rt.close()
        if self._token is not None:
            try:
                _current.reset(self._token)
            except ValueError:
                _current.set(None)  # left from another context (e.g. a different task)
            self._token = None
        shutil.rmtree(self._sockdir, ignore_errors=True)
        if self._tmp_state is not None:
            from .checkpoints import remove_state_file  # SQLite tooling: kept off worker start-up

            remove_state_file(self._tmp_state)

    # -- the node's context ---------------------------------------------------------------------

    @property
    def context(self) -> NodeContext:
        if self._ctx is None or self._closing:
            raise KernelError("the node is not running: use `async with Node(...) as node`")
        return self._ctx

    @property
    def workers(self) -> list[int]:
        """Worker OS pids in worker-index order."""
        return list(self._os_pids)

    @property
    def pid(self) -> Pid:
        return self.context.pid

    async def spawn(self, cls: Any, *args: Any, name: Any = None, worker: int | None = None,
                    **kwargs: Any) -> Pid:
        """Start an actor on a worker (round-robin unless ``worker`` is given); returns after its init."""
        pid: Pid = await self.context.spawn(cls, *args, name=name, worker=worker, **kwargs)
        return pid

    async def spawn_monitor(self, cls: Any, *args: Any, name: Any = None, worker: int | None = None,
                            **kwargs: Any) -> tuple[Pid, Ref]:
        result: tuple[Pid, Ref] = await self.context.spawn_monitor(cls, *args, name=name, worker=worker,
                                                                   **kwargs)
        return result

    async def spawn_opt(self, cls: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
                        *, name: Any = None, worker: int | None = None, monitor: bool = False,
                        key: Any = None) -> Any:
        return await self.context.spawn_opt(cls, args, kwargs, name=name, worker=worker,
                                            monitor=monitor, key=key)

    def send(self, dest: Any, message: Any) -> None:
        self.context.send(dest, message)

    def cast(self, dest: Any, message: Any) -> None:
        self.context.cast(dest, message)

    async def call(self, dest: Any, request: Any, timeout: float = 5.0) -> Any:
        return await self.context.call(dest, request, timeout)

    async def stop(self, dest: Any, reason: Any = "normal", timeout: float = 5.0) -> None:
        """Stop ``dest`` the orderly way (``terminate`` runs); returns once it is gone."""
        await self.context._rt.stop(self.context, dest, reason, timeout)

    def monitor(self, dest: Any) -> Ref:
        return self.context.monitor(dest)

    def demonitor(self, ref: Ref) -> None:
        self.context.demonitor(ref)

    def exit(self, pid: Pid, reason: Any) -> None:
        self.context.exit(pid, reason)

    async def drain(self) -> None:
        """Wait until the bytes buffered towards every worker are back under ``send_buffer``."""
        await self.context._rt.drain()

    async def receive(self, match: Any = None, timeout: float | None = None) -> Any:
        """Selective receive on the node's own mailbox (``Down`` messages, raw sends to the node)."""
        return await self.context.receive(match, timeout)

    async def whereis(self, name: Any) -> Pid | None:
        check_name(name)
        return self.context._rt.names.get(name)

    async def snapshot(self) -> dict[str, Any]:
        """A JSON-able picture of the node for the observer (see tools.observer)."""
        rt = self.context._rt
        workers = await asyncio.gather(
            *(rt.rpc(i, "snapshot", ()) for i in range(self.size) if i not in rt.down),
            return_exceptions=True)
        out_workers: list[dict[str, Any]] = []
        actors: list[dict[str, Any]] = []
        for part in workers:
            if isinstance(part, BaseException):
                continue
            out_workers.append(part["worker"])
            actors.extend(part["actors"])
        restarts: dict[str, int] = {}
        for actor in actors:
            restarts.update(actor.pop("child_restarts", None) or {})
        for actor in actors:
            if actor["key"] in restarts:
                actor["restarts"] = restarts[actor["key"]]
        for index in sorted(rt.down):
            out_workers.append({"index": index, "os_pid": self._os_pids[index], "alive": False})
        out_workers.sort(key=lambda w: w["index"])
        return {"node": self.name, "os_pid": os.getpid(), "started": self._started, "time": time.time(),
                "workers": out_workers, "actors": actors}

    # -- the control socket (JSON only; see kernel.control) -------------------------------------

    async def _control_request(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {}
        if op == "snapshot":
            return await self.snapshot()
        if op in ("replay", "drop"):
            return await self._dead_letter(op, request["id"])
        pid = _parse_pid(request.get("pid"))
        rt = self.context._rt
        if pid.worker == NODE or rt.down.__contains__(pid.worker) or not rt.pid_is_current(pid):
            raise ControlError("noproc", f"no process {pid!r}")
        if op == "kill":
            info = await rt.rpc(pid.worker, "state", (pid.serial, pid.incarnation))
            if info is None:
                raise ControlError("noproc", f"no process {pid!r}")
            self.context.exit(pid, "kill")
            return {}
        if op == "state":
            info = await rt.rpc(pid.worker, "state", (pid.serial, pid.incarnation))
            if info is None:
                raise ControlError("noproc", f"no process {pid!r}")
            result: dict[str, Any] = info
            return result
        raise ControlError("bad_request", f"unknown op {op!r}")

    async def _dead_letter(self, op: str, letter_id: int) -> dict[str, Any]:
        """Replay a quarantined message to its actor (lifting the quarantine first), or drop it."""
        from . import checkpoints
        from .serialize import loads

        letters = {d.id: d for d in await asyncio.to_thread(checkpoints.dead_letters, self.state_path)}
        letter = letters.get(letter_id)
        if letter is None:
            raise ControlError("not_found", f"no dead letter {letter_id}")
        if op == "replay":
            kind, message = loads(letter.message)
            rt = self.context._rt
            for index in range(self.size):
                if index not in rt.down:
                    rt.note(index, "unquarantine", letter.key, kind, message)
            pid = await _find_by_key(self, letter.key)
            if pid is None:
                raise ControlError("noproc", f"no live actor has key {letter.key!r}; start it, then replay")
            if kind == wire.CALL:
                # The original caller is gone: the operator who replays it gets the answer instead.
                try:
                    answer = _repr.repr(await self.context.call(pid, message, 30.0))
                except KernelError as exc:
                    raise ControlError("replay_failed", f"replayed call failed: {exc}") from None
            else:
                rt.send(pid, kind, message)
                answer = None
        await asyncio.to_thread(checkpoints.drop_dead_letter, self.state_path, letter_id)
        return {"id": letter_id, "op": op} if op == "drop" else {"id": letter_id, "op": op, "answer": answer}


async def _find_by_key(node: Node, key: Any) -> Pid | None:
    rt = node.context._rt
    if type(key) is not Pid:
        with contextlib.suppress(TypeError):
            pid = rt.names.get(key)
            if pid is not None:
                return pid
    for index in range(node.size):
        if index not in rt.down:
            found: Pid | None = await rt.rpc(index, "by_key", (key,))
            if found is not None:
                return found
    return None


def _parse_pid(text: Any) -> Pid:
    match = _PID.match(text) if isinstance(text, str) else None
    if match is None:
        raise ControlError("bad_request", f"pid must look like <0.3>, got {text!r}")
    worker = NODE if match[1] == "node" else int(match[1])
    return Pid(worker, int(match[2]), int(match[3] or 0))


_repr = reprlib.Repr()
_repr.maxstring = 400
_repr.maxother = 400
_repr.maxlist = _repr.maxdict = 20


def state_info(proc: Any) -> dict[str, Any]:
    """What the observer shows of one actor: its state (truncated repr), links and monitors."""
    return {
        "repr": _repr.repr(getattr(proc, "state", None)),
        "links": sorted(repr(p) for p in (proc._links or ())),
        "monitors": [repr(p) for p in (proc._monitors or {}).values()],
        "watching": [repr(p) for p in (proc._watching or {}).values()],
    }
