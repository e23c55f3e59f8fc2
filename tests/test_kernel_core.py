"""Kernel core across real worker processes: messaging, calls, errors, links, monitors, timers, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest

import kernel
from kernel import (
    ActorExited,
    AlreadyStarted,
    CallTimeout,
    Crash,
    Down,
    Exit,
    KernelError,
    Node,
    NoProc,
    NoReply,
    NotSerializable,
    Pid,
)
from kernel.testing import Facts
from tests.support.nodes import run_node


class Counter(kernel.Actor):
    async def init(self, start: int = 0) -> None:
        self.state = start

    async def handle_call(self, request, caller):
        match request:
            case "get":
                return self.state
            case ("add", n):
                self.state += n
                return self.state
            case "boom":
                raise ValueError("boom")
            case ("later", _):
                self.pending = caller
                return NoReply
            case "release":
                self.reply(self.pending, "released")
                return "ok"
            case ("sleep", s):
                await asyncio.sleep(s)
                return "slept"
            case ("call", dest, req):
                return await self.call(dest, req)
            case "self":
                return await self.call(self.pid, "get")
            case "unpicklable":
                return threading.Lock()
            case ("spawn_link", worker):
                return await self.spawn_link(Counter, 0, worker=worker)
            case "whoami":
                return (kernel.self_pid(), self.pid)
        return await super().handle_call(request, caller)

    async def handle_cast(self, message):
        if message[0] == "add":
            self.state += message[1]

    async def handle_info(self, message):
        self.state = ("info", message)


class Recorder(Facts):
    """Keeps every info message and cast (``Facts``: ``("wait", n)`` answered once it has n of them),
    and acts on the test's behalf: link, monitor, send, exit, timers."""

    trap_exits = False

    async def init(self, trap: bool = False) -> None:
        self.trap_exits = trap
        await super().init()

    async def handle_call(self, request, caller):
        match request:
            case ("link", pid):
                # Signals are asynchronous (as in Erlang); a call on the same ordered stream
                # proves the link reached the target before the test goes on.
                self.link(pid)
                await self.call(pid, "get")
                return "ok"
            case ("monitor", dest):
                ref = self.monitor(dest)
                await self.call(dest, "get")
                return ref
            case "messages":
                return list(self.state)
            case ("send", dest, msg):
                self.send(dest, msg)
                return "ok"
            case ("exit", pid, reason):
                self.exit(pid, reason)
                return "ok"
            case ("after", seconds, msg):
                return self.send_after(seconds, msg)
            case ("cancel", ref):
                return self.cancel_timer(ref)
        return await super().handle_call(request, caller)


class Stopper(kernel.Actor):
    async def init(self, journal) -> None:
        self.journal = journal

    async def terminate(self, reason) -> None:
        self.cast(self.journal, ("terminated", reason))


class Streamer(kernel.Actor):
    async def handle_call(self, request, caller):
        dest, count = request
        for i in range(count):
            self.cast(dest, i)
        return "sent"


def test_spawn_call_cast_send_across_workers() -> None:
    async def body(node: Node) -> None:
        assert len(node.workers) == 2 and all(isinstance(p, int) for p in node.workers)
        a = await node.spawn(Counter, 10)
        b = await node.spawn(Counter, 0, worker=1)
        assert (a.worker, b.worker) == (0, 1)
        assert repr(a) == "<0.1>"
        node.cast(a, ("add", 5))
        assert await node.call(a, "get") == 15
        node.send(b, "tick")
        assert await node.call(b, "get") == ("info", "tick")
        assert await node.call(a, ("call", b, "get")) == ("info", "tick")
        who = await node.call(a, "whoami")
        assert who == (a, a)

    run_node(body)


def test_fifo_of_20k_messages_between_two_workers() -> None:
    async def body(node: Node) -> None:
        rec = await node.spawn(Recorder, worker=1)
        src = await node.spawn(Streamer, worker=0)
        assert await node.call(src, (rec, 20_000)) == "sent"
        got = await node.call(rec, ("wait", 20_000), timeout=15)
        assert got == list(range(20_000))

    run_node(body)


def test_call_errors() -> None:
    async def body(node: Node) -> None:
        a = await node.spawn(Counter, 1, worker=0)
        with pytest.raises(ActorExited) as info:
            await node.call(a, "boom")
        assert isinstance(info.value.reason, Crash) and info.value.reason.type_name == "ValueError"
        with pytest.raises(NoProc):
            await node.call(a, "get")
        with pytest.raises(NoProc):
            await node.call("nobody", "get")
        b = await node.spawn(Counter, 1, worker=1)
        with pytest.raises(CallTimeout):
            await node.call(b, ("sleep", 1.0), timeout=0.2)
        # The late reply is discarded; the next call gets its own answer.
        assert await node.call(b, "get") == 1
        # The self-call raises KernelError inside the actor at once (no deadlock), which crashes it.
        with pytest.raises(ActorExited) as info:
            await node.call(b, "self", timeout=3)
        assert info.value.reason.type_name == "KernelError" and "itself" in info.value.reason.message
        b = await node.spawn(Counter, 1, worker=1)
        with pytest.raises(ActorExited) as info:
            await node.call(b, "no such request")
        assert "no such request" in str(info.value.reason)

    run_node(body)


