"""``python -m tools.bench.entities``: what an entity costs beside its floors (issue 15).

Two ratios, each against a floor measured in the same node, in the same sitting, rounds interleaved:

* activation: the first ``Entities.call`` of a fresh key (the supervisor's spawn on the key's worker,
  the name's registration and the call) / a named spawn plus a call by name. Target: <= 2x.
* an active entity: ``Entities.call`` / ``node.call`` by registered name to the same kind of actor.
  Target: <= 1.2x.

Sequential calls from the node to two workers, so each figure is a round trip's latency. The best of
``--rounds`` rounds is reported (the machine is shared: the best is the least disturbed); the calls to
active actors alternate in chunks of 50 between the two kinds.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import kernel
from kernel import Actor, Node
from supervisors import Entities, Supervisor


class Plain(Actor):
    async def init(self, key: Any) -> None:
        self.state = key

    async def handle_call(self, request: Any, caller: Any) -> Any:
        return request


plain = Entities("bench-entities", Plain)
_CHUNK = 50


async def _measure(n: int, rounds: int) -> dict[str, float]:
    best: dict[str, float] = {}
    async with Node(workers=2) as node:
        await node.spawn(Supervisor, children=[plain.child_spec()], name="bench-entities-root")
        for r in range(rounds):
            base = r * n
            times: dict[str, float] = {}
            t = time.perf_counter()
            for i in range(n):
                await node.spawn(Plain, i, name=("bench-plain", base + i), worker=i % 2)
                await node.call(("bench-plain", base + i), "ping")
            times["named spawn + call"] = time.perf_counter() - t
            t = time.perf_counter()
            for i in range(n):
                await plain.call(base + i, "ping")
            times["activation (first Entities.call)"] = time.perf_counter() - t
            # Interleaved in chunks, so a burst of load on the shared machine hits both alike.
            times["call by name"] = times["Entities.call (active)"] = 0.0
            for start in range(0, n, _CHUNK):
                t = time.perf_counter()
                for i in range(start, min(n, start + _CHUNK)):
                    await node.call(("bench-plain", base + i), "ping")
                times["call by name"] += time.perf_counter() - t
                t = time.perf_counter()
                for i in range(start, min(n, start + _CHUNK)):
                    await plain.call(base + i, "ping")
                times["Entities.call (active)"] += time.perf_counter() - t
            for row, seconds in times.items():
                best[row] = min(best.get(row, seconds), seconds / n)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.entities",
                                     description="What an entity costs beside its floors (issue 15).")
    parser.add_argument("--n", type=int, default=2000, help="keys per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, best reported (default 3)")
    args = parser.parse_args(argv)
    best = kernel.run(_measure(args.n, args.rounds))
    for row, seconds in best.items():
        print(f"{row:36s} {seconds * 1e6:9.1f} us")
    activation = best["activation (first Entities.call)"] / best["named spawn + call"]
    active = best["Entities.call (active)"] / best["call by name"]
    print(f"activation / (named spawn + call) = {activation:.2f}x (target <= 2x)")
    print(f"Entities.call (active) / call by name = {active:.2f}x (target <= 1.2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
