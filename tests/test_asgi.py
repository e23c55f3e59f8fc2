"""The ASGI front (API section 14): ``python -m kernel run ... --asgi MODULE:APP --port N`` serves the
app from every worker (uvicorn, SO_REUSEPORT), supervised: after a worker is SIGKILLed, its front is
started again on the replacement and both workers answer. Real processes and sockets; every wait is on
a fact (a log line, an HTTP answer)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.processes import interrupt, reap

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(port: int, path: str, attempts: int = 3) -> dict[str, Any]:
    """One request on a new connection. A connection accepted by a worker in the instant it is being
    killed is reset: that one is sent again (a few times at most)."""
    for attempt in range(attempts):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            assert response.status == 200, response.read()
            answer: dict[str, Any] = json.loads(response.read())
            return answer
        except (ConnectionResetError, http.client.RemoteDisconnected):
            if attempt == attempts - 1:
                raise
        finally:
            conn.close()
    raise AssertionError("unreachable")


def _answered_by(port: int, wanted: set[int], attempts: int = 400) -> set[int]:
    """Send requests (each on a new connection, so the kernel spreads them) until every OS pid in
    ``wanted`` has answered; returns who answered."""
    seen: set[int] = set()
    for n in range(attempts):
        seen.add(_get(port, f"/hit/k{n % 3}")["os_pid"])
        if wanted <= seen:
            break
    return seen


def test_the_asgi_front_answers_from_every_worker_and_again_after_a_worker_is_killed(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "TMPDIR": str(tmp_path)}
    with subprocess.Popen(
            [sys.executable, "-m", "kernel", "run", "tests.apps.asgi_app:children", "--workers", "2",
             "--asgi", "tests.apps.asgi_app:app", "--port", str(port), "--name", f"asgi-{os.getpid()}"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as runner:
        try:
            assert runner.stdout is not None
            seen = []
            for line in runner.stdout:  # the runner says when the root (the fronts included) is up
                seen.append(line)
                if "watch it live" in line:
                    break
            assert any("watch it live" in line for line in seen), "".join(seen)
            ups = _get(port, "/wait/2")["answer"]
            first = {pid for _, pid, _ in ups}
            assert len(first) == 2, ups
            assert _answered_by(port, first) == first, "both workers serve the port"

            home = _get(port, "/fronts-home")["answer"]  # kill the other worker: the facts stay
            victim = next(pid for _, pid, index in ups if index != home)
            os.kill(victim, signal.SIGKILL)
            ups = _get(port, "/wait/3")["answer"]  # the restarted front's lifespan startup is the 3rd
            now = {pid for _, pid, _ in ups[2:]} | (first - {victim})
            assert victim not in now and len(now) == 2, ups
            assert _answered_by(port, now) == now, "the replacement worker serves again"
            assert _get(port, "/hit/total")["answer"] == 1

            assert interrupt(runner) == 0
        finally:
            reap(runner)


def test_asgi_and_port_go_together_and_a_bad_port_is_refused_before_a_node_boots() -> None:
    for args in (["--asgi", "app:app"], ["--port", "8000"], ["--asgi", "app:app", "--port", "0"]):
        done = subprocess.run([sys.executable, "-m", "kernel", "run", "tests.apps.asgi_app:children", *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "--port" in done.stderr or "--asgi" in done.stderr, done.stderr
