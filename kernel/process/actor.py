"""The gen_server behaviour: one message at a time, in mailbox order.

An idle actor owns no task and no queue: its mailbox is created by the first message and a task is
started to drain it, which ends (and is dropped) when the mailbox is empty again. That keeps a million
idle actors cheap and spawn as fast as creating one object.
"""

from __future__ import annotations

import asyncio
import dis
import inspect
import logging
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from ..errors import ActorExited, KernelError, MailboxFull, Quarantined
from ..terms import Crash, NoReply, Reason
from ..transport import wire
from .base import SLICE, Host, Proc
from .context import _current
from .raw import receive

if TYPE_CHECKING:
    from .quarantine import Quarantine

__all__ = ["Actor", "ActorHost", "Checkpoint", "may_hand_off"]

log = logging.getLogger("kernel")

_SEND, _CAST, _CALL = wire.SEND, wire.CAST, wire.CALL
_R = TypeVar("_R")


class ActorHost(Host, Protocol):
    """What an actor needs of its runtime beyond every process's ``Host``: the run queue, the
    quarantine and the checkpoint hooks (``Runtime`` satisfies it)."""

    quarantine: Quarantine
    #: The quarantine's key -> digests table: empty in a healthy node, tested on every delivery.
    blocked: dict[Any, set[bytes]]

    def enqueue(self, actor: Actor) -> None: ...
    async def before_exit(self, actor: Actor, reason: Any) -> None: ...
    async def persist(self, actor: Actor, force: bool = False) -> None: ...


class Checkpoint:
    """When an actor's state is persisted (see docs/api.md section 6).

    ``every=N``: after every N handled messages that changed the state; ``interval=S``: at most S seconds
    after a change; ``durable``: a call's reply waits for the commit of the state it produced.
    """

    __slots__ = ("durable", "every", "interval")

    def __init__(self, every: int | None = 1, interval: float | None = None, durable: bool = True) -> None:
        if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1):
            raise ValueError(f"every must be a positive int or None, got {every!r}")
        if interval is not None and (not isinstance(interval, (int, float)) or interval <= 0):
            raise ValueError(f"interval must be a positive number of seconds or None, got {interval!r}")
        if every is None and interval is None:
            raise ValueError("every and interval cannot both be None: the state would never be saved")
        if not isinstance(durable, bool):
            raise TypeError(f"durable must be a bool, got {durable!r}")
        self.every = every
        self.interval = interval
        self.durable = durable

    def __repr__(self) -> str:
        return f"Checkpoint(every={self.every}, interval={self.interval}, durable={self.durable})"

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        # `checkpoint` is both the class's policy and, on an instance, `await self.checkpoint()`.
        if instance is None:
            return self
        return _BoundCheckpoint(self, instance)


class _BoundCheckpoint:
    """``self.checkpoint`` seen from an actor: the policy's fields, and a call that persists now."""

    __slots__ = ("_actor", "_policy")

    def __init__(self, policy: Checkpoint, actor: Actor) -> None:
        self._policy = policy
        self._actor = actor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)

    async def __call__(self) -> None:
        await self._actor._rt.persist(self._actor, force=True)


def checkpoint_policy(cls: type) -> Checkpoint | None:
    """The class's Checkpoint, found without triggering the descriptor."""
    for klass in cls.__mro__:
        value = klass.__dict__.get("checkpoint")
        if isinstance(value, Checkpoint):
            return value
        if "checkpoint" in klass.__dict__ and klass is not Actor:
            return None
    return None


