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
import dataclasses
import json
import logging
import os
import re
import secrets
import sqlite3
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import ActorExited, CallTimeout, KernelError, NoProc, NotTraced, WorkerStartFailed
from ..persistence import statefile
from ..process.context import _current
from ..process.raw import NodeContext
from ..process.trace import TraceLog, check_limit
from ..routing.authority import Authority, NameDirectory
from ..routing.name_table import check_name
from ..routing.runtime import Runtime
from ..terms import NODE, Pid, Ref
from ..transport import wire
from ..transport.sockets import Listener
from ..transport.tcp import TLS, parse_listen
from ..transport.wire import MAX_MESSAGE, MIN_MESSAGE, SEND_BUFFER
from . import metrics, sampler
from .control import ControlError, ControlServer, validate_node_name
from .heartbeat import Heartbeat
from .introspection import KIND_NAMES, MESSAGE_REPR, REPR, describe_actors, state_info

if TYPE_CHECKING:
    from ..cluster import Member
    from .cluster import ClusterMember

__all__ = ["Node"]

log = logging.getLogger("kernel.node")

_PID = re.compile(r"^<(node|\d+)\.(\d+)(?:\.(\d+))?>$")
#: A replacement worker that failed to start is started again after 0.1, 0.2, 0.4... seconds (at most
#: _BACKOFF_MAX); after _START_ATTEMPTS failures in a row the node fails (WorkerStartFailed).
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0
_START_ATTEMPTS = 5
#: Leaving ``async with Node()``: one deadline for the orderly part (stopping the top-level actors, in
#: reverse order, then asking each worker to shut down); what has not finished by then is SIGKILLed.
_CLOSE_BUDGET = 15.0
#: Self-fencing: how long the node waits for a worker to confirm it stopped its persistent actors.
_FENCE_WAIT = 1.0
#: One orderly stop at close: a worker that does not answer within this is skipped from then on.
_CLOSE_STOP = 10.0
#: At close, a worker whose heartbeat has been unanswered this long (seconds) is not asked to shut down:
#: it is SIGKILLed at once.
_CLOSE_SILENT = 2.0
#: The snapshot's wait for each worker's part: a worker that has not answered is shown unresponsive.
_SNAPSHOT_WAIT = 1.5
#: A late worker's sampler thread (kernel/node/sampler.py) gets this long to say what holds its loop.
_SAMPLER_WAIT = 0.4
#: Control-socket ops that ask one worker (an actor's state, a kill) wait at most this.
_CONTROL_WAIT = 5.0
#: The wait for another cluster node's snapshot: its own takes up to _SNAPSHOT_WAIT, plus the way there.
_REMOTE_WAIT = 3.0
#: Put on the workers' PYTHONPATH so `python -m kernel.node.worker` finds this very kernel.
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Node:
    """The running system on one host; use as ``async with Node(workers=2) as node``.

    Leaving the block stops every actor (the node's own spawns in reverse start order, each with
    ``terminate``), flushes checkpoints and reaps every worker process.

    ``max_message`` bounds one encoded message. ``synchronous`` is SQLite's setting for checkpoint
    commits: "NORMAL" (default) keeps every committed checkpoint through any process crash, SIGKILL of
    a worker or of the node included, and may lose the last few to a power cut or kernel panic; "FULL"
    adds an fsync per commit so they survive those too, at a lower commit rate.

    ``state`` is checked at start, before anything is created (persistence/statefile.py): ``ValueError``
    for a path that cannot work, ``UnsafeStateFile`` for one others could have written, ``StateFileInUse``
    while another live node owns it; the node then owns it until it closes or dies.

    ``worker_timeout`` (seconds, None: never): a worker whose event loop has not answered the node's
    heartbeat for that long is declared hung, SIGKILLed and replaced; its actors exit "worker_down".
    ``start_timeout``: a (replacement) worker not ready within it is killed and started again, with
    backoff; when that keeps failing, the node fails loudly (``WorkerStartFailed`` out of ``async with``).

    ``send_buffer`` bounds the bytes buffered towards any one worker (and each worker's towards any
    other): past it an actor that sends is paused between messages until the peer drains, and node code
    can ``await node.drain()``; past 4x, ``send``/``cast``/``call`` raise ``Overloaded``.

    ``metrics_port`` (None: off): serve Prometheus metrics at ``http://metrics_host:PORT/metrics``, per
    worker, gathered at scrape time (kernel/node/metrics.py, docs/api.md section 9); 0 picks a free port.

    ``cluster`` (a ``postgresql://`` DSN) and ``listen`` (``"host:port"``) make the node a member of a
    cluster (API.md section 15, docs/guides/cluster.md): its node process listens on ``port`` and worker
    ``i`` on ``port + 1 + i``; ``lease`` is how long it stays a member without renewing; ``tls``
    (``kernel.TLS``) wraps its connections to other nodes in mutual TLS.
    """

    def __init__(self, workers: int | None = None, state: str | os.PathLike[str] | None = None,
                 name: str | None = None, max_message: int = MAX_MESSAGE,
                 synchronous: str = "NORMAL", worker_timeout: float | None = 30.0,
                 start_timeout: float = 30.0, send_buffer: int = SEND_BUFFER,
                 metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
                 cluster: str | None = None, listen: str | None = None, lease: float = 10.0,
                 tls: TLS | None = None) -> None:
        if workers is None:
            workers = os.cpu_count() or 1
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be a positive int or None, got {workers!r}")
        if state is not None and not isinstance(state, (str, os.PathLike)):
            raise TypeError(f"state must be a path (str or os.PathLike) or None, got {type(state).__name__}")
        if state is not None and not os.fspath(state):
            raise ValueError("state must be a file path or None (a temporary file), got ''")
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
        if worker_timeout is not None:
            _check_seconds("worker_timeout", worker_timeout, "or None (never declare a worker hung)")
        self.worker_timeout = None if worker_timeout is None else float(worker_timeout)
        _check_seconds("start_timeout", start_timeout, "")
        self.start_timeout = float(start_timeout)
        self.metrics_port = metrics.validate_port(metrics_port)
        if not isinstance(metrics_host, str) or not metrics_host:
            raise ValueError(f"metrics_host must be an address to listen on, got {metrics_host!r}")
        self.metrics_host = metrics_host
        self._metrics: metrics.MetricsServer | None = None
        self.cluster, self._listen = _check_cluster(cluster, listen, lease, tls)
        self.lease = float(lease)
        self.tls = tls
        self._member: ClusterMember | None = None
        self._tcp: Listener | None = None
        self.name = name or f"node-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self.size = workers
        self.state = os.fspath(state) if state is not None else None
        self._tmp_state: str | None = None
        self._owner: statefile.OwnerLock | None = None
        self._keeper: Any = None  # the sqlite3 connection that keeps -wal and -shm in place
        self._rt: Runtime | None = None
        self._ctx: NodeContext | None = None
        #: The workers' OS processes by index (``rt.procs`` holds the actors of a runtime).
        self._worker_procs: dict[int, asyncio.subprocess.Process] = {}
        self._ready: dict[tuple[int, int], asyncio.Future[int]] = {}
        self._os_pids: list[int] = [0] * workers
        self._watchers: list[asyncio.Task[None]] = []
        self._closing = False
        self._token: Any = None
        self._sockdir = ""
        self._started = 0.0
        self._control: ControlServer | None = None
        self._heartbeat: Heartbeat | None = None
        self._stopping = False  # close() has begun: dead workers are no longer replaced
        self._failure: WorkerStartFailed | None = None
        self._host: asyncio.Task[Any] | None = None  # the task inside `async with`, cancelled on failure

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        await self.close()
        failure = self._failure
        if failure is not None:
            task = asyncio.current_task()
            if exc_type is asyncio.CancelledError and task is not None and task.cancelling():
                task.uncancel()  # our own cancellation of the block: it becomes the failure
            raise failure

    async def start(self) -> None:
        if self._rt is not None:
            raise KernelError("this node is already started")
        self._claim_state()  # ValueError / UnsafeStateFile / StateFileInUse before anything else
        try:
            await self._boot()
        except BaseException:
            await self.close()
            self._release_state()  # a start that failed leaves nothing behind
            raise

    async def _boot(self) -> None:
        self._started = time.time()
        # Linux abstract socket names: nothing on disk, gone with the process (the uid check and the
        # handshake still guard them; see kernel/transport/auth.py).
        self._sockdir = f"\0pyotp-{secrets.token_hex(8)}"
        secret = os.urandom(32)
        rt = self._rt = Runtime(NODE, 0, self._sockdir, secret, self.size)
        rt.listener.max_message = self.max_message
        rt.send_buffer = self.send_buffer
        authority = Authority(rt)
        directory: NameDirectory = authority
        self._heartbeat = Heartbeat(rt, self.worker_timeout, self._on_hung)
        # The node process's side of routing/ops.py, all of it here.
        rt.ops = dataclasses.replace(
            rt.ops, register=directory.register, unregister=directory.unregister,
            whereis=directory.whereis, registered=directory.registered, name_del=authority.name_del,
            send_name=authority.send_name, ready=self._on_ready, pong=self._heartbeat._pong,
            node_snapshot=self._node_snapshot)
        await rt.start()
        if self.cluster is not None:
            await self._join(rt)
        ctx = self._ctx = NodeContext()
        ctx._bind(rt, rt.next_pid(), None, None, None)
        ctx._start_context()
        rt.procs[ctx.pid.serial] = ctx
        try:
            await asyncio.gather(*(self._launch(i, 0) for i in range(self.size)))
            if self._member is not None:
                await self._member.run()
            self._control = ControlServer(self.name, self._control_request)
            await self._control.start()
            if self.metrics_port is not None:
                self._metrics = metrics.serve(self._gather_metrics, self.metrics_host, self.metrics_port)
        except BaseException:
            await self.close()
            raise
        self._heartbeat.start()
        self._host = asyncio.current_task()
        self._token = _current.set(ctx)

    def _claim_state(self) -> None:
        """Check the state file, take its owner lock, create it 0600 (section 6 of API.md)."""
        if self.state is None:
            self._tmp_state, self._owner = statefile.make_temporary()  # sweeps dead nodes' first
            return
        path = statefile.validate(self.state)
        statefile.sweep_temporary()  # what dead nodes with a temporary state left, whatever this one uses
        owner = statefile.OwnerLock(path)
        owner.acquire()
        try:
            statefile.create_private(path)
            self._keeper = statefile.keep_open(path)
        except BaseException:
            owner.release()
            raise
        self._owner = owner

    def _release_state(self) -> None:
        """Remove a temporary state's directory, then give the owner lock up (idempotent)."""
        if self._owner is None:
            return
        if self._keeper is not None:
            self._keeper.close()  # the last connection: SQLite checkpoints and removes -wal and -shm
            self._keeper = None
        if self._tmp_state is not None:
            statefile.remove_temporary(self._tmp_state)
        self._owner.release()
        self._owner = None

    @property
    def state_path(self) -> str:
        path = self.state or self._tmp_state
        assert path is not None
        return path

    async def _launch(self, index: int, inc: int) -> None:
        """Start worker ``index`` (incarnation ``inc``) and wait until it is ready to host actors.

        A process that exits first, or is not ready within ``start_timeout``, is killed and reaped here,
        and the failure raised: a slot never holds a half-started worker.
        """
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
            # A write waits for another worker's write lock longer than the heartbeat takes to find
            # that worker hung and kill it (which releases the lock): a hung holder fails no one else.
            "lock_wait": max(5.0, 2 * (self.worker_timeout or 0.0) + 5.0),
        }
        if self._member is not None:
            from .cluster import worker_config

            host, port = self._listen
            config["cluster"] = worker_config(self._member, host, port, self.tls)
        env = dict(os.environ)
        here = _PROJECT_ROOT
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH", "")]))
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kernel.node.worker", stdin=asyncio.subprocess.PIPE, env=env)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(config).encode() + b"\n")
            self._worker_procs[index] = proc
            exited = rt.loop.create_task(proc.wait())
            try:
                await asyncio.wait((ready, exited), timeout=self.start_timeout,
                                   return_when=asyncio.FIRST_COMPLETED)
                if not ready.done():
                    raise KernelError(
                        f"worker {index} exited with code {proc.returncode} while starting" if exited.done()
                        else f"worker {index} was not ready within start_timeout={self.start_timeout}s")
            except BaseException:
                exited.cancel()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                raise
        finally:
            self._ready.pop((index, inc), None)
        self._os_pids[index] = ready.result()
        self._watchers.append(rt.loop.create_task(self._watch(index, inc, proc, exited)))
        if self._heartbeat is not None:
            self._heartbeat.watch(index, inc)

    def _on_ready(self, index: int, inc: int, os_pid: int) -> None:
        fut = self._ready.get((index, inc))
        if fut is not None and not fut.done():
            fut.set_result(os_pid)

    async def _watch(self, index: int, inc: int, proc: asyncio.subprocess.Process,
                     exited: asyncio.Task[int]) -> None:
        code = await exited
        if self._heartbeat is not None:
            self._heartbeat.forget(index)
        if self._closing:
            return
        log.warning("worker %d (os pid %s) died with code %s; %s", index, proc.pid, code,
                    "not replacing it: the node is closing" if self._stopping else "replacing it")
        rt = self._rt
        assert rt is not None
        if self._stopping:
            rt.gone[index] = ActorExited("worker_down", Pid(index, 0, inc))
        rt.worker_down(index, inc)
        for other in range(self.size):
            if other != index and other not in rt.down:
                rt.note(other, "worker_down", index, inc)
        if rt.remote is not None:  # the other nodes' links, monitors and calls into it fire too
            for node in list(rt.remote.members):
                rt.remote.note(node, NODE, "node_worker_down", rt.remote.node, index, inc)
        # Messages the node buffered for the dead worker are dropped: its pids are all dead now.
        rt.peers.pop(index, None)
        if self._stopping or not await self._replace(index, inc + 1):
            return
        rt.note(index, "names", rt.names.items_list())
        rt.worker_up(index, inc + 1)
        for other in range(self.size):
            if other != index and other not in rt.down:
                rt.note(other, "worker_up", index, inc + 1)

    async def _replace(self, index: int, inc: int) -> bool:
        """Start the replacement of worker ``index``, with backoff; on repeated failure fail the node.

        Every attempt carries the same incarnation: a failed one never became ready, so it made no pid,
        and what waits for the slot (a spawn aimed at it) waits across attempts.
        """
        delay = _BACKOFF_FIRST
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                await self._launch(index, inc)
                return True
            except Exception as exc:
                if self._stopping:
                    return False
                if attempt == _START_ATTEMPTS:
                    self._fail(WorkerStartFailed(index, attempt, str(exc)))
                    return False
                log.error("could not replace worker %d (attempt %d of %d): %s; trying again in %.1fs",
                          index, attempt, _START_ATTEMPTS, exc, delay)
            await asyncio.sleep(delay)
            delay = min(2 * delay, _BACKOFF_MAX)
        return False

    def _on_hung(self, index: int, inc: int, silent: float) -> None:
        """The heartbeat found worker ``index`` hung: SIGKILL it; ``_watch`` then replaces it."""
        proc = self._worker_procs.get(index)
        if proc is None or proc.returncode is not None or self._closing:
            return
        log.error("worker %d (os pid %s) has not answered heartbeats for %.1fs (worker_timeout=%s): "
                  "killing it; its actors exit 'worker_down'", index, proc.pid, silent, self.worker_timeout)
        proc.kill()

    def _fail(self, error: WorkerStartFailed) -> None:
        """A slot cannot be filled: fail what waits on it, and the node (its ``async with`` raises)."""
        log.error("%s", error)
        rt = self._rt
        assert rt is not None
        rt.gone[error.index] = error
        rt.fail_calls(error.index, None, error)
        if self._failure is None:
            self._failure = error
            host = self._host
            if host is not None and not host.done():
                host.cancel()

    @property
    def failure(self) -> WorkerStartFailed | None:
        """Why the node failed (a worker slot that could not be filled), or None."""
        return self._failure

    async def close(self) -> None:
        """Stop every actor in order, flush checkpoints, reap every worker. Idempotent.

        One deadline (``_CLOSE_BUDGET``) covers the orderly part, whatever state the workers are in: a
        worker that does not answer a stop is skipped from then on, and every process still running when
        the deadline passes is SIGKILLed (its committed checkpoints are safe; its ``terminate`` is lost).
        """
        if self._stopping or self._rt is None:
            return
        self._stopping = True
        rt = self._rt
        ctx = self._ctx
        deadline = rt.loop.time() + _CLOSE_BUDGET
        if self._metrics is not None:
            server, self._metrics = self._metrics, None
            await asyncio.to_thread(server.close)  # a scrape in flight may be waiting on this loop
        if self._control is not None:
            await self._control.close()
            self._control = None
        unresponsive: set[int] = set()
        if ctx is not None and ctx.alive:
            for pid in reversed(rt.top_level):
                left = round(min(deadline - rt.loop.time(), _CLOSE_STOP), 1)
                if left <= 0:
                    break
                if pid.worker in unresponsive:
                    continue
                try:
                    await rt.stop(ctx, pid, "shutdown", left)
                except CallTimeout:
                    log.warning("%r did not stop within %.1fs; going on without it", pid, left)
                    if pid.worker != NODE:
                        unresponsive.add(pid.worker)
                except KernelError:
                    pass  # already gone, or its worker died: nothing left to stop
        # The heartbeat ran on so far: a worker that hangs now is still killed (not replaced), and what
        # waits on it (a supervisor stopping its children) goes on.
        if self._heartbeat is not None:
            await self._heartbeat.stop()
            # A worker that has not answered a heartbeat for seconds will not answer a shutdown either.
            heartbeat = self._heartbeat
            unresponsive.update(i for i in range(self.size) if (heartbeat.lag(i) or 0.0) > _CLOSE_SILENT)
        for hosted in list(rt.procs.values()):
            if hosted is not ctx:
                hosted._die("shutdown")  # node-hosted supervisors not under a top-level one
        self._closing = True
        asking = [index for index, proc in self._worker_procs.items()
                  if proc.returncode is None and index not in rt.down and index not in unresponsive]
        left = round(max(deadline - rt.loop.time(), 1.0), 1)
        answers = await asyncio.gather(
            *(rt.rpc(index, "shutdown", (), timeout=left) for index in asking), return_exceptions=True)
        for index, answer in zip(asking, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("worker %d did not shut down cleanly: %s", index, answer)
        for index, proc in self._worker_procs.items():
            if proc.stdin is not None:
                proc.stdin.close()
            if index in unresponsive and proc.returncode is None:
                proc.kill()
        await asyncio.gather(*(self._reap(proc, max(deadline - rt.loop.time(), 1.0))
                               for proc in self._worker_procs.values()))
        for task in self._watchers:
            task.cancel()
        if self._member is not None:
            await self._member.close()  # leaves the cluster: its names are free for others at once
        if self._tcp is not None:
            self._tcp.close()
        if rt.remote is not None:
            rt.remote.close()
        if ctx is not None:
            ctx._finish("shutdown")
        rt.close()
        if self._token is not None:
            try:
                _current.reset(self._token)
            except ValueError:
                _current.set(None)  # left from another context (e.g. a different task)
            self._token = None
        self._release_state()

    @staticmethod
    async def _reap(proc: asyncio.subprocess.Process, grace: float) -> None:
        """Wait ``grace`` seconds for ``proc`` to exit on its own, then SIGKILL it and reap it."""
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            log.warning("worker os pid %s did not exit within %.1fs; killing it", proc.pid, grace)
            proc.kill()
            await proc.wait()

    # -- cluster membership (kernel/node/cluster.py) ----------------------------------------------

    async def _join(self, rt: Runtime) -> None:
        """Join the cluster before any worker starts: the workers are told the node id and members."""
        assert self.cluster is not None
        from .cluster import ClusterMember, attach, worker_config  # asyncpg loads in cluster mode only

        host, port = self._listen
        member = self._member = ClusterMember(
            self.cluster, self.name, f"{host}:{port}" if ":" not in host else f"[{host}]:{port}", self.size,
            self.lease, on_up=self._node_up, on_down=self._node_down, on_lost=self._lease_lost,
            on_rejoined=self._rejoined)
        await member.start()
        self._tcp = attach(rt, worker_config(member, host, port, self.tls))
        await self._tcp.start()
        rt.ops = dataclasses.replace(rt.ops, node_worker_down=self._node_worker_down)

    def _node_up(self, member: Member) -> None:
        rt = self._rt
        assert rt is not None and rt.remote is not None
        from .cluster import member_route

        route = member_route(member)
        rt.remote.node_up(*route)
        for index in range(self.size):
            if index not in rt.down:
                rt.note(index, "node_up", *route)

    def _node_down(self, member: Member) -> None:
        rt = self._rt
        assert rt is not None and rt.remote is not None
        log.warning("cluster node %s (id %d, %s) is down: it left, or its lease ran out", member.node,
                    member.id, member.address)
        for index in range(self.size):
            if index not in rt.down:
                rt.note(index, "node_down", member.id)
        rt.remote.node_down(member.id)

    def _node_worker_down(self, node: int, index: int, inc: int) -> None:
        """A worker of another node died: fire what points into it here and on every worker."""
        rt = self._rt
        assert rt is not None and rt.remote is not None
        rt.remote.worker_down(node, index, inc)
        for other in range(self.size):
            if other not in rt.down:
                rt.note(other, "node_worker_down", node, index, inc)

    async def _lease_lost(self, lost: Exception) -> None:
        """Self-fencing: stop every persistent actor of the node before its lease runs out."""
        rt = self._rt
        assert rt is not None
        rt.fence()
        answers = await asyncio.gather(*(rt.rpc(i, "fence", (), timeout=_FENCE_WAIT) for i in range(self.size)
                                         if i not in rt.down), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                log.error("a worker did not confirm it stopped its persistent actors: %s", answer)

    def _rejoined(self, member: Member) -> None:
        rt = self._rt
        assert rt is not None
        for index in range(self.size):
            if index not in rt.down:
                rt.note(index, "rejoined", member.incarnation.isoformat())

    @property
    def node_id(self) -> int:
        """This node's id in its cluster (the node part of its pids as other nodes see them); 0 alone."""
        return 0 if self._member is None or self._member.membership is None else self._member.id

    @property
    def members(self) -> dict[int, str]:
        """The live members of the cluster at the last poll, node id -> name (this node included)."""
        return {} if self._member is None else {i: m.node for i, m in self._member.members.items()}

    # -- the node's context ---------------------------------------------------------------------

    @property
    def context(self) -> NodeContext:
        if self._ctx is None or self._closing:
            raise KernelError("the node is not running: use `async with Node(...) as node`")
        return self._ctx

    @property
    def _running(self) -> Runtime:
        """The node process's runtime (``context._rt`` as the concrete type); raises as ``context`` does."""
        if self._rt is None or self._ctx is None or self._closing:
            raise KernelError("the node is not running: use `async with Node(...) as node`")
        return self._rt

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
        await self._running.stop(self.context, dest, reason, timeout)

    def monitor(self, dest: Any) -> Ref:
        return self.context.monitor(dest)

    def demonitor(self, ref: Ref) -> None:
        self.context.demonitor(ref)

    def exit(self, pid: Pid, reason: Any) -> None:
        self.context.exit(pid, reason)

    async def drain(self) -> None:
        """Wait until the bytes buffered towards every worker are back under ``send_buffer``."""
        await self._running.drain()

    async def receive(self, match: Any = None, timeout: float | None = None) -> Any:
        """Selective receive on the node's own mailbox (``Down`` messages, raw sends to the node)."""
        return await self.context.receive(match, timeout)

    async def whereis(self, name: Any) -> Pid | None:
        check_name(name)
        return self._running.names.get(name)

    async def trace(self, dest: Any, n: int = 20) -> None:
        """Record the next ``n`` messages actor ``dest`` (pid or name) handles and sends, then stop by
        itself (Erlang's ``sys:trace`` with recon_trace's limit; see process/trace.py). A trace it already
        has is replaced. Read it with :meth:`trace_log`; it stays readable after it ended.

        Raises ``TypeError``/``ValueError`` for a bad ``n`` (an int in 1..1000), ``NoProc`` if ``dest``
        is not a live process, ``TypeError`` if it is a raw process rather than an Actor.
        """
        check_limit(n)
        pid = await self._traced_pid(dest)
        await self._running.rpc(pid.worker, "trace", (pid.serial, pid.incarnation, n),
                                   timeout=_CONTROL_WAIT)

    async def trace_log(self, dest: Any) -> TraceLog:
        """What the trace of ``dest`` recorded so far, and whether (and why) it ended.

        Raises ``NotTraced`` if ``dest`` was never traced (or its trace is long forgotten: a process
        keeps its last 32), ``NoProc`` if a name is not registered.
        """
        pid = await self._traced_pid(dest, alive=False)
        log: TraceLog = await self._running.rpc(pid.worker, "trace_log", (pid.serial, pid.incarnation),
                                                   timeout=_CONTROL_WAIT)
        return log

    async def _traced_pid(self, dest: Any, alive: bool = True) -> Pid:
        rt = self._running
        pid = await rt.resolve_for_call(dest)
        if pid is None or pid == self.context.pid or (alive and (
                pid.worker in rt.down or not rt.pid_is_current(pid))):
            raise NoProc(dest)
        return pid

    async def snapshot(self) -> dict[str, Any]:
        """A JSON-able picture of the node for the observer (see tools.observer), within about 2 s.

        Each ``workers`` entry has ``lag`` (seconds its event loop is behind, from the heartbeat) and
        ``responsive``: a worker that did not send its part in time is listed with ``responsive: False``
        (and no actors), instead of holding the whole snapshot up.
        """
        rt = self._running
        live = [i for i in range(self.size) if i not in rt.down]
        parts = await asyncio.gather(*(self._snapshot_part(i) for i in live))
        out_workers: list[dict[str, Any]] = []
        actors: list[dict[str, Any]] = []
        heartbeat = self._heartbeat
        for index, (part, blocked) in zip(live, parts, strict=True):
            lag = heartbeat.lag(index) if heartbeat is not None else None
            if isinstance(part, BaseException):
                entry = {"index": index, "os_pid": self._os_pids[index], "alive": True,
                         "responsive": False, "lag": lag, "error": str(part)}
                if blocked is not None:  # what holds its loop: the observer shows it
                    entry.update(running=blocked["running"], stack=blocked["stack"])
                out_workers.append(entry)
                continue
            out_workers.append({**part["worker"], "responsive": True, "lag": lag})
            actors.extend(part["actors"])
        actors.extend(describe_actors(rt))  # the supervisors the node process hosts
        restarts: dict[str, int] = {}
        exits: dict[str, list[list[Any]]] = {}
        for actor in actors:
            restarts.update(actor.pop("child_restarts", None) or {})
            exits.update(actor.pop("child_exits", None) or {})
        for actor in actors:
            if actor["key"] in restarts:
                actor["restarts"] = restarts[actor["key"]]
            if actor["key"] in exits:
                actor["exits"] = exits[actor["key"]]  # [[time, reason repr], ...], oldest first
        for index in sorted(rt.down):
            out_workers.append({"index": index, "os_pid": self._os_pids[index], "alive": False,
                                "responsive": False, "lag": None})
        out_workers.sort(key=lambda w: w["index"])
        out = {"node": self.name, "os_pid": os.getpid(), "started": self._started, "time": time.time(),
               "workers": out_workers, "actors": actors}
        if self._member is not None:
            out["cluster"] = self._cluster_part()
        return out

    def _cluster_part(self) -> dict[str, Any]:
        """The snapshot's ``cluster``: this node and the live members as of the last membership poll (no
        query here: a snapshot stays as cheap alone as in a cluster). Times are Unix seconds, database
        clock."""
        member = self._member
        assert member is not None
        me = self.node_id
        return {"node_id": me, "node": self.name, "lease": self.lease, "members": [
            {"id": m.id, "name": m.node, "address": m.address, "workers": m.workers,
             "incarnation": m.incarnation.timestamp(), "lease_expires": m.lease_expires.timestamp(),
             "self": m.id == me}
            for m in sorted(member.members.values(), key=lambda m: m.id)]}

    async def _node_snapshot(self, summary: bool = False) -> dict[str, Any]:
        """``node_snapshot``, asked by another node of the cluster: the snapshot, or only its counts (so
        the observer's cluster panel does not ship every actor of every node across the network)."""
        snap = await self.snapshot()
        return _counts(snap) if summary else snap

    async def _remote_snapshot(self, name: str, summary: bool = False) -> dict[str, Any]:
        """Node ``name``'s snapshot (or counts), asked of its node process through the cluster."""
        rt = self._running
        found = [m for m in (self._member.members.values() if self._member is not None else ())
                 if m.node == name]
        if not found or rt.remote is None:
            live = ", ".join(sorted(self.members.values())) or "none: this node is not in a cluster"
            raise ControlError("not_found", f"no live node {name!r} in this node's cluster (live: {live})")
        try:
            part: dict[str, Any] = await rt.remote.rpc(found[0].id, NODE, "node_snapshot", (summary,),
                                                       timeout=_REMOTE_WAIT)
        except CallTimeout:
            raise ControlError("unresponsive", f"node {name!r} did not answer within {_REMOTE_WAIT}s "
                               "(paused, partitioned or overloaded); try again") from None
        except KernelError as exc:
            raise ControlError("unresponsive", f"node {name!r} cannot be asked: {exc}") from None
        return part

    async def _cluster_nodes(self) -> dict[str, Any]:
        """``{"op": "cluster"}``: every live member with its workers and actors counts, every node asked at
        once (a node that does not answer within _REMOTE_WAIT shows its error instead)."""
        async def one(name: str) -> dict[str, Any]:
            try:
                return await (self._node_snapshot(True) if name == self.name
                              else self._remote_snapshot(name, summary=True))
            except ControlError as exc:
                return {"error": exc.message}

        if self._member is None:
            raise ControlError("not_found", "this node is not in a cluster (Node(cluster=...))")
        part = self._cluster_part()
        counts = await asyncio.gather(*(one(m["name"]) for m in part["members"]))
        part["members"] = [{**m, **c} for m, c in zip(part["members"], counts, strict=True)]
        return part

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """``(host, port)`` where ``/metrics`` is served (the real port when 0 was asked), or None."""
        return None if self._metrics is None else (self.metrics_host, self._metrics.port)

    async def _gather_metrics(self) -> dict[str, dict[str, Any]]:
        """Every process's counters for one scrape (kernel/node/metrics.py), keyed by the ``worker`` label."""
        rt = self._running
        live = [i for i in range(self.size) if i not in rt.down]
        answers = await asyncio.gather(
            *(rt.rpc(i, "metrics", (), timeout=_SNAPSHOT_WAIT) for i in live), return_exceptions=True)
        heartbeat = self._heartbeat
        parts: dict[str, dict[str, Any]] = {"node": {**metrics.worker_metrics(rt), "up": 1, "lag": None}}
        for index in range(self.size):
            lag = heartbeat.lag(index) if heartbeat is not None else None
            part = answers[live.index(index)] if index in live else None
            if isinstance(part, dict):
                parts[str(index)] = {**part, "up": 1, "lag": lag}
            else:
                parts[str(index)] = {"up": 0, "lag": lag}
        return parts

    async def _snapshot_part(self, index: int) -> tuple[Any, dict[str, Any] | None]:
        """One worker's part of the snapshot (or the exception), and, if it is late, what its sampler
        thread (kernel/node/sampler.py) says holds its loop: asked while the rpc still runs, so a hung worker
        costs no more than _SNAPSHOT_WAIT."""
        rt = self._running
        rpc = asyncio.ensure_future(rt.rpc(index, "snapshot", (), timeout=_SNAPSHOT_WAIT))
        done, _ = await asyncio.wait({rpc}, timeout=_SNAPSHOT_WAIT - _SAMPLER_WAIT - 0.1)
        blocked = None
        if not done:
            with contextlib.suppress(OSError, TimeoutError, ValueError, KeyError):
                blocked = await sampler.ask(
                    sampler.address(self._sockdir, index, rt.incarnations.get(index, 0)), None, _SAMPLER_WAIT)
        try:
            return await rpc, blocked
        except Exception as exc:
            return exc, blocked

    # -- the control socket (JSON only; see kernel.control) -------------------------------------

    async def _control_request(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {}
        if op == "snapshot":
            node = request.get("node")
            return await (self.snapshot() if node in (None, self.name) else self._remote_snapshot(node))
        if op == "cluster":
            return await self._cluster_nodes()
        if op in ("replay", "drop"):
            return await self._dead_letter(op, request["id"])
        if op == "dead_letters":
            return {"letters": await asyncio.to_thread(_list_dead_letters, self.state_path)}
        pid = _parse_pid(request.get("pid"))
        rt = self._running
        if pid == self.context.pid or rt.down.__contains__(pid.worker) or not rt.pid_is_current(pid):
            raise ControlError("noproc", f"no process {pid!r}")
        if op == "stack":
            return await self._stack(pid)
        if op in ("trace", "trace_log"):
            return await self._control_trace(op, pid, request.get("n"))
        if pid.worker == NODE:
            proc = rt.local(pid)
            info = None if proc is None else state_info(proc)
        else:
            try:
                info = await rt.rpc(pid.worker, "state", (pid.serial, pid.incarnation), timeout=_CONTROL_WAIT)
            except CallTimeout:
                raise ControlError("unresponsive", f"worker {pid.worker} did not answer within "
                                   f"{_CONTROL_WAIT}s (hung or overloaded); try again") from None
            except KernelError as exc:
                raise ControlError("noproc", f"no process {pid!r}: {exc}") from None
        if info is None:
            raise ControlError("noproc", f"no process {pid!r}")
        if op == "kill":
            self.context.exit(pid, "kill")
            return {}
        if op == "stop":  # orderly: terminate runs, the exit reason is "normal"
            try:
                await self._running.stop(self.context, pid, "normal", _CONTROL_WAIT)
            except KernelError as exc:
                raise ControlError("stop_failed", f"stop {pid!r}: {exc}") from None
            return {}
        if op == "state":
            result: dict[str, Any] = info
            return result
        raise ControlError("bad_request", f"unknown op {op!r}")

    async def _control_trace(self, op: str, pid: Pid, n: Any) -> dict[str, Any]:
        """``trace`` starts a trace of ``n`` messages (answers ``{}``); ``trace_log`` reads it."""
        try:
            if op == "trace":
                await self.trace(pid, n)
                return {}
            return (await self.trace_log(pid)).as_json()
        except (TypeError, ValueError) as exc:
            raise ControlError("bad_request", str(exc)) from None
        except NotTraced as exc:
            raise ControlError("not_traced", str(exc)) from None
        except CallTimeout:
            raise ControlError("unresponsive", f"worker {pid.worker} did not answer within "
                               f"{_CONTROL_WAIT}s (hung or overloaded); try again") from None
        except KernelError as exc:
            raise ControlError("noproc", f"no process {pid!r}: {exc}") from None

    async def _stack(self, pid: Pid) -> dict[str, Any]:
        """Where ``pid`` is now (kernel/node/sampler.py): answered by its worker's sampler thread, so it works
        while that worker's loop is blocked."""
        if pid.worker == NODE:
            return sampler.sample(self._running.procs, threading.main_thread().ident or 0, pid.serial)
        try:
            return await sampler.ask(sampler.address(self._sockdir, pid.worker, pid.incarnation), pid.serial,
                                     _SNAPSHOT_WAIT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ControlError("unresponsive", f"worker {pid.worker}'s stack sampler did not answer: "
                               f"{type(exc).__name__}: {exc}") from None

    async def _dead_letter(self, op: str, letter_id: int) -> dict[str, Any]:
        """Replay a quarantined message to its actor (lifting the quarantine first), or drop it."""
        from ..persistence import store as checkpoints
        from ..transport.serialize import loads

        letters = {d.id: d for d in await asyncio.to_thread(checkpoints.dead_letters, self.state_path)}
        letter = letters.get(letter_id)
        if letter is None:
            raise ControlError("not_found", f"no dead letter {letter_id}")
        if op == "replay":
            kind, message = loads(letter.message)
            rt = self._running
            for index in range(self.size):
                if index not in rt.down:
                    rt.note(index, "unquarantine", letter.key, kind, message)
            pid = await _find_by_key(self, letter.key)
            if pid is None:
                raise ControlError("noproc", f"no live actor has key {letter.key!r}; start it, then replay")
            if kind == wire.CALL:
                # The original caller is gone: the operator who replays it gets the answer instead.
                try:
                    answer = REPR.repr(await self.context.call(pid, message, 30.0))
                except KernelError as exc:
                    raise ControlError("replay_failed", f"replayed call failed: {exc}") from None
            else:
                rt.send(pid, kind, message)
                answer = None
        await asyncio.to_thread(checkpoints.drop_dead_letter, self.state_path, letter_id)
        return {"id": letter_id, "op": op} if op == "drop" else {"id": letter_id, "op": op, "answer": answer}


def _counts(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A snapshot's workers (live, answering) and actors counts: a node's line in the cluster panel."""
    workers = snapshot["workers"]
    return {"workers_alive": sum(1 for w in workers if w.get("alive")),
            "workers_responsive": sum(1 for w in workers if w.get("responsive")),
            "actors": len(snapshot["actors"])}


def _list_dead_letters(path: str) -> list[dict[str, Any]]:
    """The quarantined messages as JSON for the observer: id, key, error, count, created, message repr."""
    from ..persistence import store as checkpoints
    from ..transport.serialize import loads

    try:
        letters = checkpoints.dead_letters(path)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []  # nothing was ever quarantined: the table is made with the first letter
        raise
    out = []
    for d in letters:
        try:
            kind, message = loads(d.message)
            shown = f"{KIND_NAMES.get(kind, kind)}: {MESSAGE_REPR.repr(message)}"
        except Exception as exc:  # a class that no longer imports: say so, keep listing
            shown = f"<cannot unpickle: {type(exc).__name__}: {exc}>"
        out.append({"id": d.id, "key": MESSAGE_REPR.repr(d.key), "error": d.error[:400], "count": d.count,
                    "created": d.created, "message": shown})
    return out


async def _find_by_key(node: Node, key: Any) -> Pid | None:
    rt = node._running
    if type(key) is not Pid:
        with contextlib.suppress(TypeError):
            pid = rt.names.get(key)
            if pid is not None:
                return pid
    for index in range(node.size):
        if index not in rt.down:
            found: Pid | None = await rt.rpc(index, "by_key", (key,), timeout=_CONTROL_WAIT)
            if found is not None:
                return found
    return None


def _check_cluster(cluster: Any, listen: Any, lease: Any, tls: Any) -> tuple[str | None, tuple[str, int]]:
    """Validate ``Node(cluster=, listen=, lease=, tls=)``; the DSN and the parsed listen address."""
    if cluster is None:
        if listen is not None:
            raise ValueError("listen is only used with cluster=...: a single node talks over Unix sockets")
        if tls is not None:
            raise ValueError("tls is only used with cluster=...: a single node has no TCP connections")
        return None, ("", 0)
    if not isinstance(cluster, str) or not cluster.startswith(("postgresql://", "postgres://")):
        raise ValueError("cluster must be a PostgreSQL DSN such as 'postgresql://user@host/db', "
                         f"got {cluster!r}")
    if listen is None:
        raise ValueError("listen is required with cluster: the 'host:port' other nodes reach this one at")
    if not isinstance(listen, str):
        raise TypeError(f"listen must be a 'host:port' string, got {type(listen).__name__}")
    host, port = parse_listen(listen, "listen")
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not 0 < lease < 86400:
        raise ValueError(f"lease must be a number of seconds in (0, 86400), got {lease!r}")
    if tls is not None and not isinstance(tls, TLS):
        raise TypeError(f"tls must be a kernel.TLS(certfile, keyfile, cafile) or None, got {tls!r}")
    return cluster, (host, port)


def _check_seconds(argument: str, value: Any, alternative: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{argument} must be a positive number of seconds{' ' if alternative else ''}"
                         f"{alternative}, got {value!r}")


def _parse_pid(text: Any) -> Pid:
    match = _PID.match(text) if isinstance(text, str) else None
    if match is None:
        raise ControlError("bad_request", f"pid must look like <0.3>, got {text!r}")
    worker = NODE if match[1] == "node" else int(match[1])
    return Pid(worker, int(match[2]), int(match[3] or 0))
