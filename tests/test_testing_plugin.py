"""kernel.testing as a user meets it: a test file outside this repository, importing only the installed
package, run by pytest in a subprocess; the plugin comes from the ``pytest11`` entry point or ``-p``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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
