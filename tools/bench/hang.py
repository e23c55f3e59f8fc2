"""Time from a worker's failure to the ``Down`` of an actor on it, in a node of its own.

``python -m tools.bench.hang --signal STOP --worker-timeout 1.0 --trials 3`` prints one JSON object
(``{"seconds": [...]}``, one figure per trial). A separate process, because the bench's own node keeps
the default ``worker_timeout`` (30 s) and must not lose its workers: each trial SIGSTOPs (or SIGKILLs)
worker 1 of a fresh ``Node(workers=2, worker_timeout=...)`` under a monitored actor and waits for its
``Down("worker_down")``; the heartbeat finds the stopped worker, the exit pipe the killed one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time

import kernel
from kernel import Actor, Down, Node


class Idle(Actor):
    """An actor with nothing to do: what a worker's death must be noticed under."""


async def trials(sig: signal.Signals, worker_timeout: float, n: int) -> list[float]:
    seconds = []
    async with Node(workers=2, worker_timeout=worker_timeout) as node:
        for _ in range(n):
            ref = node.monitor(await node.spawn(Idle, worker=1))
            t0 = time.perf_counter()
            os.kill(node.workers[1], sig)
            down = await node.receive(lambda m, ref=ref: isinstance(m, Down) and m.ref == ref,
                                      timeout=worker_timeout + 30)
            seconds.append(time.perf_counter() - t0)
            if down.reason != "worker_down":
                raise AssertionError(f"expected 'worker_down', got {down.reason!r}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.hang")
    parser.add_argument("--signal", choices=("STOP", "KILL"), default="STOP")
    parser.add_argument("--worker-timeout", type=float, default=1.0)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    sig = signal.Signals[f"SIG{args.signal}"]
    print(json.dumps({"seconds": kernel.run(trials(sig, args.worker_timeout, args.trials))}))


if __name__ == "__main__":
    main()
