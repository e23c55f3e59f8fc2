"""The wheel as a user gets it: built from a copy of the tree, installed in a fresh venv, each command run
from a project directory that has its own ``tools/`` package (which must not shadow ours).

No download: the wheel is built without build isolation (this venv's setuptools) and installed with
``--no-deps``; the fresh venv reaches the dependencies through a ``.pth`` line naming this venv's
site-packages (a path line only: this venv's own ``.pth`` hooks, such as the editable finder, stay off).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import interrupt, reap

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["kernel", "supervisors", "registry", "tools", "examples", "docs", "pyproject.toml", "README.md",
           "CHANGELOG.md", "BENCHMARKS.md", "RELIABILITY.md"]

APP = '''
import tools.helpers                      # the project's own tools package, not ours
from kernel import Actor, Checkpoint
from supervisors import ChildSpec


class Echo(Actor):
    checkpoint = Checkpoint(every=1)

    async def init(self, text):
        self.state = text
        await self.checkpoint()

    async def handle_call(self, request, caller):
        return self.state


children = [ChildSpec("echo", Echo, args=(tools.helpers.GREETING,))]
'''


def _run(*command: str | Path, cwd: Path, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the built wheel installed; returns its bin directory."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(
            ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                        if (ROOT / name).is_dir() else {}))
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                 "-q", "-w", base / "dist", src, cwd=base, timeout=50)
    assert built.returncode == 0, built.stderr
    wheel = next((base / "dist").glob("pyotp_kernel-*.whl"))
    venv = base / "venv"
    made = _run(sys._base_executable, "-m", "venv", "--without-pip", venv, cwd=base)  # type: ignore[attr-defined]
    assert made.returncode == 0, made.stderr
    site_packages = next(venv.glob("lib/python*/site-packages"))
    (site_packages / "_deps_from_dev_venv.pth").write_text(site.getsitepackages()[0] + "\n")
    done = _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps",
                "--no-index", "-q", wheel, cwd=base, timeout=50)
    assert done.returncode == 0, done.stderr
    return venv / "bin"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: its own ``tools`` package, and an app that imports it."""
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "__init__.py").write_text("")
    (tmp_path / "tools" / "helpers.py").write_text('GREETING = "hello from the project\'s tools"\n')
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def test_wheel_holds_every_package_data_and_marker(installed: Path, project: Path) -> None:
    check = (
        "import importlib.resources as r, examples.tickets.demo, examples.cart.web, examples.chat.room, "
        "examples.uploads.limiter, kernel, kernel.testing, tools.observer.app\n"
        "assert r.files('examples.cart').joinpath('adds.lua').is_file()\n"
        "for p in ('kernel', 'supervisors', 'registry'): assert r.files(p).joinpath('py.typed').is_file()\n"
        "print(kernel.__file__)"
    )
    # Run from outside the project (its tools/ would shadow ours for `python -c`, as for any script).
    done = _run(installed / "python", "-c", check, cwd=project.parent)
    assert done.returncode == 0, done.stderr
    assert str(installed.parent) in done.stdout, "kernel was imported from elsewhere than the wheel"
    demo = _run(installed / "python", "-m", "examples.tickets", "--tickets", "500", cwd=project.parent)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "FAILED" not in demo.stdout


def test_docs_travel_with_the_wheel_and_their_links_hold(installed: Path) -> None:
    docs = installed.parent / "share" / "doc" / "pyotp-kernel"
    for page in ("README.md", "docs/README.md", "docs/api.md", "docs/design.md", "docs/guides/testing.md",
                 "examples/README.md", "CHANGELOG.md"):
        assert (docs / page).is_file(), page
    assert (docs / "docs" / "guides").is_dir() and len(list((docs / "docs" / "guides").glob("*.md"))) >= 6


def test_commands_run_from_a_project_with_its_own_tools(installed: Path, project: Path) -> None:
    for command in (["pyotp-run", "--help"], ["pyotp-observer", "--help"], ["pyotp-checkpoints", "--help"]):
        done = _run(installed / command[0], *command[1:], cwd=project)
        assert done.returncode == 0, (command, done.stderr)
    name = f"wheel-{os.getpid()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    with subprocess.Popen(
            [installed / "python", "-m", "kernel", "run", "app:children", "--workers", "1", "--name", name,
             "--state", project / "app.db"], cwd=project, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True) as runner:
        try:
            assert runner.stdout is not None
            seen = []
            for line in runner.stdout:  # the runner says when it is up; the pipe's end bounds the wait
                seen.append(line)
                if "watch it live" in line:
                    break
            assert any("watch it live" in line for line in seen), "".join(seen)
            once = _run(installed / "pyotp-observer", "--node", name, "--once", cwd=project)
            assert once.returncode == 0, once.stderr
            assert "echo" in once.stdout
            assert interrupt(runner) == 0
        finally:
            reap(runner)
    shown = _run(installed / "pyotp-checkpoints", project / "app.db", cwd=project)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "root/echo" in shown.stdout
    state = _run(installed / "pyotp-checkpoints", project / "app.db", "root/echo", cwd=project)
    assert "hello from the project's tools" in state.stdout, state.stdout + state.stderr
