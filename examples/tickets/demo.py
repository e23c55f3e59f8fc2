"""The ticket booth demo: both scenarios under the same crowd, one agent crash each, the ledger checked.

:func:`demo` returns the measured facts (:class:`TicketsReport`); printing is separate, so the tests
assert the same claims the terminal shows.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from kernel import Node, Pid
from supervisors import Supervisor

from .._cli import Claim, all_hold, console, show_claims
from .booth import Mode, TicketBooth, agent_name, booth_tree, vault_name

SCENARIOS: tuple[tuple[str, Mode, str], ...] = (
    ("A", "stash", "agents keep a stash, top it up when low"),
    ("B", "fetch", "agents run to the vault for every customer"),
)


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """What one scenario did, measured from both sides: the customers' receipts and the vault's ledger."""

    scenario: str
    mode: str
    tickets: int
    receipts: int  # tickets customers walked away with
    unique: bool  # no ticket number in two customers' hands, all within 1..tickets
    vault_sold: int
    in_vault: int
    checked_out: int
    crashes: int  # agents that died mid-run (the injected fault)
    reclaimed: int  # tickets the vault took back from crashed agents' drawers
    anomalies: int  # sales the vault heard of after reclaiming that stash (would be double sales)
    seconds: float

    @property
    def rate(self) -> float:
        return self.receipts / self.seconds if self.seconds else 0.0

    @property
    def exact(self) -> bool:
        return (self.receipts == self.tickets == self.vault_sold and self.unique
                and self.in_vault == 0 and self.checked_out == 0 and self.anomalies == 0)


@dataclass(frozen=True, slots=True)
class TicketsReport:
    workers: int
    agents: int
    customers: int
    results: tuple[ScenarioResult, ...]
    claims: tuple[Claim, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all_hold(self.claims)


async def customer_queue(ctx: Any, booth: TicketBooth, first: int, stride: int, report_to: Pid) -> None:
    """A line of customers at one door: customer ``first``, ``first + stride``... each buys one ticket
    until the booth says sold out; then the receipts go to ``report_to``."""
    receipts: list[int] = []
    customer = first
    while (ticket := await booth.buy(customer)) is not None:
        receipts.append(ticket)
        customer += stride
    ctx.send(report_to, ("receipts", first, receipts))


async def run_scenario(node: Node, scenario: str, mode: Mode, *, tickets: int, agents: int,
                       customers: int, crash_on_sale: int) -> ScenarioResult:
    """Start the booth, arm one agent to crash mid-sale, let the crowd buy everything, read the ledger."""
    workers = len(node.workers)
    root = await node.spawn(Supervisor, strategy="rest_for_one", name=("booth", scenario),
                            children=booth_tree(scenario, mode, tickets=tickets, agents=agents,
                                                workers=workers))
    try:
        node.cast(agent_name(scenario, 1 % agents), ("fail_on_sale", crash_on_sale))
        booth = TicketBooth(scenario, agents)
        started = time.perf_counter()
        for i in range(customers):  # the node places them round-robin: customers on every worker
            await node.spawn(customer_queue, booth, i, customers, node.pid)
        receipts: list[int] = []
        for _ in range(customers):
            _, _, got = await node.receive(match=lambda m: isinstance(m, tuple) and m[0] == "receipts")
            receipts.extend(got)
        seconds = time.perf_counter() - started
        ledger = await node.call(vault_name(scenario), "ledger")
    finally:
        await node.stop(root, "shutdown", timeout=10.0)
    return ScenarioResult(
        scenario=scenario, mode=mode, tickets=tickets, receipts=len(receipts),
        unique=len(set(receipts)) == len(receipts) and all(1 <= t <= tickets for t in receipts),
        vault_sold=ledger["sold"], in_vault=ledger["in_vault"], checked_out=ledger["checked_out"],
        crashes=len(ledger["reclaims"]), reclaimed=sum(n for _, n in ledger["reclaims"]),
        anomalies=len(ledger["anomalies"]), seconds=seconds)


def judge(results: Sequence[ScenarioResult]) -> tuple[Claim, ...]:
    claims: list[Claim] = []
    for r in results:
        claims.append(Claim(
            f"Scenario {r.scenario}: exactly the vault's {r.tickets:,} tickets were sold, never more",
            r.exact,
            f"{r.receipts:,} in customers' hands, all different; vault ledger: {r.vault_sold:,} sold, "
            f"{r.in_vault} left, {r.checked_out} in drawers"))
        claims.append(Claim(
            f"Scenario {r.scenario}: an agent crashed mid-sale and no ticket was lost",
            r.crashes >= 1 and r.exact,
            f"{r.crashes} crash(es); the vault took back {r.reclaimed} unsold ticket(s) from the "
            f"dead agent's drawer and sold them again"))
    return tuple(claims)


async def demo(*, workers: int = 2, tickets: int = 10_000, agents: int = 4, customers: int = 40,
               crash_on_sale: int | None = None) -> TicketsReport:
    """Run scenario A then B on one node under the same crowd; return what was measured and judged.

    The rigged agent crashes on its ``crash_on_sale``-th sale; by default a tenth of a fair share, so
    the crash happens however unevenly a busy machine spreads the customers over the agents.
    """
    if crash_on_sale is None:
        crash_on_sale = max(1, tickets // (agents * 10))
    async with asyncio.timeout(50), Node(workers=workers, name=None) as node:
        results = tuple([
            await run_scenario(node, scenario, mode, tickets=tickets, agents=agents,
                               customers=customers, crash_on_sale=crash_on_sale)
            for scenario, mode, _ in SCENARIOS
        ])
    return TicketsReport(workers, agents, customers, results, judge(results))


def show(report: TicketsReport) -> None:
    console.rule("[bold]The ticket booth")
    console.print(
        f"A vault holds the tickets. {report.agents} ticket agents sit at windows under a supervisor, spread "
        f"over {report.workers} worker processes. {report.customers} lines of customers, also on every "
        "worker, each buy one ticket at a time until the booth says [italic]sold out[/]. Customers only "
        "ever call [bold]booth.buy()[/]: they cannot tell which scenario runs. In each run one agent is "
        "rigged to crash in the middle of a sale, with a ticket in hand and a stash in its drawer; its "
        "supervisor restarts it (the kernel logs that crash's traceback on stderr: it is expected).\n")
    for scenario, _, text in SCENARIOS:
        console.print(f"  [bold]Scenario {scenario}[/]: {text}.")
    table = Table(title="Same crowd, same booth.buy(), two scenarios", title_justify="left")
    for col in ("", "sold", "vault ledger", "crashed agent", "time", "tickets/s"):
        table.add_column(col, justify="right" if col in ("sold", "time", "tickets/s") else "left")
    for r in report.results:
        table.add_row(r.scenario, f"{r.receipts:,}", f"{r.vault_sold:,} sold, {r.in_vault} left",
                      f"{r.crashes}, {r.reclaimed} taken back", f"{r.seconds:.2f}s", f"{r.rate:,.0f}")
    console.print(table)
    a, b = report.results
    if a.rate and b.rate:
        faster, slower = (a, b) if a.rate >= b.rate else (b, a)
        console.print(
            f"Scenario {faster.scenario} sold {faster.rate / slower.rate:.1f}x faster here: "
            + ("a stash means most sales never wait on the vault, which serves one request at a time."
               if faster is a else "on this machine the vault kept up with every window."))
    console.print()
    show_claims(report.claims)
    console.print(
        "\nWhy nothing is lost: the vault's ledger puts every ticket in the vault, in one agent's drawer, "
        "or sold. Agents report each sale before handing the ticket over, the vault monitors every agent "
        "it gives tickets to, and when it sees a dead agent's [bold]Down[/] it takes the unsold rest back.")
    console.print(
        "\n[bold]Watch it live:[/] run [cyan]python -m examples.tickets --observe[/] in one terminal and "
        "[cyan]python -m tools.observer[/] in another (kill an agent there and see it come back).")


async def observe(workers: int = 2, tickets: int = 1_000_000, agents: int = 4, customers: int = 8,
                  pace: float = 0.02) -> int:
    """Both booths open for good, a slow crowd, a random agent crash every 10 s, until Ctrl-C."""
    async with Node(workers=workers, name="tickets") as node:
        for scenario, mode, _ in SCENARIOS:
            await node.spawn(Supervisor, strategy="rest_for_one", name=("booth", scenario),
                             children=booth_tree(scenario, mode, tickets=tickets, agents=agents,
                                                workers=workers))
            booth = TicketBooth(scenario, agents)
            for i in range(customers):
                await node.spawn(_paced_customers, booth, i, customers, pace)
        console.print(f"[bold]Node 'tickets'[/] is selling from two booths on {workers} workers. "
                      "In another terminal: [cyan]python -m tools.observer --node tickets[/]. Ctrl-C stops.")
        rng = random.Random(7)
        while True:
            await asyncio.sleep(10)  # pacing the show, not synchronising anything
            scenario = rng.choice("AB")
            node.cast(agent_name(scenario, rng.randrange(agents)), ("fail_on_sale", 1))
            line = []
            for s, _, _ in SCENARIOS:
                ledger = await node.call(vault_name(s), "ledger")
                line.append(f"{s}: {ledger['sold']:,} sold, {len(ledger['reclaims'])} agent crash(es)")
            console.print("  " + " | ".join(line) + f"  [dim](crashing an agent of booth {scenario})[/]")


async def _paced_customers(ctx: Any, booth: TicketBooth, first: int, stride: int, pace: float) -> None:
    customer = first
    while await booth.buy(customer) is not None:
        customer += stride
        await asyncio.sleep(pace)
