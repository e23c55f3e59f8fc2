"""The scheduler of one OS process: its processes, and where every message and signal goes.

A pid names its worker, so routing needs no lookup: a pid of this process is a dict hit and a
mailbox append (the message is not copied); any other pid is pickled once, on the sender's side (so
``NotSerializable`` is raised to the sender), and appended to the one outbound buffer for that worker.
The node process runs the same runtime, with index ``NODE``; it hosts its context and the supervisors.

Calls are answered through a table of futures keyed by an int ref; a pending call remembers the worker
incarnation it targets, so a worker's death fails exactly the calls into it.

``Runtime`` keeps the per-message path (send, ship, signal, call, reply, dispatch) and the tables it
reads; the parts with one job each sit beside it: ``Deadlines`` and ``RunQueue`` (scheduling.py),
``Spawner`` (spawning.py), ``Inbound`` (inbound.py: packed envelopes and rpcs) and ``WorkerSlots``
(workers.py: a worker's death and return).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import pickle
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..errors import ActorExited, KernelError, NoProc, NotSerializable, Overloaded
from ..process.actor import Actor
from ..process.base import Proc
from ..process.context import _current
from ..process.quarantine import Quarantine
from ..process.trace import Traces
from ..terms import NODE, Pid, Ref
from ..transport import wire
from ..transport.serialize import dumps, plain
from ..transport.sockets import Listener, Peer
from .inbound import Inbound
from .name_table import NameTable, check_name
from .ops import Ops
from .scheduling import Call, Deadlines, RunQueue
from .spawning import Spawner
from .workers import WorkerSlots

if TYPE_CHECKING:
    from .remote import Remote

__all__ = ["Runtime", "socket_path"]

log = logging.getLogger("kernel")

_CALL = wire.CALL
_PACKED = wire.PACKED
_SIGNALS = frozenset({wire.LINK, wire.UNLINK, wire.EXIT, wire.MONITOR, wire.DEMONITOR, wire.DOWN})
_DEFERRED = frozenset({wire.EXIT, wire.DOWN})
_SET_UP = frozenset({wire.LINK, wire.MONITOR})


def socket_path(sockdir: str, index: int) -> str:
    return os.path.join(sockdir, "node.sock" if index == NODE else f"w{index}.sock")


class Runtime:
    """One per OS process of a node."""

    def __init__(self, index: int, incarnation: int, sockdir: str, secret: bytes, workers: int) -> None:
        self.index = index
        self.inc = incarnation
        self.sockdir = sockdir
        self.secret = secret
        self.loop = asyncio.get_running_loop()
        self.procs: dict[int, Proc] = {}
        self.names = NameTable()
        self.peers: dict[int, Peer] = {}
        #: Bytes buffered towards one peer before its senders are paused (``Node(send_buffer=...)``).
        self.send_buffer = wire.SEND_BUFFER
        self.calls: dict[int, Call] = {}
        #: worker index -> incarnation currently expected there (advanced as soon as one dies)
        self.incarnations: dict[int, int] = dict.fromkeys(range(workers), 0)
        self.down: set[int] = set()
        #: Worker slots that will not come back (the node is closing, or their replacement failed): what
        #: waits on one fails at once with the cause instead of waiting for a replacement.
        self.gone: dict[int, BaseException] = {}
        self.workers = workers
        self.quarantine = Quarantine()
        #: Message traces of this process's actors (process/trace.py): started by ``Node.trace``.
        self.traces = Traces()
        #: The quarantine's key -> digests table (the same dict, mutated in place): empty in a healthy
        #: node, so every delivery pays one truthiness test for it.
        self.blocked = self.quarantine.blocked
        #: The call ref being delivered by direct hand-off on this worker, and its answer if it came.
        self._handoff = 0
        self._answer: tuple[bool, Any] | None = None
        #: Call timeouts on one timer; ``calls_timed_out`` counts what it failed.
        self.deadlines = Deadlines(self.loop, self.calls)
        #: Spawning (routing/spawning.py), bound here so ``rt.spawn(...)`` costs what a method did.
        self.spawner = Spawner(self)
        self.spawn = self.spawner.spawn
        self.spawn_local = self.spawner.spawn_local
        #: Packed envelopes, rpcs, and the rpcs every runtime serves (routing/inbound.py).
        self.inbound = Inbound(self)
        #: Worker deaths and returns (routing/workers.py); the tables above stay here, read per message.
        self.slots = WorkerSlots(self)
        self.worker_down = self.slots.worker_down
        self.worker_up = self.slots.worker_up
        self.fail_calls = self.slots.fail_calls
        self.connect_peers = self.slots.connect_peers
        #: What other processes may ask or tell this one (routing/ops.py); the node and the workers
        #: add their side's entries.
        inbound = self.inbound
        self.ops = Ops(spawn=self.spawn_local, sync=lambda: None, adopt=inbound.adopt,
                       by_key=inbound.by_key, trace=inbound.trace,
                       trace_log=inbound.trace_log, name_add=self.names.add, name_del=inbound.name_del,
                       worker_down=self.worker_down, worker_up=self.worker_up,
                       unquarantine=self.quarantine.release)
        #: Whether an idle actor may handle a delivery in the sender's step (off while one does).
        self.inline = True
        #: Actors with one message for a handler that cannot suspend, run without a task each; bound
        #: here so that ``rt.enqueue(actor)`` costs what a method of the runtime did.
        self.runq = RunQueue(self.loop)
        self.enqueue = self.runq.enqueue
        #: Whether the delivery being dispatched arrived alone in its read (set by the transport).
        self.solo = False
        self._deferred: deque[tuple[Proc, int, tuple[Any, ...]]] = deque()
        #: When a raw process's ``receive`` that finds its message waiting should next yield.
        self.slice_end = 0.0
        self._serial = 0
        self._ref = 0
        self.msgs_in = 0
        #: Messages dropped because this process could not unpickle them (a cast or send; a call is
        #: answered ``NotSerializable``).
        self.undecodable = 0
        # Read by node/metrics.py at scrape time; bumped once per exit / timed-out call, never per message.
        self.handled_done = 0  # messages handled by processes that have exited
        self.exits: dict[str, int] = {}  # exit reason kind (kernel.terms.exit_kind) -> count
        self.listener = Listener(socket_path(sockdir, index), secret, self.dispatch, self._inbound_lost,
                                 self._set_solo)
        self.store: Any = None  # the checkpoint service, when persistence is on
        #: Routes to the other nodes of a cluster (routing/remote.py); None on a single host.
        self.remote: Remote | None = None
        #: In the node process: what the node's own code spawned, oldest first.
        self.top_level: list[Pid] = []

    @property
    def calls_timed_out(self) -> int:
        return self.deadlines.timed_out

    async def start(self) -> None:
        await self.listener.start()

    def close(self) -> None:
        self.listener.close()
        for peer in self.peers.values():
            peer.close()

    # -- identities -----------------------------------------------------------------------------

    def next_pid(self) -> Pid:
        self._serial += 1
        return Pid(self.index, self._serial, self.inc)

    def make_ref(self) -> Ref:
        self._ref += 1
        return Ref(self.index, self.inc, self._ref)

    def _next_call_ref(self) -> int:
        self._ref += 1
        return self._ref

    def peer(self, index: int) -> Peer:
        peer = self.peers.get(index)
        if peer is None:
            peer = Peer(socket_path(self.sockdir, index), self.secret, (self.index, self.inc),
                        self.send_buffer)
            peer.max_message = self.listener.max_message
            if index in self.down:
                peer.up = False
            self.peers[index] = peer
        return peer

    def pid_is_current(self, pid: Pid) -> bool:
        """False when the pid's worker incarnation (or, for another node's pid, that node) is known dead."""
        if pid.node:
            return self.remote is not None and self.remote.live(pid)
        return pid.worker == NODE or (self.incarnations.get(pid.worker, -1) == pid.incarnation \
            and pid.worker not in self.down)

    def local(self, pid: Pid) -> Proc | None:
        if pid.incarnation != self.inc:
            return None
        proc = self.procs.get(pid.serial)
        if proc is None or proc._exiting:
            return None
        return proc

    def resolve(self, dest: Any, argument: str = "dest") -> Pid | None:
        """A destination (pid or registered name) as a pid, from this process's replica."""
        if type(dest) is Pid:
            return dest
        check_name(dest, argument)
        return self.names.get(dest)

    # -- sending --------------------------------------------------------------------------------

    def send(self, dest: Any, kind: int, message: Any) -> None:
        if type(dest) is Pid:
            pid: Pid | None = dest
        else:
            try:
                pid = self.names.get(dest)  # a hit needs no further check: only valid names are stored
            except TypeError:
                check_name(dest, "dest")  # unhashable: raises naming the argument
                raise
            if pid is None:
                check_name(dest, "dest")
                if self.index != NODE:
                    # A name this replica has not heard of yet: let the authority resolve it.
                    data = dumps((wire.NOTE, "send_name", (dest, kind, message)))
                    self.peer(NODE).send(data)
                return
        assert pid is not None
        worker, serial, inc, node = pid
        if node:
            if self.remote is not None:
                self.remote.ship(node, worker, (kind, serial, inc, message), message, "message")
            return
        if worker == self.index:
            if inc == self.inc:
                proc = self.procs.get(serial)
                if proc is not None and not proc._exiting:
                    proc._deliver((kind, message))
            return
        if self.incarnations.get(worker, 0) != inc:
            return  # that worker incarnation is dead: lost, as a message to any dead process
        # ``ship``'s peer lookup inline: one call frame less per cross-worker send.
        self.ship_via(self.peers.get(worker) or self.peer(worker), worker, (kind, serial, inc, message),
                      message, "message")

    def ship(self, index: int, envelope: tuple[Any, ...], payload: Any, what: str = "message") -> None:
        """Hand an envelope to the peer process ``index``: a plain payload waits for its tick's batch;
        anything else is pickled now, so the sender learns at once if it cannot be sent."""
        peer = self.peers.get(index)
        if peer is None:
            peer = self.peer(index)
        self.ship_via(peer, index, envelope, payload, what)

    def ship_via(self, peer: Peer, index: int, envelope: tuple[Any, ...], payload: Any, what: str) -> None:
        """``ship`` through a given peer (a worker of this node, or a process of another node)."""
        if peer.busy:
            self._congested(index, peer, envelope[0])
        if plain(payload):
            peer.post(envelope)
        elif (kind := envelope[0]) <= _CALL:
            # The message's own pickle beside a plain header (see wire): the receiver can answer even
            # when it cannot decode the message.
            peer.send(pickle.dumps((kind + _PACKED, envelope[1], envelope[2], dumps(payload, what),
                                    *envelope[4:]), 5))
        else:
            peer.send(dumps(envelope, what))

    def _congested(self, index: int, peer: Peer, kind: int) -> None:
        """A send towards a peer past ``send_buffer``: the sending actor is paused before its next
        message until the peer drains (Erlang's busy distribution port); past ``OVERLOAD_FACTOR`` times it
        a send, cast or call is refused. Replies and signals are never refused."""
        if peer.over and kind <= _CALL:
            raise Overloaded(index, peer.buffered, wire.OVERLOAD_FACTOR * peer.limit)
        proc = _current.get()
        if isinstance(proc, Actor):
            proc._stall = peer

    async def drain(self) -> None:
        """Return once every peer's buffer is back under ``send_buffer`` (node code's backpressure)."""
        for peer in list(self.peers.values()):
            await peer.drained()

    def signal(self, pid: Pid, kind: int, *fields: Any) -> None:
        """Route a link/monitor/exit signal; a dead target answers as OTP says (noproc)."""
        if pid.node:
            if self.remote is None:
                self._dead_target(pid, kind, fields)
            else:
                self.remote.signal(pid, kind, fields)
            return
        if pid.worker == self.index:
            proc = self.local(pid)
            if proc is None:
                self._dead_target(pid, kind, fields)
            elif kind in _DEFERRED:
                # Deferred: exits cascade through links and must not recurse. They run before the next
                # inbound message is dispatched, so a reply already written cannot overtake them.
                self._deferred.append((proc, kind, fields))
                if len(self._deferred) == 1:
                    self.loop.call_soon(self._run_deferred)
            else:
                self._apply_signal(proc, kind, fields)
            return
        if not self.pid_is_current(pid) and pid.worker not in self.down:
            self._dead_target(pid, kind, fields)
            return
        data = dumps((kind, pid.serial, pid.incarnation, *fields), "signal")
        if kind in _SET_UP:
            self.peer(pid.worker).send_now(data)  # causal set-up: see Peer.send_now
        else:
            self.peer(pid.worker).send(data)

    def _run_deferred(self) -> None:
        deferred = self._deferred
        while deferred:
            proc, kind, fields = deferred.popleft()
            self._apply_signal(proc, kind, fields)

    def _apply_signal(self, proc: Proc, kind: int, fields: tuple[Any, ...]) -> None:
        if proc._exiting:
            self._dead_target(proc.pid, kind, fields)
            return
        if kind == wire.EXIT:
            self.names.forget_pid(fields[0]) if fields[1] != "normal" and fields[2] else None
            proc._on_exit(fields[0], fields[1], fields[2])
        elif kind == wire.DOWN:
            self.names.forget_pid(fields[1]) if isinstance(fields[1], Pid) else None
            proc._on_down(fields[0], fields[1], fields[2])
        elif kind == wire.LINK:
            proc._on_link(fields[0])
        elif kind == wire.UNLINK:
            proc._on_unlink(fields[0])
        elif kind == wire.MONITOR:
            proc._on_monitor(fields[0], fields[1])
        elif kind == wire.DEMONITOR:
            proc._on_demonitor(fields[0])

    def _dead_target(self, pid: Pid, kind: int, fields: tuple[Any, ...]) -> None:
        if kind == wire.LINK:
            self.signal(fields[0], wire.EXIT, pid, "noproc", True)
        elif kind == wire.MONITOR:
            self.signal(fields[0], wire.DOWN, fields[1], pid, "noproc")

    # -- calls ----------------------------------------------------------------------------------

    def call(self, caller: Proc, dest: Any, request: Any, timeout: float | None) -> Coroutine[Any, Any, Any]:
        # Not a coroutine itself: each layer of ``await`` costs a frame on the hottest local path.
        return self._request(caller, dest, timeout, wire.CALL, request,
                             "called itself: that would deadlock; handle the request directly")

    async def stop(self, caller: Proc, dest: Any, reason: Any, timeout: float | None) -> None:
        """OTP's gen_server:stop: ``terminate(reason)`` runs and this returns once the target is gone."""
        exit_reason = await self._request(caller, dest, timeout, wire.STOP, reason,
                                          "cannot stop itself with stop(); use self.stop(reason)")
        if exit_reason != reason:
            raise ActorExited(exit_reason, dest)

    async def _request(self, caller: Proc, dest: Any, timeout: float | None, kind: int, payload: Any,
                       to_self: str) -> Any:
        """Send a CALL or STOP that is answered through the futures table, and wait for the answer.

        A callee on this worker that answers by direct hand-off answers before ``_deliver`` returns:
        its reply lands in ``_answer`` (see ``_resolve``), with no future, no timer, no suspension.
        """
        if type(timeout) is not float or not timeout > 0:
            _check_timeout(timeout)
        if type(dest) is Pid:
            pid = dest
        else:
            found = await self.resolve_for_call(dest)
            if found is None:
                raise NoProc(dest)
            pid = found
        me = caller.pid
        if pid == me:
            raise KernelError(f"{me!r} {to_self}")
        ref = self._next_call_ref()
        worker, serial, inc, node = pid  # one unpacking: each field read by name is a descriptor call
        if node:
            remote = self.remote
            if remote is None or not remote.live(pid):
                raise NoProc(dest)
            envelope = (kind, serial, inc, payload, me.worker, me.serial, me.incarnation, ref)
            remote.ship(node, worker, envelope, payload, "request" if kind == wire.CALL else "reason")
            fut: asyncio.Future[Any] = self.loop.create_future()
            self.calls[ref] = (fut, (node, worker), inc, None)
        elif worker == self.index:
            proc = self.procs.get(serial) if inc == self.inc else None
            if proc is None or proc._exiting:
                raise NoProc(dest)
            self._handoff = ref
            try:
                proc._deliver((kind, payload, (me, ref)))
            finally:
                self._handoff = 0
            answer = self._answer
            if answer is not None:
                self._answer = None
                if answer[0]:
                    return answer[1]
                raise answer[1]
            fut = self.loop.create_future()
            self.calls[ref] = (fut, self.index, self.inc, None)
        else:
            if worker != NODE and (self.incarnations.get(worker, -1) != inc or worker in self.down):
                raise NoProc(dest)  # that worker incarnation is known dead (pid_is_current, inline)
            envelope = (kind, serial, inc, payload, me.worker, me.serial, me.incarnation, ref)
            self.ship(worker, envelope, payload, "request" if kind == wire.CALL else "reason")
            fut = self.loop.create_future()
            self.calls[ref] = (fut, worker, inc, None)
        return await self._await_reply(ref, fut, dest, timeout)

    async def _await_reply(self, ref: int, fut: asyncio.Future[Any], dest: Any, timeout: float | None) -> Any:
        if timeout is not None:
            self.deadlines.arm(ref, dest, timeout)
        try:
            return await fut
        except ActorExited as exc:
            if type(exc.dest) is Pid and exc.dest.serial == 0:
                # A worker's death fails its calls with a pseudo-pid for the whole worker (<1.0>); the
                # caller is told about the destination it used instead: the name, or the pid.
                raise ActorExited(exc.reason, dest) from None
            raise
        finally:
            self.calls.pop(ref, None)

    async def resolve_for_call(self, dest: Any) -> Pid | None:
        pid = self.resolve(dest)
        if pid is None and self.index != NODE:
            found: Pid | None = await self.rpc(NODE, "whereis", (dest,))
            return found
        return pid

    def reply(self, caller: Any, value: Any) -> None:
        try:
            pid, ref = caller
        except (TypeError, ValueError):
            raise TypeError(f"caller must be the caller value handle_call received, got {caller!r}") from None
        if not isinstance(pid, Pid) or not isinstance(ref, int):
            raise TypeError(f"caller must be the caller value handle_call received, got {caller!r}")
        worker, _, inc, node = pid
        self._reply_to(worker, inc, ref, True, value, node)

    def reply_from_handler(self, actor: Proc, caller: Any, value: Any) -> None:
        """A handler's return value: if it cannot be pickled, the caller learns why; the actor lives on."""
        (worker, _, inc, node), ref = caller  # made by the kernel, so not checked as ``reply`` does
        try:
            self._reply_to(worker, inc, ref, True, value, node)
        except NotSerializable as exc:
            log.error("%r returned a reply that cannot be pickled: %s", actor.pid, exc)
            self.fail_caller_with(caller, exc)

    def fail_caller(self, caller: Any, reason: Any, pid: Pid) -> None:
        self.fail_caller_with(caller, ActorExited(reason, pid))

    def fail_caller_with(self, caller: Any, error: BaseException) -> None:
        pid, ref = caller
        try:
            self._reply_to(pid.worker, pid.incarnation, ref, False, error, pid.node)
        except NotSerializable:
            self._reply_to(pid.worker, pid.incarnation, ref, False, KernelError(str(error)), pid.node)

    def _reply_to(self, index: int, inc: int, ref: int, ok: bool, value: Any, node: int = 0) -> None:
        if node:
            if self.remote is not None:
                self.remote.reply(node, index, inc, ref, ok, value)
            return
        if index == self.index:
            if inc == self.inc:
                self._resolve(ref, ok, value)
            return
        self.ship_via(self.peers.get(index) or self.peer(index), index, (wire.REPLY, inc, ref, ok, value),
                      value, "reply")

    def _resolve(self, ref: int, ok: bool, value: Any) -> None:
        if not ok and not isinstance(value, BaseException):
            value = KernelError(repr(value))
        if ref == self._handoff:
            self._answer = (ok, value)  # answered inside the caller's own _deliver
            return
        entry = self.calls.get(ref)
        if entry is None or entry[0].done():
            return  # timed out or cancelled: a late reply is dropped, never delivered as a message
        if ok:
            if entry[3] is not None:
                entry[3](value)
            entry[0].set_result(value)
        else:
            entry[0].set_exception(value)

    async def rpc(self, index: int, op: str, args: tuple[Any, ...],
                  hook: Callable[[Any], None] | None = None, timeout: float | None = None) -> Any:
        """Ask another process's runtime to run ``op``; its failure is raised here.

        Bounded by the target's liveness: if its worker dies, or the node's heartbeat finds it hung and
        kills it, this raises ``ActorExited("worker_down")``; a slot that will not come back raises its
        cause at once. ``timeout`` bounds it further (``CallTimeout``): only for operations whose late
        answer can be dropped safely (a snapshot, a state), never for a spawn (its actor would live on).
        """
        gone = self.gone.get(index)
        if gone is not None:
            raise gone
        if index == self.index:
            handler = self.ops.rpc(op)
            if handler is None:
                raise KernelError(f"unknown operation {op!r}")
            result = handler(*args)
            if inspect.isawaitable(result):
                result = await result
            if hook is not None:
                hook(result)
            return result
        return await self.ask(self.peer(index), index, self.incarnations.get(index, 0), op, args, hook,
                              timeout, f"worker {index} ({op})")

    async def ask(self, peer: Peer, where: int | tuple[int, int], inc: int, op: str, args: tuple[Any, ...],
                  hook: Callable[[Any], None] | None, timeout: float | None, label: str) -> Any:
        """Send rpc ``op`` through ``peer`` (a worker of this node, or a process of another node: ``where``
        as the calls table keys it) and wait for its answer, bounded by ``timeout`` if given."""
        ref = self._next_call_ref()
        fut: asyncio.Future[Any] = self.loop.create_future()
        what = "spawn arguments" if op == "spawn" else op
        data = pickle.dumps((wire.RPC, self.index, self.inc, ref, op, dumps(args, what)), 5)
        self.calls[ref] = (fut, where, inc, hook)
        peer.send(data)
        if timeout is not None:
            self.deadlines.arm(ref, label, timeout)
        try:
            return await fut
        finally:
            self.calls.pop(ref, None)

    def note(self, index: int, op: str, *args: Any) -> None:
        """A one-way notice to another process's runtime."""
        if index == self.index:
            handler = self.ops.note(op)
            if handler is None:
                raise KernelError(f"unknown notice {op!r}")
            handler(*args)
        else:
            self.peer(index).send(dumps((wire.NOTE, op, args), op))

    # -- inbound (the rest: routing/inbound.py) ---------------------------------------------------

    def dispatch(self, env: Any) -> None:
        """Decode one envelope from another process of the node (see ``wire``)."""
        self.msgs_in += 1
        if self._deferred:
            self._run_deferred()
        kind = env[0]
        if kind <= _CALL:
            proc = self.procs.get(env[1]) if env[2] == self.inc else None
            if kind == _CALL:
                caller = (Pid(env[4], env[5], env[6]), env[7])
                if proc is None or proc._exiting:
                    self.fail_caller_with(caller, NoProc(Pid(self.index, env[1], env[2])))
                else:
                    proc._deliver((wire.CALL, env[3], caller))
            elif proc is not None and not proc._exiting:
                proc._deliver((kind, env[3]))
        elif kind >= _PACKED:
            self.inbound.unpack(env)
        elif kind == wire.REPLY:
            if env[1] == self.inc:
                self._resolve(env[2], env[3], env[4])
        elif kind in _SIGNALS:
            pid = Pid(self.index, env[1], env[2])
            proc = self.local(pid)
            if proc is None:
                self._dead_target(pid, kind, env[3:])
            else:
                self._apply_signal(proc, kind, env[3:])
        elif kind == wire.STOP:
            proc = self.local(Pid(self.index, env[1], env[2]))
            caller = (Pid(env[4], env[5], env[6]), env[7])
            if proc is None:
                self.fail_caller_with(caller, NoProc(Pid(self.index, env[1], env[2])))
            else:
                proc._deliver((wire.STOP, env[3], caller))
        elif kind == wire.RPC:
            self.inbound.serve_rpc(env[1], env[2], env[3], env[4], env[5])
        elif kind == wire.NOTE:
            handler = self.ops.note(env[1])
            if handler is None:
                log.error("unknown notice %r", env[1])
            else:
                handler(*env[2])

    def _set_solo(self, solo: bool) -> None:
        self.solo = solo

    def _inbound_lost(self, index: int, inc: int) -> None:
        """An inbound connection closed: nothing to do. A worker's death reaches every process as the
        node's ``worker_down`` notice, and that alone fires the signals (the node decides it is dead)."""

    # -- names ----------------------------------------------------------------------------------

    def release(self, proc: Proc) -> None:
        """An exiting process gives up its table slot and names, before its exit signals go out."""
        self.procs.pop(proc.pid.serial, None)
        if self.store is not None and getattr(proc, "_persistent", False):
            self.store.forget(proc)
        for name in self.names.names_of(proc.pid):
            self.names.remove(name, proc.pid)
            self.note(NODE, "name_del", name, proc.pid)

    def fence(self) -> None:
        """Self-fencing: stop every persistent actor of this process now (its node lost its lease, so
        others may take their names over; what they would write is refused anyway)."""
        for proc in list(self.procs.values()):
            if getattr(proc, "_persistent", False) and not proc._exiting:
                proc._die("lease_lost")

    # -- persistence hooks (the checkpoint service plugs in here) -------------------------------

    async def before_exit(self, actor: Actor, reason: Any) -> None:
        if self.store is not None and actor._persistent:
            await self.store.before_exit(actor, reason)

    async def persist(self, actor: Actor, force: bool = False) -> None:
        if self.store is None or not actor._persistent:
            raise KernelError(
                f"{type(actor).__name__} is not persistent: set `checkpoint = Checkpoint(...)` on the class "
                "and give it a name or start it under a supervisor"
            )
        await self.store.persist(actor)


def _check_timeout(timeout: Any) -> None:
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                                or not timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
