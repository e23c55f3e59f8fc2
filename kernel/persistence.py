"""Where a persistent actor's state is written: one service per worker over the group committer.

The actor loop never waits for the disk. After a handled message the state is encoded and, when it
changed, submitted to the worker's :class:`~kernel.checkpoints.GroupCommitter`; everything submitted
while one transaction runs goes into the next one, so one fsync serves many actors. With
``durable=True`` the reply of a call that changed the state is released from the commit's callback:
what a caller was told is on disk. A failed write crashes the actor with a ``Crash`` naming the SQLite
error and fails the held replies; the previous checkpoint stays (the batch was all-or-nothing).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING, Any

from .actor import Actor
from .codec import encode
from .errors import ActorExited, NotSerializable
from .terms import Crash

if TYPE_CHECKING:
    from .checkpoints import GroupCommitter

__all__ = ["CheckpointService"]

log = logging.getLogger("kernel.checkpoints")

#: How long opening the store or taking an epoch is retried while SQLite reports a transient lock.
_RETRY_FOR = 10.0


class _Slot:
    """Per-actor checkpoint bookkeeping (kept out of the actor's own namespace)."""

    __slots__ = ("changes", "digest", "epoch", "idle", "timer")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.digest = b""
        self.changes = 0
        self.timer: asyncio.TimerHandle | None = None
        self.idle: asyncio.TimerHandle | None = None


class CheckpointService:
    """One per worker; opened on first use so workers without persistent actors never touch SQLite."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._committer: GroupCommitter | None = None
        self._opening: asyncio.Future[GroupCommitter] | None = None
        self._slots: dict[int, _Slot] = {}
        self._background: set[asyncio.Task[None]] = set()

    @property
    def commits(self) -> int:
        return self._committer.statistics().commits if self._committer is not None else 0

    async def _open(self) -> GroupCommitter:
        if self._committer is not None:
            return self._committer
        if self._opening is None:
            loop = asyncio.get_running_loop()
            self._opening = loop.create_future()
            from .checkpoints import GroupCommitter  # SQLite tooling loads only where it is used

            try:
                committer = await GroupCommitter.open(self.path)
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
                if ("locked" not in str(exc) and "busy" not in str(exc).lower()) \
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
        policy = actor._policy
        if slot is None or policy is None:
            self._release(actor, held)
            return
        idle = getattr(type(actor), "idle_timeout", None)
        if idle:
            self._arm_idle(actor, slot, idle)
        data = encode(actor.key, actor.state, getattr(type(actor), "checkpoint_codec", "pickle"))
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if digest == slot.digest:
            self._release(actor, held)
            return
        slot.changes += 1
        durable_reply = held is not None and policy.durable
        due = durable_reply or (policy.every is not None and slot.changes >= policy.every)
        if not due:
            self._release(actor, held)
            if policy.interval is not None and slot.timer is None:
                slot.timer = asyncio.get_running_loop().call_later(
                    policy.interval, self._interval_flush, actor)
            return
        self._write(actor, slot, data, digest, held if durable_reply else None)
        if not durable_reply:
            self._release(actor, held)

    def _write(self, actor: Actor, slot: _Slot, data: bytes, digest: bytes, held: tuple[Any, Any] | None
               ) -> asyncio.Future[bool]:
        assert self._committer is not None
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
        try:
            data = encode(actor.key, actor.state, getattr(type(actor), "checkpoint_codec", "pickle"))
        except NotSerializable as exc:
            actor._die(Crash("NotSerializable", str(exc)))
            return
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if digest != slot.digest:
            self._write(actor, slot, data, digest, None)

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