class Actor(Proc):
    """Subclass and override the callbacks you need; every one is optional.

    ``init(*args, **kwargs)`` runs on a fresh start with the spawn arguments; ``restore(state)`` runs
    instead when a checkpoint exists. ``handle_call`` returns the reply (or ``NoReply``);
    ``handle_cast``/``handle_info`` return nothing; ``terminate(reason)`` runs on an orderly stop, a
    crash in a handler, or a trapped exit from the parent.
    """

    __slots__ = ("__dict__", "_booting", "_calling", "_pending", "_persistent", "_queued", "_stall",
                 "_stop_reason", "_stop_waiters", "dropped", "restarts", "state")

    checkpoint: ClassVar[Any] = None
    _eager_init: ClassVar[bool] = True
    _inline_kinds: ClassVar[frozenset[int]] = frozenset()
    _policy: ClassVar[Checkpoint | None] = None
    #: Bumped by the class when its state's shape changes; ``migrate`` converts older checkpoints.
    checkpoint_version: ClassVar[int] = 0
    #: How the state is stored: "pickle" (default, standard pickle protocol 5) or "json".
    checkpoint_codec: ClassVar[str] = "pickle"
    #: Seconds without a message after which a persistent actor stops (state flushed, name freed);
    #: ``registry.get_or_spawn`` brings it back from its checkpoint. None: never.
    idle_timeout: ClassVar[float | None] = None
    #: Bound on queued messages. When full, a call is refused at once with ``MailboxFull`` and a cast
    #: or raw send is dropped (counted in ``dropped``, shown by the observer); exit signals, stops and
    #: replies are never bounded. None: unbounded (the observer reports the length).
    max_mailbox: ClassVar[int | None] = None
    #: After this many crashes on the same message, that message is quarantined (dead-letter table)
    #: instead of crashing the actor again; needs a stable key (a name or a supervisor path).
    #: None or 0: never.
    quarantine_after: ClassVar[int | None] = 3

    state: Any
    _rt: ActorHost
    #: What ``own`` was handed, released at exit (in the instance's ``__dict__``: None until the first).
    _owned: list[Any] | None = None
    _calling: Any
    _booting: bool
    _pending: set[Any] | None
    _stop_reason: tuple[str, Any] | None
    _stop_waiters: list[Any] | None
    _persistent: bool
    #: In the runtime's run queue (``Runtime.enqueue``): one message waits, and no task is needed.
    _queued: bool
    #: A peer process this actor sent to while it was past ``send_buffer``: wait for it to drain
    #: before the next message (``Runtime._congested``).
    _stall: Any
    restarts: int
    #: Messages refused because the mailbox was at ``max_mailbox``.
    dropped: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Subclasses share the kernel's namespace: overriding a kernel-private method would silently
        # break the actor loop, so refuse it at class creation with a clear message.
        clash = sorted(name for name in cls.__dict__ if name in _KERNEL_PRIVATE)
        if clash:
            raise TypeError(
                f"{cls.__name__} defines {', '.join(clash)}, which the kernel uses internally; "
                "rename them (for example with a prefix of your own)"
            )
        cls._eager_init = _never_suspends(cls.init)
        cls._inline_kinds = frozenset(
            kind for kind, handler in ((_CALL, cls.handle_call), (_CAST, cls.handle_cast),
                                       (_SEND, cls.handle_info)) if _never_suspends(handler))
        cls._policy = checkpoint_policy(cls)

    @classmethod
    def check_args(cls, *args: Any, **kwargs: Any) -> None:
        """Validate spawn arguments in the spawner, before anything is sent or started.

        Raise ``TypeError``/``ValueError`` naming the bad argument; the default accepts anything (``init``
        still checks). Supervisors use it so a bad strategy or child spec fails at the call site.
        """

    async def init(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            raise TypeError(
                f"{type(self).__name__} got spawn arguments {args!r} {kwargs!r} "
                "but defines no init() to take them"
            )

    async def restore(self, state: Any) -> None:
        self.state = state

    async def migrate(self, state: Any, from_version: int) -> Any:
        """Convert a checkpoint written by ``checkpoint_version == from_version``; default: unchanged."""
        return state

    async def handle_call(self, request: Any, caller: Any) -> Any:
        raise KernelError(f"{type(self).__name__} has no handle_call for request {request!r}")

    async def handle_cast(self, message: Any) -> None:
        return None

    async def handle_info(self, message: Any) -> None:
        return None

    async def terminate(self, reason: Reason) -> None:
        return None

    # -- API inside an actor --------------------------------------------------------------------

    def stop(self, reason: Reason = "normal") -> None:
        """Stop after the current message: ``terminate(reason)`` runs, then the actor exits ``reason``."""
        self._stop_reason = ("set", reason)

    async def receive(self, match: Any = None, timeout: float | None = None) -> Any:
        """Selective receive of info messages (raw sends, Down, Exit) from inside a handler.

        Unmatched messages stay queued in order. Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        return await receive(self, match, timeout)

    def own(self, resource: _R) -> _R:
        """Hand the kernel ``resource`` to release when this actor exits, whatever the reason, ``"kill"``
        included (as Erlang closes a dead process's ports); returns ``resource``.

        ``resource`` has a ``close()`` (a listening server, a socket, a file) or is a plain callable; an
        awaitable it returns is awaited in the background. Resources are released last owned first,
        after ``terminate`` when it runs and before the exit signals go out, so a supervisor restarting a
        killed front can bind its port again. A release that raises is logged; the others still run.
        """
        if not callable(getattr(resource, "close", None)) and not callable(resource):
            raise TypeError(f"resource must have a close() method or be callable, got {resource!r}")
        if self._owned is None:
            self._owned = []
        self._owned.append(resource)
        return resource

    # -- kernel side ----------------------------------------------------------------------------

    def _finish(self, reason: Reason) -> None:
        owned = self._owned
        if owned is not None and not self._exiting:
            self._owned = None
            _release_owned(self, owned)
        super()._finish(reason)

    def _bind(self, rt: Any, pid: Any, parent: Any, name: Any, key: Any) -> None:
        super()._bind(rt, pid, parent, name, key)
        self.state = None
        self._pending = None
        self._calling = None
        self._stop_reason = None
        self._stop_waiters = None
        self._persistent = False
        self._queued = False
        self._stall = None
        self._booting = True  # messages queue, unhandled, until init/restore has finished
        self.restarts = 0
        self.dropped = 0

    def _deliver(self, item: tuple[Any, ...]) -> None:
        rt = self._rt
        if rt.blocked and item[0] <= _CALL and rt.quarantine.is_blocked(self, item[0], item[1]):
            if item[0] == _CALL:
                rt.fail_caller_with(item[2], Quarantined(self.pid))
            return
        mbox = self._mbox
        if self._task is None and not mbox and rt.inline and may_hand_off(
                item[0], type(self)._inline_kinds, not self._booting and not self._exiting, rt.solo,
                self._persistent and _durable(type(self))):
            self._handle_inline(item)
            return
        if mbox is None:
            mbox = self._mbox = deque()
        elif self.max_mailbox is not None and len(mbox) >= self.max_mailbox and item[0] <= _CALL:
            self._shed(item)
            return
        mbox.append(item)
        if self._task is None:
            if self._queued or self._exiting or self._booting:
                return
            if len(mbox) == 1 and item[0] in type(self)._inline_kinds \
                    and not (self._persistent and _durable(type(self))):
                # One message for a handler that cannot suspend: the runtime's run queue runs it
                # later in this loop iteration, with no task (a ring hop, one of a fan-out).
                self._queued = True
                rt.enqueue(self)
            else:
                self._task = rt.loop.create_task(self._run())
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)  # a handler is in a selective receive

    def _shed(self, item: tuple[Any, ...]) -> None:
        """The mailbox is at ``max_mailbox``: refuse the newest (a call learns why at once)."""
        self.dropped += 1
        if item[0] == _CALL:
            self._rt.fail_caller_with(item[2], MailboxFull(self.pid, self.max_mailbox or 0))

    def _handle_inline(self, item: tuple[Any, ...]) -> None:
        """Direct hand-off: an idle actor whose handler cannot suspend handles the message right now.

        No task, no queue, no loop iteration: the sender's step runs the handler to completion (it has no
        await, so it cannot interleave with anything). One message at a time still holds: the actor was
        idle and nothing else runs meanwhile. ``rt.inline`` is off while it runs, so whatever the handler
        sends is queued as usual: the hand-off never nests.
        """
        rt = self._rt
        kind = item[0]
        trace = self._trace
        if trace is not None:
            trace.received(item)
        rt.inline = False
        token = _current.set(self)
        try:
            if kind == _CALL:
                self._calling = item[2]
                coro = self.handle_call(item[1], item[2])
            elif kind == _CAST:
                coro = self.handle_cast(item[1])
            else:
                coro = self.handle_info(item[1])
            try:
                coro.send(None)
            except StopIteration as done:
                result = done.value
            else:
                coro.close()
                raise KernelError(f"{type(self).__name__} handler suspended although it has no await")
        except BaseException as exc:
            rt.quarantine.crashed(self, kind, item[1], f"{type(exc).__name__}: {exc}")
            # Crashing runs terminate, which may await: finish in a task of the actor's own.
            self._task = rt.loop.create_task(self._crash_in_task(exc))
            return
        finally:
            _current.reset(token)
            rt.inline = True
        self._handled += 1
        if kind == _CALL:
            self._calling = None
            if result is not NoReply:
                if trace is not None:
                    trace.replied(item[2], result)
                rt.reply_from_handler(self, item[2], result)
            elif self._pending is None:
                self._pending = {item[2]}
            else:
                self._pending.add(item[2])
        if self._persistent:  # non-durable here: its reply is never held, only its state marked dirty
            rt.store.after_message(self, None)
        if self._stop_reason is not None and self._task is None:
            self._task = rt.loop.create_task(self._stop_in_task())
        elif self._stall is not None and self._task is None:
            self._task = rt.loop.create_task(self._run())  # waits for the peer, then drains

    def _run_queued(self) -> None:
        """The run queue's turn: handle the one waiting message as a hand-off, or start a task if more
        came meanwhile (a stream is cheaper drained by one task)."""
        self._queued = False
        mbox = self._mbox
        if self._task is not None or self._exiting or not mbox:
            return
        if len(mbox) == 1:
            self._handle_inline(mbox.popleft())
        else:
            self._task = self._rt.loop.create_task(self._run())

    async def _crash_in_task(self, exc: BaseException) -> None:
        _current.set(self)
        await self._crash(exc)

    async def _stop_in_task(self) -> None:
        _current.set(self)
        assert self._stop_reason is not None
        await self._terminate_and_exit(self._stop_reason[1])

    def _on_parent_exit(self, reason: Reason) -> None:
        self._deliver((wire.PARENT_EXIT, reason))

    def _passivate(self) -> None:
        self._deliver((wire.PARENT_EXIT, "normal", "idle"))

    async def _start(self, args: tuple[Any, ...], kwargs: dict[str, Any], restored: Any) -> None:
        """Run ``init`` (or ``restore``) in the actor's own task; then drain what queued meanwhile.

        An ``init`` that contains no ``await`` cannot suspend, so it runs right here, with this actor
        as the current context: no task, no future, and spawn costs little more than the object.
        """
        if restored is None and type(self)._eager_init:
            token = _current.set(self)
            try:
                coro = self.init(*args, **kwargs)
                try:
                    coro.send(None)
                except StopIteration:
                    self._booted()
                    return
                coro.close()
                raise KernelError(f"{type(self).__name__}.init suspended although it has no await")
            except BaseException as exc:
                reason = Crash.from_exception(exc)
                self._finish(reason)
                raise ActorExited(reason, self.pid) from None
            finally:
                _current.reset(token)
        started: asyncio.Future[None] = self._rt.loop.create_future()
        self._task = self._rt.loop.create_task(self._boot(args, kwargs, restored, started))
        await started

    async def _boot(self, args: tuple[Any, ...], kwargs: dict[str, Any], restored: Any,
                    started: asyncio.Future[None]) -> None:
        _current.set(self)
        try:
            if restored is not None:
                state, version = restored
                if version != type(self).checkpoint_version:
                    state = await self.migrate(state, version)
                await self.restore(state)
            else:
                await self.init(*args, **kwargs)
        except asyncio.CancelledError:
            if not started.done():
                started.set_exception(ActorExited("killed", self.pid))
            return
        except BaseException as exc:
            reason = Crash.from_exception(exc)
            self._task = None
            self._finish(reason)
            if not started.done():
                started.set_exception(ActorExited(reason, self.pid))
            return
        self._booting = False
        started.set_result(None)
        await self._drain()

    def _booted(self) -> None:
        self._booting = False
        if self._mbox and self._task is None and not self._exiting:
            self._task = self._rt.loop.create_task(self._run())

    async def _run(self) -> None:
        _current.set(self)
        if self._stall is not None and not await self._unstall():
            return
        await self._drain()

    async def _unstall(self) -> bool:
        """Paused between two messages until the peer this actor flooded drains; False if killed."""
        peer, self._stall = self._stall, None
        try:
            await peer.drained()
        except asyncio.CancelledError:
            return False
        return True

    async def _drain(self) -> None:
        """Handle the mailbox in order. Every 4th message past a time slice (``SLICE``) the
        task yields once to the loop: handlers without an await never suspend on their own, and an
        actor that keeps casting itself would otherwise keep the worker from everything else. Every
        4th message, too, an actor that sent to a peer past ``send_buffer`` waits for it to drain
        (it exits the loop with ``_stall`` set otherwise, and ``_run`` waits first)."""
        mbox = self._mbox
        rt = self._rt
        end = perf_counter() + SLICE
        while mbox and not self._exiting:
            item = mbox.popleft()
            kind = item[0]
            held = None
            if self._trace is not None:  # tracing off: this test is all it costs (process/trace.py)
                self._trace.received(item)
            try:
                if kind == _CAST:
                    await self.handle_cast(item[1])
                elif kind == _SEND:
                    await self.handle_info(item[1])
                elif kind == _CALL:
                    self._calling = item[2]
                    result = await self.handle_call(item[1], item[2])
                    self._calling = None
                    if result is not NoReply:
                        if self._trace is not None:
                            self._trace.replied(item[2], result)
                        if self._persistent:
                            held = (item[2], result)  # released once its state is safe
                        else:
                            rt.reply_from_handler(self, item[2], result)
                    elif self._pending is None:
                        self._pending = {item[2]}
                    else:
                        self._pending.add(item[2])
                elif kind == wire.STOP:
                    self._add_stop_waiter(item[2])
                    self._stop_reason = ("set", item[1])
                elif kind == wire.PARENT_EXIT:
                    if len(item) > 2 and mbox:
                        continue  # an idle passivation that messages overtook: they re-arm the timer
                    self._stop_reason = ("set", item[1])
            except asyncio.CancelledError:
                return  # killed: _die has done the exit work
            except BaseException as exc:
                if kind <= _CALL:
                    rt.quarantine.crashed(self, kind, item[1], f"{type(exc).__name__}: {exc}")
                await self._crash(exc)
                return
            self._handled += 1
            if self._persistent:
                try:
                    rt.store.after_message(self, held)
                except BaseException as exc:
                    if held is not None:
                        self._calling = held[0]  # its caller learns of the crash
                    await self._crash(exc)
                    return
            if self._stop_reason is not None:
                await self._terminate_and_exit(self._stop_reason[1])
                return
            if not self._handled & 3:  # one test per message on the hot path; the rest every 4th
                if self._stall is not None and not await self._unstall():
                    return
                if perf_counter() > end:
                    try:
                        await asyncio.sleep(0)
                    except asyncio.CancelledError:
                        return
                    end = perf_counter() + SLICE
        self._task = None

    def _add_stop_waiter(self, caller: Any) -> None:
        if self._stop_waiters is None:
            self._stop_waiters = []
        self._stop_waiters.append(caller)

    async def _crash(self, exc: BaseException) -> None:
        reason = Crash.from_exception(exc)
        log.error("actor %r (%s) crashed: %s: %s\n%s", self.pid, type(self).__name__,
                  reason.type_name, reason.message, reason.traceback_text)
        await self._terminate_and_exit(reason)

    async def _terminate_and_exit(self, reason: Reason) -> None:
        """The orderly path: ``terminate`` runs (its own crash replaces the reason), then the exit."""
        try:
            await self.terminate(reason)
        except asyncio.CancelledError:
            return
        except BaseException as exc:
            reason = Crash.from_exception(exc)
            log.error("terminate of %r raised: %s", self.pid, reason)
        self._task = None
        await self._rt.before_exit(self, reason)
        self._finish(reason)

    def _fail_pending(self, reason: Reason) -> None:
        if self._calling is not None:
            self._rt.fail_caller(self._calling, reason, self.pid)
            self._calling = None
        if self._pending:
            for caller in self._pending:
                self._rt.fail_caller(caller, reason, self.pid)
            self._pending = None

    def _after_exit(self, reason: Reason) -> None:
        if self._stop_waiters:
            for caller in self._stop_waiters:
                self._rt.reply(caller, reason)
            self._stop_waiters = None

    def reply(self, caller: Any, value: Any) -> None:
        """Answer a call whose handler returned ``NoReply``."""
        if self._trace is not None:
            self._trace.replied(caller, value)
        self._rt.reply(caller, value)
        if self._pending:
            self._pending.discard(caller)


#: Every private method and slot of the kernel's process classes, which subclasses must not redefine.
_KERNEL_PRIVATE = frozenset(
    name for klass in (Proc, Actor) for name in (*vars(klass), *getattr(klass, "__slots__", ()))
    if name.startswith("_") and not name.startswith("__")
)


#: Releases that returned an awaitable, kept referenced until they finish.
_RELEASING: set[asyncio.Future[Any]] = set()


def _release_owned(actor: Actor, owned: list[Any]) -> None:
    """Release what ``actor`` owned, last first; runs in the actor's worker on every exit path."""
    for resource in reversed(owned):
        try:
            close = getattr(resource, "close", None)
            result = close() if callable(close) else resource()
            if inspect.isawaitable(result):
                fut = asyncio.ensure_future(result)
                _RELEASING.add(fut)
                fut.add_done_callback(_released)
        except Exception:
            log.exception("releasing %r owned by %r failed", resource, actor.pid)


def _released(fut: asyncio.Future[Any]) -> None:
    _RELEASING.discard(fut)
    if not fut.cancelled() and fut.exception() is not None:
        log.error("an owned resource's close failed: %r", fut.exception())


_SUSPENDING = frozenset({"GET_AWAITABLE", "BEFORE_ASYNC_WITH", "GET_AITER", "GET_ANEXT", "YIELD_VALUE"})


def may_hand_off(kind: int, sync_kinds: frozenset[int], ready: bool, solo: bool, durable: bool) -> bool:
    """Whether a delivery runs its handler now, in the sender's step (the direct hand-off,
    ``Actor._handle_inline``), instead of waiting in the mailbox for a task or the run queue.

    ``Actor._deliver`` asks only for an idle actor (no task, empty mailbox) and while no hand-off runs
    on this worker (``Runtime.inline``, off during one and during the run queue's handlers, so a
    hand-off never nests and a chain of sends cannot grow the stack). Those three cheap tests come
    first so that a busy actor's stream, a ring hop and a self-send pay no call (measured: a call
    per hop cost 8% of a hop's instructions). Then:

    * ``kind in sync_kinds``: the handler for this kind has no await (``Actor._inline_kinds``), so it
      runs to completion and cannot interleave with anything: one message at a time still holds.
    * ``ready``: the actor is neither booting (messages wait for init/restore) nor exiting.
    * ``kind == CALL or solo``: a call always takes it (latency is the point); a cast or send only when
      it arrived alone in its read from another worker (``Runtime.solo``, set by the transport), since a
      stream of them is cheaper drained in a batch by one task.
    * ``not durable``: a durable persistent actor's reply waits for its commit, which its task awaits.
    """
    return ready and kind in sync_kinds and (kind == _CALL or solo) and not durable


def _durable(cls: type[Actor]) -> bool:
    # Read on the class: through an instance the Checkpoint descriptor would bind a wrapper each time.
    policy = cls._policy
    return policy is not None and policy.durable


def _never_suspends(fn: Any) -> bool:
    """True if ``fn`` is a coroutine function whose body has no await point at all."""
    code = getattr(fn, "__code__", None)
    if code is None or not inspect.iscoroutinefunction(fn):
        return False
    return not any(ins.opname in _SUSPENDING for ins in dis.get_instructions(code))
