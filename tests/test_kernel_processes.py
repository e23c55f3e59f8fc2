"""Whole-process behaviour: scripts without a __main__ guard, no orphans, per-pair order under hypothesis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kernel
from kernel import Node
from kernel.testing import Facts
from tests.support.nodes import run_node
from tests.support.processes import reap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(tmp_path, body: str) -> str:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_actor_class_defined_in_a_scripts_main_without_guard(tmp_path) -> None:
    script = _script(tmp_path, """
        import kernel
        from kernel import Actor, Node

        class Greeter(Actor):
            async def init(self, greeting):
                self.state = greeting
            async def handle_call(self, who, caller):
                return f"{self.state}, {who}"

        async def main():
            async with Node(workers=2) as node:
                pids = [await node.spawn(Greeter, "hello", worker=w) for w in (0, 1)]
                print(*[await node.call(p, "world") for p in pids], sep="|")

        kernel.run(main())
    """)
    out = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hello, world|hello, world"


def test_sigkill_of_the_node_leaves_no_orphan_worker(tmp_path) -> None:
    script = _script(tmp_path, """
        import sys, asyncio, kernel
        from kernel import Node

        async def main():
            async with Node(workers=2) as node:
                print(*node.workers, flush=True)
                await asyncio.Event().wait()

        kernel.run(main())
    """)
    # What a SIGKILLed node leaves until the next start sweeps it goes to this test's own directories.
    (tmp_path / "tmp").mkdir()
    (tmp_path / "xdg").mkdir(mode=0o700)
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), XDG_RUNTIME_DIR=str(tmp_path / "xdg"))
    proc = subprocess.Popen([sys.executable, script], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                            env=env)
    try:
        assert proc.stdout is not None
        workers = [int(x) for x in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(psutil.pid_exists(w) for w in workers)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        _gone, alive = psutil.wait_procs([psutil.Process(w) for w in workers if psutil.pid_exists(w)],
                                        timeout=10)
        assert not alive, f"orphan workers: {alive}"
    finally:
        reap(proc)
        if proc.stdout is not None:
            proc.stdout.close()


#: Records (sender tag, seq) pairs; answers ("wait", n) once n have arrived.
Sink = Facts


#: Message shapes a Source mixes: plain ones go out in their tick's batch, the others are pickled on
#: the spot (a list, a str past the plain bound, a pid), so order must hold across both paths.
SHAPES = (lambda: None, lambda: [1, 2], lambda: "x" * 300, lambda: kernel.Pid(0, 1, 0))


class Source(kernel.Actor):
    async def handle_call(self, request, caller):
        tag, sinks, plan = request
        seq = dict.fromkeys(range(len(sinks)), 0)
        for target, shape in plan:
            self.cast(sinks[target], (tag, seq[target], SHAPES[shape]()))
            seq[target] += 1
        return seq


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(plans=st.lists(st.lists(st.tuples(st.integers(0, 2), st.integers(0, len(SHAPES) - 1)),
                               min_size=1, max_size=60), min_size=2, max_size=4))
def test_random_interleavings_keep_per_pair_order(plans) -> None:
    """Several senders on both workers cast to three sinks in random orders and message shapes (batched
    or pickled on the spot): each pair stays FIFO."""

    async def body(node: Node) -> None:
        sinks = [await node.spawn(Sink, worker=i % 2) for i in range(3)]
        sources = [await node.spawn(Source, worker=i % 2) for i in range(len(plans))]
        import asyncio

        counts = await asyncio.gather(*(node.call(src, (tag, sinks, plan))
                                        for tag, (src, plan) in enumerate(zip(sources, plans, strict=True))))
        for s, sink in enumerate(sinks):
            expected = sum(c[s] for c in counts)
            got = await node.call(sink, ("wait", expected))
            for tag in range(len(plans)):
                seqs = [seq for t, seq, _ in got if t == tag]
                assert seqs == list(range(len(seqs))), f"sender {tag} -> sink {s} out of order: {seqs}"
                assert len(seqs) == counts[tag][s]

    run_node(body)


def test_worker_start_and_stop_leave_nothing(tmp_path) -> None:
    """After a node closes, its socket directory and temporary state file are gone."""

    async def body(node: Node) -> tuple[str, str]:
        return node._sockdir, node.state_path

    t0 = time.monotonic()
    sockdir, state = run_node(body, workers=1)
    assert not os.path.exists(sockdir) and not os.path.exists(state)
    assert time.monotonic() - t0 < 60
