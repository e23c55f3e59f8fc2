"""``python -m examples.tickets [--observe] [--workers N] [--tickets N]``."""

from __future__ import annotations

import argparse

from .._cli import exit_with, run
from .demo import demo, observe, show


async def main(args: argparse.Namespace) -> int:
    if args.observe:
        return await observe(workers=args.workers)
    report = await demo(workers=args.workers, tickets=args.tickets)
    show(report)
    return 0 if report.ok else 1


parser = argparse.ArgumentParser(prog="python -m examples.tickets", description=__doc__)
parser.add_argument("--observe", "--serve", action="store_true",
                    help="keep both booths selling until Ctrl-C, to watch with python -m tools.observer")
parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
parser.add_argument("--tickets", type=int, default=10_000, help="tickets in each vault (default 10000)")
exit_with(run(main(parser.parse_args())))
