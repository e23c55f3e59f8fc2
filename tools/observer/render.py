"""Pure rendering: a snapshot dict (the schema of ``node.snapshot()``) in, rich renderables out.

Nothing here does I/O, reads a clock or keeps state, so a test renders a hand-made snapshot with
``Console(file=StringIO(), width=120)`` and compares text. Rates (msgs/s) need two snapshots; they are
computed here too, by :func:`compute_rates`, from a previous and a current snapshot.

Every field is read with a default: an observer must show what it can of a snapshot from a slightly
older or newer kernel rather than crash on it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

__all__ = [
    "SORT_KEYS",
    "Rates",
    "actor_details",
    "actor_label",
    "child_id",
    "compute_rates",
    "dead_letter_rows",
    "dead_letters_table",
    "format_bytes",
    "format_lag",
    "format_rate",
    "matches",
    "node_label",
    "pid_sort_key",
    "process_rows",
    "process_table",
    "render_once",
    "short_class",
    "sort_actors",
    "sparkline",
    "stack_text",
    "supervision_tree",
    "trace_rows",
    "trace_summary",
    "tree_structure",
    "unresponsive_workers",
    "where",
    "worker_problems",
    "workers_table",
]

Snapshot = Mapping[str, Any]
Actor = Mapping[str, Any]

#: Process-table orders, as the keys the app binds: mailbox length, messages/s, memory, pid.
SORT_KEYS = ("mailbox", "rate", "memory", "pid")

_STATUS_STYLE = {"running": "bold green", "waiting": "dim", "exiting": "bold red"}
_SPARK = "▁▂▃▄▅▆▇█"
_PID_NUMBERS = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Rates:
    """Per-second rates between two snapshots: per worker index (messages in) and per actor pid."""

    workers: Mapping[int, float] = field(default_factory=dict)
    actors: Mapping[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- helpers


def format_bytes(n: float | None) -> str:
    """``31000000`` -> ``"29.6 MiB"``; ``None`` -> ``"-"``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    return f"{rate:.0f}" if rate >= 10 else f"{rate:.1f}"


def format_lag(lag: float | None) -> Text:
    """A worker's loop lag: milliseconds, or seconds in red past the node's 1 s warning."""
    if not isinstance(lag, int | float):
        return Text("-")
    if lag < 1.0:
        return Text(f"{lag * 1000:.0f} ms")
    return Text(f"{lag:.1f} s", style="bold red")


def sparkline(values: Sequence[float], width: int = 20) -> str:
    """The last ``width`` values as block characters, scaled to the largest (all zero: a flat line)."""
    tail = list(values)[-width:]
    if not tail:
        return ""
    top = max(tail)
    if top <= 0:
        return _SPARK[0] * len(tail)
    return "".join(_SPARK[min(len(_SPARK) - 1, int(v / top * (len(_SPARK) - 1) + 0.5))] for v in tail)


def pid_sort_key(pid: str) -> tuple[int, ...]:
    """``"<1.42>"`` sorts after ``"<1.9>"``; the node context (``<node.N>``) first."""
    if pid.startswith("<node."):
        return (-1, *(int(x) for x in _PID_NUMBERS.findall(pid)))
    return tuple(int(x) for x in _PID_NUMBERS.findall(pid))


def short_class(name: str | None) -> str:
    """``"examples.tickets.Vault"`` -> ``"Vault"``."""
    return (name or "?").rsplit(".", 1)[-1]


def where(actor: Actor) -> str:
    """The process an actor lives in: its worker index, or ``node`` for the node process (index -1),
    which hosts the supervisors."""
    worker = actor.get("worker", "?")
    return "node" if worker == -1 else str(worker)


def child_id(actor: Actor) -> str | None:
    """The supervisor's child id: the last part of the actor's supervisor path (its ``key``)."""
    key = actor.get("key")
    if not key or "/" not in key:
        return key or None
    return str(key).rsplit("/", 1)[-1]


def _index(snapshot: Snapshot) -> dict[str, Actor]:
    return {a["pid"]: a for a in snapshot.get("actors", ()) if "pid" in a}


