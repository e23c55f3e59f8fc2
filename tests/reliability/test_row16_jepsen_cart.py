"""Row 16: Jepsen-style cart traffic with random worker kills and a disk fill; the history is checked.

One durable persistent actor per cart (``Checkpoint(every=1, durable=True)``), found or started by name
with ``registry.get_or_spawn`` on a worker chosen by the cart's number. Concurrent clients add items
with unique ids and record every operation's outcome, as Jepsen does:

* ``ok``: the reply came: the add is acknowledged, so it must be in the final state;
* ``fail``: the call failed with ``ActorExited(Crash(... checkpoint write failed: SQLITE_FULL ...))``:
  the kernel says nothing of that write landed (``CheckpointWriteFailed``), and it must not show up
  later either (``failed_then_present`` == 0; see ``test_failed_write_is_not_carried_by_a_later_write``);
* ``info`` (in doubt): any other error (worker killed mid-call, no such process, timeout): either way.

Faults: SIGKILL of a random worker each time the acknowledged count has grown by ``KILL_EVERY``, and
once a disk-full episode (``PRAGMA max_page_count`` on both workers' checkpoint connections, as row 4
does) lasting until an add has failed with SQLITE_FULL, then space is given back.

Check, after the run: every cart is read back (live actor, and the SQLite file directly; they agree).
lost = acknowledged adds missing; unexpected = adds present that were never attempted, appear twice
or in another cart. Figures: lost 0, unexpected 0, in-doubt n (and how many of them landed),
availability % (ok / attempted), kills, SQLITE_FULL failures.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from typing import Any

from kernel import Actor, ActorExited, Checkpoint, Crash, KernelError, Node, checkpoints
from registry import get_or_spawn
from tests.reliability.support import SOAK, record, run_node, scale, soak_timeout
from tests.reliability.test_row02_04_checkpoint_faults import Filler
from tests.support.actors import Latch

PAD = "-" + "p" * 24  # makes the states grow, so the disk fills quickly once limited


class Ledger(Actor):
    checkpoint = Checkpoint(every=1, durable=True)

    async def init(self) -> None:
        self.state = []

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("add", item):
                self.state = [*self.state, item]  # no dedup: a duplicate would show as unexpected
                return len(self.state)
            case ("get",):
                return list(self.state)
        raise ValueError(request)


def cart(k: int) -> tuple[str, int]:
    return ("r16-cart", k)


#: Bound on reaching each of the row's two required faults (the first kill, the disk-full episode).
FAULT_BOUND = 60.0


@soak_timeout(1500)
def test_jepsen_cart_traffic_with_kills_and_disk_full(tmp_path: Any) -> None:
    carts = scale(16, 200)
    clients = scale(16, 48)
    seconds = scale(4.0, 600.0)
    kill_every = scale(600, 25_000)
    rnd = random.Random(16)

    async def body(node: Node) -> dict[str, Any]:
        attempted: dict[str, int] = {}  # item -> cart
        outcome: dict[str, str] = {}  # item -> ok / fail / info
        errors: dict[str, int] = {}
        acks = 0
        waiters: list[tuple[int, asyncio.Future[None]]] = []
        stop = asyncio.Event()
        deadline = time.monotonic() + seconds

        def acked() -> None:
            nonlocal acks
            acks += 1
            for n, fut in list(waiters):
                if acks >= n and not fut.done():
                    fut.set_result(None)

        async def until_acks(n: int, by: float | None = None) -> bool:
            """Wait until ``n`` adds are acknowledged; False if the run's time (or ``by``) is up first."""
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiters.append((n, fut))
            if acks >= n:
                fut.set_result(None)
            try:
                await asyncio.wait_for(fut, max(0.0, (deadline if by is None else by) - time.monotonic()))
                return True
            except TimeoutError:
                return False

        async def client(c: int) -> None:
            seq = 0
            while not stop.is_set():
                seq += 1
                k = rnd.randrange(carts)
                item = f"{c}.{seq}{PAD}"
                attempted[item] = k
                try:
                    pid = await get_or_spawn(Ledger, name=cart(k), worker=k % 2)
                    await node.call(pid, ("add", item), timeout=10)
                except ActorExited as exc:
                    full = isinstance(exc.reason, Crash) and "SQLITE_FULL" in exc.reason.message
                    outcome[item] = "fail" if full else "info"
                    kind = "SQLITE_FULL" if full else f"ActorExited({str(exc.reason)[:30]})"
                    errors[kind] = errors.get(kind, 0) + 1
                    continue
                except KernelError as exc:
                    outcome[item] = "info"
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                outcome[item] = "ok"
                acked()

        async def disk_full_episode() -> dict[str, Any]:
            fillers = [await node.spawn(Filler, worker=w) for w in (0, 1)]
            for f in fillers:
                await node.call(f, 1)  # one page of room on each worker's connection
            before = errors.get("SQLITE_FULL", 0)
            t0 = time.monotonic()
            # The states grow with every add, so the file fills; bounded by FAULT_BOUND, not by the
            # run's time, which a loaded machine may have used up before the episode began.
            by = t0 + FAULT_BOUND
            while errors.get("SQLITE_FULL", 0) == before and time.monotonic() < by:
                await until_acks(acks + 1, by)
            for f in fillers:
                await node.call(f, None)  # space is back
                await node.stop(f)
            return {"full_seconds": round(time.monotonic() - t0, 2),
                    "sqlite_full_failures": errors.get("SQLITE_FULL", 0) - before}

        tasks = [asyncio.ensure_future(client(c)) for c in range(clients)]
        kills = 0
        episode: dict[str, Any] = {}
        next_fault = kill_every
        t_start = time.monotonic()
        # One kill and then the disk-full episode happen however slow the machine is (each bounded by
        # FAULT_BOUND); further kills only while the run's time lasts.
        while await until_acks(next_fault, None if kills >= 1 and episode else
                               time.monotonic() + FAULT_BOUND):
            if kills == 1 and not episode:
                episode = await disk_full_episode()
            else:
                w = rnd.randrange(2)
                os.kill(node.workers[w], signal.SIGKILL)
                kills += 1
            next_fault = acks + kill_every
        stop.set()
        await asyncio.gather(*tasks)
        run_s = time.monotonic() - t_start

        # Read every cart back once the node has healed (bounded; retried while a worker restarts).
        final: dict[int, list[str]] = {}
        async with asyncio.timeout(60):
            for k in range(carts):
                while k not in final:
                    try:
                        pid = await get_or_spawn(Ledger, name=cart(k), worker=k % 2)
                        final[k] = await node.call(pid, ("get",), timeout=10)
                    except KernelError:
                        await asyncio.sleep(0.05)  # a worker is being replaced: retry (bounded)
        on_disk = {}
        for k in range(carts):
            try:
                on_disk[k] = checkpoints.load(node.state_path, cart(k))
            except KeyError:
                on_disk[k] = []
        mismatched = [k for k in range(carts) if on_disk[k] != final[k]]

        present: dict[str, int] = {}
        for k, items in final.items():
            for item in items:
                present[item] = present.get(item, 0) + 1
        lost = [i for i, o in outcome.items() if o == "ok" and i not in present]
        wrong_cart = [i for i, k in attempted.items() if i in present and i not in final[k]]
        unexpected = ([i for i in present if i not in outcome]
                      + [i for i, n in present.items() if n > 1] + wrong_cart)
        # A failed write's change must not land through a later write of the same incarnation (the
        # committer fails those too; test_failed_write_is_not_carried_by_a_later_write pins it).
        failed_then_present = [i for i, o in outcome.items() if o == "fail" and i in present]
        in_doubt = [i for i, o in outcome.items() if o == "info"]
        ok = sum(1 for o in outcome.values() if o == "ok")
        return {"attempted": len(outcome), "ok": ok, "lost": len(lost), "lost_examples": lost[:5],
                "unexpected": len(unexpected), "unexpected_examples": unexpected[:5],
                "in_doubt": len(in_doubt), "in_doubt_landed": sum(1 for i in in_doubt if i in present),
                "failed_sqlite_full": sum(1 for o in outcome.values() if o == "fail"),
                "failed_then_present": len(failed_then_present),
                "availability_pct": round(100 * ok / max(1, len(outcome)), 2), "kills": kills,
                "errors": errors, "disk_full": episode, "file_vs_live_mismatch": len(mismatched),
                "run_seconds": round(run_s, 1), "acks_per_s": round(ok / run_s)}

    res = run_node(body, state=str(tmp_path / "r16.db"), bound=seconds + 2 * FAULT_BOUND + 120)
    assert res["lost"] == 0 and res["unexpected"] == 0, res
    assert res["failed_then_present"] == 0, res
    assert res["file_vs_live_mismatch"] == 0, res
    assert res["kills"] >= 1 and res["disk_full"].get("sqlite_full_failures", 0) >= 1, res
    record(16, "test_jepsen_cart_traffic_with_kills_and_disk_full", carts=carts, clients=clients,
           soak=SOAK, **res)


