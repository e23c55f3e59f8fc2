"""The interactive observer: a textual app over a :class:`~tools.observer.client.Source`.

Why textual rather than a plain ``rich.live.Live`` loop: the observer is navigated, not just watched.
It needs focus moving between a tree and a table (Tab), keyboard cursors that survive a refresh
every second, collapsible tree nodes, a modal confirmation before a kill, and a footer that lists the
keys; textual gives all of that on top of rich (the same renderables as ``--once``), runs over SSH in
any terminal, and can be driven headless in tests (``App.run_test()`` and its Pilot). With ``Live``
we would reimplement raw-mode key reading, focus and screens by hand. It is one pure-Python
dependency from the rich authors.

Keys: ``m``/``r``/``e``/``p`` sort the process table by mailbox, msgs/s, memory, pid; ``k`` kills the
selected actor after a confirmation; ``space``/``enter`` fold a tree node; ``tab`` moves focus; ``q`` quits.
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Header, Label, Static, Tree
from textual.widgets.tree import TreeNode

from kernel.control import ControlError

from . import render
from .client import Source

__all__ = ["ConfirmKill", "ObserverApp"]

_COLUMNS = (
    "pid",
    "name",
    "class",
    "w",
    "status",
    "mailbox",
    "handled",
    "msgs/s",
    "memory",
    "restarts",
    "child id",
)
#: Rows kept in the interactive table: the top of the current order (a 100k-actor node stays responsive).
TABLE_LIMIT = 500
#: Children shown per tree node before "… N more".
TREE_CHILDREN = 200
HISTORY = 60


class ConfirmKill(ModalScreen[bool]):
    """Ask before killing: ``y``/Enter on Kill confirms, ``n``/Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "kill"),
        Binding("n,escape", "answer(False)", "cancel"),
    ]
    DEFAULT_CSS = """
    ConfirmKill { align: center middle; }
    ConfirmKill > Vertical {
        width: 72; height: auto; border: thick $error; background: $surface; padding: 1 2;
    }
    ConfirmKill Horizontal { height: auto; align: center middle; margin-top: 1; }
    ConfirmKill Button { margin: 0 2; }
    """

    def __init__(self, pid: str, description: str) -> None:
        super().__init__()
        self.pid = pid
        self.description = description

    def compose(self) -> ComposeResult:
        with Vertical():
            # Text, not a str: a child id such as "[cart]" must not be read as console markup.
            yield Label(Text(f"Kill {self.description}?", style="bold"), id="question")
            yield Label(Text("Exit reason 'killed': its supervisor decides if it comes back."))
            with Horizontal():
                yield Button("Kill (y)", variant="error", id="yes")
                yield Button("Cancel (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ObserverApp(App[None]):
    """Live view of one node: supervision trees, workers, processes, the selected actor; kill with care.

    Polls ``source.snapshot()`` every ``interval`` seconds (``interval=None``: only when :meth:`poll` is
    called, as tests do). A failing poll shows the error and keeps the last view; the next poll retries.
    """

    TITLE = "pyotp observer"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("k", "kill", "kill"),
        Binding("m", "sort('mailbox')", "by mailbox"),
        Binding("r", "sort('rate')", "by msgs/s"),
        Binding("e", "sort('memory')", "by memory"),
        Binding("p", "sort('pid')", "by pid"),
    ]
    DEFAULT_CSS = """
    #top { height: 1fr; }
    #tree { width: 1fr; border: round $primary; }
    #side { width: 1fr; min-width: 62; }
    #workers { height: auto; border: round $primary; }
    #details { height: 1fr; border: round $primary; overflow-y: auto; }
    #procs { height: 1fr; border: round $primary; }
    #status { height: 1; background: $boost; }
    """

    def __init__(self, source: Source, *, node: str = "", interval: float | None = 1.0) -> None:
        super().__init__()
        self.source = source
        self.node = node
        self.interval = interval
        self.snapshot: dict[str, Any] | None = None
        self.rates = render.Rates()
        self.history: dict[int, deque[float]] = {}
        self.sort_key = "mailbox"
        self.selected: str | None = None
        self._selected_key: str | None = None
        self.selected_state: dict[str, Any] | None = None
        self._collapsed: set[str] = set()
        self._tree_shape: object = None
        self._tree_nodes: dict[str, TreeNode[str]] = {}
        self._polling = False

    # ----------------------------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="top"):
            tree: Tree[str] = Tree("connecting…", id="tree")
            tree.show_root = True
            yield tree
            with Vertical(id="side"):
                yield Static("", id="workers")
                yield Static("select an actor", id="details")
        table: DataTable[Text] = DataTable(id="procs", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="status")
        yield Footer()

    async def on_mount(self) -> None:
        table: DataTable[Text] = self.query_one("#procs", DataTable)
        for col in _COLUMNS:
            table.add_column(col, key=col)
        self.sub_title = self.node
        await self.poll()
        if self.interval is not None:
            self.set_interval(self.interval, self.poll)

    # ------------------------------------------------------------------------------------- data

    async def poll(self) -> None:
        """Fetch one snapshot (and the selected actor's state) and redraw; errors go to the status line."""
        if self._polling:
            return  # the previous poll is still waiting on the node: skip a tick rather than pile up
        self._polling = True
        try:
            snapshot = await self.source.snapshot()
            self.rates = render.compute_rates(self.snapshot, snapshot)
            self.snapshot = snapshot
            for index, rate in self.rates.workers.items():
                self.history.setdefault(index, deque(maxlen=HISTORY)).append(rate)
            self._draw()
            self._set_status("")
            if self.selected is not None:
                await self._load_state(self.selected)
        except (ControlError, OSError, TimeoutError) as exc:
            self._set_status(f"node unreachable: {exc}")
        finally:
            self._polling = False

    async def _load_state(self, pid: str) -> None:
        try:
            state = await self.source.state(pid)
        except ControlError as exc:
            state = {"error": exc.message}
        except (OSError, TimeoutError) as exc:
            state = {"error": str(exc)}
        if pid == self.selected:
            self.selected_state = state
            self._draw_details()

    def _actor(self, pid: str | None) -> dict[str, Any] | None:
        if pid is None or self.snapshot is None:
            return None
        for actor in self.snapshot.get("actors", ()):
            if actor.get("pid") == pid:
                return dict(actor)
        return None

    # ---------------------------------------------------------------------------------- drawing

    def _set_status(self, message: str) -> None:
        snap = self.snapshot
        where = (
            f"node {snap.get('node')}, {len(snap.get('actors', ()))} actors" if snap else "no snapshot yet"
        )
        line = f"{where} | sorted by {self.sort_key}"
        if message:
            line += f" | {message}"
        self.query_one("#status", Static).update(line)

    def _follow_restart(self) -> None:
        """If the selected actor is gone but an actor with its key (supervisor path) exists, select that one.

        So after a kill the view follows the child its supervisor restarted, as one would watch it.
        """
        if self.selected is None or self._selected_key is None or self._actor(self.selected) is not None:
            return
        assert self.snapshot is not None
        for actor in self.snapshot.get("actors", ()):
            if actor.get("key") == self._selected_key:
                self.selected = actor["pid"]
                self.selected_state = None
                return

    def _draw(self) -> None:
        assert self.snapshot is not None
        self._follow_restart()
        history = {i: list(h) for i, h in self.history.items()}
        self.query_one("#workers", Static).update(render.workers_table(self.snapshot, self.rates, history))
        self._draw_tree()
        self._draw_table()
        self._draw_details()

    def _draw_tree(self) -> None:
        assert self.snapshot is not None
        tree: Tree[str] = self.query_one("#tree", Tree)
        roots, children = render.tree_structure(self.snapshot)
        index = {a["pid"]: a for a in self.snapshot.get("actors", ())}
        tree.root.set_label(render.node_label(self.snapshot))
        shape = (roots, {pid: tuple(kids) for pid, kids in children.items()})
        if shape == self._tree_shape:
            for pid, node in self._tree_nodes.items():
                node.set_label(render.actor_label(index[pid]))
            return
        # The structure changed: rebuild, keeping what the user folded and where the cursor was.
        cursor = tree.cursor_node.data if tree.cursor_node is not None else None
        self._tree_shape = shape
        self._tree_nodes = {}
        tree.clear()

        def add(parent: TreeNode[str], pids: list[str]) -> None:
            for pid in pids[:TREE_CHILDREN]:
                kids = children[pid]
                node = parent.add(
                    render.actor_label(index[pid]),
                    data=pid,
                    expand=pid not in self._collapsed,
                    allow_expand=bool(kids),
                )
                self._tree_nodes[pid] = node
                add(node, kids)
            if len(pids) > TREE_CHILDREN:
                parent.add_leaf(Text(f"… {len(pids) - TREE_CHILDREN} more", style="dim italic"))

        add(tree.root, roots)
        tree.root.expand()
        if cursor in self._tree_nodes:
            tree.move_cursor(self._tree_nodes[cursor])

    def _draw_table(self) -> None:
        assert self.snapshot is not None
        table: DataTable[Text] = self.query_one("#procs", DataTable)
        ordered = render.sort_actors(self.snapshot.get("actors", ()), self.sort_key, self.rates)[:TABLE_LIMIT]
        wanted = [a["pid"] for a in ordered]
        present = {key.value for key in table.rows if key.value is not None}
        for pid in present - set(wanted):
            table.remove_row(pid)
        for actor, cells in zip(ordered, render.process_rows(ordered, self.rates), strict=True):
            pid = actor["pid"]
            if pid in present:
                for col, cell in zip(_COLUMNS, cells, strict=True):
                    table.update_cell(pid, col, cell)
            else:
                table.add_row(*cells, key=pid)
        position = {pid: i for i, pid in enumerate(wanted)}
        table.sort("pid", key=lambda cell: position[str(cell)])
        if self.selected in position:
            table.move_cursor(row=position[self.selected])
        self.query_one("#procs", DataTable).border_title = f"processes by {self.sort_key}" + (
            f" (top {len(wanted)} of {len(self.snapshot.get('actors', ()))})"
            if len(wanted) < len(self.snapshot.get("actors", ()))
            else ""
        )

    def _draw_details(self) -> None:
        actor = self._actor(self.selected)
        details = self.query_one("#details", Static)
        if actor is None:
            details.update("select an actor" if self.selected is None else f"{self.selected} is gone")
            return
        details.update(render.actor_details(actor, self.selected_state))

    # ----------------------------------------------------------------------------------- events

    def _select(self, pid: str | None) -> None:
        if pid is None or pid == self.selected:
            return
        self.selected = pid
        self._selected_key = (self._actor(pid) or {}).get("key")
        self.selected_state = None
        self._draw_details()
        self.run_worker(self._load_state(pid), group="state", exclusive=True)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        table = event.data_table
        if not table.is_valid_coordinate(table.cursor_coordinate):
            return
        # A refresh moves rows and the cursor several times; only the row finally under it counts.
        if table.coordinate_to_cell_key(table.cursor_coordinate).row_key != event.row_key:
            return
        self._select(event.row_key.value)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        self._select(event.node.data)

    def on_tree_node_collapsed(self, event: Tree.NodeCollapsed[str]) -> None:
        if event.node.data is not None:
            self._collapsed.add(event.node.data)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[str]) -> None:
        self._collapsed.discard(event.node.data or "")

    # ---------------------------------------------------------------------------------- actions

    def action_sort(self, key: str) -> None:
        self.sort_key = key
        if self.snapshot is not None:
            self._draw_table()
        self._set_status("")

    def action_kill(self) -> None:
        pid = self.selected
        actor = self._actor(pid)
        if pid is None or actor is None:
            self.notify("select an actor first", severity="warning")
            return
        label = render.actor_label(actor)
        self.push_screen(ConfirmKill(pid, label.plain.split(" mailbox=")[0]), self._kill_answered)

    async def _kill_answered(self, yes: bool | None) -> None:
        pid = self.selected
        if not yes or pid is None:
            return
        try:
            await self.source.kill(pid)
        except (ControlError, OSError, TimeoutError) as exc:
            self.notify(f"kill {pid} failed: {exc}", severity="error")
            return
        self.notify(f"killed {pid}")
        await self.poll()

    async def action_quit(self) -> None:
        self.source.close()
        self.exit()
