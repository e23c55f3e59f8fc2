"""Nodes of a cluster as real OS processes on loopback, one PostgreSQL (API.md section 15).

Each node is ``Node(cluster=dsn, listen="127.0.0.1:PORT", lease=LEASE)`` in its own process group
(tests/support/cluster_node.py), hosting an ``echo`` actor and the ``counters`` entities (persistent,
``Checkpoint(every=1)``, durable replies). Faults are real: SIGKILL of a node's whole process group, and
SIGSTOP past its lease (the classic GC pause) followed by SIGCONT.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from kernel.pgserver import FAST, PostgresServer
from tests.support import BOUND
from tests.support.cluster import ClusterNode, database, nodes, unique_names, wait_members

#: The nodes' lease (seconds): short, so that a fail-over test takes seconds, not a minute.
LEASE = 2.0

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def dsn(postgres: PostgresServer) -> Iterator[str]:
    with database(postgres) as found:
        yield found


@pytest.fixture
def cluster(dsn: str) -> Iterator[list[ClusterNode]]:
    """Three nodes a, b, c (names unique to this run: a node's name is its control socket's, one per
    host), all ready and seeing each other."""
    with nodes(dsn, unique_names("abc"), LEASE) as found:
        yield found


def served(node: ClusterNode, key: str, request: object, within: float) -> list[int]:
    """Call entity ``key`` through ``node`` until it answers, for ``within`` seconds: a call that was
    waiting on a node when it died fails with ``node_down`` (it may have run: it is not resent), and
    the next one is routed to the entity's new host."""
    deadline = time.monotonic() + within
    while True:
        reply = node.answer(node.send(op="entity", key=key, request=request, timeout=within))
        if "ok" in reply:
            return list(reply["ok"])
        assert "node_down" in reply["error"], reply
        assert time.monotonic() < deadline, f"{key} still not served after {within}s: {reply}"


def owner_of(nodes: list[ClusterNode], key: str) -> ClusterNode:
    """The node hosting entity ``key`` (asked through the first node)."""
    where, _ = nodes[0].ask(op="entity", key=key, request="get")
    return next(n for n in nodes if n.id == where)


def test_three_nodes_form_a_cluster_and_reach_each_others_actors(cluster: list[ClusterNode]) -> None:
    a, b, c = cluster
    assert a.ask(op="members")["members"] == {str(n.id): n.name for n in cluster}
    for caller in cluster:
        for target in cluster:
            if caller is not target:
                where, _pid = caller.ask(op="call", node=target.id, name="echo", request="where")
                assert where == target.id
    assert b.ask(op="call", node=c.id, name="echo", request=["echo", {"deep": [1, (2, 3)]}]) == \
        {"deep": [1, [2, 3]]}


def test_an_entity_is_activated_once_for_concurrent_first_calls_from_every_node(
        cluster: list[ClusterNode]) -> None:
    for key in ("k1", "k2", "k3", "k4", "k5"):
        sent = [(n, n.send(op="entity", key=key, request=["add", 1])) for n in cluster]
        answers = [n.answer(i)["ok"] for n, i in sent]
        hosts = {where for where, _ in answers}
        assert len(hosts) == 1, f"{key} was activated on {hosts}"
        assert sorted(total for _, total in answers) == [1, 2, 3]  # one actor counted all three
        for node in cluster:  # and every node reaches that one
            assert node.ask(op="entity", key=key, request="get") == [answers[0][0], 3]


def test_links_and_monitors_into_a_killed_node_fire_node_down(cluster: list[ClusterNode]) -> None:
    a, b, c = cluster
    a.ask(op="monitor", node=c.id, name="echo", tag="c-echo")
    b.ask(op="monitor", node=c.id, name="echo", tag="c-echo")
    started = time.monotonic()
    c.kill()
    for watcher in (a, b):
        down = watcher.down(bound=LEASE + 5)
        assert down == {"down": "c-echo", "reason": "node_down"}
    took = time.monotonic() - started
    print(f"\nSIGKILL -> node_down at both watchers: {took:.2f}s (lease {LEASE}s)")
    assert took < LEASE + 2, "node_down took longer than the lease + 2 s"
    wait_members(a, {a.id, b.id})


def test_a_worker_killed_on_one_node_fires_the_monitors_of_the_others(cluster: list[ClusterNode]) -> None:
    a, b, c = cluster
    a.ask(op="monitor", node=c.id, name="echo", tag="c-echo")
    os.kill(c.ask(op="workers")[0], signal.SIGKILL)  # echo runs on worker 0; c replaces the worker
    assert a.down() == {"down": "c-echo", "reason": "worker_down"}
    where, _ = a.ask(op="call", node=b.id, name="echo", request="where")  # the rest of the cluster is up
    assert where == b.id


