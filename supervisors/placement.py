"""Where an entity lives: one small interface between ``Entities`` and the workers it spreads over.

Why an interface of one method: the only question ``Entities`` asks is "which worker hosts key K, given
the workers there are"; on one host the answer is a stable hash, and the cluster (API section 15) will
answer it across hosts behind the same method. Placement is decided in one place only (the entities'
supervisor in the node process), so it needs to be stable across restarts of the node, not across
processes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Hashable
from typing import Any, Protocol, runtime_checkable

__all__ = ["HashPlacement", "Placement", "as_placement", "stable_hash"]


@runtime_checkable
class Placement(Protocol):
    """Decides the worker index (``0 <= index < workers``) that hosts the entity for ``key``."""

    def place(self, key: Hashable, workers: int) -> int: ...


class HashPlacement:
    """The default: a stable hash of the key modulo the number of workers.

    Stable means the same on every start of the node (Python's ``hash`` of a str is salted per
    process, so it is not used): ``int``, ``str``, ``bytes``, ``bool``, ``None``, ``float`` and tuples
    of them hash by value; any other key by its ``repr``.
    """

    def place(self, key: Hashable, workers: int) -> int:
        return stable_hash(key) % workers

    def __repr__(self) -> str:
        return "HashPlacement()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HashPlacement)

    def __hash__(self) -> int:
        return hash(HashPlacement)


class _FunctionPlacement:
    """``placement=lambda key, workers: index`` seen through the interface."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any, int], int]) -> None:
        self.fn = fn

    def place(self, key: Hashable, workers: int) -> int:
        return self.fn(key, workers)

    def __repr__(self) -> str:
        return f"placement {self.fn!r}"


def as_placement(placement: object) -> Placement:
    """``None`` (the hash), a ``Placement`` or a ``(key, workers) -> index`` function.

    Raises:
        TypeError: anything else (the message names ``placement``).
    """
    if placement is None:
        return HashPlacement()
    if isinstance(placement, Placement):
        return placement
    if callable(placement):
        return _FunctionPlacement(placement)
    raise TypeError(
        "placement must be None, a Placement (with place(key, workers)) or a function "
        f"(key, workers) -> worker index, got {placement!r}"
    )


def stable_hash(key: object) -> int:
    """A 64-bit hash of ``key`` that does not change between processes or runs."""
    digest = hashlib.blake2b(_encode(key), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _encode(key: object) -> bytes:
    # A type tag before each value, so 1, "1", b"1" and (1,) all hash apart.
    if key is None or isinstance(key, bool):
        return b"n" if key is None else (b"T" if key else b"F")
    if isinstance(key, int):
        return b"i" + str(key).encode()
    if isinstance(key, str):
        return b"s" + key.encode("utf-8", "surrogatepass")
    if isinstance(key, bytes):
        return b"b" + key
    if isinstance(key, float):
        return b"f" + struct.pack(">d", key)
    if isinstance(key, tuple):
        parts = [_encode(item) for item in key]
        return b"t" + b"".join(struct.pack(">I", len(p)) + p for p in parts)
    return b"r" + repr(key).encode("utf-8", "surrogatepass")
