"""Stacks from a worker whose event loop may be blocked: a thread that answers on its own socket.

The control socket's ``stack`` op must work exactly when the observer needs it most, while an actor's
handler blocks its worker's loop (a CPU loop, a blocking call), and then nothing on that loop answers.
So each worker runs one daemon thread, :func:`serve`, listening on its own Linux abstract Unix socket
(named after the node's private socket prefix, the worker's index and incarnation). It costs nothing
until asked: the thread sleeps in ``accept()``. Asked, it reads ``sys._current_frames()`` for the main
thread (the loop's): if an actor's method is on that stack, that actor is running right now (holding
the loop, if the worker is unresponsive); for any other actor it formats the frames of the actor's
suspended task (``Task.get_stack()``), i.e. where its handler awaits.

Only our own OS user gets in (``SO_PEERCRED`` is checked on accept), as on the control socket; a
process of that user could read our memory anyway. The answer is JSON, one line, never pickle.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import sys
import threading
import traceback
from types import FrameType
from typing import Any

from ..process.base import Proc

__all__ = ["MAX_FRAMES", "address", "ask", "sample", "serve"]

#: Innermost frames kept per stack (the interesting end).
MAX_FRAMES = 30
_PEERCRED = struct.Struct("3i")


def address(sockdir: str, index: int, incarnation: int) -> str:
    """The sampler socket of one worker incarnation (an abstract name: nothing on disk)."""
    return f"{sockdir}-stack-{index}-{incarnation}"


def _format(frames: list[FrameType]) -> list[str]:
    summary = traceback.StackSummary.extract(((f, f.f_lineno) for f in frames), lookup_lines=True)
    return [f"{fs.filename}:{fs.lineno} in {fs.name}" + (f": {fs.line.strip()}" if fs.line else "")
            for fs in summary][-MAX_FRAMES:]


def _running_proc(frame: FrameType | None) -> tuple[Proc | None, list[FrameType]]:
    """The innermost frame whose ``self`` is a process, and the main thread's frames (outermost first)."""
    frames: list[FrameType] = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    for f in reversed(frames):
        try:
            candidate = f.f_locals.get("self") if "self" in f.f_code.co_varnames else None
        except Exception:  # a frame being torn down: skip it
            continue
        if isinstance(candidate, Proc):
            return candidate, frames
    return None, frames


def _awaiting(coro: Any) -> list[FrameType]:
    """A suspended coroutine's frames down its ``await`` chain, outermost first (``Task.get_stack`` gives
    only the outermost one)."""
    frames: list[FrameType] = []
    while coro is not None and len(frames) < 4 * MAX_FRAMES:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


def sample(procs: dict[int, Any], main_ident: int, serial: int | None) -> dict[str, Any]:
    """What the loop's thread runs now, and (``serial`` given) where that process is.

    ``running``: the pid repr of the process whose code is on the main thread's stack, or None (the
    loop is idle or in kernel code). ``stack``: for ``serial``, the main thread's frames if it is the one
    running, else its task's frames, else ``[]`` (idle: no handler in progress); without ``serial``, the
    main thread's frames. ``where``: "running", "awaiting" or "idle".
    """
    frame = sys._current_frames().get(main_ident)
    running, frames = _running_proc(frame)
    answer: dict[str, Any] = {"running": None if running is None else repr(running.pid)}
    if serial is None:
        answer.update(where="running" if running is not None else "idle", stack=_format(frames))
        return answer
    proc = procs.get(serial)
    if proc is None:
        answer.update(where="gone", stack=[])
    elif proc is running:
        answer.update(where="running", stack=_format(frames))
    else:
        task = getattr(proc, "_task", None)
        try:
            stack = _format(_awaiting(task.get_coro())) if task is not None else []
        except Exception as exc:  # the task moved on under us: say so rather than guess
            stack = [f"(stack unavailable: {type(exc).__name__})"]
        answer.update(where="awaiting" if stack else "idle", stack=stack)
    return answer


def serve(name: str, procs: dict[int, Any]) -> threading.Thread:
    """Start the sampler thread of this worker on abstract socket ``name``; it dies with the process."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(name)
    listener.listen(4)
    main_ident = threading.main_thread().ident
    assert main_ident is not None
    uid = os.getuid()

    def run() -> None:
        while True:
            conn, _ = listener.accept()
            with conn:
                try:
                    conn.settimeout(2.0)
                    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
                    if _PEERCRED.unpack(raw)[1] != uid:
                        continue
                    line = conn.makefile("rb").readline(256)
                    serial = json.loads(line).get("serial") if line.strip() else None
                    if serial is not None and (not isinstance(serial, int) or isinstance(serial, bool)):
                        serial = None
                    conn.sendall(json.dumps(sample(procs, main_ident, serial)).encode() + b"\n")
                except (OSError, ValueError):
                    continue  # a bad or vanished client: the next one is served

    thread = threading.Thread(target=run, name="pyotp-stack-sampler", daemon=True)
    thread.start()
    return thread


async def ask(name: str, serial: int | None, timeout: float) -> dict[str, Any]:
    """Ask one worker's sampler (from the node); ``TimeoutError`` or ``OSError`` if it cannot answer."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        # uvloop refuses abstract names in open_unix_connection (EINVAL): connect the socket ourselves.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, name)
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        try:
            writer.write(json.dumps({"serial": serial}).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
    answer: dict[str, Any] = json.loads(line)
    return answer
