"""The ticket booth: a vault, ticket agents under a supervisor, and one customer-facing interface.

Two ways to run the booth, from the design discussion:

* scenario A, ``"stash"``: each agent checks a stash of tickets out of the vault and asks for more
  (without blocking anyone) when it runs low, so most sales never touch the vault;
* scenario B, ``"fetch"``: agents hold nothing and run to the vault for every customer.

Customers use :class:`TicketBooth` and cannot tell which one runs: the reply is a ticket number or
"sold out" either way.

Why no ticket is ever sold twice or lost, even when an agent crashes with a stash in its drawer: the
vault keeps a ledger. Every ticket is in the vault, checked out to one agent, or sold. An agent tells
the vault about each sale (a cast, sent before the customer gets the ticket); the vault monitors every
agent it hands tickets to, and when it sees that agent's ``Down`` it takes back whatever the agent held
unsold. Messages from one sender arrive in order, and the ``Down`` is the agent's last word, so a sale
the agent made is always recorded before the stash is reclaimed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import kernel
from kernel import Actor, ActorExited, Down, NoProc, NoReply, Pid
from supervisors import ChildSpec, Supervisor

Mode = Literal["stash", "fetch"]

#: The agent's answer when its drawer and the vault are empty but other agents still hold tickets.
ELSEWHERE = "try another window"
SOLD_OUT = "sold out"


def vault_name(scenario: str) -> tuple[str, str]:
    return ("vault", scenario)


def agent_name(scenario: str, index: int) -> tuple[str, str, int]:
    return ("ticket-agent", scenario, index)


class Vault(Actor):
    """Owns the tickets; its ledger says where each one is: in the vault, checked out, or sold.

    Tickets are numbered 1..total. Unissued ones are a counter (a million-ticket vault costs nothing),
    returned ones a list.
    """

    async def init(self, total: int) -> None:
        self.state = {"total": total, "next": 1, "returned": [], "sold": 0,
                      "out": {}, "reclaims": [], "anomalies": []}
        self.watched: set[Pid] = set()

    # -- the ledger ----------------------------------------------------------------------------

    def _left(self) -> int:
        s = self.state
        return s["total"] - s["next"] + 1 + len(s["returned"])

    def _checkout(self, agent: Pid, n: int) -> tuple[list[int], bool]:
        """Hand up to ``n`` tickets to ``agent``; the flag is True when every ticket is sold."""
        s = self.state
        take = s["returned"][-n:] if s["returned"] else []
        del s["returned"][len(s["returned"]) - len(take):]
        more = min(n - len(take), s["total"] - s["next"] + 1)
        take.extend(range(s["next"], s["next"] + more))
        s["next"] += more
        if take:
            if agent not in self.watched:
                self.watched.add(agent)
                self.monitor(agent)
            s["out"].setdefault(agent, set()).update(take)
        sold_out = not take and not any(s["out"].values())
        return take, sold_out

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("checkout", Pid() as agent, int(n)):
                return self._checkout(agent, n)
            case "ledger":
                s = self.state
                return {"total": s["total"], "sold": s["sold"], "in_vault": self._left(),
                        "checked_out": sum(len(t) for t in s["out"].values()),
                        "reclaims": list(s["reclaims"]), "anomalies": list(s["anomalies"])}
        return await super().handle_call(request, caller)

    async def handle_cast(self, message: Any) -> None:
        match message:
            case ("sold", agent, ticket):
                held = self.state["out"].get(agent)
                if held is None or ticket not in held:
                    # Would mean a sale recorded after its stash was reclaimed: a possible double sale.
                    self.state["anomalies"].append((repr(agent), ticket))
                    return
                held.discard(ticket)
                self.state["sold"] += 1
            case ("refill", Pid() as agent, int(n)):
                # Scenario A's asynchronous top-up: the agent keeps selling while this is on its way.
                self.send(agent, ("restock", *self._checkout(agent, n)))

    async def handle_info(self, message: Any) -> None:
        if isinstance(message, Down) and message.pid in self.watched:
            self.watched.discard(message.pid)
            unsold = self.state["out"].pop(message.pid, set())
            self.state["returned"].extend(sorted(unsold, reverse=True))
            if message.reason not in ("normal", "shutdown"):
                self.state["reclaims"].append((repr(message.pid), len(unsold)))


class Agent(Actor):
    """One ticket window: ``("buy", customer)`` answers ``("ticket", n)``, ELSEWHERE or SOLD_OUT.

    In ``"stash"`` mode a customer who finds the drawer empty waits (``NoReply``) for the restock
    already asked for, and is answered when it arrives.
    """

    async def init(self, scenario: str, mode: Mode, stash: int = 50, low: int = 10) -> None:
        self.vault = vault_name(scenario)
        self.mode = mode
        self.size, self.low = stash, low
        self.waiting: list[Any] = []  # callers queued on an empty drawer
        self.refilling = False
        self.fault_at: int | None = None  # injected: crash on this sale, with the ticket in hand
        self.state = {"stash": [], "sold": 0}
        if mode == "stash":
            tickets, _ = await self.call(self.vault, ("checkout", self.pid, stash))
            self.state["stash"] = tickets

    def _sell(self, ticket: int, customer: Any) -> tuple[str, int]:
        self.state["sold"] += 1
        if self.fault_at is not None and self.state["sold"] >= self.fault_at:
            raise RuntimeError(f"injected fault: agent dropped ticket {ticket} on the floor mid-sale")
        self.cast(self.vault, ("sold", self.pid, ticket))  # before the customer can have it
        return ("ticket", ticket)

    def _top_up(self) -> None:
        if not self.refilling and len(self.state["stash"]) <= self.low:
            self.refilling = True
            self.cast(self.vault, ("refill", self.pid, self.size))

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("buy", customer):
                if self.mode == "fetch":
                    tickets, sold_out = await self.call(self.vault, ("checkout", self.pid, 1))
                    if tickets:
                        return self._sell(tickets[0], customer)
                    return SOLD_OUT if sold_out else ELSEWHERE
                stash = self.state["stash"]
                if stash:
                    answer = self._sell(stash.pop(), customer)
                    self._top_up()
                    return answer
                self.waiting.append((caller, customer))
                self._top_up()
                return NoReply
            case "count":
                return len(self.state["stash"])
        return await super().handle_call(request, caller)

    async def handle_cast(self, message: Any) -> None:
        match message:
            case ("fail_on_sale", int(n)):
                self.fault_at = self.state["sold"] + n

    async def handle_info(self, message: Any) -> None:
        match message:
            case ("restock", list(tickets), bool(sold_out)):
                self.refilling = False
                stash = self.state["stash"]
                stash.extend(tickets)
                waiting, self.waiting = self.waiting, []
                for caller, customer in waiting:
                    if stash:
                        self.reply(caller, self._sell(stash.pop(), customer))
                    else:
                        self.reply(caller, SOLD_OUT if sold_out else ELSEWHERE)
                if tickets:
                    self._top_up()


def booth_tree(scenario: str, mode: Mode, *, tickets: int, agents: int, workers: int,
               stash: int = 50) -> list[ChildSpec]:
    """The booth's children: the vault first, then the agents' supervisor (``rest_for_one`` above it).

    Agents are spread over the workers; each is registered as ``("ticket-agent", scenario, i)``.
    """
    agent_specs = [
        ChildSpec(f"agent-{i}", Agent, args=(scenario, mode), kwargs={"stash": stash, "low": stash // 5},
                  worker=i % workers, name=agent_name(scenario, i))
        for i in range(agents)
    ]
    return [
        ChildSpec("vault", Vault, args=(tickets,), worker=0, name=vault_name(scenario)),
        ChildSpec("agents", Supervisor, type="supervisor",
                  kwargs={"strategy": "one_for_one", "children": agent_specs,
                          "max_restarts": 10, "max_seconds": 5.0}),
    ]


class BoothBusy(Exception):
    """A customer went round every window too many times without an answer: the booth is stuck."""


@dataclass(frozen=True, slots=True)
class TicketBooth:
    """What a customer sees: ``await booth.buy(customer)`` -> a ticket number, or None when sold out.

    The same for both scenarios: the customer never learns whether agents keep stashes. A window that
    is closed (its agent is being restarted) or crashes mid-sale just sends the customer to the next
    one, as a real queue would.
    """

    scenario: str
    agents: int
    patience: int = 100_000

    async def buy(self, customer: int) -> int | None:
        window = customer % self.agents
        for _ in range(self.patience):
            try:
                answer = await kernel.call(agent_name(self.scenario, window), ("buy", customer))
            except (NoProc, ActorExited):
                answer = ELSEWHERE
            match answer:
                case ("ticket", int(ticket)):
                    return ticket
                case "sold out":
                    return None
            window = (window + 1) % self.agents
        raise BoothBusy(f"customer {customer} gave up after {self.patience} windows")
