"""Runs each kernel scenario beside its floor in one sitting, 3 times each, and reports median ratios.

Floor and kernel runs alternate inside one Node's lifetime (the floor runs on its own uvloop loop in
a thread while the node sits idle), so both see the same machine weather; only the ratio is judged.
A scenario that fails is reported as an error and the rest still run: the kernel is young.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import uvloop
from rich.console import Console
from rich.table import Table

from tools.bench.figure import Figure
from tools.bench.floors import FLOORS

REPS = 3
QUICK_DIVISOR = 100
WORKERS = 2


@dataclass(frozen=True)
class Target:
    """A ratio bound against the base (``min_ratio`` for rates, ``max_ratio`` for costs), and/or an
    absolute ceiling on our own figure (``max_value``, for memory)."""

    min_ratio: float | None = None
    max_ratio: float | None = None
    max_value: float | None = None
    min_value: float | None = None
    note: str = ""  # how the target reads in the issue, when the bound is a restatement of it

    @property
    def empty(self) -> bool:
        """No target was set (the issue asks for the figure only)."""
        return all(b is None for b in (self.min_ratio, self.max_ratio, self.max_value, self.min_value))

    def met(self, ratio: float | None, value: float) -> bool:
        return (
            (self.min_ratio is None or (ratio is not None and ratio >= self.min_ratio))
            and (self.max_ratio is None or (ratio is not None and ratio <= self.max_ratio))
            and (self.max_value is None or value <= self.max_value)
            and (self.min_value is None or value >= self.min_value)
        )

    def __str__(self) -> str:
        parts = []
        if self.min_ratio is not None:
            parts.append(f">= {self.min_ratio:.3g}x")
        if self.max_ratio is not None:
            parts.append(f"<= {self.max_ratio:g}x")
        if self.max_value is not None:
            parts.append(f"<= {self.max_value:g} B")
        if self.min_value is not None:
            parts.append(f">= {self.min_value:,.0f}/s")
        text = " and ".join(parts) or "none set"
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class Base:
    """What a scenario is divided by: a floor (``kind="floor"``) or another of our scenarios
    (``kind="ours"``, for "100 callers >= 5x sequential"), times ``scale``."""

    kind: str
    name: str
    scale: float = 1.0
    label: str = ""


@dataclass(frozen=True)
class Row:
    name: str
    title: str
    n: int
    base: Base
    target: Target
    extra_floors: tuple[str, ...] = ()
    full_n: int | None = None  # N under --full (the size), when the default is smaller
    reps: int | None = None  # fixed runs for this row (memory rows: RSS means something once only)


FLOOR_N: dict[str, int] = {
    "queue_one_way": 1_000_000,
    "ping_pong": 200_000,
    "future_per_call": 200_000,
    "socket_stream": 2_000_000,
    "socket_roundtrip": 30_000,
    "tcp_stream": 2_000_000,
    "tcp_roundtrip": 30_000,
    "spawn_task_queue": 50_000,
    "memory_task_queue": 50_000,
    "ring_tasks": 300_000,
    "dict_lookup": 1_000_000,
    "group_commit_2procs": 20_000,
    "cpu_scaling_raw": 400,
}

# Targets are issue 8's (the stricter set); issue 2's looser first milestone is noted in BENCHMARKS.md.
ROWS: tuple[Row, ...] = (
    Row("local_cast", "local cast, same worker", 1_000_000, Base("floor", "queue_one_way"), Target(0.5)),
    Row("local_call", "local call, same worker", 200_000, Base("floor", "ping_pong"), Target(0.5),
        extra_floors=("future_per_call",)),
    Row("cross_cast", "cast, worker 0 -> 1", 1_000_000, Base("floor", "socket_stream"), Target(0.5)),
    Row("cross_cast_burst", "cast, worker 0 -> 1, sender never yields", 1_000_000,
        Base("floor", "socket_stream"), Target(0.5)),
    Row("cross_call", "call, worker 0 -> 1, sequential", 30_000, Base("floor", "socket_roundtrip"),
        Target(0.5)),
    Row("cross_call_100", "call, 0 -> 1, 100 callers in flight", 100_000,
        Base("ours", "cross_call", label="ours, sequential"), Target(5.0)),
    Row("spawn", "spawn idle actor", 50_000, Base("floor", "spawn_task_queue"), Target(1.0)),
    Row("idle_memory", "memory per idle actor", 50_000, Base("floor", "memory_task_queue"),
        Target(max_ratio=1.0, max_value=1300)),
    Row("ring_local", "ring of 1000, one worker", 300_000, Base("floor", "ring_tasks"), Target(0.65)),
    Row("ring_2workers", "ring of 1000, 2 workers", 100_000,
        Base("floor", "socket_roundtrip", scale=2.0, label="one-way bound = 2x socket round trips/s"),
        Target(0.5)),
    Row("call_behind_spinner", "worst call latency beside a self-casting actor", 2_000,
        Base("ours", "call_no_spinner", label="ours, worst with the worker idle"), Target()),
    # issue 3: registry and supervisors
    Row("send_by_name", "cast by registered name, same worker", 1_000_000,
        Base("ours", "local_cast", label="ours, cast by pid"), Target(0.8)),
    Row("get_or_spawn", "get_or_spawn of a running name", 200_000,
        Base("ours", "local_call", label="ours, local call"), Target(), extra_floors=("dict_lookup",)),
    Row("dynsup_start", "DynamicSupervisor starts children, on the caller's worker", 100_000,
        Base("ours", "spawn", label="ours, plain spawn"), Target()),
    Row("dynsup_start_node", "DynamicSupervisor starts children, in the node process", 30_000,
        Base("ours", "dynsup_start", label="ours, supervisor on the caller's worker"), Target()),
    Row("restart_10k", "restart children after SIGKILL of their worker", 10_000,
        Base("ours", "spawn", label="ours, plain spawn"), Target()),
    Row("stop_to_down", "SIGSTOP of a worker to Down, worker_timeout=1.0 (s)", 3,
        Base("ours", "kill_to_down", label="ours, SIGKILL of a worker to Down"), Target()),
    # issue 4: checkpoints
    Row("ckpt_volatile", "checkpoint every=1, durable=False", 100_000,
        Base("ours", "plain_counter", label="ours, same calls, no checkpoint"),
        Target(min_ratio=1 / 1.5, note="cost <= 1.5x a plain call")),
    Row("ckpt_durable", "checkpoint every=1, durable=True, sequential", 3_000,
        Base("ours", "plain_counter", label="ours, same calls, no checkpoint"), Target()),
    Row("durable_50", "50 durable actors, 2 workers, concurrent", 30_000,
        Base("floor", "group_commit_2procs"), Target(min_value=20_000), full_n=100_000),
    Row("reactivate_10k", "reactivate passivated actors", 10_000,
        Base("ours", "spawn", label="ours, plain spawn"), Target()),
    # issue 8: scale
    Row("million_idle", "idle actors on 2 workers, RSS", 100_000,
        Base("floor", "memory_task_queue"), Target(max_value=2 * 1024**3 / 1_000_000,
                                                   note="1M within 2 GB"), full_n=1_000_000, reps=1),
    Row("cpu_2workers", "CPU-bound units, 2 workers vs 1", 400,
        Base("ours", "cpu_1worker", label="ours, same units on 1 worker"), Target(1.6),
        extra_floors=("cpu_scaling_raw",)),
    # issue 17: the cross-node transport alone (Peer/Listener on TcpAddress), no actors yet
    Row("tcp_peer_call", "call, Peer/Listener over loopback TCP, node 1 -> 2", 30_000,
        Base("floor", "tcp_roundtrip"), Target(0.5, note="issue 17's cross-node call bound")),
    Row("tcp_peer_cast", "cast, Peer/Listener over loopback TCP, node 1 -> 2", 1_000_000,
        Base("floor", "tcp_stream"), Target(0.5, note="issue 17's cross-node cast bound")),
)
# Scenarios that are only ever the base of another row.
HIDDEN_N: dict[str, int] = {"plain_counter": 100_000, "cpu_1worker": 400, "call_no_spinner": 2_000,
                            "kill_to_down": 3}
ROW_BY_NAME = {row.name: row for row in ROWS}


@dataclass
class Samples:
    """Every rep of one measurement; the median is what is reported."""

    figures: list[Figure] = field(default_factory=list)

    @property
    def median(self) -> Figure:
        ordered = sorted(self.figures, key=lambda f: f.value)
        return ordered[(len(ordered) - 1) // 2]


@dataclass
class Results:
    floors: dict[str, Samples] = field(default_factory=dict)
    ours: dict[str, Samples] = field(default_factory=dict)
    #: Row name -> its base (one of our scenarios) measured again inside that row's own node, between
    #: its reps, so ours and base see the same weather as a floor does.
    bases: dict[str, Samples] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def base_value(self, row: Row) -> float | None:
        if row.base.kind == "floor":
            samples = self.floors.get(row.base.name)
        else:
            samples = self.bases.get(row.name) or self.ours.get(row.base.name)
        return samples.median.value * row.base.scale if samples and samples.figures else None


def _n(full: int, quick: bool) -> int:
    return max(full // QUICK_DIVISOR, min(full, 200)) if quick else full


def _scenario_n(name: str, quick: bool, full: bool) -> int:
    row = ROW_BY_NAME.get(name)
    if row is None:
        return _n(HIDDEN_N[name], quick)
    return _n(row.full_n if full and row.full_n else row.n, quick)


async def _run_floor(results: Results, name: str, quick: bool) -> None:
    """Floors run in a thread on their own fresh uvloop loop; the node's loop waits, idle."""
    fn = FLOORS[name][1]
    figure = await asyncio.to_thread(fn, _n(FLOOR_N[name], quick))
    results.floors.setdefault(name, Samples()).figures.append(figure)


