"""Helpers for kernel tests: run a coroutine against a fresh node, bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import kernel
from kernel import Node

BOUND = 20.0


def run_node(body: Callable[[Node], Awaitable[Any]], workers: int = 2, **kw: Any) -> Any:
    """Start a node, run ``body(node)`` inside it with a bound, shut it down; returns body's result."""

    async def main() -> Any:
        async with Node(workers=workers, **kw) as node:
            async with asyncio.timeout(BOUND):
                return await body(node)

    return kernel.run(main())
