"""Where a persistent actor's state is written: one service per worker over the group committer.

The actor loop never waits for the disk. After a handled message the state is encoded and, when it
changed, submitted to the worker's :class:`~kernel.persistence.store.GroupCommitter`; everything submitted
while one transaction runs goes into the next one, so one fsync serves many actors. With
``durable=True`` the reply of a call that changed the state is released from the commit's callback:
what a caller was told is on disk. A failed write crashes the actor with a ``Crash`` naming the SQLite
error and fails the held replies; the previous checkpoint stays (the batch was all-or-nothing).

The store is a SQLite file by default; :meth:`CheckpointService.on` puts the same service on any
:class:`~kernel.persistence.store.CheckpointBackend` (cluster mode: PostgreSQL, wired by the node layer,
so this package never imports the cluster's).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ActorExited, CheckpointWriteFailed, KernelError, NotSerializable
from ..process.actor import Actor
from ..terms import Crash
from .codec import encode

if TYPE_CHECKING:
    from .store import CheckpointBackend, GroupCommitter

__all__ = ["CheckpointService"]

log = logging.getLogger("kernel.checkpoints")

#: Non-durable changes are gathered this long before one encode per dirty actor (a group-commit
#: window: at most this much later on disk, and a busy actor is pickled ~500 times a second, not per
#: message).
_FLUSH_WINDOW = 0.002

#: How long opening the store or taking an epoch is retried while SQLite reports a transient lock.
_RETRY_FOR = 10.0


class _Slot:
    """Per-actor checkpoint bookkeeping (kept out of the actor's own namespace)."""

    __slots__ = ("changes", "digest", "epoch", "idle", "last", "timer")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.digest = b""
        self.changes = 0
        self.timer: asyncio.TimerHandle | None = None
        self.idle: asyncio.TimerHandle | None = None
        #: The newest write submitted; once it has failed, this incarnation may write nothing more.
        self.last: asyncio.Future[bool] | None = None


class CheckpointService:
    """One per worker; opened on first use so workers without persistent actors never touch SQLite."""

    def __init__(self, path: str, synchronous: str = "NORMAL", lock_wait: float = 5.0) -> None:
        self.path = path
        self.synchronous = synchronous
        #: How long a write waits for another process's write lock before it fails. The node sets it
        #: past its heartbeat's worker_timeout: a hung holder is killed (releasing it) before then.
        self.lock_wait = lock_wait
        #: Builds the store on the writer thread; None: the SQLite file at ``path``.
        self.backend: Callable[[], CheckpointBackend] | None = None
        self._committer: GroupCommitter | None = None
        self._opening: asyncio.Future[GroupCommitter] | None = None
        self._slots: dict[int, _Slot] = {}
        self._dirty: dict[int, Actor] = {}
        self._flush_scheduled = False
        self._flushing = 0
        self._background: set[asyncio.Task[None]] = set()

    @classmethod
    def on(cls, backend: Callable[[], CheckpointBackend], description: str) -> CheckpointService:
        """A service whose store ``backend()`` builds (on the writer thread, at first use), instead of
        the SQLite file; ``description`` says where the checkpoints live (logs, ``path``)."""
        if not callable(backend):
            raise TypeError(f"backend must be a callable returning a CheckpointBackend, not {backend!r}")
        service = cls(description)
        service.backend = backend
        return service

    def backend_in_use(self) -> Any:
        """The store this service writes to, once opened (None before the first activation or write)."""
        return self._committer.store if self._committer is not None else None

    @property
    def commits(self) -> int:
        return self._committer.statistics().commits if self._committer is not None else 0

    @property
    def commit_latency(self) -> Any:
        """The store's :class:`~kernel.persistence.store.LatencyHistogram`, or None before the first write."""
        return self._committer.store.commit_latency if self._committer is not None else None

    async def _open(self) -> GroupCommitter:
        if self._committer is not None:
            return self._committer
        if self._opening is None:
            loop = asyncio.get_running_loop()
            self._opening = loop.create_future()
            from .store import GroupCommitter  # SQLite tooling loads only where it is used

            try:
                if self.backend is not None:
                    committer = await GroupCommitter.open_backend(self.backend)
                else:
                    committer = await GroupCommitter.open(self.path, synchronous=self.synchronous,
                                                           busy_timeout=self.lock_wait)
            except BaseException as exc:
                self._opening.set_exception(exc)
                self._opening.exception()
                self._opening = None
                raise
            self._committer = committer
            self._opening.set_result(committer)
            return committer
        return await asyncio.shield(self._opening)

    async def activate(self, actor: Actor) -> tuple[Any, int] | None:
        """Take a new epoch for the actor's key; returns ``(state, version)`` if a checkpoint exists.

        SQLite can answer "locked" at once (not after busy_timeout) while another process recovers the
        WAL of a writer that was SIGKILLed; that passes, so it is retried for a bounded time.
        """
        delay = 0.01
        deadline = asyncio.get_running_loop().time() + _RETRY_FOR
        while True:
            try:
                committer = await self._open()
                activation = await committer.activate(actor.key)
                break
            except Exception as exc:
                # A backend's refusal (HeldElsewhere, LeaseExpired) is an answer, not a transient lock.
                refused = isinstance(exc, KernelError) and not isinstance(exc, CheckpointWriteFailed)
                if refused or ("locked" not in str(exc) and "busy" not in str(exc).lower()) \
                        or asyncio.get_running_loop().time() + delay > deadline:
                    raise
                log.warning("checkpoint store busy (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
        slot = self._slots[id(actor)] = _Slot(activation.epoch)
        actor._persistent = True
        record = activation.record
        if record is None:
            return None
        slot.digest = hashlib.blake2b(record.data, digest_size=16).digest()
        return (record.state(), record.version)

    def after_message(self, actor: Actor, held: tuple[Any, Any] | None) -> None:
        """Checkpoint per the class's policy; release ``held`` (caller, reply) once it is safe."""
        slot = self._slots.get(id(actor))
        policy = type(actor)._policy  # on the class: no descriptor binding
        if slot is None or policy is None:
            self._release(actor, held)
            return
        idle = getattr(type(actor), "idle_timeout", None)
        if idle:
            self._arm_idle(actor, slot, idle)
        if held is not None and policy.durable:
            # A durable reply waits for the commit of exactly the state its call produced; an unchanged
            # state goes to the store too, which checks (without writing) that this incarnation still
            # owns the key, so a replaced one never acknowledges a write it did not make.
            data = encode(actor.key, actor.state, getattr(type(actor), "checkpoint_codec", "pickle"))
            digest = hashlib.blake2b(data, digest_size=16).digest()
            self._write(actor, slot, data, digest, held)
            return
        self._release(actor, held)
        slot.changes += 1
        if policy.every is not None and slot.changes >= policy.every:
            self._mark_dirty(actor)
        elif policy.interval is not None and slot.timer is None:
            slot.timer = asyncio.get_running_loop().call_later(policy.interval, self._interval_flush, actor)

    def _mark_dirty(self, actor: Actor) -> None:
        """Non-durable state is pulled, not pushed: encoded once per commit batch, not once per message.

        While this worker's previous flush is being committed, dirty actors only accumulate; when it lands,
        each is encoded once, with its newest state. Under load that costs one pickle per actor per
        batch instead of per message; idle, a change is written within ``_FLUSH_WINDOW``.
        """
        self._dirty[id(actor)] = actor
        if not self._flush_scheduled and not self._flushing:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(_FLUSH_WINDOW, self._flush_dirty)

    def _flush_dirty(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, {}
        for actor in dirty.values():
            slot = self._slots.get(id(actor))
            if slot is None or not actor.alive:
                continue
            slot.changes = 0
            try:
                data = encode(actor.key, actor.state, getattr(type(actor), "checkpoint_codec", "pickle"))
            except NotSerializable as exc:
                actor._die(Crash("NotSerializable", str(exc)))
                continue
            digest = hashlib.blake2b(data, digest_size=16).digest()
            if digest != slot.digest:
                self._flushing += 1
                self._write(actor, slot, data, digest, None).add_done_callback(self._flushed)

    def _flushed(self, _: asyncio.Future[bool]) -> None:
        self._flushing -= 1
        if not self._flushing and self._dirty and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(_FLUSH_WINDOW, self._flush_dirty)

    def _write(self, actor: Actor, slot: _Slot, data: bytes, digest: bytes, held: tuple[Any, Any] | None
               ) -> asyncio.Future[bool]:
        assert self._committer is not None
        last = slot.last
        if last is not None and last.done() and not last.cancelled() and last.exception() is not None:
            # A write of this incarnation failed: any state it writes now is built on the refused change,
            # so it writes nothing more (the failure's callback is about to stop it).
            refused: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            refused.set_exception(last.exception())  # type: ignore[arg-type]
            refused.add_done_callback(lambda f: self._written(actor, f, held))
            return refused
        slot.changes = 0
        slot.digest = digest
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        cls = type(actor)
        fut = self._committer.submit(actor.key, slot.epoch, data,
                                     codec=getattr(cls, "checkpoint_codec", "pickle"),
                                     class_name=f"{cls.__module__}.{cls.__qualname__}",
                                     version=getattr(cls, "checkpoint_version", 0))
        fut.add_done_callback(lambda f: self._written(actor, f, held))
        slot.last = fut
        return fut

    def _written(self, actor: Actor, fut: asyncio.Future[bool], held: tuple[Any, Any] | None) -> None:
        exc = fut.exception()
        if exc is None:
            self._release(actor, held)
            return
        reason = Crash(type(exc).__name__, f"checkpoint write failed: {exc}")
        log.error("actor %r could not checkpoint: %s", actor.pid, exc)
        if held is not None:
            actor._rt.fail_caller_with(held[0], ActorExited(reason, actor.pid))
        if actor.alive:
            actor._die(reason)

    def _release(self, actor: Actor, held: tuple[Any, Any] | None) -> None:
        if held is not None:
            actor._rt.reply_from_handler(actor, held[0], held[1])

    def _interval_flush(self, actor: Actor) -> None:
        slot = self._slots.get(id(actor))
        if slot is None or not actor.alive:
            return
        slot.timer = None
        self._mark_dirty(actor)

    def _arm_idle(self, actor: Actor, slot: _Slot, seconds: float) -> None:
        if slot.idle is not None:
            slot.idle.cancel()
        slot.idle = asyncio.get_running_loop().call_later(seconds, self._passivate, actor)

    def _passivate(self, actor: Actor) -> None:
        """Idle long enough: stop the orderly way (state flushed, name freed); get_or_spawn revives it."""
        if actor.alive and actor._task is None and not actor._mbox:
            actor._passivate()

    async def persist(self, actor: Actor) -> None:
        """``await self.checkpoint()``: write now and wait for the commit."""
        slot = self._slots[id(actor)]
        data = encode(actor.key, actor.state, getattr(type(actor), "checkpoint_codec", "pickle"))
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if digest == slot.digest:
            return
        await self._write(actor, slot, data, digest, None)

    async def before_exit(self, actor: Actor, reason: Any) -> None:
        """An orderly exit flushes the last state; a crash keeps the last good checkpoint instead."""
        slot = self._slots.get(id(actor))
        if slot is None:
            return
        if not isinstance(reason, Crash):
            try:
                await self.persist(actor)
            except Exception as exc:
                log.error("final checkpoint of %r failed: %s", actor.pid, exc)
        self.forget(actor)

    def forget(self, actor: Actor) -> None:
        self._dirty.pop(id(actor), None)
        slot = self._slots.pop(id(actor), None)
        if slot is not None:
            for handle in (slot.timer, slot.idle):
                if handle is not None:
                    handle.cancel()

    def dead_letter(self, key: Any, message: bytes, error: str, count: int) -> None:
        """Write a quarantined message to the state file (in the background: nothing waits on it)."""
        async def write() -> None:
            try:
                committer = await self._open()
                await committer.dead_letter(key, message, error, count)
            except Exception as exc:
                log.error("could not record a dead letter for %r: %s", key, exc)

        task = asyncio.get_running_loop().create_task(write())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._committer is not None:
            await self._committer.close()
            self._committer = None
