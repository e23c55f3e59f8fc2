"""Small actors that more than one test module spawns (on workers, which import them from here)."""

from __future__ import annotations

from typing import Any

from kernel import Actor, NoReply


class Latch(Actor):
    """Holds callers until it opens: ``"wait"`` is answered ``True`` once ``"open"`` was called (at
    once after that); ``"waiting"`` says how many wait; ``"open"`` returns how many it released.

    A handler that calls ``"wait"`` is blocked there, so what is sent to its actor next stays queued.
    Replies are never bounded by a mailbox, so the release always arrives.
    """

    async def init(self) -> None:
        self.state: dict[str, Any] = {"open": False, "waiting": []}

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case "wait":
                if self.state["open"]:
                    return True
                self.state["waiting"].append(caller)
                return NoReply
            case "waiting":
                return len(self.state["waiting"])
            case "open":
                self.state["open"] = True
                for who in self.state["waiting"]:
                    self.reply(who, True)
                return len(self.state["waiting"])
        raise ValueError(f"Latch: unexpected request {request!r} (use 'wait', 'waiting' or 'open')")
