"""``python -m kernel run`` passes ``--worker-timeout`` and ``--start-timeout`` to its Node, and refuses
bad values before a node boots."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import kernel
from kernel.control import ControlClient
from tests.reliability.test_row18_runner_survives_worker_kills import (  # noqa: F401 (runtime_dir: a fixture)
    runtime_dir,
    settled,
)
from tests.support.processes import ROOT, interrupt, reap, start_runner, wait_line


@pytest.mark.parametrize("option", ["--worker-timeout", "--start-timeout"])
@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_bad_timeouts_are_refused_naming_the_option(option: str, value: str) -> None:
    done = subprocess.run([sys.executable, "-m", "kernel", "run", "tests.apps.chaos_app:children",
                           option, value], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert f"{option}: expected a number of seconds" in done.stderr


@pytest.mark.usefixtures("runtime_dir")
def test_worker_timeout_reaches_the_node_a_stopped_worker_is_replaced() -> None:
    """With ``--worker-timeout 1.5`` a SIGSTOPped worker is replaced well inside the bound; with the
    default (30 s) it would not be."""
    name = f"wt-{os.getpid()}"
    runner, lines = start_runner("tests.apps.chaos_app:children", name, "--worker-timeout", "1.5",
                                 "--start-timeout", "20")
    seen: list[str] = []
    try:
        wait_line(lines, "watch it live", seen)

        async def main() -> None:
            client = ControlClient()
            await client.connect(name)
            try:
                snap = await client.request({"op": "snapshot"})
                stopped = {w["index"]: w["os_pid"] for w in snap["workers"]}[0]
                os.kill(stopped, signal.SIGSTOP)
                await settled(client, 0, stopped)  # a new worker 0, every child running again
            finally:
                client.close()

        kernel.run(main())
        assert interrupt(runner) == 0, "".join(seen)
    finally:
        reap(runner)
