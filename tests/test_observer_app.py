"""The interactive observer driven headless by textual's Pilot, against a fake node.

Polling is manual (``interval=None``): each ``await app.poll()`` is one refresh, so nothing waits on a
clock. Waits are on facts (the fake's events, the screen stack), each bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator
from io import StringIO
from typing import Any

from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, Static, Tree

from kernel.control import ControlError
from tests.support import BOUND
from tools.observer.app import (
    TRACE_N,
    Confirm,
    ConfirmKill,
    ConfirmStop,
    DeadLettersScreen,
    HelpScreen,
    ObserverApp,
    TraceScreen,
)
from tools.observer.sample import sample_snapshot


class FakeNode:
    """A Source whose kill makes the 'supervisor' restart the actor under a new pid, as a node would."""

    def __init__(self) -> None:
        self.snap = sample_snapshot()
        self.killed: list[str] = []
        self.state_asks: list[str] = []
        self.kill_seen = asyncio.Event()
        self.closed = False
        self.stopped: list[str] = []
        self.replayed: list[int] = []
        self.dropped: list[int] = []
        self.traces: dict[str, dict[str, Any]] = {}
        self.letters = [
            {"id": 1, "key": "'u42'", "error": "ZeroDivisionError: division by zero", "count": 3,
             "created": 1700000050.0, "message": "cast: ('divide', 0)"},
            {"id": 2, "key": "'u7'", "error": "KeyError: 'x'", "count": 3, "created": 1700000060.0,
             "message": "call: ('get', 'x')"},
        ]

    async def snapshot(self) -> dict[str, Any]:
        self.snap["time"] += 1.0
        for a in self.snap["actors"]:
            a["handled"] = a.get("handled", 0) + (1 if a["pid"] != "<1.2>" else 5)
        return copy.deepcopy(self.snap)

    async def state(self, pid: str) -> dict[str, Any]:
        self.state_asks.append(pid)
        if pid == "<0.3>":
            raise ControlError("noproc", f"no process {pid}")
        return {"repr": f"State(of={pid!r}, seats=3)"}

    async def kill(self, pid: str) -> dict[str, Any]:
        self.killed.append(pid)
        actors = self.snap["actors"]
        victim = next(a for a in actors if a["pid"] == pid)
        victim.update(pid="<0.9>", restarts=victim["restarts"] + 1, handled=0, mailbox=0)
        for a in actors:
            if a.get("children"):
                a["children"] = ["<0.9>" if c == pid else c for c in a["children"]]
            if a.get("parent") == pid:
                a["parent"] = "<0.9>"
        self.kill_seen.set()
        return {}

    async def stack(self, pid: str) -> dict[str, Any]:
        if pid == "<0.2>":
            frames = ["vault.py:10 in handle_call: self.count()", "vault.py:20 in count: while True:"]
            return {"running": pid, "where": "running", "stack": frames}
        return {"running": None, "where": "idle", "stack": []}

    async def stop(self, pid: str) -> dict[str, Any]:
        self.stopped.append(pid)
        return {}

    async def trace(self, pid: str, n: int) -> dict[str, Any]:
        self.traces[pid] = {"pid": pid, "n": n, "events": [], "ended": None}
        return {}

    async def trace_log(self, pid: str) -> dict[str, Any]:
        if pid not in self.traces:
            raise ControlError("not_traced", f"{pid} has no message trace")
        return copy.deepcopy(self.traces[pid])

    def traced(self, pid: str, direction: str, kind: str, peer: str | None, message: str) -> None:
        """One message of ``pid``'s running trace, as its worker would record it."""
        log = self.traces[pid]
        log["events"].append({"at": 1700000100.25 + len(log["events"]), "direction": direction, "kind": kind,
                              "peer": peer, "message": message})
        if len(log["events"]) >= log["n"]:
            log["ended"] = "limit"

    async def dead_letters(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.letters)

    async def replay(self, letter_id: int) -> dict[str, Any]:
        self.replayed.append(letter_id)
        self.letters = [d for d in self.letters if d["id"] != letter_id]
        return {"id": letter_id, "op": "replay", "answer": "'ok'"}

    async def drop(self, letter_id: int) -> dict[str, Any]:
        self.dropped.append(letter_id)
        self.letters = [d for d in self.letters if d["id"] != letter_id]
        return {"id": letter_id, "op": "drop"}

    def close(self) -> None:
        self.closed = True


