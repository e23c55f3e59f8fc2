"""Prometheus metrics: ``Node(metrics_port=)`` serves /metrics, scraped and parsed while the node is busy."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import kernel
from kernel import CallTimeout, Checkpoint, Down, Node
from supervisors import ChildSpec, Supervisor, which_children
from tests.support.nodes import run_node


class Ledger(kernel.Actor):
    checkpoint = Checkpoint(every=1, durable=True)

    async def init(self) -> None:
        self.state = {"n": 0}

    async def handle_call(self, request: Any, caller: Any) -> Any:
        self.state["n"] += 1
        return self.state["n"]


class Sink(kernel.Actor):
    async def handle_cast(self, message: Any) -> None:
        if message == "hold":
            await asyncio.Event().wait()

    async def handle_call(self, request: Any, caller: Any) -> Any:
        return request


def scrape(address: tuple[str, int]) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """GET /metrics and parse it: sample name -> {sorted labels: value}."""
    host, port = address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def by_worker(samples: dict[str, Any], name: str) -> dict[str, float]:
    return {dict(labels)["worker"]: v for labels, v in samples.get(name, {}).items()}


def test_metrics_are_scraped_and_parsed_during_load(tmp_path: Any) -> None:
    async def body(node: Node) -> None:
        address = node.metrics_address
        assert address is not None and address[0] == "127.0.0.1" and address[1] > 0
        sup = await node.spawn(Supervisor, strategy="one_for_one", name="root",
                               children=[ChildSpec("a", Sink, worker=0), ChildSpec("b", Sink, worker=1)])
        ledgers = [await node.spawn(Ledger, name=("ledger", i), worker=i % 2) for i in range(4)]
        stop = asyncio.Event()

        async def load() -> int:
            done = 0
            while not stop.is_set():
                await asyncio.gather(*(node.call(ledger, "add") for ledger in ledgers))
                done += len(ledgers)
            return done

        loader = asyncio.ensure_future(load())
        try:
            first = await asyncio.to_thread(scrape, address)
            [(_, a, _), _] = await which_children(sup)
            ref = node.monitor(a)
            node.exit(a, "kill")
            await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=10)
            sink = await node.spawn(Sink, worker=1)
            node.cast(sink, "hold")
            with pytest.raises(CallTimeout):
                await node.call(sink, "late", timeout=0.05)
            async with asyncio.timeout(10):
                while True:  # each turn is one round trip to the supervisor
                    [(_, fresh, _), _] = await which_children(sup)
                    if fresh is not None and fresh != a:
                        break
            second = await asyncio.to_thread(scrape, address)
        finally:
            stop.set()
            assert await loader > 0
        for name in ("pyotp_worker_up", "pyotp_actors", "pyotp_messages_handled_total",
                     "pyotp_mailbox_depth_max", "pyotp_loop_lag_seconds", "pyotp_peer_buffered_bytes",
                     "pyotp_calls_timed_out_total", "pyotp_checkpoint_commits_total", "pyotp_restarts_total"):
            assert set(by_worker(second, name)) >= {"0", "1"}, name
        assert by_worker(second, "pyotp_worker_up") == {"node": 1.0, "0": 1.0, "1": 1.0}
        handled_1, handled_2 = (by_worker(s, "pyotp_messages_handled_total") for s in (first, second))
        assert all(handled_2[w] > handled_1[w] for w in ("0", "1")), (handled_1, handled_2)
        commits_1, commits_2 = (by_worker(s, "pyotp_checkpoint_commits_total") for s in (first, second))
        assert all(commits_2[w] > commits_1[w] for w in ("0", "1")), (commits_1, commits_2)
        assert by_worker(second, "pyotp_restarts_total")["0"] == 1.0  # child "a" lives on worker 0
        assert by_worker(second, "pyotp_calls_timed_out_total")["node"] == 1.0  # the caller's process
        exits = second["pyotp_exits_total"]
        assert exits[(("reason", "killed"), ("worker", "0"))] == 1.0
        assert by_worker(second, "pyotp_mailbox_depth_max")["1"] >= 1.0  # "late" waits behind "hold"
        # The commit-latency histogram: cumulative buckets, +Inf equal to the count, a positive sum.
        count = by_worker(second, "pyotp_checkpoint_commit_seconds_count")
        inf = {dict(k)["worker"]: v for k, v in second["pyotp_checkpoint_commit_seconds_bucket"].items()
               if dict(k)["le"] == "+Inf"}
        assert all(count[w] == inf[w] >= commits_2[w] - 1 and count[w] > 0 for w in ("0", "1")), (count, inf)
        assert all(v > 0 for w, v in by_worker(second, "pyotp_checkpoint_commit_seconds_sum").items()
                   if w in ("0", "1"))

    run_node(body, state=tmp_path / "s.db", metrics_port=0)


def test_metrics_port_is_validated() -> None:
    for bad in (-1, 65536, "9100", 1.5, True):
        with pytest.raises(ValueError, match="metrics_port must be a TCP port number"):
            Node(metrics_port=bad)  # type: ignore[arg-type]


def test_a_busy_metrics_port_fails_the_start_with_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def main() -> None:
            with pytest.raises(OSError, match=f"metrics_port: cannot serve /metrics on 127.0.0.1:{port}"):
                async with Node(workers=1, metrics_port=port):
                    pass

        asyncio.run(main())


def test_no_metrics_port_no_server() -> None:
    async def body(node: Node) -> None:
        assert node.metrics_address is None

    run_node(body, workers=1)




def test_kernel_run_serves_metrics_and_validates_the_port(tmp_path: Any) -> None:
    import os
    import re
    import signal
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path), "COLUMNS": "200"}
    os.chmod(tmp_path, 0o700)
    command = [sys.executable, "-m", "kernel", "run", "tests.apps.observer_app:children", "--workers", "2"]
    bad = subprocess.run([*command, "--metrics-port", "70000"], capture_output=True, text=True, cwd=root,
                         env=env, timeout=30)
    assert bad.returncode == 2
    assert "--metrics-port: expected a TCP port number 0-65535, got 70000" in bad.stderr
    runner = subprocess.Popen([*command, "--metrics-port", "0", "--name", f"metrics-{os.getpid()}"],
                              stderr=subprocess.PIPE, text=True, cwd=root, env=env)
    try:
        assert runner.stderr is not None
        seen = []
        for line in runner.stderr:  # bounded by the test's timeout; the runner prints the URL once up
            seen.append(line)
            found = re.search(r"metrics: http://127\.0\.0\.1:(\d+)/metrics", line)
            if found:
                break
        else:
            pytest.fail("".join(seen))
        samples = scrape(("127.0.0.1", int(found[1])))
        assert by_worker(samples, "pyotp_worker_up") == {"node": 1.0, "0": 1.0, "1": 1.0}
        assert by_worker(samples, "pyotp_actors")["0"] >= 1
    finally:
        runner.send_signal(signal.SIGINT)
        rest = runner.communicate(timeout=30)[1]  # reads the rest and closes the pipe
        assert runner.returncode == 0, rest
