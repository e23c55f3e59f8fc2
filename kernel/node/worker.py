"""The worker process: ``python -m kernel.node.worker``, started by the node, never by hand.

It reads its configuration (and the node's secret) as one JSON line on stdin, so the secret never
appears in argv or the environment. Then it runs one uvloop event loop hosting many actors until the
node asks it to shut down, or until the node dies (stdin EOF, or PR_SET_PDEATHSIG's SIGKILL).
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import datetime
from typing import Any

import uvloop

from ..persistence.service import CheckpointService
from ..routing.runtime import Runtime
from ..terms import NODE, Pid
from . import metrics, sampler
from .introspection import describe_actors, state_info

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
    actors = describe_actors(rt)
    sent = sum(peer.written for peer in rt.peers.values())
    store = rt.store
    return {
        "worker": {"index": rt.index, "os_pid": os.getpid(), "incarnation": rt.inc, "alive": True,
                   "actors": len(actors), "msgs_in": rt.msgs_in, "msgs_out": sent,
                   "commits": getattr(store, "commits", 0), "cpu_percent": cpu, "rss": rss},
        "actors": actors,
    }


#: Test hook: a path holding "N stop" or "N exit". While N > 0, a starting worker decrements it and,
#: before reporting ready, stops itself (SIGSTOP: a replacement that hangs) or exits with code 3 (one
#: that fails), deterministically (tests/reliability/test_row20_failed_replacements.py).
STALL_ENV = "PYOTP_TEST_FAIL_BEFORE_READY"


def _test_fail_before_ready() -> None:
    path = os.environ.get(STALL_ENV)
    if not path:
        return
    import fcntl

    with open(path, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        count, _, mode = f.read().strip().partition(" ")
        left = int(count or 0)
        if left <= 0:
            return
        f.seek(0)
        f.truncate()
        f.write(f"{left - 1} {mode}")
    if mode == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGSTOP)


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def _serve(config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    rt = Runtime(config["index"], config["incarnation"], config["sockdir"],
                 bytes.fromhex(config["secret"]), config["workers"])
    rt.incarnations = {int(k): v for k, v in config["incarnations"].items()}
    member = config.get("cluster")  # kernel/node/cluster.py worker_config: checkpoints in its database
    if member:
        from ..cluster.backend import PgBackend  # asyncpg loads only in cluster mode

        # A rejoin replaces the incarnation its claims are made under ("rejoined" below). It may come
        # while the backend is being opened (on the writer thread, connecting): under the lock, the
        # later of the two sets the incarnation the backend claims with.
        incarnation_lock = threading.Lock()
        opened: list[PgBackend] = []

        def open_backend() -> PgBackend:
            backend = PgBackend(member["dsn"], member["node"], member["incarnation"])
            with incarnation_lock:
                backend.incarnation = datetime.fromisoformat(member["incarnation"])
                opened[:] = [backend]
            return backend

        rt.store = CheckpointService.on(open_backend, f"cluster database, as node {member['node']!r}")
    else:
        rt.store = CheckpointService(config["state"], config["synchronous"], config["lock_wait"])
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

    def state(serial: int, inc: int) -> dict[str, Any] | None:
        proc = rt.local(Pid(rt.index, serial, inc))
        return None if proc is None else state_info(proc)

    # A worker's side of routing/ops.py, all of it here. The node's heartbeat is answered from this
    # loop, so a loop that is blocked or stopped cannot answer.
    rt.ops = dataclasses.replace(
        rt.ops, shutdown=shutdown, snapshot=lambda: _snapshot(rt, started),
        metrics=lambda: metrics.worker_metrics(rt), state=state, names=names,
        ping=lambda sent: rt.note(NODE, "pong", rt.index, rt.inc, sent))
    tcp = None
    if member:
        from . import cluster  # asyncpg and the TCP routes load in cluster mode only

        tcp = cluster.attach(rt, member)
        remote = rt.remote
        assert remote is not None

        def rejoined(incarnation: str) -> None:
            with incarnation_lock:
                member["incarnation"] = incarnation
                for backend in opened:
                    backend.incarnation = datetime.fromisoformat(incarnation)

        rt.ops = dataclasses.replace(rt.ops, node_up=remote.node_up, node_down=remote.node_down,
                                     node_worker_down=remote.worker_down, fence=rt.fence, rejoined=rejoined)

    def on_stdin() -> None:
        if not os.read(0, 4096) and not done.done():
            os._exit(0)  # the node is gone (or closed us): die with it

    loop.add_reader(0, on_stdin)
    await rt.start()
    if tcp is not None:
        await tcp.start()
    await rt.connect_peers()
    # Answers the node's `stack` questions from a thread, so they work while this loop is blocked.
    sampler.serve(sampler.address(config["sockdir"], rt.index, rt.inc), rt.procs)
    rt.note(NODE, "ready", rt.index, rt.inc, os.getpid())
    await done
    for peer in rt.peers.values():
        peer.close()
    if tcp is not None:
        tcp.close()
    if rt.remote is not None:
        rt.remote.close()
    rt.close()


def main() -> None:
    config = json.loads(sys.stdin.buffer.readline())
    _die_with_parent(config["parent"])
    _test_fail_before_ready()
    sys.path[:0] = [p for p in config["sys_path"] if p not in sys.path]
    logging.basicConfig(level=logging.WARNING,
                        format=f"[worker {config['index']}] %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the node's to handle
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(config))



if __name__ == "__main__":
    main()