def rows(app: ObserverApp) -> list[str]:
    table: DataTable[Any] = app.query_one("#procs", DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def settle(pilot: Pilot[None], fact: Any) -> None:
    """Let the app process messages until ``fact()`` holds (bounded)."""
    async with asyncio.timeout(BOUND):
        while not fact():
            await pilot.pause()


@contextlib.asynccontextmanager
async def observing(source: Any,
                    size: tuple[int, int] = (160, 48)) -> AsyncIterator[tuple[ObserverApp, Pilot[None]]]:
    """The observer app on ``source`` (no timer: the test drives each poll), run headless, once it
    shows its first snapshot."""
    app = ObserverApp(source, node="demo", interval=None)
    async with app.run_test(size=size) as pilot:
        await settle(pilot, lambda: app.snapshot is not None)
        yield app, pilot


def shown(app: Any, selector: str) -> str:
    """The plain text a Static widget shows."""
    content = app.query_one(selector, Static).content
    if isinstance(content, str):
        return content
    console = Console(file=StringIO(), width=200)
    console.print(content)
    return console.file.getvalue()  # type: ignore[attr-defined,no-any-return]


def details(app: ObserverApp) -> str:
    return shown(app, "#details")


def run(coro: Any) -> None:
    asyncio.run(coro)


def test_shows_tree_workers_and_sortable_processes() -> None:
    async def main() -> None:
        fake = FakeNode()
        async with observing(fake) as (app, pilot):
            tree: Tree[str] = app.query_one("#tree", Tree)
            assert str(tree.root.label).startswith("node demo (os pid 123)")
            [root] = tree.root.children
            assert root.data == "<0.1>"
            assert [c.data for c in root.children] == ["<0.2>", "<1.1>"]
            assert rows(app) == ["<0.2>", "<0.1>", "<0.3>", "<0.4>", "<1.1>", "<1.2>"]  # by mailbox
            await pilot.press("e")
            assert rows(app)[:2] == ["<0.2>", "<1.2>"]  # by memory
            await app.poll()  # a second snapshot: now there are rates
            await pilot.press("r")
            assert rows(app)[0] == "<1.2>"  # 5 msgs/s, the busiest
            workers = shown(app, "#workers")
            assert "msgs/s history" in workers and "457" in workers
            await pilot.press("q")
        assert fake.closed

    run(main())


def test_select_a_row_shows_state_links_and_monitors() -> None:
    async def main() -> None:
        fake = FakeNode()
        async with observing(fake) as (app, pilot):
            app.query_one("#procs", DataTable).focus()
            await pilot.press("home")  # <0.2> vault: first by mailbox
            await settle(pilot, lambda: "State(of='<0.2>'" in details(app))
            assert app.selected == "<0.2>"
            text = details(app)
            assert "links     <0.1>" in text and "monitors  1" in text and "examples.tickets.Vault" in text
            await pilot.press("down", "down")  # <0.3>, whose state the node cannot give
            await settle(pilot, lambda: "unavailable: no process <0.3>" in details(app))
            await app.poll()  # the selection survives a refresh
            assert app.selected == "<0.3>"
            table: DataTable[Any] = app.query_one("#procs", DataTable)
            assert str(table.get_row_at(table.cursor_row)[0]) == "<0.3>"

    run(main())


def test_kill_asks_first_and_the_restart_shows_up() -> None:
    async def main() -> None:
        fake = FakeNode()
        async with observing(fake) as (app, pilot):
            app.query_one("#procs", DataTable).focus()
            await pilot.press("home", "down", "down", "down", "down", "down")  # <1.2>, the cart u42
            await settle(pilot, lambda: app.selected == "<1.2>")

            await pilot.press("k")
            await settle(pilot, lambda: isinstance(app.screen, ConfirmKill))
            assert "Kill <1.2> [u42] Cart" in shown(app.screen, "#question")
            await pilot.press("n")
            await settle(pilot, lambda: not isinstance(app.screen, ConfirmKill))
            assert fake.killed == []

            await pilot.press("k")
            await settle(pilot, lambda: isinstance(app.screen, ConfirmKill))
            await pilot.click("#yes")
            async with asyncio.timeout(BOUND):
                await fake.kill_seen.wait()
            assert fake.killed == ["<1.2>"]
            # The app polls right after a kill: the restarted child is in the tree and the table.
            await settle(pilot, lambda: "<0.9>" in rows(app))
            assert "<1.2>" not in rows(app)
            tree: Tree[str] = app.query_one("#tree", Tree)
            [root] = tree.root.children
            carts = root.children[1]
            assert [c.data for c in carts.children] == ["<0.9>", "<0.3>"]
            assert "restarts=3" in str(carts.children[0].label)
            assert app.selected == "<0.9>"  # the view follows the restarted child (same key)
            table: DataTable[Any] = app.query_one("#procs", DataTable)
            assert str(table.get_row_at(table.cursor_row)[0]) == "<0.9>"

    run(main())


def test_folded_tree_nodes_stay_folded_across_refreshes() -> None:
    async def main() -> None:
        fake = FakeNode()
        async with observing(fake) as (app, pilot):
            tree: Tree[str] = app.query_one("#tree", Tree)
            carts = tree.root.children[0].children[1]
            assert carts.data == "<1.1>" and carts.is_expanded
            carts.collapse()
            await settle(pilot, lambda: "<1.1>" in app._collapsed)
            await app.poll()  # same structure: labels updated in place
            assert not tree.root.children[0].children[1].is_expanded
            fake.snap["actors"].append({"pid": "<0.5>", "class": "x.New", "parent": "<0.1>", "worker": 0})
            fake.snap["actors"][0]["children"].append("<0.5>")
            await app.poll()  # new structure: rebuilt, the fold kept
            root = tree.root.children[0]
            assert [c.data for c in root.children] == ["<0.2>", "<1.1>", "<0.5>"]
            assert not root.children[1].is_expanded and root.children[0].is_expanded

    run(main())


def test_unreachable_node_is_reported_not_fatal() -> None:
    class Down(FakeNode):
        async def snapshot(self) -> dict[str, Any]:
            raise ConnectionRefusedError("node gone")

    async def main() -> None:
        app = ObserverApp(Down(), node="demo", interval=None)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, lambda: "node unreachable" in shown(app, "#status"))
            assert app.snapshot is None

    run(main())


