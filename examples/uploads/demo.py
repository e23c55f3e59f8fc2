"""The uploads demo: many parallel clients per user, the actor limiter beside the naive one.

:func:`demo` returns :class:`UploadsReport`; :func:`show` prints it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from kernel import Node, Pid
from supervisors import Supervisor

from .._cli import Claim, all_hold, console, show_claims
from .limiter import STORE, Mode, Store, Uploads, limiter_name, quotas


@dataclass(frozen=True, slots=True)
class ModeResult:
    mode: str
    accepted: int
    rejected: int
    disk_peak: int  # most uploads of one user seen running at once, on disk
    users_over: int  # users whose disk peak went above the limit
    limiters_per_user: int  # most distinct limiter pids one user's clients were sent to (actor mode)
    limiter_peak: int  # the limiters' own count of their busiest moment (actor mode)
    seconds: float


@dataclass(frozen=True, slots=True)
class UploadsReport:
    limit: int
    users: int
    clients_per_user: int
    workers: int
    results: tuple[ModeResult, ...]
    claims: tuple[Claim, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all_hold(self.claims)


async def client(ctx: Any, uploads: Uploads, user: str, number: int, requests: int, report_to: Pid) -> None:
    """One browser tab of ``user``: ``requests`` uploads, one after another, then a report."""
    accepted = rejected = peak = 0
    limiters: set[Pid] = set()
    for k in range(requests):
        ok, seen, limiter = await uploads.upload(user, f"tab{number}-file{k}", b"x" * 4096)
        accepted += ok
        rejected += not ok
        peak = max(peak, seen)
        if limiter is not None:
            limiters.add(limiter)
    ctx.send(report_to, ("uploaded", user, accepted, rejected, peak, limiters))


async def run_mode(node: Node, mode: Mode, root: str, *, limit: int, users: int, clients: int,
                   requests: int) -> ModeResult:
    uploads = Uploads(mode, limit, root)
    names = [f"user{u}" for u in range(users)]
    for user in names:
        os.makedirs(uploads.folder(user), exist_ok=True)
    started = time.perf_counter()
    for number in range(clients):  # every user's tabs spread over every worker
        for user in names:
            await node.spawn(client, uploads, user, number, requests, node.pid)
    accepted = rejected = 0
    peaks = dict.fromkeys(names, 0)
    limiters: dict[str, set[Pid]] = {u: set() for u in names}
    for _ in range(clients * users):
        _, user, ok, no, peak, seen = await node.receive(
            match=lambda m: isinstance(m, tuple) and m[0] == "uploaded")
        accepted, rejected = accepted + ok, rejected + no
        peaks[user] = max(peaks[user], peak)
        limiters[user] |= seen
    seconds = time.perf_counter() - started
    limiter_peak = 0
    if mode == "actor":
        for user in names:
            stats = await node.call(limiter_name(user), "stats")
            limiter_peak = max(limiter_peak, stats["peak"])
    return ModeResult(mode, accepted, rejected, max(peaks.values()),
                      sum(p > limit for p in peaks.values()),
                      max(len(s) for s in limiters.values()), limiter_peak, seconds)


async def demo(*, workers: int = 2, limit: int = 3, users: int = 12, clients: int = 8,
               requests: int = 6) -> UploadsReport:
    """Run the same crowd against the actor limiter, then the naive one; judge what the disk saw."""
    root = tempfile.mkdtemp(prefix="uploads-demo-")
    try:
        async with asyncio.timeout(50), Node(workers=workers) as node:
            await node.spawn(Store, name=STORE)
            await node.spawn(Supervisor, children=[quotas(limit, root).child_spec()], name="root")
            results = tuple([
                await run_mode(node, mode, root, limit=limit, users=users, clients=clients,
                               requests=requests)
                for mode in ("actor", "naive")
            ])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    right, naive = results
    claims = (
        Claim(f"With one actor per user, no user ever had more than {limit} uploads running at once",
              right.disk_peak <= limit and right.limiter_peak <= limit and right.users_over == 0,
              f"busiest moment on disk: {right.disk_peak}; the limiters counted {right.limiter_peak}"),
        Claim("The limit was really tested: users hit it and extra uploads were turned away",
              right.disk_peak == limit and right.rejected > 0,
              f"{right.accepted} accepted, {right.rejected} turned away"),
        Claim(f"All {clients} tabs of a user, on every worker, found the same single limiter (Entities)",
              right.limiters_per_user == 1),
        Claim(f"The naive check-then-act version let uploads past the limit of {limit}",
              naive.disk_peak > limit,
              f"{naive.users_over} of {users} users went over; busiest moment: {naive.disk_peak} at once"),
    )
    return UploadsReport(limit, users, clients, workers, results, claims)


def show(report: UploadsReport) -> None:
    console.rule("[bold]Per-user upload limiter")
    console.print(
        f"Rule: at most {report.limit} uploads per user at the same time. {report.users} users each have "
        f"{report.clients_per_user} browser tabs uploading in parallel, spread over {report.workers} worker "
        "processes. Each upload writes a [italic].part[/] file while it runs, so the disk shows how many "
        "really ran at once.\n")
    console.print("  [bold]actor[/]: each user's requests go to that user's own actor, one of "
                  "Entities(\"quotas\", UploadLimiter), started on first use; it checks and counts in one "
                  "step.")
    console.print("  [bold]naive[/]: read a shared counter from a store, validate, write it back "
                  "(separate get and set, as with a database row or a cache key).\n")
    table = Table(title_justify="left")
    for col in ("version", "accepted", "turned away", "most at once", "users over limit", "time"):
        table.add_column(col, justify="left" if col == "version" else "right")
    for r in report.results:
        over = f"[red]{r.users_over}[/]" if r.users_over else "0"
        table.add_row(r.mode, str(r.accepted), str(r.rejected), str(r.disk_peak), over, f"{r.seconds:.2f}s")
    console.print(table)
    show_claims(report.claims)
    console.print(
        "\nWhy the naive one fails: between reading the counter and writing it back, other requests read "
        "the same old value. No amount of care in the handler closes that gap; one actor per user does, "
        "because it handles one message at a time.")


async def serve(workers: int = 2, limit: int = 3) -> int:
    """Keep a crowd uploading through the actor limiter until Ctrl-C, for the observer."""
    root = tempfile.mkdtemp(prefix="uploads-serve-")
    try:
        async with Node(workers=workers, name="uploads") as node:
            await node.spawn(Supervisor, children=[quotas(limit, root).child_spec()], name="root")
            console.print("[bold]Node 'uploads'[/] is uploading. In another terminal: "
                          "[cyan]python -m tools.observer --node uploads[/]. Ctrl-C stops.")
            rounds = 0
            while True:
                result = await run_mode(node, "actor", root, limit=limit, users=8, clients=6, requests=20)
                rounds += 1
                console.print(f"  round {rounds}: {result.accepted} accepted, {result.rejected} turned "
                              f"away, most at once for one user: {result.disk_peak} (limit {limit})")
    finally:
        shutil.rmtree(root, ignore_errors=True)
