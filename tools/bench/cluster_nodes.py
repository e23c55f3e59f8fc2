"""``python -m tools.bench.cluster_nodes`` (``python -m tools.bench cluster``): issue 17's cluster rows.

Three nodes (``tools/bench/_cluster_node.py``, 2 workers each) as subprocesses on loopback TCP, sharing one
throwaway PostgreSQL server (``kernel.pgserver``, its durable defaults: fsync and synchronous_commit on),
or ``--dsn``. Every figure stands beside its base measured in the same run, as a ratio; floors and ours
alternate, ``--reps`` times, and the median is reported:

1. ``call``: sequential calls from an actor on node A (worker 0) to an actor on node B, and from A's node
   context (1 and ``--callers`` in flight) / the ``tcp_roundtrip`` floor (a pickled request and reply over
   loopback TCP, plain uvloop). Target >= 0.5x.
2. ``cast``: a stream of casts from an actor on A to an actor on B, counted there / the ``tcp_stream``
   floor (pickled frames over loopback TCP). Target >= 0.5x.
3. ``activation``: first calls to fresh keys of a persistent ``Entities`` family from node A (``--callers``
   in flight), which the cluster spreads over the 3 nodes / the same on one single-host node (SQLite).
4. ``claim``: the name directory's claim latency (``tools.bench.cluster_db``) / a bare ``SELECT 1``.
5. ``failover``: SIGKILL, then SIGSTOP, of the node hosting an entity (lease ``--lease``): seconds from the
   fault to the first successful call from a survivor, p50 and max over ``--runs`` runs, beside the lease
   (time - lease, time / lease).
6. ``durable``: ``--callers`` concurrent callers on each of the 3 nodes, each adding to its own entity with
   ``Checkpoint(every=1, durable=True)``: calls/s across the cluster against one PostgreSQL / the same load
   (3 x callers) on one single-host node (SQLite, ``synchronous=NORMAL``); again with each node's callers on
   entities the cluster placed on that node (no call leaves its node: what the store alone costs).

``--quick`` is a smoke run (tiny sizes, one fail-over run each), not figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import queue
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg

from kernel.pgserver import FAST, PostgresServer
from tools.bench import cluster_db
from tools.bench.floors import FLOORS, REPO_ROOT

BOUND = 60.0  # seconds any one answer may take before the run is declared broken
WORKERS = 2
SIZES = {"calls": 10_000, "casts": 500_000, "activations": 1_000, "durable_per": 100, "claims": 1000}
QUICK = {"calls": 300, "casts": 20_000, "activations": 60, "durable_per": 10, "claims": 50}
ROWS = ("call", "cast", "activation", "claim", "failover", "durable")


def _free_base_port(workers: int) -> int:
    """A loopback port ``p`` with ``p .. p + workers`` all free now (a node's and its workers' ports)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + workers > 65535:
            continue
        try:
            for port in range(base, base + workers + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free loopback ports found")


class NodeProc:
    """One bench node subprocess, driven by JSON lines; ``id`` is its node id once :meth:`ready` returned."""

    def __init__(self, name: str, dsn: str | None, lease: float) -> None:
        self.name = name
        port = _free_base_port(WORKERS)
        config = {"name": name, "dsn": dsn, "listen": f"127.0.0.1:{port}", "lease": lease, "workers": WORKERS}
        pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.bench._cluster_node", json.dumps(config)], cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath}, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.id = 0
        self.output: list[str] = []
        self._answers: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._ready: queue.Queue[int | None] = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.output.append(line)
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if "ready" in item:
                    self._ready.put(item["ready"])
                elif "id" in item:
                    self._box(item["id"]).put(item)
        self._ready.put(None)

    def _box(self, ident: int) -> queue.Queue[dict[str, Any]]:
        with self._lock:
            return self._answers.setdefault(ident, queue.Queue())

    def ready(self) -> int:
        found = self._ready.get(timeout=BOUND)
        if found is None:
            raise RuntimeError(f"node {self.name} exited while starting:\n{''.join(self.output[-30:])}")
        self.id = found
        return found

    def send(self, **command: Any) -> int:
        ident = next(self._ids)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({**command, "id": ident}) + "\n")
        self.proc.stdin.flush()
        return ident

    def answer(self, ident: int, bound: float = BOUND) -> Any:
        try:
            reply = self._box(ident).get(timeout=bound)
        except queue.Empty:
            raise RuntimeError(f"node {self.name} did not answer within {bound}s:\n"
                               f"{''.join(self.output[-30:])}") from None
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {reply['error']}")
        return reply["ok"]

    def ask(self, bound: float = BOUND, **command: Any) -> Any:
        return self.answer(self.send(**command), bound)

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the node's whole process group (the node process and its workers)."""
        os.killpg(self.proc.pid, sig)

    def close(self) -> None:
        """Close stdin (the node leaves and exits); SIGKILL what is left after BOUND."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGCONT)
            with contextlib.suppress(BrokenPipeError, OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(BOUND)
        with contextlib.suppress(ProcessLookupError):
            self.signal(signal.SIGKILL)  # the node or a worker left behind, if any
        self.proc.wait(BOUND)
        with contextlib.suppress(BrokenPipeError, OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()


@contextlib.contextmanager
def _nodes(names: list[str], dsn: str | None, lease: float) -> Iterator[list[NodeProc]]:
    """Start the named nodes together; wait until each sees them all as members."""
    procs: list[NodeProc] = []
    try:
        for name in names:
            procs.append(NodeProc(name, dsn, lease))
        for proc in procs:
            proc.ready()
        if dsn is not None:
            for proc in procs:
                _until(functools.partial(_sees, proc, len(names)), f"{proc.name} sees {len(names)} nodes")
        yield procs
    finally:
        for proc in procs:
            proc.close()


def _sees(proc: NodeProc, count: int) -> bool:
    return bool(proc.ask(op="members") >= count)


def _until(fact: Callable[[], bool], what: str, bound: float = BOUND) -> None:
    deadline = time.monotonic() + bound
    while not fact():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not true within {bound}s: {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def _database(server_dsn: str) -> Iterator[str]:
    """A fresh database on the server (its DSN), dropped afterwards: each cluster starts with no members."""
    name = f"bench_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        yield server_dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(admin(f"DROP DATABASE {name} WITH (FORCE)"))


def _median_pair(pairs: list[tuple[float, float]]) -> tuple[float, float, list[float]]:
    """(ours, base) of the rep whose ratio is the median, and every rep's ratio in run order."""
    ordered = sorted(pairs, key=lambda p: p[0] / p[1])
    ours, base = ordered[(len(ordered) - 1) // 2]
    return ours, base, [o / b for o, b in pairs]


def _row(name: str, ours: float, base: float, unit: str, base_label: str, target: str = "",
         **extra: Any) -> dict[str, Any]:
    ratio = ours / base if base else None
    met = None
    if target.startswith(">= ") and ratio is not None:
        met = ratio >= float(target[3:].rstrip("x"))
    return {"name": name, "ours": ours, "base": base, "unit": unit, "base_label": base_label, "ratio": ratio,
            "target": target, "met": met, **extra}


def _transport_rows(a: NodeProc, b: NodeProc, sizes: dict[str, int], reps: int,
                    callers: int) -> list[dict[str, Any]]:
    """Rows 1 and 2: cross-node calls and casts, each rep beside a floor rep."""
    calls, casts = sizes["calls"], sizes["casts"]
    pairs: dict[str, list[tuple[float, float]]] = {k: [] for k in ("actor", "node", "pipelined", "cast")}
    for _ in range(reps):
        floor = FLOORS["tcp_roundtrip"][1](calls).value
        pairs["actor"].append((calls / a.ask(op="calls", name="echo", node=b.id, n=calls), floor))
        pairs["node"].append((calls / a.ask(op="node_calls", node=b.id, n=calls, callers=1), floor))
        many = a.ask(op="node_calls", node=b.id, n=calls, callers=callers)
        pairs["pipelined"].append((calls / many, floor))
        floor = FLOORS["tcp_stream"][1](casts).value
        pairs["cast"].append((casts / a.ask(op="casts", name="sink", node=b.id, n=casts), floor))
    rows = []
    for key, title in (("actor", "call A -> B, actor on worker 0, sequential"),
                       ("node", "call A -> B, node context, sequential"),
                       ("pipelined", f"call A -> B, node context, {callers} in flight")):
        ours, base, ratios = _median_pair(pairs[key])
        rows.append(_row(title, ours, base, "call/s", "tcp_roundtrip floor", ">= 0.5x",
                         mean_us=1e6 / ours, floor_us=1e6 / base, ratios=ratios))
    ours, base, ratios = _median_pair(pairs["cast"])
    rows.append(_row("cast A -> B, actor on worker 0, counted at B", ours, base, "msg/s", "tcp_stream floor",
                     ">= 0.5x", ratios=ratios))
    return rows


def _entity_rows(cluster: list[NodeProc], single: NodeProc, sizes: dict[str, int], reps: int,
                 callers: int) -> list[dict[str, Any]]:
    """Rows 3 and 6: activations/s and durable calls/s, cluster beside the single-host node."""
    n, per = sizes["activations"], sizes["durable_per"]
    act: list[tuple[float, float]] = []
    dur: list[tuple[float, float]] = []
    dur_local: list[tuple[float, float]] = []
    hosts: dict[str, int] = {}
    for rep in range(reps):
        tag = f"{rep}-{secrets.token_hex(3)}"
        got = cluster[0].ask(op="entities", prefix=f"act-{tag}", n=n, callers=callers)
        hosts = got["hosts"]
        ref = single.ask(op="entities", prefix=f"act-{tag}", n=n, callers=callers)
        act.append((n / got["seconds"], n / ref["seconds"]))
        total = len(cluster) * callers * per
        ref = single.ask(BOUND * 3, op="durable", prefix=f"dur-{tag}", callers=len(cluster) * callers,
                         per=per, start_at=time.time())
        for local, pairs in ((False, dur), (True, dur_local)):
            # Every node's callers start at one wall-clock instant (the nodes share the clock).
            start_at = time.time() + 2.0
            idents = [(p, p.send(op="durable", prefix=f"dur-{tag}-{local:d}-{p.name}", callers=callers,
                                 per=per, start_at=start_at, local=local)) for p in cluster]
            spans = [p.answer(i, BOUND * 3) for p, i in idents]
            seconds = max(s["start"] + s["seconds"] for s in spans) - min(s["start"] for s in spans)
            pairs.append((total / seconds, total / ref["seconds"]))
    ours, base, ratios = _median_pair(act)
    rows = [_row(f"entity activation from A, {callers} in flight, over 3 nodes", ours, base, "act/s",
                 "single-host node (SQLite)", hosts=hosts, ratios=ratios)]
    ours, base, ratios = _median_pair(dur)
    rows.append(_row(f"durable calls, 3 nodes x {callers} callers, one PostgreSQL", ours, base, "call/s",
                     f"single-host node (SQLite), {len(cluster) * callers} callers", ratios=ratios))
    ours, base, ratios = _median_pair(dur_local)
    rows.append(_row("durable calls as above, each node's callers on entities placed on it", ours, base,
                     "call/s", f"single-host node (SQLite), {len(cluster) * callers} callers", ratios=ratios))
    return rows


def _claim_rows(dsn: str, n: int, rounds: int) -> list[dict[str, Any]]:
    """Row 4: the name directory's claim latency beside a bare ``SELECT 1`` (``tools.bench.cluster_db``)."""
    result = asyncio.run(cluster_db._measure(dsn, n, rounds, (1,)))
    lat = result["latency"]
    floor = statistics.median(lat["SELECT 1 (floor)"])
    rows = []
    for key in ("claim (free name)", "claim (held: route)"):
        p50 = statistics.median(lat[key])
        rows.append(_row(f"name {key}, p50", p50 * 1e6, floor * 1e6, "us", "SELECT 1 round trip",
                         p99_us=cluster_db._p(lat[key], 0.99) * 1e6))
    return rows


def _failover_rows(server_dsn: str, lease: float, runs: int) -> list[dict[str, Any]]:
    """Row 5: a fresh victim node per run; the time from its fault to a survivor's first successful call."""
    rows = []
    with _database(server_dsn) as dsn, _nodes(["fo-a", "fo-b"], dsn, lease) as (a, _b):
        for sig in (signal.SIGKILL, signal.SIGSTOP):
            times = []
            for run in range(runs):
                victim = NodeProc(f"fo-{sig.name.lower()}-{run}", dsn, lease)
                try:
                    victim.ready()
                    _until(lambda: a.ask(op="members") >= 3, "the victim joined")
                    key = next(k for k in (f"fo-{sig.name}-{run}-{i}" for i in itertools.count())
                               if a.ask(op="entity", key=k, request=["add", 1])[0] == victim.id)
                    t_fault = time.time()
                    victim.signal(sig)
                    t_ok = a.ask(BOUND, op="first_success", key=key, timeout=0.5)
                    times.append(t_ok - t_fault)
                finally:
                    with contextlib.suppress(ProcessLookupError):
                        victim.signal(signal.SIGKILL)
                    victim.close()
                _until(lambda: a.ask(op="members") == 2, "the victim left the membership")
            p50, worst = statistics.median(times), max(times)
            rows.append(_row(f"fail-over after {sig.name} of the host, p50 of {runs}", p50, lease, "s",
                             f"lease {lease:g} s", max_s=worst, over_lease_s=p50 - lease,
                             max_over_lease_s=worst - lease, runs_s=times))
    return rows


def measure(server_dsn: str, rows: tuple[str, ...], quick: bool, reps: int, lease: float, runs: int,
            callers: int) -> list[dict[str, Any]]:
    sizes = QUICK if quick else SIZES
    out: list[dict[str, Any]] = []
    if {"call", "cast", "activation", "durable"} & set(rows):
        with _database(server_dsn) as dsn, _nodes(["bench-a", "bench-b", "bench-c"], dsn, lease) as nodes:
            if {"call", "cast"} & set(rows):
                out += [r for r in _transport_rows(nodes[0], nodes[1], sizes, reps, callers)
                        if (r["name"].startswith("cast") and "cast" in rows)
                        or (r["name"].startswith("call") and "call" in rows)]
            if {"activation", "durable"} & set(rows):
                with _nodes(["bench-single"], None, lease) as (single,):
                    out += [r for r in _entity_rows(nodes, single, sizes, reps, callers)
                            if (r["name"].startswith("entity") and "activation" in rows)
                            or (r["name"].startswith("durable") and "durable" in rows)]
    if "claim" in rows:
        with _database(server_dsn) as dsn:
            out += _claim_rows(dsn, sizes["claims"], reps)
    if "failover" in rows:
        out += _failover_rows(server_dsn, lease, runs)
    return out


def _fmt(value: float, unit: str) -> str:
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix} {unit}"
    return f"{value:.3g} {unit}"


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(f"{'row':58s} {'ours':>14s} {'base':>14s} {'ratio':>7s}  target / base")
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        met = "" if r["met"] is None else (" met" if r["met"] else " NOT met")
        print(f"{r['name']:58s} {_fmt(r['ours'], r['unit']):>14s} {_fmt(r['base'], r['unit']):>14s} "
              f"{ratio:>7s}  {r['target'] + met + ' ' if r['target'] else ''}vs {r['base_label']}")
        if "max_s" in r:
            print(f"{'':58s} max {r['max_s']:.2f} s; p50 - lease {r['over_lease_s']:+.2f} s, "
                  f"max - lease {r['max_over_lease_s']:+.2f} s; runs "
                  + ", ".join(f"{t:.2f}" for t in r["runs_s"]))
        if "mean_us" in r:
            print(f"{'':58s} mean {r['mean_us']:.0f} us per call vs floor {r['floor_us']:.0f} us")
        if "p99_us" in r:
            print(f"{'':58s} p99 {r['p99_us']:.0f} us")
        if "ratios" in r:
            print(f"{'':58s} ratio of each rep: " + ", ".join(f"{x:.2f}x" for x in r["ratios"]))
        if "hosts" in r:
            print(f"{'':58s} activations per hosting node: {r['hosts']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.cluster_nodes",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one fail-over run: a smoke run")
    parser.add_argument("--only", action="append", choices=ROWS, help="run only this row (repeatable)")
    parser.add_argument("--reps", type=int, default=3, help="runs per figure; the median ratio is shown")
    parser.add_argument("--runs", type=int, default=5, help="fail-over runs per signal (default 5)")
    parser.add_argument("--lease", type=float, default=2.0, help="the nodes' lease, seconds (default 2)")
    parser.add_argument("--callers", type=int, default=50, help="callers in flight per node (default 50)")
    parser.add_argument("--dsn", default=None, help="an existing server (default: a server of its own)")
    parser.add_argument("--fast", action="store_true",
                        help="its own server without fsync (kernel.pgserver.FAST): what the disk costs")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the rows here")
    args = parser.parse_args(argv)
    rows = tuple(args.only or ROWS)
    reps, runs = (1, 1) if args.quick else (args.reps, args.runs)
    callers = min(args.callers, 4) if args.quick else args.callers
    with contextlib.ExitStack() as stack:
        settings = FAST if args.fast else None
        dsn = args.dsn or stack.enter_context(PostgresServer(settings=settings)).dsn
        result = measure(dsn, rows, args.quick, reps, args.lease, runs, callers)
    print_rows(result)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": args.quick,
                                "reps": reps, "lease": args.lease, "callers": callers,
                                "loadavg_at_end": os.getloadavg(), "cpus": os.cpu_count()},
                       "rows": result}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