def test_noreply_and_later_reply_across_workers() -> None:
    async def body(node: Node) -> None:
        a = await node.spawn(Counter, 0, worker=1)
        waiting = asyncio.ensure_future(node.call(a, ("later", 1)))
        await asyncio.sleep(0)  # one loop step: the call above is sent before the next one
        assert await node.call(a, "release") == "ok"
        assert await waiting == "released"

    run_node(body)


def test_unpicklable_message_and_reply() -> None:
    async def body(node: Node) -> None:
        a = await node.spawn(Counter, 0, worker=0)
        with pytest.raises(NotSerializable):
            node.send(a, threading.Lock())
        with pytest.raises(NotSerializable):
            await node.call(a, ("add", threading.Lock()))
        with pytest.raises(NotSerializable):
            await node.call(a, "unpicklable")
        # The channel and the actor keep working.
        assert await node.call(a, ("add", 2)) == 2

    run_node(body)


def test_links_propagate_and_trap_exits_across_workers() -> None:
    async def body(node: Node) -> None:
        trapper = await node.spawn(Recorder, True, worker=0)
        plain = await node.spawn(Recorder, False, worker=1)
        victim = await node.spawn(Counter, 0, worker=1)
        await node.call(trapper, ("link", victim))
        await node.call(plain, ("link", victim))
        ref = node.monitor(plain)
        with pytest.raises(ActorExited):
            await node.call(victim, "boom")
        msgs = await node.call(trapper, ("wait", 1))
        assert isinstance(msgs[0], Exit) and msgs[0].pid == victim
        assert msgs[0].reason.type_name == "ValueError"
        down = await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=5)
        assert down.reason.type_name == "ValueError"

    run_node(body)


def test_normal_exit_does_not_kill_links_and_kill_is_untrappable() -> None:
    async def body(node: Node) -> None:
        plain = await node.spawn(Recorder, False, worker=0)
        other = await node.spawn(Counter, 0, worker=1)
        await node.call(plain, ("link", other))
        await node.stop(other)  # exits "normal"
        assert await node.call(plain, "messages") == []
        trapper = await node.spawn(Recorder, True, worker=1)
        ref = node.monitor(trapper)
        await node.call(plain, ("exit", trapper, "kill"))
        down = await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=5)
        assert down.reason == "killed"
        # A trapping actor gets a non-kill exit signal as a message.
        t2 = await node.spawn(Recorder, True, worker=0)
        await node.call(plain, ("exit", t2, "custom"))
        msgs = await node.call(t2, ("wait", 1))
        assert msgs == [Exit(plain, "custom")]

    run_node(body)


def test_monitor_dead_pid_and_unknown_name() -> None:
    async def body(node: Node) -> None:
        a = await node.spawn(Counter, 0, worker=1)
        await node.stop(a)
        ref = node.monitor(a)
        down = await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=5)
        assert down == Down(ref, a, "noproc")
        ref2 = node.monitor("ghost")
        down2 = await node.receive(lambda m: isinstance(m, Down) and m.ref == ref2, timeout=5)
        assert down2.reason == "noproc"
        # An actor monitoring across workers.
        rec = await node.spawn(Recorder, worker=0)
        b = await node.spawn(Counter, 0, worker=1)
        mref = await node.call(rec, ("monitor", b))
        node.exit(b, "kill")
        msgs = await node.call(rec, ("wait", 1))
        assert msgs == [Down(mref, b, "killed")]

    run_node(body)


def test_orderly_stop_runs_terminate() -> None:
    async def body(node: Node) -> None:
        journal = await node.spawn(Recorder, worker=0)
        s = await node.spawn(Stopper, journal, worker=1)
        await node.stop(s, "shutdown")
        assert await node.call(journal, ("wait", 1)) == [("terminated", "shutdown")]
        with pytest.raises(NoProc):
            await node.stop(s)
        with pytest.raises(NoProc):
            await kernel.stop("nobody")

    run_node(body)


class NotesOnTerminate(kernel.Actor):
    """Appends ``tag reason`` to a file when it terminates: readable after the node is gone."""

    async def init(self, path: str, tag: str) -> None:
        self.path, self.tag = path, tag

    async def terminate(self, reason) -> None:
        with open(self.path, "a") as file:
            file.write(f"{self.tag} {reason}\n")