async def _run_row(results: Results, row: Row, quick: bool, reps: int, console: Console,
                   full: bool = False) -> None:
    """Alternate floor and kernel reps for one row inside one fresh Node."""
    floors = [f for f in ((row.base.name,) if row.base.kind == "floor" else ()) + row.extra_floors
              if f not in results.floors]
    ours = [row.name]
    if row.base.kind == "ours":
        ours.insert(0, row.base.name)
    # A base that has no samples of its own yet (a hidden base, or a row not asked for) is also shown.
    show_base = row.base.kind == "ours" and row.base.name not in results.ours
    reps = row.reps or reps
    try:
        from kernel import Node
        from tools.bench.scenarios import SCENARIOS
    except Exception as exc:  # the kernel is not runnable yet: floors still get measured
        for _ in range(reps):
            for name in floors:
                await _run_floor(results, name, quick)
        results.errors[row.name] = f"kernel not importable: {exc!r}"
        return
    try:
        async with Node(workers=WORKERS) as node:
            for rep in range(reps):
                for name in floors:
                    await _run_floor(results, name, quick)
                for name in ours:
                    figure = await SCENARIOS[name](node, _scenario_n(name, quick, full))
                    if name != row.name:
                        results.bases.setdefault(row.name, Samples()).figures.append(figure)
                        if not show_base:
                            continue
                    results.ours.setdefault(name, Samples()).figures.append(figure)
                console.log(f"{row.name}: rep {rep + 1}/{reps} done")
    except Exception as exc:
        results.errors[row.name] = f"{exc!r}"
        console.log(f"[red]{row.name} failed[/red]\n{traceback.format_exc()}")
        for name in floors:  # finish the floors so the table still has them
            while len(results.floors.get(name, Samples()).figures) < reps:
                await _run_floor(results, name, quick)


