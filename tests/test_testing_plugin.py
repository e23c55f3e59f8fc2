"""kernel.testing as a user meets it: a test file outside this repository, importing only the installed
package, run by pytest in a subprocess; the plugin comes from the ``pytest11`` entry point or ``-p``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from kernel import Actor, Node
from kernel.testing import Facts, settle

USER_TESTS = Path(__file__).with_name("data") / "user_tests_with_node_fixture.py"


def _pytest(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(USER_TESTS, where / "test_user.py")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, "test_user.py"]
    return subprocess.run(command, cwd=where, capture_output=True, text=True, timeout=50)


def test_user_file_uses_node_fixture_kill_hang_settle(tmp_path: Path) -> None:
    """Through the entry point alone (no -p, no conftest): node, async tests, faults, settle, run_on."""
    done = _pytest(tmp_path, "-W", "error")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


def test_plugin_loads_by_name_beside_its_entry_point(tmp_path: Path) -> None:
    done = _pytest(tmp_path, "-W", "error", "-p", "kernel.testing", "-k", "test_counter")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_without_the_plugin_the_same_file_fails(tmp_path: Path) -> None:
    """The control: with the plugin blocked the file fails, so the passes above are the plugin's."""
    done = _pytest(tmp_path, "-p", "no:kernel.testing")
    assert done.returncode != 0
    assert "fixture 'node' not found" in done.stdout


ORPHAN = '''
import subprocess, sys

async def test_leaves_a_worker_behind(node):
    # Stands in for a worker that escaped its node: a child process whose command line names the worker.
    subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()", "kernel.node.worker"])
'''


def test_node_fixture_fails_a_test_that_leaves_a_worker_process(tmp_path: Path) -> None:
    (tmp_path / "test_orphan.py").write_text(ORPHAN)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_orphan.py"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=50)
    assert done.returncode != 0
    assert "worker processes outlived their node" in done.stdout, done.stdout


class Sender(Actor):
    """Casts ``n`` numbered messages to ``dest`` when called, and returns before they are delivered."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        dest, n = request
        for i in range(n):
            self.cast(dest, i)
        return "sent"


async def test_settle_delivers_what_other_workers_sent_before_it(node: Node) -> None:
    """In our own suite too (the plugin is installed): after settle, the node's call to the receiver is
    answered only once every cast that worker 0 had sent to worker 1 is handled."""
    facts = await node.spawn(Facts, worker=1)
    sender = await node.spawn(Sender, worker=0)
    for rounds in range(1, 4):
        assert await node.call(sender, (facts, 500)) == "sent"
        await settle(node)
        assert await node.call(facts, ("all",)) == list(range(500)) * rounds