def test_node_close_stops_everything_the_node_code_spawned_newest_first(tmp_path) -> None:
    """Whether spawned by ``node.spawn`` or by the ``kernel`` functions from node code."""
    path = str(tmp_path / "terminated")

    async def body(node: Node) -> None:
        await node.spawn(NotesOnTerminate, path, "a", worker=0)
        await kernel.spawn(NotesOnTerminate, path, "b", worker=1)
        await kernel.spawn_monitor(NotesOnTerminate, path, "c", worker=0)

    run_node(body)
    with open(path) as file:
        assert file.read().split("\n") == ["c shutdown", "b shutdown", "a shutdown", ""]


def test_timers() -> None:
    async def body(node: Node) -> None:
        rec = await node.spawn(Recorder, worker=1)
        ref = await node.call(rec, ("after", 30.0, "never"))
        assert await node.call(rec, ("cancel", ref)) is True
        await node.call(rec, ("after", 0.01, "soon"))
        assert await node.call(rec, ("wait", 1)) == ["soon"]
        assert await node.call(rec, ("cancel", ref)) is False

    run_node(body)


async def echo(ctx, parent):
    first = await ctx.receive(lambda m: m == "second", timeout=5)
    rest = await ctx.receive(timeout=5)
    ctx.send(parent, (first, rest))
    with pytest.raises(TimeoutError):
        await ctx.receive(timeout=0.01)


def test_raw_process_selective_receive() -> None:
    async def body(node: Node) -> None:
        pid = await node.spawn(echo, node.pid, worker=1)
        node.send(pid, "first")
        node.send(pid, "second")
        got = await node.receive(lambda m: isinstance(m, tuple), timeout=5)
        assert got == ("second", "first")

    run_node(body)


def test_names_register_atomically_and_release_on_exit() -> None:
    async def body(node: Node) -> None:
        a = await node.spawn(Counter, 1, name="vault", worker=0)
        with pytest.raises(AlreadyStarted) as info:
            await node.spawn(Counter, 2, name="vault", worker=1)
        assert info.value.pid == a
        assert await node.call("vault", "get") == 1
        assert await kernel.whereis("vault") == a
        b = await node.spawn(Counter, 0, worker=1)
        assert await node.call(b, ("call", "vault", ("add", 1))) == 2
        ref = node.monitor(a)
        node.exit(a, "kill")
        await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=5)
        assert await kernel.whereis("vault") is None
        c = await node.spawn(Counter, 5, name=("vault", 2), worker=1)
        assert await node.call(("vault", 2), "get") == 5 and c.worker == 1

    run_node(body)


def test_worker_sigkill_fires_signals_and_is_replaced() -> None:
    async def body(node: Node) -> None:
        watcher = await node.spawn(Recorder, True, worker=0)
        victim = await node.spawn(Counter, 0, worker=1, name="victim")
        old_os_pid = node.workers[1]
        await node.call(watcher, ("link", victim))
        ref = node.monitor(victim)
        for i in range(200):
            node.cast(victim, ("add", i))
        os.kill(old_os_pid, signal.SIGKILL)
        down = await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=10)
        assert down.reason == "worker_down"
        msgs = await node.call(watcher, ("wait", 1))
        assert msgs == [Exit(victim, "worker_down")]
        assert await kernel.whereis("victim") is None
        # A spawn aimed at the worker waits for its replacement; pids are never reused.
        fresh = await node.spawn(Counter, 7, worker=1, name="victim")
        assert fresh != victim and fresh.worker == 1 and fresh.incarnation == 1
        assert node.workers[1] != old_os_pid
        assert await node.call("victim", "get") == 7
        with pytest.raises(NoProc):
            await node.call(victim, "get")

    run_node(body)


def test_pending_call_into_a_killed_worker_fails_with_worker_down() -> None:
    async def body(node: Node) -> None:
        a = await node.spawn(Counter, 0, worker=1)
        pending = asyncio.ensure_future(node.call(a, ("sleep", 30), timeout=20))
        await asyncio.sleep(0)  # one loop step: the call is sent
        os.kill(node.workers[1], signal.SIGKILL)
        with pytest.raises(ActorExited) as info:
            await pending
        assert info.value.reason == "worker_down"

    run_node(body)