def test_sigkill_of_the_host_fails_over_with_the_last_acknowledged_state(cluster: list[ClusterNode]) -> None:
    keys = [f"acct-{i}" for i in range(6)]
    for key in keys:
        for _ in range(3):
            cluster[0].ask(op="entity", key=key, request=["add", 1])
    victim = owner_of(cluster, keys[0])
    hosted = [k for k in keys if owner_of(cluster, k) is victim]
    survivors = [n for n in cluster if n is not victim]
    victim.kill()
    started = time.monotonic()
    for key in hosted:
        where, total = served(survivors[0], key, "get", LEASE + 2 + 1)
        assert where != victim.id and total == 3, (key, where, total)
    took = time.monotonic() - started
    print(f"\nSIGKILL -> {len(hosted)} entities served again from a survivor: {took:.2f}s (lease {LEASE}s)")
    assert took < LEASE + 2 + 1, "fail-over took longer than lease + 2 s"
    for key in keys:  # every acknowledged write is there, wherever it lives now (the other survivor
        # may declare the victim down a poll later: its first call to a key there can fail node_down)
        assert served(survivors[1], key, ["add", 1], LEASE + 2 + 1)[1] == 4


def test_a_paused_node_is_taken_over_and_its_writes_are_refused_when_it_resumes(
        cluster: list[ClusterNode]) -> None:
    key = "paused"
    cluster[0].ask(op="entity", key=key, request=["add", 10])
    victim = owner_of(cluster, key)
    others = [n for n in cluster if n is not victim]
    victim.pause()  # the whole node: its node process and workers, as a long GC pause or a VM freeze
    try:
        started = time.monotonic()
        where, total = served(others[0], key, ["add", 1], LEASE + 2 + 1)
        took = time.monotonic() - started
        assert where != victim.id and total == 11
        # Queued while the victim is stopped: it runs the moment the victim resumes, racing its own
        # discovery that its lease is gone.
        late = victim.send(op="entity", key=key, request=["add", 100], timeout=LEASE + 5)
    finally:
        victim.resume()
    reply = victim.answer(late)
    print(f"\nSIGSTOP -> served from another node: {took:.2f}s (lease {LEASE}s); the resumed node's call: "
          f"{reply.get('ok', reply.get('error'))}")
    assert took < LEASE + 2 + 1, f"take-over after SIGSTOP took {took:.1f}s"
    # The paused node must not acknowledge a write of its own: its claim was taken over, so its
    # checkpoint is refused and the durable reply with it (it may route the call to the new host).
    if "ok" in reply:
        assert reply["ok"][0] != victim.id, f"the paused node acknowledged a write: {reply}"
    # The third node may learn of the pause only now, from the victim's new incarnation (a membership
    # poll of its own that the load delayed): a call it had routed to the victim then fails node_down.
    where, total = served(others[1], key, "get", LEASE + 2 + 1)
    assert where != victim.id
    assert total == (111 if "ok" in reply else 11), (reply, total)
    assert any("lost its cluster lease" in line for line in victim.output) or \
        wait_line(victim, "lost its cluster lease")


def wait_line(node: ClusterNode, needle: str, bound: float = BOUND) -> bool:
    deadline = time.monotonic() + bound
    while not any(needle in line for line in node.output):
        assert time.monotonic() < deadline, f"{node.name} never logged {needle!r}"
        time.sleep(0.05)
    return True


def test_a_node_cut_off_from_the_database_stops_its_persistent_actors_before_its_lease_runs_out() -> None:
    with PostgresServer(settings=FAST) as server, database(server) as dsn:
        node = ClusterNode(unique_names("z")[0], dsn, LEASE)
        try:
            node.ready()
            assert node.ask(op="entity", key="k", request=["add", 5])[1] == 5
            node.ask(op="monitor_entity", key="k", tag="k")
            server.halt()  # every connection of the node to its database is gone
            cut = time.monotonic()
            down = node.down(bound=BOUND)
            stopped = time.monotonic() - cut
            assert down == {"down": "k", "reason": "lease_lost"}
            # The last renew began before the outage, so by the database's clock the lease runs out
            # later than LEASE after it: stopping within LEASE of the cut is stopping in time.
            print(f"\ndatabase halted -> persistent actor stopped (lease_lost): {stopped:.2f}s "
                  f"(lease {LEASE}s)")
            assert stopped < LEASE, f"persistent actors stopped {stopped:.2f}s after the cut"
            server.restart()
            wait_line(node, "joined the cluster again")
            # The worker's checkpoint connection died with the old server: the first write on it fails
            # (CheckpointWriteFailed, its caller told, nothing committed) and the next one reconnects.
            reply = node.answer(node.send(op="entity", key="k", request=["add", 1]))
            if "error" in reply:
                assert "CheckpointWriteFailed" in reply["error"], reply
                reply = node.answer(node.send(op="entity", key="k", request=["add", 1]))
            assert reply["ok"] == [node.id, 6]  # restored from the last acknowledged state, 5
        finally:
            node.close()
