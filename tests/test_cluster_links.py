"""Links across cluster nodes (API.md section 15): a link into a node that dies fires ``"node_down"``,
and a link to a pid of a node already down fires ``"noproc"`` at once, as OTP's link to a dead process.

The linker is a ``trap_exits`` actor on a worker of node A (op ``link`` of tests/support/cluster_node.py);
the ``Exit`` it traps comes back as a line. The fault is real: SIGKILL of node C's whole process group.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from kernel.pgserver import PostgresServer
from tests.support.cluster import ClusterNode, database, nodes, unique_names, wait_members

LEASE = 2.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(postgres: PostgresServer) -> Iterator[list[ClusterNode]]:
    with database(postgres) as dsn, nodes(dsn, unique_names("abc"), LEASE) as found:
        yield found


def test_a_link_into_a_killed_node_fires_node_down(cluster: list[ClusterNode]) -> None:
    a, b, c = cluster
    target = a.ask(op="link", tag="a-c", node=c.id, name="echo")
    b.ask(op="link", tag="b-c", node=c.id, name="echo")
    started = time.monotonic()
    c.kill()
    for linker in (a, b):
        assert linker.exit(bound=LEASE + 5) == {"exit": linker.name[0] + "-c", "reason": "node_down",
                                                 "pid": target}
    took = time.monotonic() - started
    print(f"link node_down after SIGKILL: {took:.2f}s (lease {LEASE}s)")
    assert took < LEASE + 2, f"node_down through a link took {took:.1f}s (lease {LEASE}s)"
    assert a.exits.empty() and b.exits.empty()  # exactly one Exit per link


def test_a_link_to_a_pid_of_a_node_already_down_fires_noproc_at_once(cluster: list[ClusterNode]) -> None:
    a, b, c = cluster
    target = a.ask(op="whereis", tag="c-echo", node=c.id, name="echo")
    c.kill()
    wait_members(a, {a.id, b.id}, bound=LEASE + 5)  # a has declared c down
    started = time.monotonic()
    assert a.ask(op="link", tag="late", pid="c-echo") == target
    assert a.exit() == {"exit": "late", "reason": "noproc", "pid": target}
    assert time.monotonic() - started < 1.0
