"""``python -m tools.observer [--node NAME] [--show OTHER] [--once]``: watch a running node, or print one
snapshot.

Without ``--node`` the running nodes of this user are listed: one is attached to, several are offered
to pick from, none is an error (exit 1). ``--once`` prints the trees and tables as plain text and exits
0: for scripts and bug reports; a worker that did not answer is named (on stderr and at the top),
its actors missing, rather than failing the whole snapshot.

A node's control socket is a Unix socket on its own host, found by name in this user's runtime directory,
so ``--node`` attaches to a node of this host. ``--show OTHER`` shows another node of that node's cluster,
its snapshot asked through the cluster (read-only); the ``cluster`` panel lists every node either way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from rich.console import Console

from kernel.node.control import ControlError, list_nodes, request, runtime_dir

from . import render
from .client import pick_node

#: ``--once``: the node answers a snapshot within about 2 s even with a hung worker (it lists that worker
#: as unresponsive), so past this the node itself is stuck.
ONCE_TIMEOUT = 10.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.observer",
        description="Watch a running pyotp node live (supervision trees, workers, processes), or print "
        "one snapshot. Only nodes of your own OS user are visible.",
    )
    parser.add_argument(
        "--node",
        metavar="NAME",
        help="the node to attach to (default: the only running one, or pick from a list)",
    )
    parser.add_argument(
        "--show",
        metavar="NODE",
        help="a cluster node: show another node of its cluster (by name), read through the attached one",
    )
    parser.add_argument("--once", action="store_true", help="print one snapshot as plain text and exit")
    parser.add_argument(
        "--sort",
        choices=render.SORT_KEYS,
        default="mailbox",
        help="order of the process table (default: mailbox length)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="--once: show only the top N processes"
    )
    parser.add_argument(
        "--width",
        type=int,
        default=120,
        metavar="COLS",
        help="--once into a file or pipe: line width (default 120)",
    )
    parser.add_argument("--json", action="store_true", help="--once: print the raw snapshot as JSON instead")
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="refresh period (default: 1 second)"
    )
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error(f"--interval must be positive, got {args.interval}")
    if args.limit is not None and args.limit <= 0:
        parser.error(f"--limit must be positive, got {args.limit}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    err = Console(stderr=True)
    name = args.node
    if name is None:
        names = list_nodes()
        if not names:
            err.print(
                f"no running nodes found in {runtime_dir(create=False) if _has_dir() else 'the runtime dir'}"
            )
            err.print("start one with: python -m kernel run MODULE:ATTR --name NAME")
            return 1
        if len(names) > 1 and not sys.stdin.isatty():
            err.print(f"several nodes are running: {', '.join(names)}; choose one with --node NAME")
            return 1
        name = pick_node(names, input)
        assert name is not None
    if args.once:
        try:
            ask = {"op": "snapshot"} if args.show is None else {"op": "snapshot", "node": args.show}
            snapshot = request(name, ask, timeout=ONCE_TIMEOUT)
        except TimeoutError:
            err.print(f"node {name!r} did not answer within {ONCE_TIMEOUT:g} s (its event loop is blocked or "
                      "overloaded); try again, or look at its log")
            return 1
        except (ControlError, OSError) as exc:
            err.print(f"cannot read node {name!r}: {type(exc).__name__}: {exc}")
            return 1
        if not sys.stdout.isatty():  # into a file: say it on the terminal too (it is also at the top)
            for line in render.worker_problems(snapshot):
                err.print(line, soft_wrap=True)
        if args.json:
            print(json.dumps(snapshot, indent=2))
        else:
            out = Console(highlight=False)
            if not out.is_terminal:
                out.width = args.width  # a file or a pipe: wide enough for the tables, for bug reports
            out.print(render.render_once(snapshot, sort=args.sort, limit=args.limit))
        return 0
    from .app import ObserverApp
    from .client import NodeSource

    app = ObserverApp(NodeSource(name, args.show), node=name, interval=args.interval)
    app.sort_key = args.sort
    app.run()
    return 0


def _has_dir() -> bool:
    try:
        runtime_dir(create=False)
    except (OSError, ControlError):
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
