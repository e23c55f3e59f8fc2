"""The cart's versus benchmark (``examples.cart.versus``): a short run of all three sides passes its own
correctness check, and that check does fail on a doubled, a lost or a twice-sold item."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from examples.cart.versus import Load, Run, judge
from kernel.pgserver import PostgresServer

ROOT = Path(__file__).resolve().parent.parent


def _run(**changes: object) -> Run:
    """A run of two users that the check passes: u0 got 3 acknowledged adds and 1 retried, u1 2."""
    load = Load("wrk", requests=5, seconds=1.0, acked=Counter({"u0": 3, "u1": 2}),
                pending=[("u0.web.1.9", "u0", "tee")])
    run = Run("sqlite", load, 0.0, before={"u0": 3, "u1": 2}, sent={"u0": 4, "u1": 2},
              after={"u0": 4, "u1": 2}, limited_won={"u0": 1, "u1": 1}, final={"u0": 5, "u1": 3},
              on_disk={"u0": 5, "u1": 3}, replays_ok=True, retried=1)
    for name, value in changes.items():
        setattr(run, name, value)
    return judge(run)


def test_the_check_passes_a_correct_run_and_names_each_kind_of_wrong_one() -> None:
    assert _run().correct and _run().problems == []
    doubled = _run(after={"u0": 5, "u1": 2}, final={"u0": 6, "u1": 3}, on_disk={"u0": 6, "u1": 3})
    assert not doubled.correct
    assert any("differ" in p and "'u0': (5, 4)" in p for p in doubled.problems), doubled.problems
    lost = _run(before={"u0": 2, "u1": 2})
    assert [p for p in lost.problems if "lost" in p] and not lost.correct
    sold_twice = _run(limited_won={"u0": 2, "u1": 1}, final={"u0": 6, "u1": 3}, on_disk={"u0": 6, "u1": 3})
    assert any("one-per-customer" in p for p in sold_twice.problems), sold_twice.problems
    not_on_disk = _run(on_disk={"u0": 4, "u1": 3})  # answered, but the stored state lost one
    assert any("stored state" in p for p in not_on_disk.problems), not_on_disk.problems
    refused = _run(load=Load("wrk", seconds=1.0, acked=Counter({"u0": 3, "u1": 2}),
                             statuses=Counter({503: 1})))
    assert any("not 2xx" in p for p in refused.problems), refused.problems
    assert not _run(replays_ok=False).correct


def _versus(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "1000", "TMPDIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "examples.cart.versus", "--seconds", "1",
                           "--connections", "4", "--users", "3", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def _verdicts(stdout: str) -> dict[str, str]:
    """Each side's verdict, from its "run 1 SIDE: ...: correct" line."""
    return {line.split()[2].rstrip(":"): line.rsplit(": ", 1)[1]
            for line in stdout.splitlines() if line.startswith("run 1 ")}


@pytest.mark.timeout(300)
def test_a_short_run_of_the_three_sides_is_correct(postgres: PostgresServer, tmp_path: Path) -> None:
    done = _versus("--postgres", postgres.dsn, tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _verdicts(done.stdout) == dict.fromkeys(("entities", "postgres", "sqlite"), "correct"), done.stdout
    assert ("wrk" in done.stdout) == (shutil.which("wrk") is not None), done.stdout
    assert os.listdir(tmp_path) == [], "the runs' files are removed"


@pytest.mark.timeout(120)
def test_without_wrk_the_aiohttp_client_makes_the_load(tmp_path: Path) -> None:
    done = _versus("--only", "sqlite", "--load", "aiohttp", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "aiohttp client" in done.stdout and _verdicts(done.stdout) == {"sqlite": "correct"}, done.stdout
