"""The worker process: ``python -m kernel.worker``, started by the node, never by hand.

It reads its configuration (and the node's secret) as one JSON line on stdin, so the secret never
appears in argv or the environment. Then it runs one uvloop event loop hosting many actors until the
node asks it to shut down, or until the node dies (stdin EOF, or PR_SET_PDEATHSIG's SIGKILL).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import uvloop

from .actor import Actor
from .node import state_info
from .persistence import CheckpointService
from .runtime import Runtime
from .terms import NODE, Pid

log = logging.getLogger("kernel.worker")

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL us when the node dies; then check it did not die before we asked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the stdin EOF watch below still catches the node's death
    if os.getppid() != parent:
        os._exit(1)


def _snapshot(rt: Runtime, started: dict[str, Any]) -> dict[str, Any]:
    import psutil  # imported here: only the observer pays for it

    proc = started.setdefault("psutil", psutil.Process())
    with proc.oneshot():
        rss = proc.memory_info().rss
    # CPU % since the previous snapshot (or since start): psutil's first cpu_percent() is always 0.
    now, times = time.monotonic(), os.times()
    used = times.user + times.system
    last_at, last_used = started.get("cpu", (started["boot"], started["boot_cpu"]))
    cpu = 100.0 * (used - last_used) / max(now - last_at, 1e-6)
    started["cpu"] = (now, used)
    actors = []
    for p in list(rt.procs.values()):
        mbox = len(p._mbox) if p._mbox else 0
        is_actor = isinstance(p, Actor)
        actors.append({
            "pid": repr(p.pid),
            "worker": rt.index,
            "name": None if p.name is None else str(p.name),
            "class": f"{type(p).__module__}.{type(p).__qualname__}" if is_actor
            else getattr(getattr(p, "_fn", None), "__qualname__", "process"),
            "key": None if p.key is None else str(p.key),
            "parent": None if p.parent is None else repr(p.parent),
            "status": "exiting" if p._exiting else ("running" if p._task is not None and is_actor
                                                    else "waiting"),
            "mailbox": mbox,
            "handled": p._handled,
            "restarts": getattr(p, "restarts", 0),
            "dropped": getattr(p, "dropped", 0),
            "links": sorted(repr(x) for x in (p._links or ())),
            "monitors": len(p._monitors or ()),
            "memory": sys.getsizeof(p) + (sys.getsizeof(p.__dict__) if hasattr(p, "__dict__") else 0),
            "supervisor": bool(getattr(type(p), "is_supervisor", False)),
            "children": [repr(c) for c in p.children()] if hasattr(p, "children") else None,
        })
        # A supervisor counts its children's restarts by child id; the child's key is "<sup key>/<id>".
        counts = getattr(p, "child_restarts", None)
        if isinstance(counts, dict) and p.key is not None:
            actors[-1]["child_restarts"] = {f"{p.key}/{cid}": n for cid, n in counts.items()}
    sent = sum(peer.written for peer in rt.peers.values())
    store = rt.store
    return {
        "worker": {"index": rt.index, "os_pid": os.getpid(), "incarnation": rt.inc, "alive": True,
                   "actors": len(actors), "msgs_in": rt.msgs_in, "msgs_out": sent,
                   "commits": getattr(store, "commits", 0), "cpu_percent": cpu, "rss": rss},
        "actors": actors,
    }


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def _serve(config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    rt = Runtime(config["index"], config["incarnation"], config["sockdir"],
                 bytes.fromhex(config["secret"]), config["workers"])
    rt.incarnations = {int(k): v for k, v in config["incarnations"].items()}
    rt.store = CheckpointService(config["state"], config["synchronous"])
    rt.listener.max_message = config["max_message"]
    rt.send_buffer = config["send_buffer"]
    done: asyncio.Future[None] = loop.create_future()
    boot = os.times()
    started: dict[str, Any] = {"boot": time.monotonic(), "boot_cpu": boot.user + boot.system}

    async def shutdown() -> None:
        for proc in list(rt.procs.values()):
            proc._die("shutdown")
        if rt.store is not None:
            await rt.store.close()
        loop.call_soon(_settle, done)

    def names(items: list[Any]) -> None:
        rt.names.replace(items)

    rt.rpc_ops["shutdown"] = shutdown
    rt.rpc_ops["snapshot"] = lambda: _snapshot(rt, started)

    def state(serial: int, inc: int) -> dict[str, Any] | None:
        proc = rt.local(Pid(rt.index, serial, inc))
        return None if proc is None else state_info(proc)

    rt.rpc_ops["state"] = state
    rt.note_ops["names"] = names

    def on_stdin() -> None:
        if not os.read(0, 4096) and not done.done():
            os._exit(0)  # the node is gone (or closed us): die with it

    loop.add_reader(0, on_stdin)
    await rt.start()
    await rt.connect_peers()
    rt.note(NODE, "ready", rt.index, rt.inc, os.getpid())
    await done
    for peer in rt.peers.values():
        peer.close()
    rt.close()


def main() -> None:
    config = json.loads(sys.stdin.buffer.readline())
    _die_with_parent(config["parent"])
    sys.path[:0] = [p for p in config["sys_path"] if p not in sys.path]
    logging.basicConfig(level=logging.WARNING,
                        format=f"[worker {config['index']}] %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the node's to handle
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(config))



if __name__ == "__main__":
    main()
