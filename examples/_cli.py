"""What the four examples share: how a claim is checked and shown, and how a demo is run from a shell."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console

import kernel

console = Console(highlight=False)


@dataclass(frozen=True, slots=True)
class Claim:
    """One sentence the demo prints, and whether what it measured makes it true."""

    text: str
    ok: bool
    detail: str = ""


def all_hold(claims: Sequence[Claim]) -> bool:
    return all(c.ok for c in claims)


def show_claims(claims: Sequence[Claim], out: Console = console) -> None:
    for c in claims:
        mark = "[bold green]✓[/]" if c.ok else "[bold red]✗ FAILED[/]"
        out.print(f"  {mark} {c.text}" + (f" [dim]({c.detail})[/]" if c.detail else ""))


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop; Ctrl-C (which cancels it and shuts the node down cleanly) exits 0."""
    try:
        return kernel.run(main)
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("\n[dim]stopped (Ctrl-C): the node shut every actor down and reaped its workers.[/]")
        return 0


def exit_with(code: int) -> None:
    sys.stdout.flush()
    raise SystemExit(code)