def compute_rates(previous: Snapshot | None, current: Snapshot) -> Rates:
    """Messages per second between two snapshots of the same node (empty if there is no usable previous).

    A worker whose counters went down was restarted: its rate is unknown, not negative, so it is left out.
    """
    if previous is None or previous.get("node") != current.get("node"):
        return Rates()
    dt = float(current.get("time", 0.0)) - float(previous.get("time", 0.0))
    if dt <= 0:
        return Rates()
    before_w = {w.get("index"): w for w in previous.get("workers", ())}
    workers: dict[int, float] = {}
    for w in current.get("workers", ()):
        old = before_w.get(w.get("index"))
        if old is not None and old.get("incarnation") == w.get("incarnation"):
            delta = w.get("msgs_in", 0) - old.get("msgs_in", 0)
            if delta >= 0:
                workers[int(w["index"])] = delta / dt
    before_a = _index(previous)
    actors: dict[str, float] = {}
    for pid, a in _index(current).items():
        old_a = before_a.get(pid)
        if old_a is not None:
            delta = a.get("handled", 0) - old_a.get("handled", 0)
            if delta >= 0:
                actors[pid] = delta / dt
    return Rates(workers, actors)


def sort_actors(actors: Iterable[Actor], key: str, rates: Rates | None = None) -> list[Actor]:
    """Busiest first for ``mailbox``/``rate``/``memory`` (ties by pid); ascending pid for ``pid``."""
    if key not in SORT_KEYS:
        raise ValueError(f"key must be one of {SORT_KEYS}, got {key!r}")
    by_pid = sorted(actors, key=lambda a: pid_sort_key(a.get("pid", "")))
    if key == "pid":
        return by_pid
    actor_rates = rates.actors if rates is not None else {}

    def metric(a: Actor) -> float:
        if key == "rate":
            return actor_rates.get(a.get("pid", ""), 0.0)
        return float(a.get(key) or 0)

    return sorted(by_pid, key=metric, reverse=True)  # stable: equal metrics stay in pid order


# -------------------------------------------------------------------------------------------- tree


def actor_label(actor: Actor) -> Text:
    """One tree line: pid, name (or child id), class, worker, status; mailbox and restarts when not 0.

    Short on purpose (the numbers are in the process table), so that a line fits the tree's half of a
    160-column terminal.
    """
    text = Text()
    text.append(str(actor.get("pid", "?")), style="bold cyan")
    name = actor.get("name")
    cid = child_id(actor)
    if name:
        text.append(f" {name}", style="bold")
    if cid and cid != name:
        text.append(f" [{cid}]", style="yellow")
    text.append(f" {short_class(actor.get('class'))}", style="magenta")
    if actor.get("supervisor"):
        text.append(" sup", style="blue")
    place = where(actor)
    text.append(" node" if place == "node" else f" w{place}")
    status = str(actor.get("status", "?"))
    text.append(f" {status}", style=_STATUS_STYLE.get(status, ""))
    mailbox = int(actor.get("mailbox") or 0)
    if mailbox:
        text.append(f" mailbox={mailbox}", style="bold yellow")
    restarts = int(actor.get("restarts") or 0)
    if restarts:
        text.append(f" restarts={restarts}", style="bold red")
    return text


def matches(actor: Actor, pattern: str) -> bool:
    """The ``/`` filter: ``pattern`` (case-insensitive) in the pid, name, class, or supervisor path."""
    if not pattern:
        return True
    needle = pattern.lower()
    fields = (actor.get("pid"), actor.get("name"), actor.get("class"), actor.get("key"))
    return any(needle in str(f).lower() for f in fields if f)


def unresponsive_workers(snapshot: Snapshot) -> list[Mapping[str, Any]]:
    """The workers that are down or did not send their part of this snapshot in time."""
    return [w for w in snapshot.get("workers", ())
            if not w.get("alive", True) or w.get("responsive", True) is False]


