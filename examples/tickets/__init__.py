"""The ticket booth from the design discussion: run ``python -m examples.tickets``."""

from .booth import ELSEWHERE, SOLD_OUT, Agent, TicketBooth, Vault, booth_tree
from .demo import ScenarioResult, TicketsReport, demo, observe, show

__all__ = ["ELSEWHERE", "SOLD_OUT", "Agent", "ScenarioResult", "TicketBooth", "TicketsReport", "Vault",
           "booth_tree", "demo", "observe", "show"]