def tree_cursor(app: ObserverApp) -> str | None:
    tree: Tree[str] = app.query_one("#tree", Tree)
    return tree.cursor_node.data if tree.cursor_node is not None else None


def test_question_mark_shows_every_key() -> None:
    async def main() -> None:
        async with observing(FakeNode()) as (app, pilot):
            await pilot.press("question_mark")
            await settle(pilot, lambda: isinstance(app.screen, HelpScreen))
            help_text = shown(app.screen, "#help")
            for key in ("/", "escape", "m r e p", "s", "k", "t", "d", "q"):
                assert f"{key}  " in help_text, key
            assert "stop the selected actor the orderly way" in help_text
            await pilot.press("escape")
            await settle(pilot, lambda: not isinstance(app.screen, HelpScreen))

    run(main())


def test_slash_filters_tree_and_table_by_name_class_or_pid() -> None:
    async def main() -> None:
        async with observing(FakeNode()) as (app, pilot):
            await pilot.press("slash", *"cart")
            await settle(pilot, lambda: app.filter == "cart")
            assert sorted(rows(app)) == ["<0.3>", "<1.1>", "<1.2>"]  # class Cart, key root/carts
            assert app.selected in ("<0.3>", "<1.1>", "<1.2>")  # s and k act on what is in view
            tree: Tree[str] = app.query_one("#tree", Tree)
            [root] = tree.root.children  # the ancestor of the matches stays, its other child goes
            assert root.data == "<0.1>" and [c.data for c in root.children] == ["<1.1>"]
            await pilot.press("enter")  # keep the filter, back to the table
            await app.poll()
            assert sorted(rows(app)) == ["<0.3>", "<1.1>", "<1.2>"]  # it survives a refresh
            assert "filter 'cart'" in shown(app, "#status")
            await pilot.press("escape")
            await settle(pilot, lambda: app.filter == "")
            assert len(rows(app)) == 6
            await pilot.press("slash", *"<0.4")  # by pid
            await settle(pilot, lambda: rows(app) == ["<0.4>"])
            await pilot.press("escape")
            await pilot.press("slash", *"VAULT")  # by name, any case
            await settle(pilot, lambda: rows(app) == ["<0.2>"])

    run(main())


