"""End to end: a real node with two workers, read and poked through its control socket.

If the node starts its own control server (the kernel's job), the test uses it; until then the test
starts one on the node's name with a handler built from the node's public API, so the socket, the
observer's rendering and kill are exercised against real actors either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel import Node, Pid
from kernel.control import ControlClient, ControlError, ControlServer, list_nodes
from tests.apps.observer_app import Counter
from tests.support import BOUND
from tools.observer import render
from tools.observer.__main__ import main as observer_main


def parse_pid(text: str) -> Pid:
    parts = text.strip("<>").split(".")
    return Pid(int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) > 2 else 0)


def stand_in_handler(node: Node) -> Any:
    """What the node's own handler must do, from its public API (used until the node wires its own)."""

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        if req["op"] == "ping":
            return {}
        if req["op"] == "snapshot":
            return await node.snapshot()
        if req["op"] == "kill":
            node.exit(parse_pid(req["pid"]), "kill")
            return {}
        raise ControlError("unsupported", "state is not served by this stand-in")

    return handler


@pytest.fixture
def private_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    base = tmp_path / "xdg"
    base.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    yield


@pytest.mark.usefixtures("private_runtime")
def test_observe_and_kill_on_a_real_node(capsys: pytest.CaptureFixture[str]) -> None:
    from supervisors import ChildSpec, Supervisor

    async def main() -> None:
        async with asyncio.timeout(BOUND), Node(workers=2, name="e2e") as node:
            own = await asyncio.to_thread(list_nodes) == ["e2e"]
            server = None if own else ControlServer("e2e", stand_in_handler(node))
            if server is not None:
                await server.start()
            try:
                await node.spawn(
                    Supervisor,
                    strategy="one_for_one",
                    children=[
                        ChildSpec("c1", Counter, args=(1,), worker=0),
                        ChildSpec("c2", Counter, worker=1),
                    ],
                    name="root",
                )
                async with ControlClient() as client:
                    await client.connect("e2e")
                    snap = await client.request({"op": "snapshot"})
                    assert snap["node"] == "e2e"
                    assert [w["os_pid"] for w in snap["workers"]] == node.workers
                    by_class = {render.short_class(a["class"]): a for a in snap["actors"]}
                    assert {"Supervisor", "Counter"} <= set(by_class)
                    counters = [a for a in snap["actors"] if a["class"].endswith("Counter")]
                    assert sorted(a["worker"] for a in counters) == [0, 1]
                    root = by_class["Supervisor"]
                    assert all(a["parent"] == root["pid"] for a in counters)
                    out = render.supervision_tree(snap)
                    assert out.children and "Supervisor" in str(out.children[0].label)

                    # Kill one child through the socket; its supervisor restarts it under a new pid.
                    victim = next(a for a in counters if a["worker"] == 1)
                    ref = node.monitor(parse_pid(victim["pid"]))
                    await client.request({"op": "kill", "pid": victim["pid"]})
                    down = await node.receive(lambda m: getattr(m, "ref", None) == ref, timeout=BOUND)
                    assert down.reason == "killed"
                    while True:  # each turn is a round trip to the node, not a sleep
                        snap = await client.request({"op": "snapshot"})
                        fresh = [
                            a
                            for a in snap["actors"]
                            if a["class"].endswith("Counter")
                            and a["worker"] == 1
                            and a["pid"] != victim["pid"]
                        ]
                        if fresh:
                            break
                    assert fresh[0]["parent"] == root["pid"]

                # The command-line snapshot, as a user would run it (its own loop: in a thread).
                assert await asyncio.to_thread(observer_main, ["--once", "--node", "e2e"]) == 0
            finally:
                if server is not None:
                    await server.close()

    asyncio.run(main())
    out = capsys.readouterr().out
    assert "node e2e (os pid" in out and "processes by mailbox" in out and "Counter" in out
