"""OS processes the tests start: ``python -m kernel run`` with its output on a queue, a line to wait
for, Ctrl-C and the reaping that a failed test still owes.

Every wait is bounded (``BOUND``) and on a fact: a line of output, an exit code.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import BOUND

ROOT = Path(__file__).resolve().parents[2]


def start_runner(target: str, name: str, *extra: str,
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], queue.Queue[str | None]]:
    """``python -m kernel run TARGET --workers 2 --name NAME`` from the repository; its output lines
    arrive on the queue (None at EOF). ``env`` defaults to this process's, unbuffered, 300 columns."""
    if env is None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}
    runner = subprocess.Popen(
        [sys.executable, "-m", "kernel", "run", target, "--workers", "2", "--name", name, *extra],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert runner.stdout is not None
        with runner.stdout:  # closed at EOF: when the runner and its workers (which share it) are gone
            for line in runner.stdout:
                lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return runner, lines


def wait_line(lines: queue.Queue[str | None], needle: str, seen: list[str], bound: float = BOUND) -> None:
    """Return once a line holding ``needle`` arrived (every line read is appended to ``seen``); fail
    the test, showing the output, if the runner exits first or ``bound`` seconds pass."""
    deadline = time.monotonic() + bound
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"the runner never printed {needle!r}; output so far:\n{''.join(seen)}")
        if line is None:
            pytest.fail(f"the runner exited before printing {needle!r}; output:\n{''.join(seen)}")
        seen.append(line)
        if needle in line:
            return


def interrupt(proc: subprocess.Popen[Any], timeout: float = BOUND) -> int:
    """Ctrl-C: SIGINT ``proc`` and return its exit code once it has exited (within ``timeout``)."""
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout)


def reap(proc: subprocess.Popen[Any], timeout: float = BOUND) -> None:
    """For a ``finally``: whatever the test did, ``proc`` is not left running (killed and waited for)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout)