def run(names: Sequence[str], quick: bool = False, reps: int = REPS,
        console: Console | None = None, full: bool = False) -> Results:
    """Measure the named rows (floors included) and return every sample."""
    console = console or Console(stderr=True)
    results = Results()

    async def main() -> None:
        for name in names:
            await _run_row(results, ROW_BY_NAME[name], quick, reps, console, full)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    return results


def human(value: float, unit: str) -> str:
    """A figure with its unit, short enough for a table cell: ``1.23M msg/s``, ``4.21 KB/actor``."""
    if unit.startswith("B/"):
        return f"{value / 1024:.2f} KB/{unit[2:]}" if value >= 1024 else f"{value:.0f} {unit}"
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix} {unit}"
    return f"{value:.3g} {unit}"


def _kernel_version() -> str:
    """The commit the figures belong to, marked dirty when kernel/ has uncommitted edits."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "kernel"], cwd=root, capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def report(results: Results, names: Sequence[str]) -> dict[str, Any]:
    """The JSON-able summary: floors, then each scenario with base, ratio, target and verdict."""
    out: dict[str, Any] = {
        "meta": {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "python": sys.version.split()[0],
            "uvloop": getattr(uvloop, "__version__", "?"),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "workers": WORKERS,
            "loadavg_at_end": os.getloadavg(),  # other work on the box skews both sides, not equally
            "kernel": _kernel_version(),
        },
        "floors": {},
        "scenarios": {},
    }
    for name, floor in results.floors.items():
        med = floor.median
        out["floors"][name] = {"label": FLOORS[name][0], "unit": med.unit, "median": med.value,
                               "extra": med.extra, "samples": [f.value for f in floor.figures]}
    for name in names:
        row = ROW_BY_NAME[name]
        entry: dict[str, Any] = {"title": row.title, "target": str(row.target), "base": asdict(row.base),
                                 "error": results.errors.get(name)}
        samples = results.ours.get(name)
        base = results.base_value(row)
        base_pool = results.floors if row.base.kind == "floor" else results.ours
        if base_pool.get(row.base.name):  # a scaled base (ring's one-way bound) takes our unit
            entry["base_unit"] = base_pool[row.base.name].median.unit
        if results.bases.get(name):
            entry["base_samples"] = [f.value for f in results.bases[name].figures]
        if samples and samples.figures:
            med = samples.median
            entry.update(unit=med.unit, base_unit=med.unit, median=med.value, extra=med.extra,
                         samples=[f.value for f in samples.figures])
            if base:
                ratio = med.value / base
                entry.update(base_value=base, ratio=ratio)
            needs_base = row.target.min_ratio is not None or row.target.max_ratio is not None
            if not row.target.empty and (base or not needs_base):
                entry["met"] = row.target.met(med.value / base if base else None, med.value)
        elif base:
            entry["base_value"] = base
        out["scenarios"][name] = entry
    return out


def print_tables(summary: dict[str, Any], console: Console) -> None:
    floors = Table(title="Floors (plain Python on uvloop, median of runs)")
    for col in ("floor", "what", "median", "extra", "runs"):
        floors.add_column(col, justify="right" if col in ("median", "runs") else "left")
    for name, f in summary["floors"].items():
        extra = ", ".join(f"{k} {v:.1f}" for k, v in f["extra"].items())
        floors.add_row(name, f["label"], human(f["median"], f["unit"]), extra,
                       " / ".join(human(v, f["unit"]) for v in f["samples"]))
    console.print(floors)

    table = Table(title="Kernel vs floor, same run (median of runs)")
    for col in ("scenario", "ours", "floor", "ratio", "target", "met?"):
        table.add_column(col, justify="left" if col in ("scenario", "target") else "right")
    for name, s in summary["scenarios"].items():
        base = s["base"]
        base_name = base["label"] or base["name"]
        unit = s.get("unit", "")
        ours = human(s["median"], unit) if "median" in s else "[red]error[/red]"
        if "mean_us" in s.get("extra", {}):
            ours += f" ({s['extra']['mean_us']:.0f} us)"
        floor = human(s["base_value"], s["base_unit"]) if "base_value" in s else "-"
        ratio = f"{s['ratio']:.2f}x" if "ratio" in s else "-"
        met = ("[green]yes[/green]" if s["met"] else "[red]no[/red]") if "met" in s else "-"
        table.add_row(f"{name}\n[dim]{s['title']}[/dim]", ours, f"{floor}\n[dim]{base_name}[/dim]", ratio,
                      s["target"], met)
    console.print(table)
    meta = summary["meta"]
    console.print(f"kernel {meta['kernel']}, {meta['cpus']} cpus, load average at end "
                  f"{meta['loadavg_at_end'][0]:.2f} (a loaded box skews both columns, not equally)")
    for name, s in summary["scenarios"].items():
        if s.get("error"):
            console.print(f"[red]{name}: {s['error']}[/red]")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"N / {QUICK_DIVISOR}: a smoke run, not figures")
    parser.add_argument("--json", default="bench-results.json", metavar="PATH", help="where to write results")
    parser.add_argument("--only", action="append", choices=list(ROW_BY_NAME), metavar="NAME",
                        help=f"run only this scenario and its floor (repeatable): {', '.join(ROW_BY_NAME)}")
    parser.add_argument("--reps", type=int, default=REPS, help="runs per measurement; the median is shown")
    heavy = ", ".join(f"{r.name} {r.n:,} -> {r.full_n:,}" for r in ROWS if r.full_n)
    parser.add_argument("--full", action="store_true",
                        help=f"the issues' full sizes for the heavy rows ({heavy or 'none'})")
    args = parser.parse_args(argv)
    names = args.only or list(ROW_BY_NAME)
    console = Console(width=None if sys.stdout.isatty() else 120)
    results = run(names, quick=args.quick, reps=args.reps, console=Console(stderr=True), full=args.full)
    summary = report(results, names)
    summary["meta"].update(quick=args.quick, reps=args.reps, full=args.full)
    print_tables(summary, console)
    with open(args.json, "w") as fh:
        json.dump(summary, fh, indent=2)
    console.print(f"results written to {args.json}")
    return 1 if results.errors else 0