def test_tree_cursor_follows_the_restarted_child_not_the_row() -> None:
    async def main() -> None:
        fake = FakeNode()
        async with observing(fake) as (app, pilot):
            app.query_one("#tree", Tree).focus()
            await pilot.press("down", "down", "down", "down", "down")  # root, vault, helper, carts, u42
            await settle(pilot, lambda: app.selected == "<1.2>")
            assert tree_cursor(app) == "<1.2>"
            await fake.kill("<1.2>")  # restarted elsewhere under a new pid: the structure changes
            fake.snap["actors"].insert(0, {"pid": "<0.0>", "class": "x.First", "worker": 0})  # shifts rows
            await app.poll()
            assert app.selected == "<0.9>"
            # The tree's cursor moves with it (once the rebuilt tree is laid out), not back to the root.
            await settle(pilot, lambda: tree_cursor(app) == "<0.9>")
            assert app.selected == "<0.9>" and "key       root/carts/u42" in details(app)
            await app.poll()
            await pilot.pause()
            assert tree_cursor(app) == "<0.9>" and app.selected == "<0.9>"

    run(main())


def test_stop_asks_first_then_stops_orderly() -> None:
    async def main() -> None:
        fake = FakeNode()
        async with observing(fake) as (app, pilot):
            app.query_one("#procs", DataTable).focus()
            await pilot.press("home")
            await settle(pilot, lambda: app.selected == "<0.2>")
            await pilot.press("s")
            await settle(pilot, lambda: isinstance(app.screen, ConfirmStop))
            assert "Stop <0.2> vault Vault w0?" in shown(app.screen, "#question")
            await pilot.press("n")
            await settle(pilot, lambda: not isinstance(app.screen, Confirm))
            assert fake.stopped == []
            await pilot.press("s")
            await settle(pilot, lambda: isinstance(app.screen, ConfirmStop))
            await pilot.press("y")
            await settle(pilot, lambda: fake.stopped == ["<0.2>"])
            assert fake.killed == []

    run(main())


def test_details_show_queue_last_exit_and_restart_history() -> None:
    class Queued(FakeNode):
        async def state(self, pid: str) -> dict[str, Any]:
            return {"repr": "S()", "queued": 12, "queue": [f"cast: ('add', {i})" for i in range(10)]}

    async def main() -> None:
        fake = Queued()
        cart = fake.snap["actors"][3]
        cart["exits"] = [[1700000010.0, "ValueError('bad seat')"], [1700000070.0, "'kill'"]]
        async with observing(fake, size=(160, 60)) as (app, pilot):
            app.query_one("#tree", Tree).focus()
            await pilot.press("down", "down", "down", "down", "down")
            await settle(pilot, lambda: "queue (12 messages)" in details(app))
            text = details(app)
            assert "last exit 'kill'  (22:14:30)" in text
            assert "22:13:30 ValueError('bad seat')  22:14:30 'kill'" in text
            assert "cast: ('add', 0)" in text and "cast: ('add', 9)" in text and "… 2 more" in text

    run(main())


def test_dead_letters_view_replays_and_drops_after_confirming() -> None:
    async def main() -> None:
        fake = FakeNode()
        async with observing(fake) as (app, pilot):
            await pilot.press("d")
            await settle(pilot, lambda: isinstance(app.screen, DeadLettersScreen) and app.screen.letters)
            screen = app.screen
            table: DataTable[Any] = screen.query_one("#letters", DataTable)
            assert table.row_count == 2
            assert "ZeroDivisionError" in str(table.get_row_at(0)[4])
            await pilot.press("x")
            await settle(pilot, lambda: isinstance(app.screen, Confirm))
            assert "Drop dead letter 1 ('u42')" in shown(app.screen, "#question")
            await pilot.press("n")
            await settle(pilot, lambda: app.screen is screen)
            assert fake.dropped == []
            await pilot.press("x")
            await settle(pilot, lambda: isinstance(app.screen, Confirm))
            await pilot.press("y")
            await settle(pilot, lambda: fake.dropped == [1] and table.row_count == 1)
            await pilot.press("r")
            await settle(pilot, lambda: isinstance(app.screen, Confirm))
            await pilot.press("y")
            await settle(pilot, lambda: fake.replayed == [2] and table.row_count == 0)
            assert "no dead letters" in shown(screen, "#letters-status")
            await pilot.press("escape")
            await settle(pilot, lambda: not isinstance(app.screen, DeadLettersScreen))

    run(main())


