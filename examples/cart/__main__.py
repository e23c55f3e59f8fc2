"""``python -m examples.cart [--serve [--port P] [--state FILE]] [--workers N]``."""

from __future__ import annotations

import argparse

from .._cli import exit_with, run
from .demo import demo, serve, show


async def main(args: argparse.Namespace) -> int:
    if args.serve:
        serve(workers=args.workers, port=args.port, state=args.state)  # becomes `python -m kernel run`
    report = await demo(workers=args.workers)
    show(report)
    return 0 if report.ok else 1


parser = argparse.ArgumentParser(prog="python -m examples.cart", description=__doc__)
parser.add_argument("--serve", "--observe", action="store_true",
                    help="serve the HTTP API until Ctrl-C and print its URL")
parser.add_argument("--port", type=int, default=8080, help="--serve: port on 127.0.0.1")
parser.add_argument("--state", default=None, help="--serve: checkpoint file (default: a temporary one)")
parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
exit_with(run(main(parser.parse_args())))
