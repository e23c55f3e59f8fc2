"""Where an entity lives: one small interface between ``Entities`` and the workers it spreads over.

Why an interface of one method: the only question ``Entities`` asks is "which worker hosts key K, given
the workers there are"; on one host the answer is a stable hash. Placement is decided in one place only
(the entities' supervisor in the node process), so it needs to be stable across restarts of the node.

A cluster (API section 15) asks "which member of the live membership hosts key K", and every node must
answer alike without asking the others: ``place_member`` and ``ClusterPlacement`` answer by rendezvous
hashing over ``(node_id, worker)`` members, the same in every process and run, so adding or losing a
node moves only its share of the keys.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

__all__ = ["ClusterPlacement", "HashPlacement", "Placement", "as_placement", "place_member", "stable_hash"]

M = TypeVar("M", bound=Hashable)


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


def place_member(key: Hashable, members: Iterable[M]) -> M:
    """The member that hosts ``key``: rendezvous (highest random weight) hashing over ``members``.

    Single members (one host: worker indices) each score ``stable_hash((key, member))`` and the highest
    wins. ``(node_id, worker)`` pairs (a cluster) are placed in two rounds, each the same contest: the
    node among the node ids, then the worker among that node's pairs. Either way the answer depends
    only on the *set* of members, never on their order (ties, which need equal 64-bit hashes, go to the
    greater encoding), and is the same in every process and run. Removing a member moves only the keys
    it held; adding one moves onto it only the keys it now wins, about ``1/(n+1)`` of them.

    Why two rounds for pairs: one hash per node plus one per worker of the chosen node instead of one
    per worker of the cluster (100 nodes x 8 workers: 108 hashes, not 800), and both movement promises
    still hold (losing a worker moves only its keys, to its node's other workers; losing a node only
    that node's). The price: each node gets an equal share of keys whatever its number of workers.

    Cost: linear in the members, each encoded on every call; ``ClusterPlacement`` encodes them once.

    Raises:
        ValueError: ``members`` is empty, or mixes pairs and single members.
    """
    return _place(_head(key), _rounds(tuple(members)), key)


class ClusterPlacement(Generic[M]):
    """``place_member`` over a live member set that the membership replaces with ``update(members)``.

    Why rendezvous rather than a ring of tokens: it moves the minimum (losing a member moves only its
    keys, a new member takes only the keys it wins), there are no virtual nodes to tune for balance, and
    every node that holds the same member list computes the same answer with no coordination.

    ``update`` encodes the members once and swaps one snapshot (members, rounds, and a cache of answers
    by the key's encoding, so a hot key costs one encoding and a dict look-up, not a hash per node), so
    a placement running beside it sees the old or the new member set, never a mix. The cache is keyed by
    the encoding, not the key, because ``1 == True`` yet they place apart; it is emptied when it holds
    ``CACHE_SIZE`` answers.
    """

    CACHE_SIZE = 1 << 16

    __slots__ = ("_ranges", "_snapshot")

    def __init__(self, members: Iterable[M] = ()) -> None:
        self._ranges: dict[int, _Round[int]] = {}
        self.update(members)

    @property
    def members(self) -> tuple[M, ...]:
        """The live member set, as last given to ``update``."""
        return self._snapshot[0]

    def update(self, members: Iterable[M]) -> None:
        """Replace the live member set (all single members, or all ``(node_id, worker)`` pairs).

        Raises:
            ValueError: ``members`` mixes pairs and single members.
        """
        members = tuple(members)
        self._snapshot: tuple[tuple[M, ...], _Rounds[M], dict[bytes, M]] = (members, _rounds(members), {})

    def place_member(self, key: Hashable) -> M:
        """``place_member(key, self.members)``, without encoding the members again.

        Raises:
            ValueError: the member set is empty (the message names ``members``).
        """
        _, rounds, cache = self._snapshot
        head = _head(key)
        member = cache.get(head)
        if member is None:
            if len(cache) >= self.CACHE_SIZE:
                cache.clear()
            member = cache[head] = _place(head, rounds, key)
        return member

    def place(self, key: Hashable, workers: int) -> int:
        """The ``Placement`` protocol on one host: rendezvous over worker indices ``0..workers-1``.

        Independent of the member set, so a single-host ``Entities`` can use this object unchanged.
        """
        ranked = self._ranges.get(workers)
        if ranked is None:
            ranked = self._ranges[workers] = [(_part(index), index) for index in range(workers)]
        return _highest(_head(key), ranked, key)

    def __repr__(self) -> str:
        return f"ClusterPlacement({list(self.members)!r})"


_T = TypeVar("_T")
# One rendezvous contest: (encoded candidate, candidate) for each candidate.
_Round = list[tuple[bytes, _T]]
# The first contest, with each candidate's second one: a node's round of pairs, or None for a single member.
_Rounds = _Round[tuple[Any, "_Round[M] | None"]]


def _rounds(members: tuple[M, ...]) -> _Rounds[M]:
    pairs = [isinstance(member, tuple) and len(member) == 2 for member in members]
    if members and all(pairs):
        nodes: dict[bytes, tuple[Any, _Round[M]]] = {}
        for member in members:
            node = member[0]  # type: ignore[index]  # a pair, checked above
            nodes.setdefault(_part(node), (node, []))[1].append((_part(member), member))
        return [(part, (node, workers)) for part, (node, workers) in nodes.items()]
    if any(pairs):
        raise ValueError("members must be all (node_id, worker) pairs or all single members, "
                         f"got {members!r}")
    return [(_part(member), (member, None)) for member in members]


def _place(head: bytes, rounds: _Rounds[M], key: object) -> M:
    node, workers = _highest(head, rounds, key)
    # Invariant: workers is None only for a single member, which is then the node itself.
    return node if workers is None else _highest(head, workers, key)


def _head(key: object) -> bytes:
    # _encode((key, member)) is _head(key) + _part(member): each member then costs one blake2b.
    return b"t" + _part(key)


def _part(value: object) -> bytes:
    encoded = _encode(value)
    return struct.pack(">I", len(encoded)) + encoded


def _highest(head: bytes, ranked: list[tuple[bytes, _T]], key: object) -> _T:
    # Big-endian 8-byte digests compare as the integers stable_hash returns; the part appended after
    # the digest breaks (64-bit) ties the same way whatever the members' order.
    if not ranked:
        raise ValueError(f"members is empty: there is no member to place {key!r} on; "
                         "give at least one live member")
    blake2b = hashlib.blake2b
    best_score, best = b"", ranked[0][1]
    for part, value in ranked:
        score = blake2b(head + part, digest_size=8).digest() + part
        if score > best_score:
            best_score, best = score, value
    return best


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
