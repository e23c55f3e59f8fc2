"""Rows 2 and 4: SIGKILL inside checkpoint transactions, and a full disk.

Row 2: a child process runs the real ``CheckpointStore`` and commits batches in a loop (every key of
batch s gets seq s), telling the parent each seq only after COMMIT returned. The parent SIGKILLs it at
a random moment, or deterministically inside a transaction (a hook between the UPSERTs and COMMIT).
Must hold: the file opens and passes ``integrity_check``; each batch is all-or-nothing (every key at
the same seq); no acknowledged batch lost. Figures: integrity failures 0, torn batches 0, lost 0,
in-doubt rate (committed, not acknowledged).

Row 4: ``PRAGMA max_page_count`` on a worker's checkpoint connection fills the disk. Must hold: the
durable call fails with ``ActorExited`` whose ``Crash`` names SQLITE_FULL (no false "saved"), the
previous checkpoint stays readable, the node and the other actors stay up, and once space is back
the supervisor's restart restores the last acknowledged state. Figure: false acks 0.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import kernel
from kernel import Actor, ActorExited, Checkpoint, Crash, Node
from kernel.persistence import store as checkpoints
from supervisors import ChildSpec, Supervisor, which_children
from tests.reliability.support import integrity_and_rows, record, run_node, scale, soak_timeout, wait_down

KEYS = 20

_CHILD = textwrap.dedent("""
    import os, pickle, sys, time
    from kernel.checkpoints import CheckpointStore, Write
    path, keys, hook = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    store = CheckpointStore(path)
    if hook == "in_txn":
        real = store._run
        def stalled(*a, **k):
            real(*a, **k)                 # the UPSERTs ran; COMMIT has not
            if seq == stall_at:
                os.write(1, b"T\\n")
                time.sleep(60)            # killed here, inside the transaction
        store._run = stalled
    stall_at = int(sys.argv[4])
    seq = 0
    while True:
        seq += 1
        store.write_batch([Write(("k", i), 1, pickle.dumps((seq, os.urandom(64)))) for i in range(keys)])
        os.write(1, b"%d\\n" % seq)
""")


def _trial(path: Path, rnd: random.Random, hook: str) -> dict[str, Any]:
    stall_at = rnd.randrange(1, 40)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), str(KEYS), hook, str(stall_at)],
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.stdout is not None
    acked = 0
    kill_after = rnd.randrange(1, 40)
    try:
        for line in proc.stdout:  # bounded by the child's own loop and the test timeout
            if line == b"T\n":
                break
            acked = int(line)
            if hook == "random" and acked >= kill_after:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    ok, rows = integrity_and_rows(path)
    import pickle

    seqs = {pickle.loads(r[0])[0] for r in rows}
    stored = max(seqs) if seqs else 0
    return {"integrity_ok": ok, "torn": len(seqs) > 1 or (rows and len(rows) != KEYS),
            "lost": stored < acked, "in_doubt": stored > acked}


@soak_timeout(1800)
def test_sigkill_inside_checkpoint_transactions(tmp_path: Path) -> None:
    trials = scale(24, 1000)
    rnd = random.Random(2)
    tally = {"integrity_failures": 0, "torn_batches": 0, "lost": 0, "in_doubt": 0}
    for t in range(trials):
        hook = "in_txn" if t % 2 else "random"
        res = _trial(tmp_path / f"t{t}.db", rnd, hook)
        tally["integrity_failures"] += not res["integrity_ok"]
        tally["torn_batches"] += bool(res["torn"])
        tally["lost"] += res["lost"]
        tally["in_doubt"] += res["in_doubt"]
        checkpoints.remove_state_file(tmp_path / f"t{t}.db")
    assert tally["integrity_failures"] == 0 and tally["torn_batches"] == 0 and tally["lost"] == 0, tally
    record(2, "test_sigkill_inside_checkpoint_transactions", trials=trials,
           in_doubt_rate=round(tally["in_doubt"] / trials, 3), **tally)


class Filler(Actor):
    """Lives on the worker: sets ``max_page_count`` on that worker's checkpoint connection."""

    async def handle_call(self, request: Any, caller: Any) -> Any:
        store = kernel.current()._rt.store  # the worker's CheckpointService (fault injection only)
        committer = await store._open()
        conn = committer.store.connection
        loop = asyncio.get_running_loop()
        pages = await loop.run_in_executor(committer._executor,
                                           lambda: conn.execute("PRAGMA page_count").fetchone()[0])
        limit = pages + request if request is not None else 1_000_000_000
        await loop.run_in_executor(committer._executor,
                                   lambda: conn.execute(f"PRAGMA max_page_count = {limit}").fetchone())
        return pages


class Blob(Actor):
    checkpoint = Checkpoint(every=1, durable=True)

    async def init(self) -> None:
        self.state = []

    async def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "get":
            return len(self.state)
        self.state.append(os.urandom(request))  # incompressible: pages fill up
        return len(self.state)


def test_disk_full_fails_durable_calls_keeps_previous_checkpoint(tmp_path: Path) -> None:
    async def body(node: Node) -> dict[str, Any]:
        filler = await node.spawn(Filler, worker=1)
        sup = await node.spawn(Supervisor, children=[ChildSpec("blob", Blob, worker=1)], name="r4",
                               max_restarts=10, max_seconds=60.0, worker=0)
        blob = (await which_children(sup))[0][1]
        bystander = await node.spawn(Filler, worker=0)
        acked = 0
        assert await node.call(blob, 2000) == 1
        acked = 1
        await node.call(filler, 4)  # a few pages of room left
        ref = node.monitor(blob)
        false_acks = 0
        failure = None
        for _ in range(200):
            try:
                n = await node.call(blob, 2000)
            except ActorExited as exc:
                failure = exc
                break
            acked = n
        assert failure is not None, "the disk never filled"
        down = await wait_down(node, ref)
        assert isinstance(failure.reason, Crash) and "SQLITE_FULL" in failure.reason.message, failure
        assert down.reason == failure.reason
        # The previous checkpoint is readable and is exactly the last acknowledged state.
        stored = len(checkpoints.load(node.state_path, "r4/blob"))
        false_acks += stored < acked
        assert stored == acked, (stored, acked)
        # The node and other actors stay up.
        assert await node.call(bystander, None) > 0
        # Space back; the supervisor's restart (already done or retrying) serves the last acked state.
        await node.call(filler, None)
        again = None
        async with asyncio.timeout(15):  # wait (bounded) for the restarted child to answer
            while again is None:
                pid = (await which_children(sup))[0][1]
                try:
                    again = None if pid is None else await node.call(pid, "get")
                except kernel.KernelError:
                    pass
                if again is None:
                    await asyncio.sleep(0.02)
        assert again == acked, (again, acked)
        assert await node.call((await which_children(sup))[0][1], 10) == acked + 1
        return {"acked_before_full": acked, "stored": stored, "false_acks": false_acks,
                "crash": failure.reason.message[:80]}

    res = run_node(body, state=str(tmp_path / "r4.db"))
    assert res["false_acks"] == 0
    record(4, "test_disk_full_fails_durable_calls_keeps_previous_checkpoint", **res)
