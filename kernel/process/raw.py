"""Raw coroutine processes and the node's own context: processes that ``receive`` instead of handlers.

``await node.spawn(fn, *args)`` with ``async def fn(ctx, *args)`` runs a plain coroutine as a process;
``ctx.receive(match, timeout)`` is Erlang's selective receive. The node process itself acts through a
:class:`NodeContext`, which has a mailbox (for replies it does not wait on, ``Down`` and raw sends)
but no task of its own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from time import perf_counter
from typing import Any

from ..errors import KernelError
from ..terms import Crash, Reason
from ..transport import wire
from .base import SLICE, Proc
from .context import _current

__all__ = ["NodeContext", "Process", "receive"]

_INFO = (wire.SEND, wire.CAST)


async def receive(proc: Proc, match: Callable[[Any], bool] | None, timeout: float | None) -> Any:
    """Selective receive on ``proc``'s mailbox: the first info message ``match`` accepts.

    Unmatched messages stay queued in their order; ``TimeoutError`` after ``timeout`` seconds.
    """
    if match is not None and not callable(match):
        raise TypeError(f"match must be a predicate (callable) or None, got {match!r}")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"timeout must be a number >= 0 or None, got {timeout!r}")
    loop = proc._rt.loop
    deadline = None if timeout is None else loop.time() + timeout
    scanned = 0
    while True:
        mbox = proc._mbox
        if mbox is not None:
            for index in range(scanned, len(mbox)):
                item = mbox[index]
                if item[0] in _INFO and (match is None or match(item[1])):
                    del mbox[index]
                    rt = proc._rt
                    if perf_counter() > rt.slice_end:
                        await asyncio.sleep(0)
                        rt.slice_end = perf_counter() + SLICE
                    return item[1]
            scanned = len(mbox)
        if deadline is not None and loop.time() >= deadline:
            raise TimeoutError(f"receive: no matching message within {timeout}s")
        waiter: asyncio.Future[None] = loop.create_future()
        proc._waiter = waiter
        try:
            if deadline is None:
                await waiter
            else:
                async with asyncio.timeout_at(deadline):
                    await waiter
        except TimeoutError:
            raise TimeoutError(f"receive: no matching message within {timeout}s") from None
        finally:
            proc._waiter = None


class _Receiver(Proc):
    """A process whose mailbox is read by ``receive`` rather than by handlers."""

    __slots__ = ()

    def _init_receiver(self) -> None:
        self._waiter = None
        self._mbox = deque()

    def _deliver(self, item: tuple[Any, ...]) -> None:
        if item[0] == wire.CALL:
            self._rt.fail_caller_with(item[2], KernelError(
                f"{self.pid!r} is a process, not an actor: it cannot answer calls (send it a message)"))
            return
        if item[0] == wire.STOP:
            # A process has no terminate: an orderly stop is an exit with that reason.
            self._die(item[1])
            self._rt.reply(item[2], item[1])
            return
        mbox = self._mbox
        assert mbox is not None
        mbox.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self, match: Callable[[Any], bool] | None = None, timeout: float | None = None) -> Any:
        """Erlang's selective receive; see :func:`receive`."""
        return await receive(self, match, timeout)


class Process(_Receiver):
    """The ``ctx`` of a raw coroutine process: ``pid``, ``send``, ``call``, ``receive``, ``link``..."""

    __slots__ = ("__dict__", "_fn")

    def __init__(self, fn: Callable[..., Coroutine[Any, Any, Any]]) -> None:
        self._fn = fn

    async def _start(self, args: tuple[Any, ...], kwargs: dict[str, Any], restored: Any) -> None:
        self._init_receiver()
        self._task = self._rt.loop.create_task(self._main(args, kwargs))

    async def _main(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        _current.set(self)
        try:
            await self._fn(self, *args, **kwargs)
        except asyncio.CancelledError:
            return  # killed by an exit signal: _die has done the exit work
        except BaseException as exc:
            self._task = None
            self._finish(Crash.from_exception(exc))
            return
        self._task = None
        self._finish("normal")


class NodeContext(_Receiver):
    """The node process acting as a process: it can call, cast, send, spawn, monitor and receive."""

    __slots__ = ()

    def _start_context(self) -> None:
        self._init_receiver()

    def _on_exit(self, sender: Any, reason: Reason, via_link: bool) -> None:
        # The node's context is link-free and must outlive its actors: an exit signal never kills it.
        if self.trap_exits and not (reason == "kill" and not via_link):
            super()._on_exit(sender, reason, via_link)

    def link(self, pid: Any) -> None:
        raise KernelError("the node's context cannot link (it must outlive its actors); use monitor()")

