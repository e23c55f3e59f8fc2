"""Row 17: start and stop many supervised children.

A ``DynamicSupervisor`` (worker 0) gets ``start_child`` from the node in a loop (children on the
supervisor's own worker, the default placement), then ``terminate_child`` for each. Run for N and
for 4N children on the same node. Must hold: every child starts and stops (``count_children`` says
so), and the cost per child at 4N is within 2x of the cost at N (linear scaling; asserted only with a
generous margin against a noisy 2-core VM: 3x). Figures: us per child (start, stop) at N and 4N, and
the ratio. Short form N = 1,000 (5,000 children in all), soak N = 25,000 (4N = 100,000).
"""

from __future__ import annotations

import time
from typing import Any

from kernel import Actor, Node
from supervisors import ChildSpec, DynamicSupervisor, count_children, start_child, terminate_child
from tests.reliability.support import SOAK, record, run_node, scale, soak_timeout

#: 2x is the bar; the extra 1.5x absorbs a noisy neighbour without hiding a quadratic (which gives 4x).
MARGIN = 3.0


class Child(Actor):
    async def init(self, i: int) -> None:
        self.state = i


async def _round(node: Node, n: int, tag: str) -> dict[str, float]:
    sup = await node.spawn(DynamicSupervisor, max_restarts=10, max_seconds=5.0, name=("r17", tag), worker=0)
    t0 = time.perf_counter()
    for i in range(n):
        await start_child(sup, ChildSpec(i, Child, args=(i,)))
    t1 = time.perf_counter()
    counts = await count_children(sup)
    assert counts["active"] == n, counts
    for i in range(n):
        await terminate_child(sup, i)
    t2 = time.perf_counter()
    counts = await count_children(sup)
    assert counts["active"] == 0 and counts["specs"] == 0, counts
    await node.stop(sup)
    return {"start_us": (t1 - t0) / n * 1e6, "stop_us": (t2 - t1) / n * 1e6, "total_s": t2 - t0}


@soak_timeout(3600)
def test_start_and_stop_many_supervised_children_scales_linearly(tmp_path: Any) -> None:
    n = scale(1000, 25_000)

    async def body(node: Node) -> dict[str, Any]:
        await _round(node, 200, "warm")  # imports, connections, code paths warm
        small = await _round(node, n, "n")
        large = await _round(node, 4 * n, "4n")
        return {"small": small, "large": large}

    res = run_node(body, bound=3000 if SOAK else 45)
    small, large = res["small"], res["large"]
    per_small = small["start_us"] + small["stop_us"]
    per_large = large["start_us"] + large["stop_us"]
    ratio = per_large / per_small
    record(17, "test_start_and_stop_many_supervised_children_scales_linearly", n=n, four_n=4 * n,
           start_us_n=round(small["start_us"], 1), stop_us_n=round(small["stop_us"], 1),
           start_us_4n=round(large["start_us"], 1), stop_us_4n=round(large["stop_us"], 1),
           us_per_child_n=round(per_small, 1), us_per_child_4n=round(per_large, 1),
           ratio_4n_over_n=round(ratio, 2), seconds_4n=round(large["total_s"], 1))
    assert ratio < MARGIN, f"per-child cost grew {ratio:.2f}x from {n} to {4 * n} children: {res}"
