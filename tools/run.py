"""Run an application: boot a node whose root supervisor starts ``MODULE:ATTR``, until SIGINT/SIGTERM.

``ATTR`` is a ``supervisors.ChildSpec`` or a list of them (or a zero-argument function returning
either). ``--asgi MODULE:APP --port N`` adds an ASGI front in every worker as the root's last child.
The root is a ``one_for_one`` supervisor registered as ``"root"``; stopping shuts the tree
down in reverse start order and exits 0. A root that fails to start exits 2 with the error, not a
traceback wall; a node that fails (a worker that cannot be replaced) exits 1 with one line naming why.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import asyncpg
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

import kernel
from kernel import ActorExited, Down, Node, WorkerStartFailed
from kernel.transport.tcp import parse_listen
from supervisors import ChildSpec, Supervisor, asgi_front

console = Console(stderr=True)

#: The environment variable ``--cluster`` defaults to.
CLUSTER_ENV = "PYOTP_CLUSTER"


def _positive_int(text: str) -> int:
    """``--workers``: a count of processes, refused by argparse (usage + exit 2) before a node boots."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    """``--worker-timeout``, ``--start-timeout``: a finite number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kernel",
        description="Run an application of supervised actors on a node of worker processes.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="boot a node and run MODULE:ATTR under a root supervisor",
                         description="Boot a node and run MODULE:ATTR under a root supervisor until "
                                     "SIGINT or SIGTERM, then shut the tree down in order and exit 0.")
    run.add_argument("target", metavar="MODULE:ATTR",
                     help="a ChildSpec or a list of ChildSpecs, e.g. myapp:children")
    run.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                     help="worker OS processes (default: one per CPU core)")
    run.add_argument("--state", default=None,
                     help="SQLite checkpoint file (default: a temporary file removed at exit)")
    run.add_argument("--name", default=None,
                     help="node name, used by `python -m tools.observer --node NAME`")
    run.add_argument("--worker-timeout", type=_positive_seconds, default=None, metavar="SECONDS",
                     help="kill and replace a worker whose loop has not answered the heartbeat for this "
                          "long (default 30)")
    run.add_argument("--start-timeout", type=_positive_seconds, default=None, metavar="SECONDS",
                     help="how long a worker process may take to start before it is retried (default 30)")
    run.add_argument("--asgi", default=None, metavar="MODULE:APP",
                     help="serve this ASGI application (FastAPI, Starlette...) from every worker")
    run.add_argument("--port", type=_tcp_port(1), default=None, metavar="N", help="the ASGI front's TCP port")
    run.add_argument("--host", default="127.0.0.1", metavar="H",
                     help="the ASGI front's address (default 127.0.0.1)")
    run.add_argument("--metrics-port", type=_tcp_port(0), default=None, metavar="PORT",
                     help="serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port)")
    run.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                     help="address /metrics listens on (default 127.0.0.1; 0.0.0.0 for a remote Prometheus)")
    cluster = run.add_argument_group(
        "cluster", "join a cluster of nodes sharing one PostgreSQL database (docs/guides/cluster.md); "
                   "each node needs its own --name")
    cluster.add_argument("--cluster", default=os.environ.get(CLUSTER_ENV) or None, metavar="DSN",
                         help=f"the cluster's postgresql:// DSN (default: ${CLUSTER_ENV} if set)")
    cluster.add_argument("--listen", default=None, metavar="HOST:PORT",
                         help="where other nodes reach this one: the node process listens on PORT, worker "
                              "i on PORT+1+i (required with --cluster)")
    cluster.add_argument("--lease", type=_positive_seconds, default=None, metavar="SECONDS",
                         help="how long this node stays a member without renewing (default 10)")
    cluster.add_argument("--tls-cert", default=None, metavar="FILE",
                         help="this node's TLS certificate (PEM); with --tls-key and --tls-ca")
    cluster.add_argument("--tls-key", default=None, metavar="FILE", help="its private key (PEM)")
    cluster.add_argument("--tls-ca", default=None, metavar="FILE",
                         help="the CA certificate that signs every node's certificate (PEM)")
    return parser


