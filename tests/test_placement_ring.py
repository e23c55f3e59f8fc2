"""Rendezvous placement over a live member set (issue 17): ``place_member`` and ``ClusterPlacement``.

Pure functions under hypothesis (determinism, balance, minimal movement), pinned values (the answer must
not change between processes or releases), and one real node with ``ClusterPlacement`` as an
``Entities`` placement.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel import Actor, Node
from supervisors import Entities, Supervisor
from supervisors.placement import ClusterPlacement, Placement, as_placement, place_member, stable_hash

KEYS = [f"user-{i}" for i in range(10_000)]
SOME_KEYS = KEYS[:400]

keys_st = st.one_of(st.integers(), st.text(max_size=12), st.binary(max_size=8),
                    st.tuples(st.integers(), st.text(max_size=4)))
ints_st = st.sets(st.integers(-1000, 1000), min_size=1, max_size=12)
pairs_st = st.sets(st.tuples(st.integers(0, 20), st.integers(0, 7)), min_size=1, max_size=24)
members_st = st.one_of(ints_st, pairs_st)

# Both ways in, each as (key, members) -> member: the function, and ClusterPlacement (members encoded once).
Placer = Callable[[Hashable, Sequence[Any]], Any]
PLACERS: dict[str, Placer] = {
    "function": place_member,
    "cluster": lambda key, members: ClusterPlacement(members).place_member(key),
}
placers = pytest.mark.parametrize("place", PLACERS.values(), ids=PLACERS.keys())
quick = settings(max_examples=40, deadline=None)


def _table(place: Placer, members: Sequence[Any], keys: Sequence[Hashable] = SOME_KEYS) -> dict[Any, Any]:
    if place is PLACERS["cluster"]:  # one ClusterPlacement for all keys, as the cluster would use it
        cluster = ClusterPlacement(members)
        return {key: cluster.place_member(key) for key in keys}
    return {key: place(key, members) for key in keys}


@quick
@given(key=keys_st, members=ints_st)
def test_a_single_member_wins_by_the_highest_stable_hash_of_key_and_member(key: Hashable,
                                                                           members: set[int]) -> None:
    assert place_member(key, members) == max(members, key=lambda m: stable_hash((key, m)))


@quick
@given(key=keys_st, members=pairs_st)
def test_a_pair_wins_by_its_node_then_by_its_worker(key: Hashable, members: set[tuple[int, int]]) -> None:
    node = max({n for n, _ in members}, key=lambda n: stable_hash((key, n)))
    pair = max((m for m in members if m[0] == node), key=lambda m: stable_hash((key, m)))
    assert place_member(key, members) == pair == ClusterPlacement(members).place_member(key)


@placers
@quick
@given(key=keys_st, members=members_st, data=st.data())
def test_same_input_same_member_whatever_the_members_order(place: Placer, key: Hashable, members: set[Any],
                                                           data: st.DataObject) -> None:
    ordered = sorted(members)
    shuffled = data.draw(st.permutations(ordered))
    chosen = place(key, ordered)
    assert chosen in members
    assert place(key, shuffled) == chosen == place(key, list(reversed(ordered)))


def test_placement_is_pinned_across_processes_and_releases() -> None:
    # Python's hash() is salted per process; these values hold in every process, so they are pinned.
    assert [place_member(k, range(6)) for k in ("a", "user-1", 42, (1, "x"))] == [3, 4, 0, 4]
    cluster = ClusterPlacement([(n, w) for n in range(3) for w in range(2)])
    pinned = [(2, 1), (2, 1), (0, 1), (1, 1)]
    assert [cluster.place_member(k) for k in ("a", "user-1", 42, (1, "x"))] == pinned
    assert [place_member(k, cluster.members) for k in ("a", "user-1", 42, (1, "x"))] == pinned


@placers
@settings(max_examples=3, deadline=None)
@given(members=st.one_of(st.sets(st.integers(0, 10**6), min_size=6, max_size=6),
                         st.sets(st.integers(0, 10**6), min_size=3, max_size=3).map(
                             lambda nodes: {(n, w) for n in nodes for w in (0, 1)})))
def test_six_members_each_get_their_share_of_10k_keys_within_25_percent(place: Placer,
                                                                        members: set[Any]) -> None:
    counts = Counter(_table(place, sorted(members), KEYS).values())
    share = len(KEYS) / 6
    assert set(counts) == members
    assert all(0.75 * share <= n <= 1.25 * share for n in counts.values()), counts


@placers
@quick
@given(members=members_st.filter(lambda m: len(m) >= 2), data=st.data())
def test_removing_a_member_moves_exactly_the_keys_it_held(place: Placer, members: set[Any],
                                                          data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(sorted(members)))
    before = _table(place, sorted(members))
    after = _table(place, sorted(members - {gone}))
    moved = {key for key in before if before[key] != after[key]}
    assert moved == {key for key, member in before.items() if member == gone}


@placers
@quick
@given(members=members_st, data=st.data())
def test_adding_a_member_moves_keys_only_onto_it(place: Placer, members: set[Any],
                                                 data: st.DataObject) -> None:
    if isinstance(next(iter(members)), tuple):
        new = data.draw(st.tuples(st.integers(0, 20), st.integers(0, 7)).filter(lambda m: m not in members))
    else:
        new = data.draw(st.integers(-1000, 1000).filter(lambda m: m not in members))
    before = _table(place, sorted(members))
    after = _table(place, [*sorted(members), new])
    assert all(after[key] in (before[key], new) for key in before)


@placers
def test_a_sixth_member_takes_about_a_sixth_of_the_keys(place: Placer) -> None:
    members = [(n, 0) for n in range(5)] if place is PLACERS["cluster"] else list(range(5))
    new = (5, 0) if place is PLACERS["cluster"] else 5
    before, after = _table(place, members, KEYS), _table(place, [*members, new], KEYS)
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(after[key] == new for key in moved)
    assert 0.75 * len(KEYS) / 6 <= len(moved) <= 1.25 * len(KEYS) / 6


@quick
@given(nodes=st.sets(st.integers(0, 50), min_size=2, max_size=6), data=st.data())
def test_cluster_losing_a_worker_keeps_its_keys_on_its_node_and_others_in_place(
        nodes: set[int], data: st.DataObject) -> None:
    members = sorted((n, w) for n in nodes for w in range(3))
    gone = data.draw(st.sampled_from(members))
    cluster = ClusterPlacement(members)
    before = {key: cluster.place_member(key) for key in SOME_KEYS}
    cluster.update(m for m in members if m != gone)
    for key, member in before.items():
        now = cluster.place_member(key)
        assert now == member if member != gone else (now != gone and now[0] == gone[0])


def test_cluster_update_replaces_the_member_set() -> None:
    cluster = ClusterPlacement([(1, 0), (1, 1)])
    assert {cluster.place_member(k) for k in SOME_KEYS} == {(1, 0), (1, 1)}
    cluster.update([(2, 0)])
    assert cluster.members == ((2, 0),)
    assert {cluster.place_member(k) for k in SOME_KEYS} == {(2, 0)}
    assert repr(cluster) == "ClusterPlacement([(2, 0)])"


def test_cluster_cache_tells_equal_keys_with_different_encodings_apart() -> None:
    cluster = ClusterPlacement(range(6))
    # 1 == True (one dict key), yet they encode, and so place, apart.
    assert (cluster.place_member(1), cluster.place_member(True)) == (0, 5) == (
        place_member(1, range(6)), place_member(True, range(6)))
    assert (cluster.place_member(True), cluster.place_member(1)) == (5, 0)  # now from the cache


class SmallCache(ClusterPlacement[int]):
    CACHE_SIZE = 4
    __slots__ = ()


def test_cluster_cache_stays_bounded_and_right() -> None:
    cluster = SmallCache(range(5))
    for _ in range(2):
        assert [cluster.place_member(k) for k in SOME_KEYS] == [place_member(k, range(5)) for k in SOME_KEYS]
        assert len(cluster._snapshot[2]) <= 4


def test_no_members_or_mixed_members_are_refused_naming_members() -> None:
    with pytest.raises(ValueError, match="members"):
        place_member("k", [])
    with pytest.raises(ValueError, match="members"):
        ClusterPlacement().place_member("k")
    with pytest.raises(ValueError, match="members"):
        ClusterPlacement([1, (1, 0)])
    with pytest.raises(ValueError, match="members"):
        place_member("k", [(1, 0), 2])
    cluster = ClusterPlacement([1])
    cluster.update([])
    with pytest.raises(ValueError, match="members"):
        cluster.place_member("k")


@quick
@given(key=keys_st, workers=st.integers(1, 16))
def test_cluster_placement_keeps_the_single_host_protocol(key: Hashable, workers: int) -> None:
    cluster = ClusterPlacement([(9, 0)])
    assert isinstance(cluster, Placement)
    assert as_placement(cluster) is cluster
    index = cluster.place(key, workers)
    assert 0 <= index < workers
    assert index == place_member(key, range(workers))


class Where(Actor):
    """An entity that answers with the worker it runs on."""

    async def init(self, key: Any) -> None:
        self.state = key

    async def handle_call(self, request: Any, sender: Any) -> Any:
        return self.pid.worker


ring_entities = Entities("ring-entities", Where, placement=ClusterPlacement())


@pytest.mark.node(workers=3)
async def test_entities_on_one_host_run_where_cluster_placement_puts_them(node: Node) -> None:
    await node.spawn(Supervisor, children=[ring_entities.child_spec()], name="ring-root")
    placed = {key: await ring_entities.call(key, "where") for key in range(12)}
    assert placed == {key: place_member(key, range(3)) for key in range(12)}
    assert len(set(placed.values())) > 1