def worker_problems(snapshot: Snapshot) -> list[str]:
    """One line per worker that is down or did not answer (``--once`` prints them instead of failing)."""
    lines = []
    for w in unresponsive_workers(snapshot):
        lag = w.get("lag")
        behind = f", its loop is {lag:.1f} s behind" if isinstance(lag, int | float) else ""
        if not w.get("alive", True):
            lines.append(f"worker {w.get('index')} is down (being replaced); its actors are not listed")
            continue
        lines.append(f"worker {w.get('index')} (os pid {w.get('os_pid', '?')}) did not answer{behind}: "
                     "its actors are not listed")
        if w.get("running"):
            stack = list(w.get("stack") or ())
            lines.append(f"  its loop is held by {w['running']}" + (f" at {stack[-1]}" if stack else ""))
    return lines


def tree_structure(snapshot: Snapshot) -> tuple[list[str], dict[str, list[str]]]:
    """(roots, children by pid): the supervision forest, from the actors' ``children`` and ``parent``.

    A supervisor's ``children`` come first, in its order; then actors that name it as ``parent`` but are
    not in that list (plain spawns), by pid. Roots are actors whose parent is not an actor here (the
    node context, or gone). Every actor appears exactly once, even if the fields disagree or loop.
    """
    index = _index(snapshot)
    children: dict[str, list[str]] = {pid: [] for pid in index}
    placed: set[str] = set()
    for pid in sorted(index, key=pid_sort_key):
        for child in index[pid].get("children") or ():
            if child in index and child not in placed and child != pid:
                children[pid].append(child)
                placed.add(child)
    for pid in sorted(index, key=pid_sort_key):
        parent = index[pid].get("parent")
        if pid not in placed and parent in index and parent != pid:
            children[parent].append(pid)
            placed.add(pid)
    roots = [pid for pid in sorted(index, key=pid_sort_key) if pid not in placed]
    # Bad data can make a cycle that no root reaches: cut it at its lowest pid, which becomes a root.
    reachable: set[str] = set()

    def mark(start: str) -> None:
        stack = [start]
        while stack:
            pid = stack.pop()
            if pid not in reachable:
                reachable.add(pid)
                stack.extend(children[pid])

    for root in roots:
        mark(root)
    for pid in sorted(index, key=pid_sort_key):
        if pid not in reachable:
            for siblings in children.values():
                if pid in siblings:
                    siblings.remove(pid)
            roots.append(pid)
            mark(pid)
    return roots, children


def node_label(snapshot: Snapshot) -> Text:
    text = Text()
    text.append(f"node {snapshot.get('node', '?')}", style="bold")
    text.append(f" (os pid {snapshot.get('os_pid', '?')})")
    started, now = snapshot.get("started"), snapshot.get("time")
    if isinstance(started, int | float) and isinstance(now, int | float):
        text.append(f" up {_duration(now - started)}")
    text.append(f", {len(snapshot.get('workers', ()))} workers, {len(snapshot.get('actors', ()))} actors")
    return text


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def supervision_tree(snapshot: Snapshot, *, max_children: int = 50) -> Tree:
    """The supervision forest under one node label; at most ``max_children`` shown per parent."""
    index = _index(snapshot)
    roots, children = tree_structure(snapshot)
    tree = Tree(node_label(snapshot), guide_style="dim")

    def add(branch: Tree, pids: list[str]) -> None:
        for pid in pids[:max_children]:
            sub = branch.add(actor_label(index[pid]))
            add(sub, children[pid])
        if len(pids) > max_children:
            branch.add(Text(f"… {len(pids) - max_children} more", style="dim italic"))

    add(tree, roots)
    return tree


# ------------------------------------------------------------------------------------------ tables