def _cluster_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The Node's ``cluster``, ``listen``, ``lease`` and ``tls`` from the cluster options, refused
    (usage + exit 2) naming the option when they do not go together."""
    tls_files = {"--tls-cert": args.tls_cert, "--tls-key": args.tls_key, "--tls-ca": args.tls_ca}
    if args.cluster is None:
        given = [o for o, v in {"--listen": args.listen, "--lease": args.lease, **tls_files}.items()
                 if v is not None]
        if given:
            parser.error(f"{given[0]} is only used with --cluster DSN (or ${CLUSTER_ENV})")
        return {}
    if not args.cluster.startswith(("postgresql://", "postgres://")):
        parser.error(f"--cluster: expected a postgresql:// DSN, got {args.cluster!r}")
    if args.listen is None:
        parser.error("--listen HOST:PORT is required with --cluster: where other nodes reach this one")
    try:
        parse_listen(args.listen, "--listen")
    except ValueError as exc:
        parser.error(str(exc))
    options: dict[str, Any] = {"cluster": args.cluster, "listen": args.listen}
    if args.lease is not None:
        options["lease"] = args.lease
    missing = [o for o, v in tls_files.items() if v is None]
    if len(missing) < 3:
        if missing:
            parser.error(f"{missing[0]} is missing: --tls-cert, --tls-key and --tls-ca go together")
        for option, path in tls_files.items():
            if not os.path.isfile(path):
                parser.error(f"{option}: no such file {path!r}")
        options["tls"] = kernel.TLS(args.tls_cert, args.tls_key, args.tls_ca)
    return options


def _tcp_port(lowest: int) -> Callable[[str], int]:
    """An argparse type for a TCP port from ``lowest`` (1, or 0 for "any free one") to 65535, refused
    by argparse (usage + exit 2) before a node boots."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a TCP port number {lowest}-65535, got {text!r}") from None
        if not lowest <= value <= 65535:
            raise argparse.ArgumentTypeError(f"expected a TCP port number {lowest}-65535, got {value}")
        return value

    return parse


def load_children(target: str) -> list[ChildSpec]:
    """Import ``MODULE:ATTR`` and check it is a ChildSpec or a list of them."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"MODULE:ATTR expected, got {target!r} (for example myapp:children)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    try:
        value: Any = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    if callable(value) and not isinstance(value, ChildSpec):
        value = value()
    children = [value] if isinstance(value, ChildSpec) else value
    if not isinstance(children, list) or not all(isinstance(c, ChildSpec) for c in children):
        raise TypeError(f"{target} must be a ChildSpec or a list of ChildSpecs, got {type(value).__name__}")
    return children


async def serve(children: list[ChildSpec], asgi: tuple[str, str, int] | None = None,
                **node_options: Any) -> int:
    """Run ``children`` under a root supervisor on a ``Node(**node_options)`` until a signal or its end."""
    log = logging.getLogger("kernel.run")
    async with Node(**node_options) as node:
        if asgi is not None:
            # The front starts last, once what its handlers call is up, and stops first.
            app, host, port = asgi
            children = [*children, asgi_front(app, host=host, port=port, workers=len(node.workers))]
        try:
            root = await node.spawn(Supervisor, strategy="one_for_one", children=children, name="root")
        except ActorExited as exc:
            console.print(f"[bold red]the root supervisor failed to start:[/] {exc.reason!r}")
            return 2
        log.info("node [bold]%s[/] up: %d workers %s, root supervisor %r", node.name, len(node.workers),
                 node.workers, root, extra={"markup": True})
        if asgi is not None:
            log.info("serving %s at http://%s:%d/ from every worker", asgi[0], asgi[1], asgi[2])
        console.print(f"watch it live: [bold]python -m tools.observer --node {node.name}[/]")
        if node.metrics_address is not None:
            host, port = node.metrics_address
            console.print(f"metrics: [bold]http://{host}:{port}/metrics[/]")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ref = node.monitor(root)
        root_down = asyncio.ensure_future(node.receive(lambda m: isinstance(m, Down) and m.ref == ref))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({root_down, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if root_down.done():
            stopping.cancel()
            console.print(f"[bold red]the root supervisor exited:[/] {root_down.result().reason!r}")
            return 1
        root_down.cancel()
        log.info("shutting down %s", node.name)
    log.info("stopped cleanly")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.asgi is None) != (args.port is None):
        parser.error("--asgi MODULE:APP and --port N go together")
    asgi = (args.asgi, args.host, args.port) if args.asgi is not None else None
    cluster = _cluster_options(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    try:
        children = load_children(args.target)
    except (ImportError, ValueError, TypeError) as exc:
        console.print(f"[bold red]cannot load {args.target}:[/] {exc}")
        return 2
    try:
        options = {"workers": args.workers, "state": args.state, "name": args.name,
                   "metrics_port": args.metrics_port, "metrics_host": args.metrics_host, **cluster}
        for option in ("worker_timeout", "start_timeout"):  # given: else the Node's own default
            if getattr(args, option) is not None:
                options[option] = getattr(args, option)
        return kernel.run(serve(children, asgi, **options))
    except (ValueError, TypeError) as exc:
        console.print(f"[bold red]bad option:[/] {exc}")
        return 2
    except asyncpg.PostgresError as exc:
        console.print(f"[bold red]cannot join the cluster (--cluster):[/] {escape(str(exc))}", soft_wrap=True)
        return 1
    except OSError as exc:
        if cluster and "metrics_port" not in str(exc):
            # The database did not answer, or the --listen port is taken.
            console.print(f"[bold red]cannot join the cluster (--cluster, --listen):[/] "
                          f"{escape(str(exc))}", soft_wrap=True)
            return 1
        if "metrics_port" not in str(exc):
            raise
        console.print(f"[bold red]bad option:[/] {escape(str(exc))}", soft_wrap=True)
        return 2
    except WorkerStartFailed as exc:
        # One line naming the cause: a worker slot that could not be filled, so the node stopped.
        console.print(f"[bold red]the node failed:[/] {escape(str(exc))}", soft_wrap=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