def test_unresponsive_worker_and_loop_lag_are_shown() -> None:
    async def main() -> None:
        fake = FakeNode()
        fake.snap["workers"][0]["lag"] = 0.004
        fake.snap["workers"][1] = {"index": 1, "os_pid": 457, "alive": True, "responsive": False, "lag": 3.25}
        fake.snap["actors"] = [a for a in fake.snap["actors"] if a["worker"] != 1]
        async with observing(fake) as (app, _pilot):
            workers = shown(app, "#workers")
            assert "457 unresponsive" in workers and "3.2 s" in workers and "4 ms" in workers
            assert "worker 1 unresponsive" in shown(app, "#status")
            assert "worker 1 (os pid 457) did not answer, its loop is 3.2 s behind" in workers

    run(main())


def test_details_show_the_sampled_stack_and_the_worker_that_is_held() -> None:
    async def main() -> None:
        fake = FakeNode()
        fake.snap["workers"][1] = {"index": 1, "os_pid": 457, "alive": True, "responsive": False, "lag": 2.0,
                                   "running": "<1.7>", "stack": ["hog.py:5 in handle_cast: spin()"]}
        async with observing(fake, size=(160, 60)) as (app, pilot):
            assert "its loop is held by <1.7> at hog.py:5 in handle_cast: spin()" in shown(app, "#workers")
            app.query_one("#procs", DataTable).focus()
            await pilot.press("home")  # <0.2>, busy
            await settle(pilot, lambda: "stack (running)" in details(app))
            assert "vault.py:20 in count: while True:" in details(app)
            await pilot.press("down")  # <0.1>: idle
            await settle(pilot, lambda: "no handler in progress" in details(app))

    run(main())


def test_t_traces_the_selected_actor_and_shows_events_as_they_arrive() -> None:
    async def main() -> None:
        fake = FakeNode()
        app = ObserverApp(fake, node="demo", interval=None)
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(pilot, lambda: app.snapshot is not None)
            app.query_one("#procs", DataTable).focus()
            await pilot.press("home")  # <0.2>
            await settle(pilot, lambda: app.selected == "<0.2>")
            await pilot.press("t")
            await settle(pilot, lambda: isinstance(app.screen, TraceScreen) and app.screen.traced is not None)
            screen = app.screen
            assert isinstance(screen, TraceScreen)
            assert fake.traces["<0.2>"]["n"] == TRACE_N
            table: DataTable[Any] = screen.query_one("#trace", DataTable)
            assert table.row_count == 0 and "0/20 messages, tracing" in shown(screen, "#trace-status")
            fake.traces["<0.2>"]["n"] = 3  # the node's trace of 3, so the test reaches its end
            fake.traced("<0.2>", "in", "call", "<node.1>", "('book', 3)")
            fake.traced("<0.2>", "out", "cast", "'audit'", "('booked', 3)")
            await screen.action_reload()
            assert table.row_count == 2
            assert [str(c) for c in table.get_row_at(0)] == ["22:15:00.250", "in ", "call", "<node.1>",
                                                             "('book', 3)"]
            assert str(table.get_row_at(1)[3]) == "'audit'"
            fake.traced("<0.2>", "out", "reply", "<node.1>", "'ok'")
            await screen.action_reload()
            assert table.row_count == 3
            assert "3/3 messages, ended: all traced" in shown(screen, "#trace-status")
            await pilot.press("escape")
            await settle(pilot, lambda: not isinstance(app.screen, TraceScreen))
            fake.traces.clear()  # a trace the node has forgotten: the screen says so, the app lives on
            fake.trace = lambda pid, n: _fail_trace()  # type: ignore[assignment,method-assign]
            await pilot.press("t")
            await settle(pilot, lambda: isinstance(app.screen, TraceScreen) and app.screen.error is not None)
            assert "cannot trace <0.2>: noproc" in shown(app.screen, "#trace-status")

    run(main())


async def _fail_trace() -> dict[str, Any]:
    raise ControlError("noproc", "no process <0.2>")
