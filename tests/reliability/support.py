"""Shared pieces of the reliability suite (issue 7): scale knobs, a bounded node runner, a collector
actor to wait on, and the figure recorder that feeds RELIABILITY.md (``run_node`` and ``wait_down`` are
re-exported from ``tests.support.nodes`` and ``kernel.testing``).

Short form by default (``make test``); ``SOAK=1`` selects the long form (``make soak``). Every wait is
on a fact (a reply, a ``Down``, a collector count, a file state) with a bound; no sleeps.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Any

import pytest

from kernel import Actor, NoReply
from kernel.testing import wait_down
from tests.support import SOAK
from tests.support.nodes import run_node


def scale(short: int, soak: int) -> int:
    """``short`` in ``make test``, ``soak`` under ``SOAK=1``."""
    return soak if SOAK else short


def soak_timeout(seconds: int) -> pytest.MarkDecorator:
    """A longer pytest-timeout, only in soak mode (the short form keeps the global 60 s)."""
    return pytest.mark.timeout(seconds) if SOAK else pytest.mark.timeout(60)


def record(row: int, test: str, **figures: Any) -> None:
    """Print a figure line; with ``RELIABILITY_FIGURES=path`` also append it there as JSON."""
    entry = {"row": row, "test": test, "form": "soak" if SOAK else "short", "time": time.time(), **figures}
    print(f"FIGURE {json.dumps(entry, default=repr)}")
    path = os.environ.get("RELIABILITY_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(entry, default=repr) + "\n")


def integrity_and_rows(path: str) -> tuple[bool, list[Any]]:
    """Whether SQLite's ``integrity_check`` passes on the checkpoint file, and its ``data`` rows."""
    conn = sqlite3.connect(path)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT data FROM checkpoints").fetchall()
    finally:
        conn.close()
    return ok, rows


class Collector(Actor):
    """Counts tagged events (casts ``(tag, item)``), answers ``("wait", tag, n)`` once n have arrived.

    ``("items", tag)`` returns every item of ``tag`` in arrival order.
    """

    async def init(self) -> None:
        self.state = {}
        self.waiters: list[tuple[Any, int, Any]] = []

    def _check(self) -> None:
        still = []
        for tag, n, who in self.waiters:
            if len(self.state.get(tag, ())) >= n:
                self.reply(who, len(self.state[tag]))
            else:
                still.append((tag, n, who))
        self.waiters = still

    async def handle_cast(self, message: Any) -> None:
        tag, item = message
        self.state.setdefault(tag, []).append(item)
        self._check()

    async def handle_info(self, message: Any) -> None:
        # Signals (Exit, Down) count under their type name.
        self.state.setdefault(type(message).__name__, []).append(message)
        self._check()

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("wait", tag, n):
                if len(self.state.get(tag, ())) >= n:
                    return len(self.state[tag])
                self.waiters.append((tag, n, caller))
                return NoReply
            case ("items", tag):
                return list(self.state.get(tag, ()))
            case ("count", tag):
                return len(self.state.get(tag, ()))
            case ("monitor", pids):
                for pid in pids:
                    self.monitor(pid)
                return len(pids)
            case ("link", pids):
                for pid in pids:
                    self.link(pid)
                return len(pids)
        raise ValueError(request)


class TrappingCollector(Collector):
    trap_exits = True


__all__ = ["SOAK", "Collector", "TrappingCollector", "integrity_and_rows", "record", "run_node", "scale",
           "soak_timeout", "wait_down"]
