"""The chat demo: members on every worker, a late joiner, a room crash, an idle room passivating.

:func:`demo` returns :class:`ChatReport`; :func:`show` prints it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import registry
from kernel import ActorExited, Down, Node
from supervisors import Supervisor

from .._cli import Claim, all_hold, console, show_claims
from .room import Member, Room, ask_room, room_name, rooms

ROOM = "lobby"


@dataclass(frozen=True, slots=True)
class ChatReport:
    members: int
    posts: int
    everyone_saw_all: bool  # every member's view equals the room's history, same order
    late_joiner_got: int  # lines the late joiner received as history on joining
    history_before_crash: int
    history_after_crash: int
    restored_equal: bool  # the restarted room's history equals the one before the crash
    passivated: bool  # the idle room stopped by itself ("normal") and its name was freed
    idle_seconds: float
    revived_equal: bool  # the room came back on the next message with its whole history
    restores: int  # times the room started from its checkpoint
    seconds: float
    claims: tuple[Claim, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all_hold(self.claims)


async def demo(*, workers: int = 2, members: int = 4, lines: int = 10) -> ChatReport:
    """Talk, join late, crash the room, let it go idle, talk again; return what each step showed."""
    folder = tempfile.mkdtemp(prefix="chat-demo-")
    started = time.perf_counter()
    try:
        async with asyncio.timeout(40), Node(workers=workers, state=os.path.join(folder, "chat.db")) as node:
            await node.spawn(Supervisor, children=[rooms.child_spec()], name="root")
            people = [await node.spawn(Member, name) for name in ("ana", "ben", "chloe", "dev")[:members]]
            early, late = people[:-1], people[-1]
            for person in early:
                await node.call(person, ("join", ROOM))
            # Everyone but the late joiner talks at once, from every worker.
            await asyncio.gather(*(node.call(p, ("say", ROOM, f"hello #{k}")) for k in range(lines)
                                   for p in early))
            posts = len(early) * lines
            views = [await node.call(p, ("wait", posts)) for p in early]
            history = await ask_room(ROOM, "history")
            late_got = await node.call(late, ("join", ROOM))
            await node.call(late, ("say", ROOM, "sorry I'm late"))
            posts += 1
            views = [await node.call(p, ("wait", posts)) for p in people]
            history = await ask_room(ROOM, "history")
            everyone = all(v == history for v in views) and len(history) == posts

            # Crash the room: its supervisor (the rooms' family) restarts it from its checkpoint.
            room = await registry.whereis(room_name(ROOM))
            ref = node.monitor(room)
            with contextlib.suppress(ActorExited):  # the room dies answering, as a crash does
                await node.call(room, "crash")
            await node.receive(match=lambda m: isinstance(m, Down) and m.ref == ref, timeout=5)
            after_crash = await ask_room(ROOM, "history")

            # Let it go idle: it passivates by itself (exit "normal") after Room.idle_timeout.
            room = await registry.whereis(room_name(ROOM))
            idle_from = time.perf_counter()
            ref = node.monitor(room)
            down = await node.receive(match=lambda m: isinstance(m, Down) and m.ref == ref,
                                      timeout=Room.idle_timeout * 5 + 5)
            idle = time.perf_counter() - idle_from
            passivated = down.reason == "normal" and await registry.whereis(room_name(ROOM)) is None
            await node.call(people[0], ("say", ROOM, "anyone still here?"))
            posts += 1
            revived = await ask_room(ROOM, "history")
            views = [await node.call(p, ("wait", posts)) for p in people]
            restores = await ask_room(ROOM, "restores")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report = ChatReport(
        members=members, posts=posts, everyone_saw_all=everyone and all(v == revived for v in views),
        late_joiner_got=late_got, history_before_crash=len(history), history_after_crash=len(after_crash),
        restored_equal=after_crash == history, passivated=passivated, idle_seconds=idle,
        revived_equal=revived[:-1] == history and len(revived) == posts, restores=restores,
        seconds=time.perf_counter() - started)
    return _judge(report)


def _judge(r: ChatReport) -> ChatReport:
    claims = (
        Claim(f"All {r.members} members, on different workers, saw every line in the same order",
              r.everyone_saw_all, f"{r.posts} lines"),
        Claim("The late joiner got the history when joining", r.late_joiner_got == r.posts - 2,
              f"{r.late_joiner_got} earlier lines"),
        Claim("After the room crashed, it came back with its history from the checkpoint",
              r.restored_equal and r.history_after_crash == r.history_before_crash,
              f"{r.history_before_crash} lines before, {r.history_after_crash} after"),
        Claim(f"Left idle, the room passivated by itself (idle_timeout = {Room.idle_timeout}s)",
              r.passivated, f"stopped after {r.idle_seconds:.1f}s, its name freed"),
        Claim("The next message brought it back with its whole history",
              r.revived_equal and r.restores >= 2, f"started from its checkpoint {r.restores} times"),
    )
    return ChatReport(**{f: getattr(r, f) for f in r.__dataclass_fields__ if f != "claims"}, claims=claims)


def show(report: ChatReport) -> None:
    console.rule("[bold]Chat rooms, one actor each")
    console.print(
        "The room 'lobby' is one of Entities(\"rooms\", Room), started on its first message. Its "
        "history is its checkpointed state; "
        "its members are a registry group (pub/sub), so they outlive the room. "
        f"{report.members - 1} members talk at once, a fourth joins late, then the room is crashed, "
        "then left alone until it stops by itself.\n")
    show_claims(report.claims)
    console.print(f"\n[dim]whole demo {report.seconds:.1f}s[/]")


async def serve(workers: int = 2) -> int:
    """A room with chatty members until Ctrl-C, for the observer (node "chat")."""
    async with Node(workers=workers, name="chat") as node:
        await node.spawn(Supervisor, children=[rooms.child_spec()], name="root")
        people = [await node.spawn(Member, name) for name in ("ana", "ben", "chloe")]
        for p in people:
            await node.call(p, ("join", ROOM))
        console.print("[bold]Node 'chat'[/]: watch the room come and go in "
                      "[cyan]python -m tools.observer --node chat[/]. Ctrl-C stops.")
        n = 0
        while True:
            n += 1
            await node.call(people[n % 3], ("say", ROOM, f"message {n}"))
            # Talk in bursts with pauses longer than idle_timeout, so the room passivates and returns.
            await asyncio.sleep(0.2 if n % 20 else Room.idle_timeout * 3)