class _Vault(Actor):
    checkpoint = Checkpoint(every=1, durable=True)

    async def init(self) -> None:
        self.state = ["seed"]

    async def handle_cast(self, message: Any) -> None:
        # A cast, not a call: a durable call's reply waits on the writer even when the state is
        # unchanged (the epoch is checked), and that would put "big" and "small" in one batch.
        match message:
            case ("hold", gate):
                await self.call(gate, "wait", timeout=30)  # later calls queue behind this one

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("big", item):
                self.state = [*self.state, item, os.urandom(200_000)]  # needs new pages: SQLITE_FULL
                return "big ok"
            case ("small", item):
                self.state = [s for s in self.state if isinstance(s, str)] + [item]  # fits in place
                return "small ok"
        raise ValueError(request)


def test_failed_write_is_not_carried_by_a_later_write(tmp_path: Any) -> None:
    async def body(node: Node) -> dict[str, Any]:
        gate = await node.spawn(Latch, worker=0)
        vault = await node.spawn(_Vault, name="r16-vault", worker=1)
        await node.call(vault, ("small", "id0"))  # committed: "hold" below changes nothing to write
        filler = await node.spawn(Filler, worker=1)
        await node.call(filler, 0)  # no room for a new page on worker 1's connection
        node.cast(vault, ("hold", gate))
        while await node.call(gate, "waiting") < 1:  # bounded by run_node; each loop is a round trip
            pass
        big = asyncio.ensure_future(node.call(vault, ("big", "id1"), timeout=30))
        small = asyncio.ensure_future(node.call(vault, ("small", "id2"), timeout=30))
        while next(a for a in (await node.snapshot())["actors"] if a["pid"] == repr(vault))["mailbox"] < 2:
            pass
        await node.call(gate, "open")
        outcomes = await asyncio.gather(big, small, return_exceptions=True)
        await node.call(filler, None)
        return {"outcomes": [o if isinstance(o, str) else repr(o)[:120] for o in outcomes],
                "stored": [s for s in checkpoints.load(node.state_path, "r16-vault") if isinstance(s, str)]}

    res = run_node(body, state=str(tmp_path / "r16v.db"))
    assert "CheckpointWriteFailed" in res["outcomes"][0], res  # the caller of "big" was told it failed
    assert "id1" not in res["stored"], f"the failed write landed with a later one: {res}"
