"""Inspect a checkpoint file: ``python -m tools.checkpoints PATH [KEY]``.

Without KEY: a table of every checkpoint (key, class, version, epoch, codec, size, updated) and of the
dead letters. With KEY: that checkpoint's metadata and its decoded state. KEY is parsed like the stored
text form: ``wallet`` or ``root/carts/u42`` as is, ``"~('cart', 42)"`` for a tuple key.

The file is opened read-only and closed after each query, so this is safe on a live node: it takes no
write lock and holds no read transaction that would stall the writers' WAL checkpoints. Keys and states
may be pickles, so before a byte is read the file and its companions must be ours alone (no symlink, our
uid, not group/other-writable), as a node requires at start. ``--drop`` writes: it takes the file's owner
lock, so it refuses a file a live node owns (drop through that node's control socket instead).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import sys
from typing import Any

from rich.console import Console
from rich.pretty import Pretty
from rich.table import Table

from kernel import StateFileInUse, UnsafeStateFile
from kernel.persistence import store as checkpoints
from kernel.persistence.codec import key_from_text, key_to_text
from kernel.persistence.statefile import OwnerLock, check_private


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds") if ts else "-"


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB"


def listing(path: str) -> list[Table]:
    """The checkpoint table, and the dead-letter table when there are dead letters."""
    table = Table(title=f"checkpoints in {path}")
    for col in ("key", "class", "version", "epoch", "codec", "size", "updated"):
        table.add_column(col, justify="right" if col in ("version", "epoch", "size") else "left",
                         no_wrap=col in ("updated", "size"))
    for e in checkpoints.entries(path):
        table.add_row(key_to_text(e.key), e.class_name or "-", str(e.version), str(e.epoch), e.codec,
                      _size(e.size), _when(e.updated))
    tables = [table]
    letters = checkpoints.dead_letters(path)
    if letters:
        dead = Table(title="dead letters")
        for col in ("id", "key", "count", "error", "size", "created"):
            dead.add_column(col)
        for d in letters:
            dead.add_row(str(d.id), key_to_text(d.key), str(d.count), d.error, _size(len(d.message)),
                         _when(d.created))
        tables.append(dead)
    return tables


def show(path: str, key: Any, console: Console) -> None:
    rec = checkpoints.record(path, key)
    console.print(f"[bold]{key_to_text(rec.key)}[/]  class={rec.class_name or '-'} version={rec.version} "
                  f"epoch={rec.epoch} codec={rec.codec} size={_size(len(rec.data))} "
                  f"updated={_when(rec.updated)}")
    console.print(Pretty(rec.state()))


def main(argv: list[str] | None = None, console: Console | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.checkpoints", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the node's state file")
    parser.add_argument("key", nargs="?", help="show this key's state (stored text form)")
    parser.add_argument("--drop", type=int, metavar="ID",
                        help="delete dead letter ID (to replay one instead, use the running node's "
                             "control socket: {\"op\": \"replay\", \"id\": ID})")
    args = parser.parse_args(argv)
    console = console or Console()
    try:
        check_private(args.path)  # before anything is read: keys and states may be pickles
        if args.drop is not None:
            with OwnerLock(args.path):
                dropped = checkpoints.drop_dead_letter(args.path, args.drop)
            if not dropped:
                console.print(f"[red]no dead letter {args.drop}[/]")
                return 1
            console.print(f"dropped dead letter {args.drop}")
        elif args.key is None:
            for table in listing(args.path):
                console.print(table)
        else:
            show(args.path, key_from_text(args.key), console)
    except (StateFileInUse, UnsafeStateFile) as e:
        console.print(f"[red]{e}[/]")
        return 1
    except (FileNotFoundError, KeyError) as e:
        console.print(f"[red]{e.args[0] if e.args else e}[/]")
        return 1
    except sqlite3.DatabaseError as e:
        console.print(f"[red]{args.path} is not a readable checkpoint file: {e}[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
