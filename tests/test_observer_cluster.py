"""The observer on a node of a cluster: the ``cluster`` panel lists every node, and ``n`` shows the next
one through the attached node (textual's Pilot against a fake source; the real control ops are covered by
tests/test_runner_cluster.py)."""

from __future__ import annotations

import asyncio
import copy
from io import StringIO
from typing import Any

import pytest
from rich.console import Console

from kernel.control import ControlError
from tests.test_observer_app import observing, settle, shown
from tools.observer import render
from tools.observer.client import NodeSource
from tools.observer.sample import sample_snapshot

T = 1700000000.0


def cluster_part(me: str) -> dict[str, Any]:
    members = [("demo", 1, "10.0.0.5:7400", 2), ("beta", 2, "10.0.0.6:7400", 4)]
    return {"node_id": {"demo": 1, "beta": 2}[me], "node": me, "lease": 10.0, "members": [
        {"id": ident, "name": name, "address": address, "workers": workers, "incarnation": T - 60,
         "lease_expires": T + 8.5, "self": name == me} for name, ident, address, workers in members]}


class ClusterSource:
    """A fake attached node ``demo`` of a two-node cluster; ``view("beta")`` shows beta through it."""

    def __init__(self) -> None:
        self.viewed: str | None = None
        self.cluster_asks = 0

    async def snapshot(self) -> dict[str, Any]:
        snap = copy.deepcopy(sample_snapshot())
        me = self.viewed or "demo"
        snap.update(node=me, time=T, cluster=cluster_part(me))
        return snap

    async def cluster(self) -> dict[str, Any]:
        self.cluster_asks += 1
        part = cluster_part("demo")
        counts = {"demo": {"workers_alive": 2, "actors": 12}, "beta": {"error": "node 'beta' did not answer"}}
        part["members"] = [{**m, **counts[m["name"]]} for m in part["members"]]
        return part

    def view(self, node: str | None) -> None:
        self.viewed = None if node == "demo" else node

    async def state(self, pid: str) -> dict[str, Any]:
        return {}

    async def stack(self, pid: str) -> dict[str, Any]:
        raise ControlError("noproc", pid)

    def close(self) -> None:
        pass


def test_the_cluster_panel_lists_every_node_and_n_shows_the_next() -> None:
    async def main() -> None:
        source = ClusterSource()
        async with observing(source) as (app, pilot):
            panel = shown(app, "#cluster")
            assert "cluster (2 nodes)" in panel
            demo = next(line for line in panel.splitlines() if "demo" in line)
            beta = next(line for line in panel.splitlines() if "beta" in line)
            for part in ("10.0.0.5:7400", "2/2", "12", "8.5s", "this node"):
                assert part in demo, panel
            for part in ("10.0.0.6:7400", "unreachable", "8.5s"):
                assert part in beta, panel
            assert "this node" not in beta and source.cluster_asks == 1

            await pilot.press("n")
            await settle(pilot, lambda: (app.snapshot or {}).get("node") == "beta")
            assert source.viewed == "beta" and app.sub_title == "beta (through demo)"
            panel = shown(app, "#cluster")
            assert "shown" in next(line for line in panel.splitlines() if "beta" in line), panel

            await pilot.press("n")  # round again to the attached node
            await settle(pilot, lambda: (app.snapshot or {}).get("node") == "demo")
            assert source.viewed is None

    asyncio.run(main())


def test_a_single_node_has_no_cluster_panel() -> None:
    class Alone(ClusterSource):
        async def snapshot(self) -> dict[str, Any]:
            return copy.deepcopy(sample_snapshot())

    async def main() -> None:
        async with observing(Alone()) as (app, pilot):
            assert app.query_one("#cluster").display is False
            await pilot.press("n")
            assert "not a cluster node" in shown(app, "#status")

    asyncio.run(main())


def test_once_prints_the_cluster_first() -> None:
    snap = {**sample_snapshot(), "node": "demo", "time": T, "cluster": cluster_part("demo")}
    console = Console(file=StringIO(), width=160)
    console.print(render.render_once(snap))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert out.index("cluster (2 nodes)") < out.index("workers")
    assert "10.0.0.6:7400" in out and "this node" in out
    assert render.cluster_table(sample_snapshot()) is None


def test_a_viewed_node_is_read_only_through_the_attached_one() -> None:
    source = NodeSource("demo", "beta")

    async def main() -> None:
        with pytest.raises(ControlError, match=r"node beta is viewed through demo.*--node beta"):
            await source.kill("<0.3>")

    asyncio.run(main())
    source.view("demo")
    assert source.viewed is None
