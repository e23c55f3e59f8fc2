"""Python peers on our local and cross-process scenarios, run by ``make bench-peers`` in their own venv.

Standalone on purpose: it imports neither our kernel nor uvloop, only the peers (pykka, thespian, xoscar,
ray), so it runs in a venv that has nothing of ours (.venv-peers). ``make bench-peers`` runs it right
after our own rows of the same scenarios, so both come from one sitting. Medians of ``--reps`` runs; a
table on stdout, every sample in ``--json``. A peer that fails (not installed, breaks) is reported and
the others still run; ``--only PEER`` runs a subset.

Scenarios (the twins of ``tools.bench`` rows):

* ``local_cast``: one-way messages to one actor in the same process, until all are counted (msg/s);
* ``local_call``: sequential request/reply to one actor in the same process (call/s);
* ``spawn``: start n idle actors (spawn/s);
* ``ring``: a countdown token round a ring of actors in one process (hop/s);
* ``cross_cast``: one-way messages from a sender in one process to an actor in another, until all are
  counted (msg/s);
* ``cross_call``: sequential request/reply across processes (call/s, and the mean in us);
* ``ring_2workers``: the ring with neighbours alternating between 2 processes, every hop crosses (hop/s).

How each peer runs them (sizes differ per peer so that each row takes a few seconds; each row says n):

* pykka: ``ThreadingActor`` (its only kind: a thread per actor, so n is smaller for spawn and ring),
  driven from the main thread. Local rows only (pykka has no cross-process actors).
* thespian: ``simpleSystemBase``, its in-process system, where actors run inside ``ask``/``listen`` of
  the caller; local rows only.
* thespian_queue / thespian_tcp: ``multiprocQueueBase`` and ``multiprocTCPBase``, where every actor is a
  process; cross rows only. The sender is a driver actor (the external ``ActorSystem.tell`` is slower
  still); ``ring_2workers`` is a ring of 2 actors, i.e. 2 processes.
* xoscar: one actor pool with 2 sub-pool processes. The local rows run in sub-pool 1 from a driver
  actor there, so its references are ``LocalActorRef`` (a call runs the method inline, a tell is a task),
  except ``spawn``, from a driver in the main pool (in a sub-pool each creation goes by the main pool);
  the cross rows send from the driver in sub-pool 1 to actors in sub-pool 2.
* ray: no in-process mode (``local_mode`` is gone), every actor is a process, so ``local_cast`` and
  ``local_call`` are n/a and ``spawn`` and ``ring`` are of processes. The sender of the cross rows is a
  driver actor; ``ring_2workers`` is a ring of 2 actors (2 processes). Ray is slow: n is small.

Every peer's processes are stopped on the way out (thespian ``shutdown``, xoscar's pool, ``ray.shutdown``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

Result = dict[str, Any]


# ---------------------------------------------------------------- pykka


def pykka_rows(reps: int) -> dict[str, Result]:
    import pykka  # type: ignore[import-not-found]  # only in .venv-peers

    class Counter(pykka.ThreadingActor):  # type: ignore[misc]
        def __init__(self, expected: int, done: threading.Event) -> None:
            super().__init__()
            self.left, self.done = expected, done

        def on_receive(self, message: Any) -> Any:
            if message == "ask":
                return message
            self.left -= 1
            if self.left == 0:
                self.done.set()
            return None

    class Idle(pykka.ThreadingActor):  # type: ignore[misc]
        pass

    class Hop(pykka.ThreadingActor):  # type: ignore[misc]
        def __init__(self, done: threading.Event) -> None:
            super().__init__()
            self.done = done
            self.next: Any = None

        def on_receive(self, message: Any) -> Any:
            if isinstance(message, tuple):
                self.next = message[1]
            elif message:
                self.next.tell(message - 1)
            else:
                self.done.set()
            return None

    def cast(n: int) -> float:
        done = threading.Event()
        ref = Counter.start(n, done)
        t0 = time.perf_counter()
        for i in range(n):
            ref.tell(i)
        done.wait()
        dt = time.perf_counter() - t0
        ref.stop()
        return n / dt

    def call(n: int) -> float:
        ref = Counter.start(0, threading.Event())
        t0 = time.perf_counter()
        for _ in range(n):
            ref.ask("ask")
        dt = time.perf_counter() - t0
        ref.stop()
        return n / dt

    def spawn(n: int) -> float:
        t0 = time.perf_counter()
        refs = [Idle.start() for _ in range(n)]
        dt = time.perf_counter() - t0
        pykka.ActorRegistry.stop_all()
        del refs
        return n / dt

    def ring(n: int, size: int = 100) -> float:
        done = threading.Event()
        refs = [Hop.start(done) for _ in range(size)]
        for i, ref in enumerate(refs):
            ref.ask(("next", refs[(i + 1) % size]))
        t0 = time.perf_counter()
        refs[0].tell(n)
        done.wait()
        dt = time.perf_counter() - t0
        pykka.ActorRegistry.stop_all()
        return n / dt

    return {
        "local_cast": _med(reps, lambda: cast(100_000), "msg/s", n=100_000),
        "local_call": _med(reps, lambda: call(20_000), "call/s", n=20_000),
        "spawn": _med(reps, lambda: spawn(2_000), "spawn/s", n=2_000),
        "ring": _med(reps, lambda: ring(20_000), "hop/s", n=20_000, ring_size=100),
    }


# ---------------------------------------------------------------- thespian


def thespian_rows(reps: int) -> dict[str, Result]:
    from thespian.actors import Actor, ActorSystem  # type: ignore[import-not-found]  # only in .venv-peers

    system = ActorSystem("simpleSystemBase")

    class Counter(Actor):  # type: ignore[misc]
        count = 0

        def receiveMessage(self, message: Any, sender: Any) -> None:
            if message == "count?":
                self.send(sender, self.count)
            elif message == "ask":
                self.send(sender, message)
            elif isinstance(message, int):
                self.count += 1

    class Idle(Actor):  # type: ignore[misc]
        def receiveMessage(self, message: Any, sender: Any) -> None:
            pass

    class Hop(Actor):  # type: ignore[misc]
        nxt: Any = None
        origin: Any = None

        def receiveMessage(self, message: Any, sender: Any) -> None:
            if isinstance(message, tuple) and message[0] == "next":
                self.nxt = message[1]
                self.send(sender, "ok")
            elif isinstance(message, tuple) and message[0] == "go":
                self.origin = sender
                self.send(self.nxt, (message[1] - 1, sender))
            elif isinstance(message, tuple):
                k, origin = message
                if k:
                    self.send(self.nxt, (k - 1, origin))
                else:
                    self.send(origin, "done")

    def cast(n: int) -> float:
        ref = system.createActor(Counter)
        t0 = time.perf_counter()
        for i in range(n):
            system.tell(ref, i)
        got = system.ask(ref, "count?", 600)
        dt = time.perf_counter() - t0
        assert got == n, got
        return n / dt

    def call(n: int) -> float:
        ref = system.createActor(Counter)
        t0 = time.perf_counter()
        for _ in range(n):
            system.ask(ref, "ask", 60)
        return n / (time.perf_counter() - t0)

    def spawn(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            system.createActor(Idle)
        return n / (time.perf_counter() - t0)

    def ring(n: int, size: int = 1000) -> float:
        refs = [system.createActor(Hop) for _ in range(size)]
        for i, ref in enumerate(refs):
            system.ask(ref, ("next", refs[(i + 1) % size]), 60)
        t0 = time.perf_counter()
        got = system.ask(refs[0], ("go", n), 600)
        dt = time.perf_counter() - t0
        assert got == "done", got
        return n / dt

    try:
        return {
            "local_cast": _med(reps, lambda: cast(100_000), "msg/s", n=100_000),
            "local_call": _med(reps, lambda: call(20_000), "call/s", n=20_000),
            "spawn": _med(reps, lambda: spawn(20_000), "spawn/s", n=20_000),
            "ring": _med(reps, lambda: ring(100_000), "hop/s", n=100_000, ring_size=1000),
        }
    finally:
        system.shutdown()


# ---------------------------------------------------------------- thespian, multiprocess bases


def thespian_mp_rows(reps: int, base: str) -> dict[str, Result]:
    from thespian.actors import Actor, ActorSystem  # type: ignore[import-not-found]  # only in .venv-peers

    class MpCounter(Actor):  # type: ignore[misc]
        n = 0

        def receiveMessage(self, message: Any, sender: Any) -> None:
            if message == "take":
                self.send(sender, self.n)
                self.n = 0
            elif message == "ask":
                self.send(sender, message)
            elif isinstance(message, int):
                self.n += 1

    class MpDriver(Actor):  # type: ignore[misc]
        """Times a burst or a call loop in its own process and replies the result."""

        client: Any = None
        target: Any = None
        left = 0
        t0 = 0.0

        def receiveMessage(self, message: Any, sender: Any) -> None:
            if isinstance(message, tuple) and message[0] == "cast":
                _, target, n = message
                self.client, self.t0 = sender, time.perf_counter()
                for i in range(n):
                    self.send(target, i)
                self.send(target, "take")  # queued behind the n casts: answered once all are counted
            elif isinstance(message, tuple) and message[0] == "call":
                _, self.target, self.left = message
                self.client, self.t0 = sender, time.perf_counter()
                self.send(self.target, "ask")
            elif message == "ask":  # a reply of the call loop
                self.left -= 1
                if self.left:
                    self.send(self.target, "ask")
                else:
                    self.send(self.client, time.perf_counter() - self.t0)
            elif isinstance(message, int):  # the counter's count after a burst
                self.send(self.client, (message, time.perf_counter() - self.t0))

    class MpHop(Actor):  # type: ignore[misc]
        nxt: Any = None

        def receiveMessage(self, message: Any, sender: Any) -> None:
            if isinstance(message, tuple) and message[0] == "next":
                self.nxt = message[1]
                self.send(sender, "ok")
            elif isinstance(message, tuple) and message[0] == "go":
                self.send(self.nxt, (message[1] - 1, sender))
            elif isinstance(message, tuple):
                k, origin = message
                self.send(self.nxt, (k - 1, origin)) if k else self.send(origin, "done")

    # The multiproc bases find an actor class by module and name in processes forked from this one,
    # so the classes must be module globals before the system (its admin process) starts.
    for cls in (MpCounter, MpDriver, MpHop):
        globals()[cls.__name__] = cls
    system = ActorSystem(base, {"Admin Port": _free_port()})
    try:
        driver, counter = system.createActor(MpDriver), system.createActor(MpCounter)

        def cast(n: int) -> float:
            got, dt = system.ask(driver, ("cast", counter, n), 600)
            assert got == n, got
            return n / dt

        def call(n: int) -> float:
            return n / system.ask(driver, ("call", counter, n), 600)

        ring_refs = [system.createActor(MpHop) for _ in range(2)]  # 2 actors = 2 processes
        for i, ref in enumerate(ring_refs):
            system.ask(ref, ("next", ring_refs[(i + 1) % 2]), 60)

        def ring(n: int) -> float:
            t0 = time.perf_counter()
            got = system.ask(ring_refs[0], ("go", n), 600)
            assert got == "done", got
            return n / (time.perf_counter() - t0)

        tcp = base == "multiprocTCPBase"  # its bursts run at a few hundred msg/s here
        n_cast, n_call, n_ring = (500, 1_000, 2_000) if tcp else (5_000, 2_000, 3_000)
        return {
            "cross_cast": _med(reps, lambda: cast(n_cast), "msg/s", n=n_cast),
            "cross_call": _med(reps, lambda: call(n_call), "call/s", n=n_call),
            "ring_2workers": _med(reps, lambda: ring(n_ring), "hop/s", n=n_ring, ring_size=2),
        }
    finally:
        system.shutdown()


# ---------------------------------------------------------------- xoscar


def xoscar_rows(reps: int) -> dict[str, Result]:
    import xoscar as xo  # type: ignore[import-not-found]  # only in .venv-peers

    class Counter(xo.Actor):  # type: ignore[misc]
        def __init__(self) -> None:
            self.n = 0

        def add(self, i: int) -> None:
            self.n += 1

        def count(self) -> int:
            return self.n

        def take(self) -> int:
            n, self.n = self.n, 0
            return n

        def echo(self, x: Any) -> Any:
            return x

    class Idle(xo.Actor):  # type: ignore[misc]
        pass

    class Hop(xo.Actor):  # type: ignore[misc]
        def __init__(self) -> None:
            self.nxt: Any = None
            self.done = False

        def link(self, nxt: Any) -> None:
            self.nxt = nxt

        async def hop(self, k: int) -> None:
            if k:
                await self.nxt.hop.tell(k - 1)
            else:
                self.done = True

        def finished(self) -> bool:
            done, self.done = self.done, False
            return done

    class Driver(xo.Actor):  # runs and times each scenario inside its pool's process, as tools.bench does
        async def cast(self, target: Any, n: int) -> float:
            t0 = time.perf_counter()
            for i in range(n):
                await target.add.tell(i)
            while await target.count() < n:  # noqa: ASYNC110  (the count is in another actor)
                await asyncio.sleep(0.0005)
            dt = time.perf_counter() - t0
            await target.take()
            return n / dt

        async def call(self, target: Any, n: int) -> float:
            t0 = time.perf_counter()
            for i in range(n):
                await target.echo(i)
            return n / (time.perf_counter() - t0)

        async def spawn(self, n: int) -> float:
            t0 = time.perf_counter()
            refs = [await xo.create_actor(Idle, address=self.address) for _ in range(n)]
            dt = time.perf_counter() - t0
            for ref in refs:
                await xo.destroy_actor(ref)
            return n / dt

        async def ring(self, refs: list[Any], n: int) -> float:
            last = refs[n % len(refs)]  # the hop that gets the token at 0
            t0 = time.perf_counter()
            await refs[0].hop.tell(n)
            while not await last.finished():  # noqa: ASYNC110  (the flag is in another actor)
                await asyncio.sleep(0.0005)
            return n / (time.perf_counter() - t0)

    async def rows() -> dict[str, Result]:
        pool = await xo.create_actor_pool("127.0.0.1", n_process=2)  # this process + sub-pools 1 and 2
        async with pool:  # stops the sub-pool processes on the way out

            async def make(cls: type, proc: int) -> Any:
                where = xo.allocate_strategy.ProcessIndex(proc)
                return await xo.create_actor(cls, address=pool.external_address, allocate_strategy=where)

            async def ring_over(procs: tuple[int, ...], size: int = 1000) -> list[Any]:
                refs = [await make(Hop, procs[i % len(procs)]) for i in range(size)]
                for i, ref in enumerate(refs):
                    await ref.link(refs[(i + 1) % size])
                return refs

            driver, near, far = await make(Driver, 1), await make(Counter, 1), await make(Counter, 2)
            main_driver = await make(Driver, 0)  # creating an actor in a sub-pool goes by the main pool
            ring_local, ring_cross = await ring_over((1,)), await ring_over((1, 2))
            return {
                "local_cast": _result([await driver.cast(near, 50_000) for _ in range(reps)], "msg/s",
                                      n=50_000),
                "local_call": _result([await driver.call(near, 50_000) for _ in range(reps)], "call/s",
                                      n=50_000),
                "spawn": _result([await main_driver.spawn(2_000) for _ in range(reps)], "spawn/s", n=2_000,
                                 note="in the main pool (about 5x faster than in a sub-pool)"),
                "ring": _result([await driver.ring(ring_local, 50_000) for _ in range(reps)], "hop/s",
                                n=50_000, ring_size=1000),
                "cross_cast": _result([await driver.cast(far, 10_000) for _ in range(reps)], "msg/s",
                                      n=10_000),
                "cross_call": _result([await driver.call(far, 5_000) for _ in range(reps)], "call/s",
                                      n=5_000),
                "ring_2workers": _result([await driver.ring(ring_cross, 5_000) for _ in range(reps)],
                                         "hop/s", n=5_000, ring_size=1000),
            }

    return asyncio.run(rows())


# ---------------------------------------------------------------- ray


def ray_rows(reps: int) -> dict[str, Result]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report to Ray's servers
    import ray  # type: ignore[import-not-found]  # only in .venv-peers

    @ray.remote
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def add(self, i: int) -> None:
            self.n += 1

        def take(self) -> int:
            n, self.n = self.n, 0
            return n

        def echo(self, x: Any) -> Any:
            return x

    @ray.remote
    class Idle:
        def ping(self) -> None:
            return None

    @ray.remote
    class Hop:
        def __init__(self) -> None:
            self.nxt: Any = None
            self.done = False

        def link(self, nxt: Any) -> None:
            self.nxt = nxt

        def hop(self, k: int) -> None:
            if k:
                self.nxt.hop.remote(k - 1)  # one-way: the result ref is dropped
            else:
                self.done = True

        def finished(self) -> bool:
            done, self.done = self.done, False
            return done

    @ray.remote
    class Driver:  # the sender of the cross rows, itself a process, timing inside as tools.bench does
        def cast(self, target: Any, n: int) -> float:
            t0 = time.perf_counter()
            for i in range(n):
                target.add.remote(i)
            got = ray.get(target.take.remote())  # one caller's calls run in order: after every add
            dt = time.perf_counter() - t0
            assert got == n, got
            return n / dt

        def call(self, target: Any, n: int) -> float:
            t0 = time.perf_counter()
            for i in range(n):
                ray.get(target.echo.remote(i))
            return n / (time.perf_counter() - t0)

    def spawn(n: int) -> float:
        t0 = time.perf_counter()
        actors = [Idle.remote() for _ in range(n)]
        ray.get([a.ping.remote() for a in actors])  # each actor's process is up and answering
        dt = time.perf_counter() - t0
        for a in actors:
            ray.kill(a)
        return n / dt

    def ring_of(size: int) -> list[Any]:
        refs = [Hop.remote() for _ in range(size)]
        ray.get([ref.link.remote(refs[(i + 1) % size]) for i, ref in enumerate(refs)])
        return refs

    def ring(refs: list[Any], n: int) -> float:
        last = refs[n % len(refs)]
        t0 = time.perf_counter()
        refs[0].hop.remote(n)
        while not ray.get(last.finished.remote()):
            time.sleep(0.001)
        return n / (time.perf_counter() - t0)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        driver, counter = Driver.remote(), Counter.remote()
        ring16, ring2 = ring_of(16), ring_of(2)
        return {
            "spawn": _med(reps, lambda: spawn(4), "spawn/s", n=4, note="actors are processes"),
            "ring": _med(reps, lambda: ring(ring16, 1_000), "hop/s", n=1_000, ring_size=16,
                         note="16 actors = 16 processes"),
            "cross_cast": _med(reps, lambda: ray.get(driver.cast.remote(counter, 2_000)), "msg/s", n=2_000),
            "cross_call": _med(reps, lambda: ray.get(driver.call.remote(counter, 500)), "call/s", n=500),
            "ring_2workers": _med(reps, lambda: ring(ring2, 1_000), "hop/s", n=1_000, ring_size=2),
        }
    finally:
        ray.shutdown()


# ---------------------------------------------------------------- common


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.2g}"  # Ray starts about 2 actors/s


def _result(samples: list[float], unit: str, **extra: Any) -> Result:
    out: Result = {"median": statistics.median(samples), "unit": unit, "samples": samples, **extra}
    if unit == "call/s":
        out["mean_us"] = 1e6 / out["median"]
    return out


def _med(reps: int, fn: Callable[[], float], unit: str, **extra: Any) -> Result:
    return _result([fn() for _ in range(reps)], unit, **extra)


PEERS: dict[str, tuple[str, Callable[[int], dict[str, Result]]]] = {
    # name: (package whose version is reported, rows)
    "pykka": ("pykka", pykka_rows),
    "thespian": ("thespian", thespian_rows),
    "thespian_queue": ("thespian", lambda reps: thespian_mp_rows(reps, "multiprocQueueBase")),
    "thespian_tcp": ("thespian", lambda reps: thespian_mp_rows(reps, "multiprocTCPBase")),
    "xoscar": ("xoscar", xoscar_rows),
    "ray": ("ray", ray_rows),
}
ROWS = ("local_cast", "local_call", "spawn", "ring", "cross_cast", "cross_call", "ring_2workers")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/bench/peers.py", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", action="append", choices=list(PEERS), help="only this peer (repeatable)")
    parser.add_argument("--json", metavar="PATH", help="also write every sample here")
    args = parser.parse_args(argv)
    peers = args.only or list(PEERS)
    out: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "loadavg_start": os.getloadavg(),
        "versions": {},
    }
    for peer in peers:
        package, fn = PEERS[peer]
        t0 = time.perf_counter()
        try:
            out["versions"][peer] = importlib.metadata.version(package)
            out[peer] = fn(args.reps)
        except Exception as exc:  # a peer that breaks is reported, the others still run
            out[peer] = {"error": repr(exc)}
        print(f"{peer}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    out["loadavg_end"] = os.getloadavg()
    print(f"{'scenario':<14}" + "".join(f"{p:>18}" for p in peers))
    for row in ROWS:
        cells = []
        for peer in peers:
            r = out[peer].get(row)
            cells.append(f"{_num(r['median'])} {r['unit']}" if isinstance(r, dict) else "n/a")
        print(f"{row:<14}" + "".join(f"{c:>18}" for c in cells))
    for peer in peers:
        if "error" in out[peer]:
            print(f"{peer}: {out[peer]['error']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
