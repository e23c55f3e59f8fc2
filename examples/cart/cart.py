"""One actor per user cart: found or started by name, checkpointed on every change.

Why the races of the design discussion cannot happen here: the web app and the mobile app both talk
to the same actor, ``("cart", user)``, which handles one request at a time. "The husband checks out
while the wife deletes the cart" becomes two messages in one mailbox: whichever arrives first wins
completely, and the second sees its result (an order was placed, or the cart is already empty).
"One per customer" is checked against the cart and the user's past orders in the same step that adds
the item, so two devices cannot both get one.

Why nothing acknowledged is lost: ``Checkpoint(every=1, durable=True)`` writes the state after every
change and releases the reply only once it is committed to SQLite. When the cart's worker process is
killed, the next request starts the cart again from that checkpoint (``restore`` instead of
``init``). Requests carry an idempotency key, remembered in the checkpointed state, so a client that
retries a request whose answer it never got does not add the item twice.

What a cart remembers of a key is small: the state is written whole on every change, so it must stay
about the size of the cart. The last ``_KEEP_KEYS`` keys are kept, each with what the change did
(``_CART``: it was applied and answered with the cart; an order's number; the items a delete removed; a
refusal), never a copy of its answer. A retry of a remembered key changes nothing and is answered with
``"replayed": True``: an add or a remove with the cart as it is now, a checkout with the order it
placed, a delete with what it removed; a refusal is refused again. A key is recognised as long as fewer
than ``_KEEP_KEYS`` other changes reached the cart since: a device retries its own change before it
sends the next one, so that runs out only if the other devices of one user make that many changes
while it waits.
"""

from __future__ import annotations

import os
from typing import Any

from kernel import Actor, Checkpoint

#: Items and their price in cents; the poster is limited to one per customer, ever.
CATALOG: dict[str, int] = {"tee": 1500, "mug": 900, "socks": 700, "sticker": 200, "poster": 2500}
ONE_PER_CUSTOMER = frozenset({"poster"})
_KEEP_KEYS = 64  # idempotency keys remembered per cart: the latest changes, whatever their devices
_CART = ("cart",)  # remembered for an add or a remove: done, answered with the cart


def cart_name(user: str) -> tuple[str, str]:
    return ("cart", user)


class Cart(Actor):
    """``(op, key, *args)`` calls -> ``("ok", value)`` or ``("refused", why)``. State is plain data."""

    checkpoint = Checkpoint(every=1, durable=True)
    #: A cart nobody touched for this long stops; its next request brings it back from its checkpoint.
    idle_timeout = 60.0

    async def init(self, user: str) -> None:
        self.state = {"user": user, "items": {}, "orders": [], "bought_limited": [],
                      "restores": 0, "done": {}}

    async def restore(self, state: Any) -> None:
        state["restores"] += 1  # shown by the demo: this cart came back from disk
        if "answers" in state:  # a checkpoint from before "done": its full answers replay as they are
            state["done"] = dict(list(state.pop("answers").items())[-_KEEP_KEYS:])
        self.state = state

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("view",):
                return ("ok", self.view())
            case ("host",):  # which worker process hosts this cart: the demo and the tests kill it
                return ("ok", {"worker": self.pid.worker, "os_pid": os.getpid()})
            case (str(op), str(key), *args):
                done = self.state["done"]  # key -> outcome, oldest first
                if key in done:  # a retry of a change already made: no second effect
                    return self.replay(done[key])
                answer = self.apply(op, *args)
                done[key] = outcome(op, answer)
                if len(done) > _KEEP_KEYS:
                    del done[next(iter(done))]
                return answer
        return await super().handle_call(request, caller)

    def replay(self, outcome: tuple[Any, ...]) -> tuple[str, Any]:
        """The answer to a retried key: what the change did (or the cart now), marked ``replayed``."""
        match outcome:
            case ("cart",):
                return ("ok", {**self.view(), "replayed": True})
            case ("order", int(number)):
                return ("ok", {**self.state["orders"][number - 1], "replayed": True})
            case ("ok", dict(value)):  # a delete's {"removed": items}
                return ("ok", {**value, "replayed": True})
        return outcome  # ("refused", why): refused again, for the same reason

    def view(self) -> dict[str, Any]:
        s = self.state
        return {"user": s["user"], "items": dict(s["items"]), "orders": list(s["orders"]),
                "restores": s["restores"]}

    def apply(self, op: str, *args: Any) -> tuple[str, Any]:
        items: dict[str, int] = self.state["items"]
        match op, args:
            case "add", (str(sku), int(qty)) if qty > 0:
                if sku not in CATALOG:
                    return ("refused", f"no such item: {sku}")
                limited = sku in ONE_PER_CUSTOMER
                if limited and (sku in items or sku in self.state["bought_limited"] or qty > 1):
                    return ("refused", f"{sku} is limited to one per customer")
                items[sku] = items.get(sku, 0) + qty
                return ("ok", self.view())
            case "remove", (str(sku),):
                if items.pop(sku, None) is None:
                    return ("refused", f"{sku} is not in the cart")
                return ("ok", self.view())
            case "delete", ():
                removed, self.state["items"] = items, {}
                if not removed:
                    return ("refused", "the cart is already empty")
                return ("ok", {"removed": removed})
            case "checkout", ():
                if not items:
                    return ("refused", "the cart is empty: nothing to check out")
                order = {"number": len(self.state["orders"]) + 1, "items": dict(items),
                         "total_cents": sum(CATALOG[sku] * n for sku, n in items.items())}
                self.state["orders"].append(order)
                self.state["bought_limited"].extend(sku for sku in items if sku in ONE_PER_CUSTOMER)
                self.state["items"] = {}
                return ("ok", order)
        return ("refused", f"bad request: {op} {args!r}")


def outcome(op: str, answer: tuple[str, Any]) -> tuple[Any, ...]:
    """What a cart remembers of a change, to answer its retries: never a copy of the cart."""
    status, value = answer
    if status != "ok":
        return answer  # ("refused", why)
    if op == "checkout":
        return ("order", value["number"])  # the order itself is in state["orders"]
    if op == "delete":
        return answer  # ("ok", {"removed": items}): at most the catalog
    return _CART
