"""Suite-wide guards: every module must leave no worker process behind."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
import pytest


def _children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(autouse=True, scope="module")
def no_orphan_workers() -> Iterator[None]:
    """Stop-all check (pykka's fixture, tractor's reaper): a module's nodes must reap their workers."""
    yield
    deadline = time.monotonic() + 10
    left = _children()
    while left and time.monotonic() < deadline:
        psutil.wait_procs(left, timeout=0.5)
        left = _children()
    for proc in left:
        proc.kill()
    assert not left, f"worker processes left running: {[(p.pid, p.cmdline()) for p in left]}"
