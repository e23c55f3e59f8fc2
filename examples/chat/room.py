"""Chat rooms as actors: one persistent actor per room, members reached by pub/sub through the registry.

* A room is one of ``rooms = Entities("rooms", Room)``: its first message, from any worker, starts it
  (exactly one however many race), registered as ``("rooms", name)``; put ``rooms.child_spec()`` in
  the tree. A crashed room is restarted by the family's supervisor from its checkpoint.
* Its history is its state, checkpointed before every post is acknowledged
  (``Checkpoint(every=1, durable=True)``): a crashed room restarts from it, a late joiner is sent it.
* Members are not part of the room's state: they join the group ``("members", room)`` of the
  registry (Erlang's ``pg``), which drops them when they exit. So the list survives a room crash,
  and a room that restarts publishes to the same members.
* ``idle_timeout``: a room nobody speaks in stops by itself (passivates): its last state is on disk and
  its name is free; the next message starts it again from its checkpoint.

Why a joiner sees every message exactly once: the room adds the member to the group and returns the
history in the same handler, and every later post is published after that, by the same sender, so it
reaches the member's worker in order.
"""

from __future__ import annotations

from typing import Any

import registry
from kernel import Actor, Checkpoint, NoReply, Pid
from supervisors import Entities

HISTORY = 200  # messages a room keeps


def room_name(room: str) -> tuple[Any, Any]:
    return rooms.entity_name(room)


def topic(room: str) -> tuple[str, str]:
    return ("members", room)


class Room(Actor):
    """``("post", msg_id, who, text)`` -> seq; ``("join", who, pid)`` -> history; ``"history"``."""

    checkpoint = Checkpoint(every=1, durable=True)
    idle_timeout = 1.0

    async def init(self, room: str) -> None:
        self.state = {"room": room, "next": 1, "history": [], "restores": 0}

    async def restore(self, state: Any) -> None:
        state["restores"] += 1
        self.state = state

    async def handle_call(self, request: Any, caller: Any) -> Any:
        s = self.state
        match request:
            case ("post", msg_id, str(who), str(text)):
                for seq, mid, *_ in reversed(s["history"]):
                    if mid == msg_id:
                        return seq  # a retry: posted already
                line = (s["next"], msg_id, who, text)
                s["next"] += 1
                s["history"] = [*s["history"][-(HISTORY - 1):], line]
                await registry.publish(topic(s["room"]), ("said", s["room"], line))
                return line[0]
            case ("join", str(who), Pid() as member):
                await registry.join(topic(s["room"]), member)
                return list(s["history"])
            case "history":
                return list(s["history"])
            case "restores":
                return s["restores"]
            case "crash":
                raise RuntimeError(f"injected fault in room {s['room']}")
        return await super().handle_call(request, caller)


#: The rooms, one per topic (``init(room)``), each passivating after ``Room.idle_timeout``.
rooms = Entities("rooms", Room)


async def ask_room(room: str, request: Any) -> Any:
    """Call the room, starting or restoring it if it is not running (passivated, or never started)."""
    return await rooms.call(room, request)


class Member(Actor):
    """A chat client: what it has seen is its state; ``("wait", n)`` answers once it has seen n lines."""

    async def init(self, who: str) -> None:
        self.who = who
        self.state: list[tuple[Any, ...]] = []
        self.waiters: list[tuple[int, Any]] = []
        self.sent = 0

    async def handle_call(self, request: Any, caller: Any) -> Any:
        match request:
            case ("join", str(room)):
                history = await ask_room(room, ("join", self.who, self.pid))
                self.state = [line for line in history if line not in self.state] + self.state
                self.state.sort()
                return len(history)
            case ("say", str(room), str(text)):
                self.sent += 1
                return await ask_room(room, ("post", (self.who, self.sent), self.who, text))
            case ("wait", int(n)):
                if len(self.state) >= n:
                    return list(self.state)
                self.waiters.append((n, caller))
                return NoReply
            case "seen":
                return list(self.state)
        return await super().handle_call(request, caller)

    async def handle_info(self, message: Any) -> None:
        match message:
            case ("said", _room, line) if line not in self.state:
                self.state.append(line)
                ready = [(n, c) for n, c in self.waiters if len(self.state) >= n]
                for n, c in ready:
                    self.waiters.remove((n, c))
                    self.reply(c, list(self.state))
