"""A pytest plugin for testing actors: a started ``node`` per test, ``async def`` tests, a barrier, faults.

Installed with the package and registered through the ``pytest11`` entry point, so a project that has
``pyotp-kernel`` installed gets it without configuration (or load it with ``-p kernel.testing``)::

    from kernel.testing import kill_worker, settle

    @pytest.mark.node(workers=2)              # optional: any Node(...) keyword arguments
    async def test_counter(node):
        pid = await node.spawn(Counter, 1, worker=1)
        await kill_worker(node, 1)            # SIGKILL, returns once the replacement is ready
        await settle(node)                    # every stream between the node's processes drained

* ``node``: a started :class:`kernel.Node` (two workers by default), closed after the test; the test
  fails if one of its worker processes outlives it (an orphan).
* ``async def`` tests that use ``node`` run on the node's own event loop, inside the node's context (so
  ``kernel.call``, ``registry`` and ``supervisors`` act for the node), bounded by the ini option
  ``kernel_timeout`` (seconds, default 60). No pytest-asyncio needed; other ``async def`` tests are left
  to whatever async plugin the project uses. A plain ``def`` test can drive the node with
  :func:`run_on`.
* ``postgres``: a throwaway PostgreSQL server for the session (:class:`kernel.pgserver.PostgresServer`),
  for cluster mode and anything else that needs a real database; ``postgres.dsn`` connects to it.
* :func:`settle`, :func:`kill_worker`, :func:`hang_worker`, :func:`resume_worker`, :class:`Facts`,
  :func:`wait_facts`, :func:`wait_down` and :func:`run_node` (a node around one coroutine, from
  plain code) come from :mod:`kernel.testkit`. See docs/guides/testing.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import psutil
import pytest
import uvloop

from .node.node import Node
from .pgserver import FAST, PostgresServer
from .testkit import Facts, hang_worker, kill_worker, resume_worker, run_node, settle, wait_down, wait_facts

__all__ = ["Facts", "NodeRunner", "hang_worker", "kill_worker", "resume_worker", "run_node", "run_on",
           "settle", "wait_down", "wait_facts"]

#: Seconds for the node to start or to close (beyond the test's own bound).
LIFECYCLE_BOUND = 60.0


class NodeRunner:
    """One ``Node`` served by a driver task on a private uvloop loop; test bodies run inside that task.

    Running every body inside the task that entered ``async with Node()`` is what puts them in the
    node's context (a context variable that a separate task would not see).
    """

    def __init__(self, bound: float = 60.0, **options: Any) -> None:
        self.bound = bound
        self.loop = uvloop.new_event_loop()
        self._jobs: asyncio.Queue[tuple[Coroutine[Any, Any, Any], asyncio.Future[Any]] | None] | None = None
        ready: asyncio.Future[Node] = self.loop.create_future()
        self._driver = self.loop.create_task(self._drive(options, ready))
        try:
            self.node: Node = self.loop.run_until_complete(asyncio.wait_for(ready, LIFECYCLE_BOUND))
        except BaseException:
            self._driver.cancel()
            with contextlib.suppress(BaseException):
                self.loop.run_until_complete(self._driver)
            self.loop.close()
            raise

    async def _drive(self, options: dict[str, Any], ready: asyncio.Future[Node]) -> None:
        self._jobs = asyncio.Queue()
        try:
            async with Node(**options) as node:
                ready.set_result(node)
                while (job := await self._jobs.get()) is not None:
                    coro, done = job
                    try:
                        async with asyncio.timeout(self.bound):
                            done.set_result(await coro)
                    except BaseException as exc:  # handed to the test, which re-raises it
                        done.set_exception(exc)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` inside the node's context, bounded; returns its result or raises its error."""
        if self._jobs is None or self._driver.done():
            coro.close()
            raise RuntimeError("the node is closed")
        done: asyncio.Future[Any] = self.loop.create_future()
        self._jobs.put_nowait((coro, done))
        return self.loop.run_until_complete(done)

    def close(self) -> None:
        """Close the node (resuming any worker left stopped first) and the loop."""
        for os_pid in self.node.workers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                psutil.Process(os_pid).send_signal(signal.SIGCONT)
        assert self._jobs is not None
        self._jobs.put_nowait(None)
        try:
            self.loop.run_until_complete(asyncio.wait_for(self._driver, LIFECYCLE_BOUND))
        finally:
            self.loop.close()


_RUNNERS: dict[int, NodeRunner] = {}


def run_on(node: Node, coro: Coroutine[Any, Any, Any]) -> Any:
    """From a plain ``def`` test: run ``coro`` on the ``node`` fixture's loop, in the node's context."""
    runner = _RUNNERS.get(id(node))
    if runner is None or runner.node is not node:
        coro.close()
        raise ValueError("node must be the `node` fixture of the running test")
    return runner.run(coro)


def _workers_of_this_process() -> set[int]:
    """OS pids of live (not zombie) kernel worker processes started by this process."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and "kernel.node.worker" in child.cmdline():
                found.add(child.pid)
    return found


def _orphans(before: set[int], bound: float = 10.0) -> list[int]:
    """Workers started during the test that are still running ``bound`` seconds after the close."""
    deadline = time.monotonic() + bound
    left = _workers_of_this_process() - before
    while left and time.monotonic() < deadline:
        procs = []
        for pid in left:
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(pid))
        psutil.wait_procs(procs, timeout=0.5)
        left = _workers_of_this_process() - before
    return sorted(left)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("kernel_timeout", "bound in seconds on each async test run by the `node` fixture",
                  default="60")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "node(**options): keyword arguments for the `node` fixture's Node(...) "
        "(default workers=2)")


@pytest.fixture
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    """A started ``Node`` (``@pytest.mark.node(...)`` passes options), closed and checked for orphans."""
    marker = request.node.get_closest_marker("node")
    options: dict[str, Any] = {"workers": 2}
    if marker is not None:
        if marker.args:
            raise TypeError("@pytest.mark.node takes keyword arguments only (those of Node(...))")
        options.update(marker.kwargs)
    bound = float(request.config.getini("kernel_timeout"))
    before = _workers_of_this_process()
    runner = NodeRunner(bound, **options)
    _RUNNERS[id(runner.node)] = runner
    try:
        yield runner.node
    finally:
        del _RUNNERS[id(runner.node)]
        runner.close()
        orphans = _orphans(before)
        for pid in orphans:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        assert not orphans, f"worker processes outlived their node: {orphans}"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test that uses ``node`` on the node's loop; leave every other test alone."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj) or "node" not in pyfuncitem.funcargs:
        return None
    runner = _RUNNERS[id(pyfuncitem.funcargs["node"])]
    names = pyfuncitem._fixtureinfo.argnames
    runner.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the whole session (``kernel.pgserver``), on loopback, without
    fsync (its data is thrown away); ``postgres.dsn`` connects to it. Stopped and removed afterwards."""
    with PostgresServer(settings=FAST) as server:
        yield server
