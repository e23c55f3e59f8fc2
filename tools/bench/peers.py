"""Python peers on our local scenarios, run by ``make bench-peers`` in their own venv (.venv-peers).

Standalone on purpose: it imports neither our kernel nor uvloop, only pykka and thespian, so it runs in
a venv that has nothing of ours. ``make bench-peers`` runs it right after our own rows of the same
scenarios, so both come from one sitting. Medians of ``--reps`` runs; JSON on stdout with ``--json``.

Scenarios (the twins of ``tools.bench`` rows):

* ``local_cast``: one-way messages to one actor that counts them, until all are counted (msg/s);
* ``local_call``: sequential request/reply to one actor (call/s);
* ``spawn``: start n idle actors (spawn/s); pykka starts a thread per actor, so n is smaller there;
* ``ring``: a countdown token round a ring of actors (hop/s).

pykka: ``ThreadingActor`` (its only in-process kind), driven from the main thread. thespian:
``simpleSystemBase``, its in-process system, where actors run inside ``ask``/``listen`` of the caller.
Ray and xoscar are left out (they do not install quickly here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

Result = dict[str, float]


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


def _med(reps: int, fn: Callable[[], float], unit: str, **extra: float) -> Result:
    samples = [fn() for _ in range(reps)]
    return {"median": statistics.median(samples), "unit": unit, "samples": samples, **extra}  # type: ignore[dict-item]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/bench/peers.py", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="also write every sample here")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": sys.version.split()[0]}
    for peer, fn in (("pykka", pykka_rows), ("thespian", thespian_rows)):
        try:
            out[peer] = fn(args.reps)
        except Exception as exc:  # a peer that breaks is reported, the other still runs
            out[peer] = {"error": repr(exc)}
    print(f"{'scenario':<12} {'pykka':>22} {'thespian (in-process)':>24}")
    for row in ("local_cast", "local_call", "spawn", "ring"):
        cells = []
        for peer in ("pykka", "thespian"):
            r = out[peer].get(row)
            cells.append(f"{r['median']:,.0f} {r['unit']}" if isinstance(r, dict) else "error")
        print(f"{row:<12} {cells[0]:>22} {cells[1]:>24}")
    for peer in ("pykka", "thespian"):
        if "error" in out[peer]:
            print(f"{peer}: {out[peer]['error']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
