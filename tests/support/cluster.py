"""Cluster nodes as subprocesses on loopback (tests/support/cluster_node.py), and a fresh database each.

A :class:`ClusterNode` is one ``Node(cluster=..., listen="127.0.0.1:PORT")`` in its own OS process,
driven by JSON lines: :meth:`ClusterNode.ask` sends a command and waits for its answer; monitors'
``Down`` lines arrive on :attr:`ClusterNode.downs`, linkers' ``Exit`` lines on :attr:`ClusterNode.exits`.
Every wait is bounded and on a fact (a line).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import asyncpg

from kernel import cluster
from kernel.pgserver import PostgresServer
from tests.support import BOUND
from tests.support.processes import ROOT

__all__ = ["ClusterNode", "database", "free_base_port", "nodes", "unique_names", "wait_members"]


def free_base_port(workers: int) -> int:
    """A loopback port ``p`` with ``p .. p + workers`` all free now (a node and its workers' ports)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + workers > 65535:
            continue
        taken = False
        for port in range(base, base + workers + 1):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    taken = True
                    break
        if not taken:
            return base
    raise RuntimeError("no run of free loopback ports found")


@contextlib.contextmanager
def database(postgres: PostgresServer, *, schema: bool = False) -> Iterator[str]:
    """A fresh database on the session's server (its DSN), with the cluster's tables when ``schema``;
    dropped afterwards."""
    name = f"nodes_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(postgres.dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def install(dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await cluster.install(conn)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        dsn = postgres.dsn.rsplit("/", 1)[0] + "/" + name
        if schema:
            asyncio.run(install(dsn))
        yield dsn
    finally:
        asyncio.run(admin(f"DROP DATABASE {name} WITH (FORCE)"))


class ClusterNode:
    """One cluster node subprocess; ``id`` is its node id once :meth:`ready` returned."""

    def __init__(self, name: str, dsn: str, lease: float = 2.0, workers: int = 2,
                 prefix: Sequence[str] = ()) -> None:
        """``prefix``: a command the node runs under (``ip netns exec NS``: it execs, same pid)."""
        self.name = name
        self.port = free_base_port(workers)
        config = {"name": name, "dsn": dsn, "listen": f"127.0.0.1:{self.port}", "lease": lease,
                  "workers": workers}
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "tests.support.cluster_node", json.dumps(config)], cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        self.id = 0
        self.output: list[str] = []
        self._answers: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._ready: queue.Queue[int | None] = queue.Queue()
        self.downs: queue.Queue[dict[str, Any]] = queue.Queue()
        self.exits: queue.Queue[dict[str, Any]] = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.output.append(line)
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if "ready" in item:
                    self._ready.put(item["ready"])
                elif "down" in item:
                    self.downs.put(item)
                elif "exit" in item:
                    self.exits.put(item)
                elif "id" in item:
                    self._box(item["id"]).put(item)
        self._ready.put(None)

    def _box(self, ident: int) -> queue.Queue[dict[str, Any]]:
        with self._lock:
            return self._answers.setdefault(ident, queue.Queue())

    def ready(self, bound: float = BOUND) -> int:
        """Wait for the node to start; its node id."""
        try:
            found = self._ready.get(timeout=bound)
        except queue.Empty:
            raise AssertionError(f"node {self.name} not ready within {bound}s:\n"
                                 f"{''.join(self.output)}") from None
        if found is None:
            raise AssertionError(f"node {self.name} exited while starting:\n{''.join(self.output)}")
        self.id = found
        return found

    def send(self, **command: Any) -> int:
        """Send a command without waiting; its id (for :meth:`answer`)."""
        ident = next(self._ids)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({**command, "id": ident}) + "\n")
        self.proc.stdin.flush()
        return ident

    def answer(self, ident: int, bound: float = BOUND) -> dict[str, Any]:
        try:
            return self._box(ident).get(timeout=bound)
        except queue.Empty:
            raise AssertionError(f"node {self.name} did not answer command {ident} within {bound}s:\n"
                                 f"{''.join(self.output[-30:])}") from None

    def ask(self, bound: float = BOUND, **command: Any) -> Any:
        """Run a command and return its value; AssertionError with the node's error if it failed."""
        reply = self.answer(self.send(**command), bound)
        if "error" in reply:
            raise AssertionError(f"{self.name}: {command} failed: {reply['error']}")
        return reply["ok"]

    def down(self, bound: float = BOUND) -> dict[str, Any]:
        try:
            return self.downs.get(timeout=bound)
        except queue.Empty:
            raise AssertionError(f"node {self.name} saw no Down within {bound}s") from None

    def exit(self, bound: float = BOUND) -> dict[str, Any]:
        """The next ``Exit`` a linker (op ``link``) trapped."""
        try:
            return self.exits.get(timeout=bound)
        except queue.Empty:
            raise AssertionError(f"node {self.name} saw no Exit within {bound}s") from None

    def kill(self) -> None:
        """SIGKILL the node's whole process group (the node process and its workers), and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(BOUND)
        self._close_stdin()

    def _close_stdin(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.proc.stdin.close()

    def pause(self) -> None:
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        """Close stdin (the node leaves the cluster and exits); kill what is left after BOUND."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGCONT)
            self._close_stdin()
            try:
                self.proc.wait(BOUND)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_stdin()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # a worker left behind, if any


def wait_members(node: ClusterNode, ids: set[int], bound: float = BOUND) -> None:
    """Wait until ``node``'s view of the live members is exactly ``ids``."""
    deadline = time.monotonic() + bound
    while True:
        seen = {int(k) for k in node.ask(op="members")["members"]}
        if seen == ids:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{node.name} sees members {seen}, expected {ids}")
        time.sleep(0.05)  # polling the node's view: the membership poll itself is what moves it


def unique_names(letters: str) -> list[str]:
    """One node name per letter, made unique to this test process: node names are host-wide (each
    node's control socket), and other test runs on the machine start nodes ``a``, ``b``, ``c`` too."""
    return [f"{letter}-{os.getpid()}" for letter in letters]


@contextlib.contextmanager
def nodes(dsn: str, names: Iterable[str] = "abc", lease: float = 2.0) -> Iterator[list[ClusterNode]]:
    """Nodes named ``names`` (a string: one per letter), ready and seeing each other; closed afterwards
    (the list may be changed inside: whatever it holds at the end is closed)."""
    found = [ClusterNode(name, dsn, lease) for name in names]
    try:
        for node in found:
            node.ready()
        for node in found:
            wait_members(node, {n.id for n in found})
        yield found
    finally:
        for node in found:
            node.close()
