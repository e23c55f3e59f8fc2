"""The interactive observer in a real terminal (tmux), against a real ``python -m kernel run`` node.

What a user does: run an app in one terminal, the observer in another, move to an actor in the tree,
press ``k``, confirm, and watch the supervisor bring the child back under a new pid; then Ctrl-C the
app, which must exit 0 and leave no worker process behind.

Every wait is on an event: a line the runner prints, or what the terminal shows (a bounded poll of
``tmux capture-pane``). The node and the observer share a private runtime directory and a unique
node name, and tmux runs its own server (``-L``), so nothing here sees or touches other nodes or
sessions.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.support import BOUND
from tests.support.processes import ROOT, interrupt, reap, start_runner, wait_line

TMUX = shutil.which("tmux")

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed: the terminal test needs it")


class Tmux:
    """One private tmux server (its own socket name) with one session: type into it, read the screen."""

    def __init__(self) -> None:
        assert TMUX is not None
        self.base = [TMUX, "-L", f"pyotp-test-{uuid.uuid4().hex[:8]}"]
        self.session = "observer"

    def run(self, *args: str) -> str:
        # The server (and so the pane) inherits this environment: a COLUMNS/LINES set by the test runner
        # would make the app draw 80x24 inside the 160x45 pane, so they are left out.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        done = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=BOUND, check=True, env=env
        )
        return done.stdout

    def start(self, command: str) -> None:
        self.run("new-session", "-d", "-s", self.session, "-x", "160", "-y", "45", command)
        self.run("set-option", "-t", self.session, "remain-on-exit", "on")  # keep a crash on screen

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session)

    def wait_for(self, what: str, fact: Callable[[str], object]) -> str:
        """Poll the screen until ``fact(screen)`` holds; fail past BOUND showing the last screen."""
        deadline = time.monotonic() + BOUND
        while True:
            text = self.screen()
            if fact(text):
                return text
            if time.monotonic() > deadline:
                pytest.fail(f"the observer never showed {what} within {BOUND}s; last screen:\n{text}")
            time.sleep(0.05)  # between two reads of the terminal: a poll interval, not a synchronising sleep

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=BOUND, check=False)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    term = Tmux()
    try:
        yield term
    finally:
        term.close()


@pytest.fixture
def runtime_env() -> Iterator[dict[str, str]]:
    """A private runtime directory (short path: Unix socket paths are limited to 108 bytes)."""
    base = tempfile.mkdtemp(prefix="otx", dir="/tmp")  # created 0700
    env = {**os.environ, "XDG_RUNTIME_DIR": base, "COLUMNS": "300", "PYTHONUNBUFFERED": "1"}
    try:
        yield env
    finally:
        shutil.rmtree(base, ignore_errors=True)


def start_observer(tmux: Tmux, runtime_env: dict[str, str], name: str) -> None:
    """The observer of node ``name`` in the tmux session, refreshing every 0.5 s."""
    tmux.start(
        f"cd {ROOT} && exec env XDG_RUNTIME_DIR={runtime_env['XDG_RUNTIME_DIR']} "
        f"{sys.executable} -m tools.observer --node {name} --interval 0.5"
    )


def tree_pid(screen: str, child_id: str) -> str | None:
    """The pid on the tree line of the supervised child ``child_id`` (``<0.2> [alpha] Counter …``)."""
    found = re.search(rf"(<\d+\.\d+(?:\.\d+)?>) \[{child_id}\] Counter", screen)
    return found.group(1) if found else None


def test_kill_from_the_observer_in_a_terminal_and_ctrl_c_the_runner(
    tmux: Tmux, runtime_env: dict[str, str], tmp_path: Path
) -> None:
    name = f"tmux-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    runner, lines = start_runner("tests.apps.observer_app:children", name, env=runtime_env)
    output: list[str] = []
    workers: list[psutil.Process] = []
    try:
        wait_line(lines, "watch it live", output)
        workers = psutil.Process(runner.pid).children()
        assert len(workers) == 2, f"expected 2 worker processes, got {workers}"

        start_observer(tmux, runtime_env, name)
        screen = tmux.wait_for(
            "the supervision tree", lambda s: tree_pid(s, "alpha") and tree_pid(s, "beta") and "root" in s
        )
        assert f"node {name}" in screen
        alpha, beta = tree_pid(screen, "alpha"), tree_pid(screen, "beta")

        # The tree has focus with its cursor on the node line: root supervisor, then alpha.
        tmux.keys("Down", "Down")
        tmux.wait_for("alpha selected in the detail panel", lambda s: "key       root/alpha" in s)
        tmux.keys("k")
        tmux.wait_for("the kill confirmation", lambda s: f"Kill {alpha}" in s)
        tmux.keys("y")
        screen = tmux.wait_for(
            "alpha restarted under a new pid", lambda s: tree_pid(s, "alpha") not in (None, alpha)
        )
        (tmp_path / "observer-after-kill.txt").write_text(screen)
        print(f"\n--- observer after killing {alpha} ---\n{screen}")  # the capture, for reports (-s)
        restarted = tree_pid(screen, "alpha")
        assert re.search(rf"{re.escape(str(restarted))} \[alpha\] Counter w0 .*restarts=1", screen), screen
        assert tree_pid(screen, "beta") == beta, "one_for_one: the sibling must keep its pid"
        tmux.keys("q")

        assert interrupt(runner) == 0, "".join(output)
        # The runner reaps its workers before it exits (docs/api.md section 1): none may be left even briefly.
        alive = [p for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"worker processes left after Ctrl-C: {alive}"
    finally:
        reap(runner)
        for proc in workers:
            if proc.is_running():
                proc.kill()


def test_trace_of_the_selected_actor_in_a_terminal(tmux: Tmux, runtime_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    name = f"tmux-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    runner, lines = start_runner("tests.apps.observer_app:children", name, env=runtime_env)
    output: list[str] = []
    try:
        wait_line(lines, "watch it live", output)
        start_observer(tmux, runtime_env, name)
        screen = tmux.wait_for("the supervision tree", lambda s: tree_pid(s, "alpha") and "root" in s)
        alpha = tree_pid(screen, "alpha")
        tmux.keys("Down", "Down")
        tmux.wait_for("alpha selected in the detail panel", lambda s: "key       root/alpha" in s)
        tmux.keys("t")
        tmux.wait_for("the trace view", lambda s: f"trace of {alpha}" in s)
        # The ticker (on worker 1) calls alpha every 0.2 s: 10 calls in and 10 replies out end the trace.
        screen = tmux.wait_for("the trace's end", lambda s: "20/20 messages, ended: all traced" in s)
        (tmp_path / "observer-trace.txt").write_text(screen)
        print(f"\n--- observer trace of {alpha} ---\n{screen}")  # the capture, for reports (-s)
        rows = [line for line in screen.splitlines() if re.search(r"\d\d:\d\d:\d\d\.\d{3}", line)]
        assert any(re.search(r"in +call +<1\.\d+> +'tick'", row) for row in rows), screen
        assert any(re.search(r"out +reply +<1\.\d+> +\d+", row) for row in rows), screen
        tmux.keys("Escape")
        tmux.wait_for("the main view again", lambda s: "key       root/alpha" in s)
        tmux.keys("q")
        assert interrupt(runner) == 0, "".join(output)
    finally:
        reap(runner)


def test_filter_typed_in_one_burst_with_the_slash(tmux: Tmux, runtime_env: dict[str, str]) -> None:
    """`/` and the text after it in one write to the terminal (as a paste or tmux send-keys does): every
    key after `/` reaches the filter box, `/` inside the text included (a supervisor path)."""
    name = f"tmux-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    runner, lines = start_runner("tests.apps.observer_app:children", name, env=runtime_env)
    output: list[str] = []
    try:
        wait_line(lines, "watch it live", output)
        start_observer(tmux, runtime_env, name)
        tmux.wait_for("the supervision tree", lambda s: tree_pid(s, "alpha") and tree_pid(s, "beta"))
        tmux.keys("/root/alp")
        screen = tmux.wait_for("the filter applied", lambda s: "filter 'root/alp'" in s)
        assert tree_pid(screen, "alpha") and not tree_pid(screen, "beta"), screen
        tmux.keys("Escape")
        tmux.wait_for("the filter cleared", lambda s: tree_pid(s, "beta") is not None)
        tmux.keys("q")
        assert interrupt(runner) == 0, "".join(output)
    finally:
        reap(runner)