def workers_table(
    snapshot: Snapshot, rates: Rates | None = None, history: Mapping[int, Sequence[float]] | None = None
) -> Table:
    """Index, OS pid, CPU %, RSS, actors, msgs/s (and a sparkline of past rates when ``history`` is given).

    Without ``rates`` the msgs/s column is the average since the node started (one snapshot is all
    there is, as in ``--once``).
    """
    live = rates is not None
    table = Table(
        title="workers", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True
    )
    for header in ("#", "os pid", "cpu %", "rss", "actors", "msgs/s" if live else "msgs/s avg"):
        table.add_column(header, justify="right", no_wrap=True)
    # The heartbeat's loop lag, when the node reports it (older nodes and hand-made snapshots do not).
    lagged = any("lag" in w for w in snapshot.get("workers", ()))
    if lagged:
        table.add_column("loop lag", justify="right", no_wrap=True)
    if history is not None:
        table.add_column("msgs/s history", no_wrap=True)
    uptime = float(snapshot.get("time", 0.0)) - float(snapshot.get("started", 0.0))
    for w in sorted(snapshot.get("workers", ()), key=lambda w: w.get("index", 0)):
        index = int(w.get("index", -1))
        if live:
            rate = rates.workers.get(index) if rates is not None else None
        else:
            rate = w.get("msgs_in", 0) / uptime if uptime > 0 else None
        alive = w.get("alive", True)
        cpu = w.get("cpu_percent")
        if not alive:
            os_pid: RenderableType = Text("down", style="bold red")
        elif w.get("responsive", True) is False:
            os_pid = Text(f"{w.get('os_pid', '-')} unresponsive", style="bold red")
        else:
            os_pid = str(w.get("os_pid", "-"))
        row: list[RenderableType] = [
            str(index),
            os_pid,
            f"{cpu:.1f}" if isinstance(cpu, int | float) else "-",
            format_bytes(w.get("rss")),
            str(w.get("actors", 0)),
            format_rate(rate),
        ]
        if lagged:
            row.append(format_lag(w.get("lag")))
        if history is not None:
            row.append(Text(sparkline(history.get(index, ())), style="green"))
        table.add_row(*row)
    return table


def process_table(
    snapshot: Snapshot,
    rates: Rates | None = None,
    *,
    sort: str = "mailbox",
    limit: int | None = None,
) -> Table:
    """Pid, name, class, worker, status, mailbox, handled, msgs/s, memory, restarts, child id.

    Sorted by ``sort`` (see :data:`SORT_KEYS`); at most ``limit`` rows, with the total in the title.
    Without ``rates`` (one snapshot, as in ``--once``) there is no msgs/s column.
    """
    actors = sort_actors(snapshot.get("actors", ()), sort, rates)
    shown = actors if limit is None else actors[:limit]
    title = f"processes by {sort}" + (
        f" (top {len(shown)} of {len(actors)})" if len(shown) < len(actors) else ""
    )
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True
    )
    # Numbers never shrink below their header; the text columns give way first (ellipsis).
    table.add_column("pid", no_wrap=True, style="cyan", min_width=5)
    table.add_column("name", overflow="ellipsis", max_width=16, no_wrap=True)
    table.add_column("class", overflow="ellipsis", max_width=24, no_wrap=True)
    table.add_column("w", justify="right", no_wrap=True, min_width=1)
    table.add_column("status", no_wrap=True, min_width=7)
    for header in ("mailbox", "handled", *(("msgs/s",) if rates is not None else ()), "memory", "restarts"):
        table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
    table.add_column("child id", overflow="ellipsis", max_width=16, no_wrap=True)
    for row in process_rows(shown, rates):
        table.add_row(*(row if rates is not None else row[:7] + row[8:]))
    return table


def process_rows(actors: Iterable[Actor], rates: Rates | None = None) -> list[list[Text]]:
    """The cells of :func:`process_table`, shared with the interactive table so both read the same."""
    actor_rates = rates.actors if rates is not None else None
    rows = []
    for a in actors:
        status = str(a.get("status", "?"))
        mailbox = int(a.get("mailbox") or 0)
        restarts = int(a.get("restarts") or 0)
        rate = actor_rates.get(a.get("pid", "")) if actor_rates is not None else None
        rows.append(
            [
                Text(str(a.get("pid", "?"))),
                Text(str(a.get("name") or "")),
                Text(short_class(a.get("class")) + (" (sup)" if a.get("supervisor") else "")),
                Text(where(a), justify="right"),
                Text(status, style=_STATUS_STYLE.get(status, "")),
                Text(str(mailbox), style="bold yellow" if mailbox else "", justify="right"),
                Text(str(a.get("handled", 0)), justify="right"),
                Text(format_rate(rate), justify="right"),
                Text(format_bytes(a.get("memory")), justify="right"),
                Text(str(restarts), style="bold red" if restarts else "", justify="right"),
                Text(child_id(a) or ""),
            ]
        )
    return rows