def test_bad_arguments_name_the_argument() -> None:
    with pytest.raises(ValueError, match="workers"):
        Node(workers=0)
    with pytest.raises(TypeError, match="state"):
        Node(state=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        Node(name="bad name!")

    async def body(node: Node) -> None:
        with pytest.raises(TypeError, match="cls"):
            await node.spawn(object)
        with pytest.raises(ValueError, match="worker"):
            await node.spawn(Counter, worker=5)
        with pytest.raises(TypeError, match="name"):
            await node.spawn(Counter, name=["unhashable"])
        with pytest.raises(ValueError, match="timeout"):
            await node.call("x", "get", timeout=-1)
        with pytest.raises(TypeError, match="dest"):
            node.send(["list"], "x")
        with pytest.raises(TypeError, match="pid"):
            node.exit("not a pid", "kill")
        with pytest.raises(ActorExited):
            await node.spawn(Counter, 1, 2, 3)  # init() takes one argument: the spawn fails cleanly

    run_node(body)


def test_module_functions_outside_a_context_raise() -> None:
    with pytest.raises(KernelError, match="no current"):
        kernel.send(Pid(0, 1), "x")


def test_nodes_one_after_another_on_plain_asyncio() -> None:
    async def main() -> int:
        total = 0
        for _ in range(2):
            async with Node(workers=1) as node:
                pid = await node.spawn(Counter, 3)
                total += await node.call(pid, "get")
        return total

    assert asyncio.run(main()) == 6


def test_spawn_link_from_an_actor_on_another_worker() -> None:
    async def body(node: Node) -> None:
        parent = await node.spawn(Counter, 0, worker=0)
        child = await node.call(parent, ("spawn_link", 1))
        assert child.worker == 1
        ref = node.monitor(parent)
        node.exit(child, "kill")
        down = await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=5)
        assert down.reason == "killed"

    run_node(body)


class Hop(kernel.Actor):
    """Passes an int token on, decremented; at 0 tells ``report``. Its handlers have no await, so a
    local cast to it waits in the worker's run queue instead of starting a task."""

    async def init(self, report: Pid) -> None:
        self.report = report
        self.next: Pid | None = None
        self.seen = 0

    async def handle_cast(self, message) -> None:
        match message:
            case ("next", pid):
                self.next = pid
            case ("self", n):  # casts to itself while it is the run queue's head
                self.seen += 1
                if n:
                    self.cast(self.pid, ("self", n - 1))
                else:
                    self.send(self.report, ("self_done", self.seen))
            case "boom":
                raise ValueError("boom in a queued handler")
            case int(n):
                self.seen += 1
                if n:
                    self.cast(self.next, n - 1)
                else:
                    self.send(self.report, ("ring_done", self.seen))


class FanOut(kernel.Actor):
    """Spawns n Hops on its worker, then casts one token of 0 to each: all become runnable at once."""

    async def handle_call(self, request, caller):
        n, report = request
        hops = [await self.spawn(Hop, report) for _ in range(n)]
        for hop in hops:
            self.cast(hop, 0)
        return len(hops)


class Relay(kernel.Actor):
    """Casts on behalf of the test from inside the worker (so the target is reached by a local cast)."""

    async def handle_call(self, request, caller):
        for dest, message in request:
            self.cast(dest, message)
        return "sent"


def test_local_casts_to_idle_actors_run_from_the_run_queue_in_order_and_past_its_budget() -> None:
    async def body(node: Node) -> None:
        me = node.pid
        # A ring of 50 on one worker, 10 rounds: every hop is a local cast to an idle actor.
        ring = [await node.spawn(Hop, me, worker=0) for _ in range(50)]
        relay = await node.spawn(Relay, worker=0)
        await node.call(relay, [(a, ("next", b)) for a, b in zip(ring, ring[1:] + ring[:1], strict=True)])
        await node.call(relay, [(ring[0], 499)])
        assert await node.receive(lambda m: m[0] == "ring_done", timeout=10) == ("ring_done", 10)
        # An actor casting to itself from the run queue's head gets every message, one at a time.
        await node.call(relay, [(ring[1], ("self", 2000))])
        assert await node.receive(lambda m: m[0] == "self_done", timeout=10) == ("self_done", 2011)
        # 2500 actors made runnable in one step: more than one budget of the run queue.
        fan = await node.spawn(FanOut, worker=1)
        assert await node.call(fan, (2500, me), timeout=30) == 2500
        for _ in range(2500):
            assert await node.receive(lambda m: m[0] == "ring_done", timeout=10) == ("ring_done", 1)
        # A crash in a queued handler is an ordinary crash: linked and monitoring processes learn it.
        ref = node.monitor(ring[2])
        await node.call(relay, [(ring[2], "boom")])
        down = await node.receive(lambda m: isinstance(m, Down) and m.ref == ref, timeout=10)
        assert isinstance(down.reason, Crash) and "boom in a queued handler" in str(down.reason)
        assert await node.call(relay, [(ring[3], ("self", 0))]) == "sent"  # the worker runs on
        assert (await node.receive(lambda m: m[0] == "self_done", timeout=10))[0] == "self_done"

    run_node(body)
