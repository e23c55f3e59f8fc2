"""``python -m examples.uploads [--serve] [--workers N] [--limit X]``."""

from __future__ import annotations

import argparse

from .._cli import exit_with, run
from .demo import demo, serve, show


async def main(args: argparse.Namespace) -> int:
    if args.serve:
        return await serve(workers=args.workers, limit=args.limit)
    report = await demo(workers=args.workers, limit=args.limit)
    show(report)
    return 0 if report.ok else 1


parser = argparse.ArgumentParser(prog="python -m examples.uploads", description=__doc__)
parser.add_argument("--serve", "--observe", action="store_true",
                    help="keep uploading until Ctrl-C, to watch with python -m tools.observer")
parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
parser.add_argument("--limit", type=int, default=3, help="concurrent uploads allowed per user (default 3)")
exit_with(run(main(parser.parse_args())))