def actor_details(actor: Actor, state: Mapping[str, Any] | None = None, *, max_repr: int = 2000) -> Text:
    """A selected actor: identity, supervisor path, links, monitors, and its state repr (truncated)."""
    text = Text()
    text.append(f"{actor.get('pid', '?')}", style="bold cyan")
    if actor.get("name"):
        text.append(f"  {actor['name']}", style="bold")
    text.append(f"\nclass     {actor.get('class', '?')}")
    text.append(f"\nkey       {actor.get('key') or '-'}")
    text.append(f"\nparent    {actor.get('parent') or '-'}")
    text.append(f"\nworker    {where(actor)}   status {actor.get('status', '?')}")
    text.append(f"\nmailbox   {actor.get('mailbox', 0)}   handled {actor.get('handled', 0)}")
    text.append(f"   restarts {actor.get('restarts', 0)}   memory {format_bytes(actor.get('memory'))}")
    links = actor.get("links") or []
    text.append(f"\nlinks     {', '.join(map(str, links)) if links else '-'}")
    text.append(f"\nmonitors  {actor.get('monitors', 0)}")
    if actor.get("supervisor"):
        kids = actor.get("children") or []
        text.append(f"\nchildren  {', '.join(map(str, kids)) if kids else '-'}")
    exits = actor.get("exits") or []
    if exits:
        when, reason = exits[-1]
        text.append(f"\nlast exit {reason}  ({_clock(when)})", style="red")
        text.append("\nhistory   ", style="bold")
        text.append("  ".join(f"{_clock(t)} {r}" for t, r in exits[-5:]))
    # Short, live things first (where it is, what waits), the state last: it can be long.
    if state is not None and "error" not in state:
        text.append_text(stack_text(state.get("stack")))
        queue = state.get("queue")
        if queue is not None:
            queued = int(state.get("queued", len(queue)))
            text.append(f"\n\nqueue ({queued} message{'s' if queued != 1 else ''})", style="bold")
            for item in queue:
                text.append(f"\n  {item}")
            if queued > len(queue):
                text.append(f"\n  … {queued - len(queue)} more", style="dim")
    text.append("\n\nstate\n", style="bold")
    if state is None:
        text.append("(loading…)", style="dim")
    elif "error" in state:
        text.append(f"unavailable: {state['error']}", style="red")
    else:
        shown = str(state.get("repr", ""))
        if len(shown) > max_repr:
            shown = shown[:max_repr] + f"… ({len(shown) - max_repr} more characters)"
        text.append(shown)
    return text


def stack_text(sample: Mapping[str, Any] | None, *, frames: int = 12) -> Text:
    """A sampled stack (the ``stack`` op): where the actor is ("running" holds the loop) and its innermost
    ``frames`` frames, innermost last."""
    text = Text()
    if not sample:
        return text
    where_ = str(sample.get("where", "?"))
    lines = list(sample.get("stack") or ())
    text.append(f"\n\nstack ({where_})", style="bold red" if where_ == "running" else "bold")
    if not lines:
        text.append(" no handler in progress", style="dim")
    if len(lines) > frames:
        text.append(f"\n  … {len(lines) - frames} outer frames", style="dim")
    for line in lines[-frames:]:
        path, sep, rest = str(line).partition(":")
        short = "/".join(path.split("/")[-2:]) if "/" in path else path  # the pane is narrow
        text.append(f"\n  {short}{sep}{rest}")
    return text


def _clock(when: Any) -> str:
    """A wall-clock time as ``HH:MM:SS`` (UTC): when an exit happened."""
    if not isinstance(when, int | float):
        return "?"
    return time.strftime("%H:%M:%S", time.gmtime(when))


def dead_letters_table(letters: Sequence[Mapping[str, Any]]) -> Table:
    """Quarantined messages: id, key, times seen, when, the error, the message (reprs capped)."""
    table = Table(title=f"dead letters ({len(letters)})", title_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False)
    for header in ("id", "key", "count", "created"):
        table.add_column(header, no_wrap=True)
    table.add_column("error", overflow="ellipsis", max_width=40, no_wrap=True)
    table.add_column("message", overflow="ellipsis", max_width=50, no_wrap=True)
    for row in dead_letter_rows(letters):
        table.add_row(*row)
    return table


