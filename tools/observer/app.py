"""The interactive observer: a textual app over a :class:`~tools.observer.client.Source`.

Why textual rather than a plain ``rich.live.Live`` loop: the observer is navigated, not just watched.
It needs focus moving between a tree and a table (Tab), keyboard cursors that survive a refresh
every second, collapsible tree nodes, a modal confirmation before a kill, and a footer that lists the
keys; textual gives all of that on top of rich (the same renderables as ``--once``), runs over SSH in
any terminal, and can be driven headless in tests (``App.run_test()`` and its Pilot). With ``Live``
we would reimplement raw-mode key reading, focus and screens by hand. It is one pure-Python
dependency from the rich authors.

Keys (``?`` shows them): ``m``/``r``/``e``/``p`` sort the process table by mailbox, msgs/s, memory, pid;
``/`` filters the tree and the table by pid, name, class or supervisor path (``escape`` clears it);
``s`` stops the selected actor the orderly way and ``k`` kills it, each after a confirmation; ``t`` traces
its next :data:`TRACE_N` messages in and out (a live view until the trace ends); ``d`` opens the dead
letters (replay ``r``, drop ``x``); ``space``/``enter`` fold a tree node; ``tab`` moves focus; ``q`` quits.
On a node of a cluster the ``cluster`` panel lists every node (name, id, address, workers, actors, lease
left) and ``n`` shows the next one, its snapshot read through the attached node (read-only: acting on its
actors needs its own host's control socket).

The selection follows the actor, not the row: across refreshes, re-sorts, filters and restarts (a
restarted child is found again by its supervisor path, a named actor by its name), both cursors stay on it.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Any, ClassVar

from rich.console import Group
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static, Tree
from textual.widgets.tree import TreeNode

from kernel.node.control import ControlError

from . import render
from .client import Source

__all__ = ["Confirm", "ConfirmKill", "ConfirmStop", "DeadLettersScreen", "HelpScreen", "ObserverApp",
           "TraceScreen"]

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
#: Polls between two reads of every cluster node's counts (each asks every node for its whole snapshot).
CLUSTER_EVERY = 5
#: Messages one ``t`` traces (the kernel allows up to 1000): a look, as recon_trace's usual limit.
TRACE_N = 20


class Confirm(ModalScreen[bool]):
    """Ask before acting: ``y``/Enter on the action's button confirms, ``n``/Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "cancel"),
    ]
    DEFAULT_CSS = """
    Confirm { align: center middle; }
    Confirm > Vertical {
        width: 72; height: auto; border: thick $error; background: $surface; padding: 1 2;
    }
    Confirm Horizontal { height: auto; align: center middle; margin-top: 1; }
    Confirm Button { margin: 0 2; }
    """

    def __init__(self, verb: str, description: str, consequence: str) -> None:
        super().__init__()
        self.verb = verb
        self.description = description
        self.consequence = consequence

    def compose(self) -> ComposeResult:
        with Vertical():
            # Text, not a str: a child id such as "[cart]" must not be read as console markup.
            yield Label(Text(f"{self.verb} {self.description}?", style="bold"), id="question")
            yield Label(Text(self.consequence))
            with Horizontal():
                yield Button(f"{self.verb} (y)", variant="error", id="yes")
                yield Button("Cancel (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ConfirmKill(Confirm):
    """Ask before killing an actor (exit reason ``killed``)."""

    def __init__(self, pid: str, description: str) -> None:
        super().__init__(
            "Kill", description, "Exit reason 'killed': its supervisor decides if it comes back."
        )
        self.pid = pid


class ConfirmStop(Confirm):
    """Ask before stopping an actor the orderly way (``terminate`` runs, exit reason ``normal``)."""

    def __init__(self, pid: str, description: str) -> None:
        super().__init__(
            "Stop",
            description,
            "terminate() runs; reason 'normal' (a permanent child returns).",
        )
        self.pid = pid


class HelpScreen(ModalScreen[None]):
    """``?``: every key of the observer and what it does; any of ``? escape q`` closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("question_mark,escape,q", "close", "close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Static {
        width: 108; height: auto; border: thick $primary; background: $surface; padding: 1 2;
    }
    """
    KEYS = (
        ("?", "this help"),
        ("tab / shift+tab", "move focus: tree, process table"),
        ("up / down / home / end", "move the cursor; the details pane shows the actor under it"),
        ("space / enter", "fold or unfold a tree node"),
        ("/", "filter tree and table by pid, name, class or supervisor path; enter keeps it"),
        ("escape", "clear the filter"),
        ("m r e p", "sort the process table by mailbox, msgs/s, memory, pid"),
        ("s", "stop the selected actor the orderly way (asks first)"),
        ("k", "kill the selected actor (asks first)"),
        ("t", f"trace the selected actor's next {TRACE_N} messages in and out; escape goes back"),
        ("d", "dead letters: r replays the selected one, x drops it, escape goes back"),
        ("n", "a cluster node: show the next node of its cluster, read through this one"),
        ("q", "quit"),
    )

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("pyotp observer: keys\n\n", style="bold")
        for key, what in self.KEYS:
            text.append(f"{key:>24}", style="bold cyan")
            text.append(f"  {what}\n")
        text.append(
            "\nThe cursor follows the actor (by supervisor path, or name) across refreshes and restarts."
            "\nWorkers that did not answer the last snapshot show 'unresponsive', with their loop lag.",
            style="dim",
        )
        yield Static(text, id="help")

    def action_close(self) -> None:
        self.dismiss(None)


class DeadLettersScreen(Screen[None]):
    """Quarantined messages of the node's state file, with replay (``r``) and drop (``x``), each confirmed."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,d", "back", "back"),
        Binding("r", "act('replay')", "replay"),
        Binding("x", "act('drop')", "drop"),
        Binding("g", "reload", "refresh"),
    ]
    DEFAULT_CSS = """
    #letters { height: 1fr; border: round $primary; }
    #letters-status { height: 1; background: $boost; }
    """

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source
        self.letters: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Header()
        table: DataTable[Text] = DataTable(id="letters", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("loading…", id="letters-status")
        yield Footer()

    async def on_mount(self) -> None:
        table: DataTable[Text] = self.query_one("#letters", DataTable)
        for col in ("id", "key", "count", "created", "error", "message"):
            table.add_column(col, key=col)
        table.focus()
        await self.action_reload()

    async def action_reload(self) -> None:
        status = self.query_one("#letters-status", Static)
        try:
            self.letters = await self.source.dead_letters()
        except (ControlError, OSError, TimeoutError) as exc:
            status.update(Text(f"cannot list dead letters: {exc}", style="red"))
            return
        table: DataTable[Text] = self.query_one("#letters", DataTable)
        table.clear()
        for letter, cells in zip(self.letters, render.dead_letter_rows(self.letters), strict=True):
            table.add_row(*cells, key=str(letter["id"]))
        table.border_title = f"dead letters ({len(self.letters)})"
        status.update("no dead letters" if not self.letters else "r replay to its actor, x drop, g refresh")

    def _current(self) -> dict[str, Any] | None:
        table: DataTable[Text] = self.query_one("#letters", DataTable)
        if not self.letters or not table.is_valid_row_index(table.cursor_row):
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((d for d in self.letters if str(d["id"]) == key), None)

    def action_act(self, op: str) -> None:
        letter = self._current()
        if letter is None:
            self.notify("no dead letter selected", severity="warning")
            return
        verb, consequence = (
            ("Replay", "Lifts the quarantine for this message and sends it to the live actor with its key.")
            if op == "replay"
            else ("Drop", "Deletes the quarantined message for good.")
        )

        async def answered(yes: bool | None) -> None:
            if yes:
                await self._apply(op, int(letter["id"]))

        question = Confirm(verb, f"dead letter {letter['id']} ({letter.get('key')})", consequence)
        self.app.push_screen(question, answered)

    async def _apply(self, op: str, letter_id: int) -> None:
        status = self.query_one("#letters-status", Static)
        try:
            result = await (self.source.replay(letter_id) if op == "replay" else self.source.drop(letter_id))
        except (ControlError, OSError, TimeoutError) as exc:
            status.update(Text(f"{op} {letter_id} failed: {exc}", style="red"))
            return
        answer = result.get("answer")
        self.notify(f"{op} {letter_id} done" + (f": {answer}" if answer is not None else ""))
        await self.action_reload()

    def action_back(self) -> None:
        self.app.pop_screen()


class TraceScreen(Screen[None]):
    """A live message trace of one actor: starts a trace of ``n`` on the node, then shows its events as
    they arrive (read every ``interval`` seconds; None: on ``g`` only) until it ends: ``n`` messages
    traced, or the actor exited. Leaving the screen does not stop the trace; it is bounded anyway."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,t", "back", "back"),
        Binding("g", "reload", "refresh"),
    ]
    DEFAULT_CSS = """
    #trace { height: 1fr; border: round $primary; }
    #trace-status { height: 1; background: $boost; }
    """

    def __init__(self, source: Source, pid: str, description: str, n: int = TRACE_N,
                 interval: float | None = 1.0) -> None:
        super().__init__()
        self.source = source
        self.pid = pid
        self.description = description
        self.n = n
        self.interval = interval
        self.traced: dict[str, Any] | None = None
        self.error: str | None = None
        self._timer: Any = None

    def compose(self) -> ComposeResult:
        yield Header()
        table: DataTable[Text] = DataTable(id="trace", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("starting the trace…", id="trace-status")
        yield Footer()

    async def on_mount(self) -> None:
        table: DataTable[Text] = self.query_one("#trace", DataTable)
        for col in ("time", "dir", "kind", "peer", "message"):
            table.add_column(col, key=col)
        table.border_title = f"trace of {self.description}"
        table.focus()
        try:
            await self.source.trace(self.pid, self.n)
        except (ControlError, OSError, TimeoutError) as exc:
            self._fail(f"cannot trace {self.pid}: {exc}")
            return
        await self.action_reload()
        if self.interval is not None and self.ended is None:
            self._timer = self.set_interval(self.interval, self.action_reload)

    @property
    def ended(self) -> str | None:
        return None if self.traced is None else self.traced.get("ended")

    def _fail(self, message: str) -> None:
        self.error = message
        self.query_one("#trace-status", Static).update(Text(message, style="red"))
        self._stop_timer()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    async def action_reload(self) -> None:
        if self.error is not None:
            return
        try:
            log = await self.source.trace_log(self.pid)
        except ControlError as exc:
            self._fail(f"trace of {self.pid}: {exc.message}")
            return
        except (OSError, TimeoutError) as exc:
            self.query_one("#trace-status", Static).update(Text(f"node unreachable: {exc}", style="red"))
            return
        events = list(log.get("events") or ())
        table: DataTable[Text] = self.query_one("#trace", DataTable)
        for cells in render.trace_rows(events[table.row_count:]):  # events only ever grow
            table.add_row(*cells)
        self.traced = log
        summary = render.trace_summary(log)
        table.border_title = f"trace of {self.description}: {summary}"
        self.query_one("#trace-status", Static).update(
            summary + (" | g refresh" if self.ended is None else "") + " | escape back")
        if self.ended is not None:
            self._stop_timer()

    def action_back(self) -> None:
        self._stop_timer()
        self.app.pop_screen()


class ObserverApp(App[None]):
    """Live view of one node: supervision trees, workers, processes, the selected actor; kill with care.

    Polls ``source.snapshot()`` every ``interval`` seconds (``interval=None``: only when :meth:`poll` is
    called, as tests do). A failing poll shows the error and keeps the last view; the next poll retries.
    """

    TITLE = "pyotp observer"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help"),
        # A priority binding: the app takes `/` before the focused widget is handed the keys typed after it
        # in the same burst (a paste, tmux send-keys), so those reach the filter box, not the main view.
        Binding("slash", "filter", "filter", priority=True),
        Binding("escape", "clear_filter", "clear filter", show=False),
        Binding("s", "stop", "stop"),
        Binding("k", "kill", "kill"),
        Binding("t", "trace", "trace"),
        Binding("d", "dead_letters", "dead letters"),
        Binding("m", "sort('mailbox')", "by mailbox"),
        Binding("r", "sort('rate')", "by msgs/s"),
        Binding("e", "sort('memory')", "by memory"),
        Binding("p", "sort('pid')", "by pid"),
        Binding("n", "next_node", "next node"),
    ]
    DEFAULT_CSS = """
    #top { height: 3fr; }
    #tree { width: 1fr; border: round $primary; }
    #side { width: 1fr; min-width: 86; }
    #cluster { height: auto; border: round $primary; display: none; }
    #workers { height: auto; border: round $primary; }
    #details { height: 1fr; border: round $primary; overflow-y: auto; }
    #procs { height: 2fr; border: round $primary; }
    #status { height: 1; background: $boost; }
    #filter { height: 3; border: round $accent; display: none; }
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
        self._selected_name: str | None = None
        self.selected_state: dict[str, Any] | None = None
        self._collapsed: set[str] = set()
        self._tree_shape: object = None
        self._tree_nodes: dict[str, TreeNode[str]] = {}
        self._polling = False
        self.filter = ""
        #: Per cluster node, its live workers and actors (control op ``cluster``), every CLUSTER_EVERY polls.
        self.cluster_counts: dict[str, dict[str, Any]] = {}
        self._polls = 0

    # ----------------------------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="top"):
            tree: Tree[str] = Tree("connecting…", id="tree")
            tree.show_root = True
            yield tree
            with Vertical(id="side"):
                yield Static("", id="cluster")
                yield Static("", id="workers")
                yield Static("select an actor", id="details")
        table: DataTable[Text] = DataTable(id="procs", cursor_type="row", zebra_stripes=True)
        yield table
        yield Input(placeholder="filter: part of a pid, name, class or supervisor path", id="filter")
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
            if snapshot.get("cluster") and self._polls % CLUSTER_EVERY == 0:
                with contextlib.suppress(ControlError, OSError, TimeoutError):
                    nodes = (await self.source.cluster())["members"]
                    self.cluster_counts = {m["name"]: m for m in nodes}
            self._polls += 1
            self.rates = render.compute_rates(self.snapshot, snapshot)
            self.snapshot = snapshot
            for index, rate in self.rates.workers.items():
                self.history.setdefault(index, deque(maxlen=HISTORY)).append(rate)
            self._draw()
            self._set_status("")
            if self._actor(self.selected) is not None:  # gone, or on a worker that did not answer: skip
                await self._load_state(self.selected or "")
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
        # Where it is now, from its worker's sampler thread (which answers even if the loop is blocked).
        with contextlib.suppress(ControlError, OSError, TimeoutError):
            state["stack"] = await self.source.stack(pid)
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
        if self.filter:
            line += f" | filter {self.filter!r}"
        if snap:
            silent = [str(w.get("index")) for w in render.unresponsive_workers(snap)]
            if silent:
                line += f" | worker {', '.join(silent)} unresponsive"
        line += " | ? help"
        if message:
            line += f" | {message}"
        self.query_one("#status", Static).update(line)

    def _follow_restart(self) -> None:
        """If the selected actor is gone but one with its key (supervisor path), or else its registered
        name, exists, select that one.

        So after a kill the view follows the child its supervisor restarted, as one would watch it.
        """
        if self.selected is None or self._actor(self.selected) is not None:
            return
        if self._selected_key is None and self._selected_name is None:
            return
        assert self.snapshot is not None
        field, value = ("key", self._selected_key) if self._selected_key is not None else (
            "name", self._selected_name)
        for actor in self.snapshot.get("actors", ()):
            if actor.get(field) == value:
                self.selected = actor["pid"]
                self.selected_state = None
                return

    def _draw(self) -> None:
        assert self.snapshot is not None
        self._follow_restart()
        history = {i: list(h)[-14:] for i, h in self.history.items()}  # as wide as its header
        table = render.workers_table(self.snapshot, self.rates, history)
        problems = render.worker_problems(self.snapshot)
        self.query_one("#workers", Static).update(
            Group(table, Text("\n".join(problems), style="bold red")) if problems else table
        )
        cluster = render.cluster_table(self.snapshot, self.cluster_counts, self.node)
        panel = self.query_one("#cluster", Static)
        panel.display = cluster is not None
        if cluster is not None:
            panel.update(cluster)
            shown = self.snapshot.get("node")
            self.sub_title = self.node if shown in (None, self.node) else f"{shown} (through {self.node})"
        self._draw_tree()
        self._draw_table()
        self._draw_details()

    def _draw_tree(self) -> None:
        assert self.snapshot is not None
        tree: Tree[str] = self.query_one("#tree", Tree)
        roots, children = render.tree_structure(self.snapshot)
        index = {a["pid"]: a for a in self.snapshot.get("actors", ())}
        if self.filter:
            # Keep the actors that match and every ancestor of one, so a match is shown where it lives.
            keep: dict[str, bool] = {}

            def visit(pid: str) -> bool:
                kept = render.matches(index[pid], self.filter)
                for kid in children[pid]:
                    kept = visit(kid) or kept
                keep[pid] = kept
                return kept

            for root in roots:
                visit(root)
            roots = [pid for pid in roots if keep[pid]]
            children = {pid: [k for k in kids if keep.get(k)] for pid, kids in children.items()}
        tree.root.set_label(render.node_label(self.snapshot))
        shape = (roots, {pid: tuple(kids) for pid, kids in children.items()})
        if shape == self._tree_shape:
            for pid, node in self._tree_nodes.items():
                node.set_label(render.actor_label(index[pid]))
            self._tree_follow(tree)
            return
        # The structure changed: rebuild, keeping what the user folded and the selected actor (which
        # _follow_restart has already moved to a restarted child's new pid).
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
        self._tree_follow(tree)

    def _tree_follow(self, tree: Tree[str], again: bool = True) -> None:
        """Put the tree's cursor on the selected actor, if the tree shows it (not folded away).

        A rebuilt tree numbers its lines only when it next renders: then the move is retried once.
        """
        node = self._tree_nodes.get(self.selected or "")
        if node is None or tree.cursor_node is node:
            return
        if node.line >= 0:
            tree.move_cursor(node)
        elif again:
            self.call_after_refresh(self._tree_follow, tree, False)

    def _draw_table(self) -> None:
        assert self.snapshot is not None
        table: DataTable[Text] = self.query_one("#procs", DataTable)
        shown = [a for a in self.snapshot.get("actors", ()) if render.matches(a, self.filter)]
        ordered = render.sort_actors(shown, self.sort_key, self.rates)[:TABLE_LIMIT]
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
            f" (top {len(wanted)} of {len(shown)})" if len(wanted) < len(shown) else ""
        ) + (f" matching {self.filter!r}" if self.filter else "")

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
        actor = self._actor(pid) or {}
        self._selected_key = actor.get("key")
        self._selected_name = actor.get("name")
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

    def _describe_selected(self) -> tuple[str, str] | None:
        pid = self.selected
        actor = self._actor(pid)
        if pid is None or actor is None:
            self.notify("select an actor first", severity="warning")
            return None
        status = f" {actor.get('status', '?')}"
        label = render.actor_label(actor).plain
        return pid, label[: label.index(status)] if status in label else label

    def action_kill(self) -> None:
        picked = self._describe_selected()
        if picked is not None:
            self.push_screen(ConfirmKill(*picked), self._kill_answered)

    def action_stop(self) -> None:
        picked = self._describe_selected()
        if picked is not None:
            self.push_screen(ConfirmStop(*picked), self._stop_answered)

    async def _kill_answered(self, yes: bool | None) -> None:
        await self._act("kill", yes)

    async def _stop_answered(self, yes: bool | None) -> None:
        await self._act("stop", yes)

    async def _act(self, op: str, yes: bool | None) -> None:
        pid = self.selected
        if not yes or pid is None:
            return
        try:
            await (self.source.kill(pid) if op == "kill" else self.source.stop(pid))
        except (ControlError, OSError, TimeoutError) as exc:
            self.notify(f"{op} {pid} failed: {exc}", severity="error")
            return
        self.notify(f"{'killed' if op == 'kill' else 'stopped'} {pid}")
        await self.poll()

    def action_trace(self) -> None:
        picked = self._describe_selected()
        if picked is not None:
            self.push_screen(TraceScreen(self.source, *picked, interval=self.interval))

    async def action_next_node(self) -> None:
        """Show the next node of the cluster (in id order, back to the attached one), read through the
        attached node; the rates and history start afresh, as for a new node."""
        part = (self.snapshot or {}).get("cluster")
        if not part:
            self._set_status("not a cluster node: nothing else to show")
            return
        names = [m["name"] for m in part["members"]]
        shown = (self.snapshot or {}).get("node")
        following = names[(names.index(shown) + 1) % len(names)] if shown in names else self.node
        self.source.view(following)
        self.snapshot, self.selected, self.selected_state = None, None, None
        self.history.clear()
        self._polls = 0
        await self.poll()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_dead_letters(self) -> None:
        self.push_screen(DeadLettersScreen(self.source))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`/` opens the filter only on the main view, and is typed as text once the filter has focus."""
        if action == "filter":
            return len(self.screen_stack) == 1 and not isinstance(self.focused, Input)
        return True

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        # At once, not through focus()'s call_later: keys typed in the same burst as `/` (a paste, a
        # fast typist, tmux send-keys) are already queued and would reach the main view's bindings.
        self.screen.set_focus(box)

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.display = False
        self._set_filter("")
        self.query_one("#procs", DataTable).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self._set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            event.input.display = bool(event.value)  # keep showing what filters the view
            self.query_one("#procs", DataTable).focus()

    def _set_filter(self, pattern: str) -> None:
        if pattern == self.filter:
            return
        self.filter = pattern
        if self.snapshot is not None:
            selected = self._actor(self.selected)
            if selected is None or not render.matches(selected, pattern):
                # What the keys act on must be in view: the first match, not an actor filtered away.
                shown = [a for a in self.snapshot.get("actors", ()) if render.matches(a, pattern)]
                first = render.sort_actors(shown, self.sort_key, self.rates)[:1]
                if first:
                    self._select(first[0]["pid"])
            self._draw_tree()
            self._draw_table()
        self._set_status("")

    async def action_quit(self) -> None:
        self.source.close()
        self.exit()
