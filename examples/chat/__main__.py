"""``python -m examples.chat [--serve] [--workers N]``."""

from __future__ import annotations

import argparse

from .._cli import exit_with, run
from .demo import demo, serve, show


async def main(args: argparse.Namespace) -> int:
    if args.serve:
        return await serve(workers=args.workers)
    report = await demo(workers=args.workers)
    show(report)
    return 0 if report.ok else 1


parser = argparse.ArgumentParser(prog="python -m examples.chat", description=__doc__)
parser.add_argument("--serve", "--observe", action="store_true",
                    help="keep a room talking (and passivating) until Ctrl-C, for python -m tools.observer")
parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
exit_with(run(main(parser.parse_args())))