def dead_letter_rows(letters: Sequence[Mapping[str, Any]]) -> list[list[Text]]:
    """The cells of :func:`dead_letters_table`, shared with the interactive view."""
    return [[Text(str(d.get("id", "?"))), Text(str(d.get("key", ""))), Text(str(d.get("count", 1))),
             Text(_clock(d.get("created"))), Text(str(d.get("error", "")), style="red"),
             Text(str(d.get("message", "")))] for d in letters]


def trace_rows(events: Sequence[Mapping[str, Any]]) -> list[list[Text]]:
    """The cells of a message trace (the ``trace_log`` op): time (UTC, ms), direction, kind, peer, message."""
    rows = []
    for e in events:
        at = e.get("at")
        when = f"{_clock(at)}.{int(at * 1000) % 1000:03d}" if isinstance(at, int | float) else "?"
        inbound = e.get("direction") == "in"
        rows.append([Text(when), Text("in " if inbound else "out", style="green" if inbound else "cyan"),
                     Text(str(e.get("kind", "?"))), Text(str(e.get("peer") or "-")),
                     Text(str(e.get("message", "")))])
    return rows


def trace_summary(log: Mapping[str, Any]) -> str:
    """One line on a trace: how far it got and, once it ended, why."""
    ended = log.get("ended")
    done = {"limit": "ended: all traced", "exited": "ended: the actor exited",
            "replaced": "ended: replaced by a newer trace"}.get(str(ended), f"ended: {ended}")
    return f"{len(log.get('events') or ())}/{log.get('n', '?')} messages, " + (
        "tracing…" if ended is None else done)


def cluster_table(snapshot: Snapshot, counts: Mapping[str, Mapping[str, Any]] | None = None,
                  attached: str | None = None) -> Table | None:
    """The nodes of the snapshot's cluster (None alone): name, id, address, workers, the lease left at the
    node's last membership poll (the database's clock against the node's), and which one is shown:
    ``this node``, or ``shown`` and ``attached`` when the observer reads one node through another.

    ``counts`` (node name -> the control op ``cluster``'s entry) adds each node's live workers and actors.
    """
    part = snapshot.get("cluster")
    if not part:
        return None
    viewed = snapshot.get("node")
    table = Table(title=f"cluster ({len(part.get('members', ()))} nodes)", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    for header, justify in (("node", "left"), ("id", "right"), ("address", "left"), ("workers", "right"),
                            ("actors", "right"), ("lease left", "right"), ("", "left")):
        table.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    polled = float(snapshot.get("time", 0.0))
    for m in part.get("members", ()):
        entry = (counts or {}).get(m.get("name", ""), {})
        workers = str(m.get("workers", "-"))
        if "workers_alive" in entry:
            workers = f"{entry['workers_alive']}/{workers}"
        actors: RenderableType = str(entry["actors"]) if "actors" in entry else "-"
        if "error" in entry:
            actors = Text("unreachable", style="bold red")
        left = float(m.get("lease_expires", 0.0)) - polled
        if attached is None or attached == viewed:
            marks = ["this node"] if m.get("self") else []
        else:
            marks = ["shown"] if m.get("self") else ["attached"] if m.get("name") == attached else []
        table.add_row(Text(str(m.get("name", "?")), style="bold" if m.get("name") == viewed else ""),
                      str(m.get("id", "-")), str(m.get("address", "-")), workers, actors,
                      f"{left:.1f}s" if left > 0 else Text("expired", style="bold red"),
                      Text(", ".join(marks), style="green"))
    return table


def render_once(snapshot: Snapshot, *, sort: str = "mailbox", limit: int | None = None) -> Group:
    """Everything ``--once`` prints: the trees, the workers table and the process table (and, for a node
    of a cluster, the cluster's nodes first)."""
    problems = [Text(line, style="bold red") for line in worker_problems(snapshot)]
    cluster = cluster_table(snapshot)
    return Group(
        *problems,
        *((cluster, Text("")) if cluster is not None else ()),
        supervision_tree(snapshot),
        Text(""),
        workers_table(snapshot),
        Text(""),
        process_table(snapshot, sort=sort, limit=limit),
    )
