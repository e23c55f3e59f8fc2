"""A real network partition of one cluster node (API.md section 15), made with a network namespace.

Node ``c`` runs in a namespace of its own (``ip netns exec``): only its own loopback, so it cannot reach
nodes ``a`` and ``b`` nor they it, and it reaches PostgreSQL through a relay inside that namespace to the
server's Unix socket (tests/support/unix_relay.py). No address other than loopback is used (hence no veth
pair: a veth needs non-loopback addresses). Then the namespace's loopback is taken down: ``c`` is cut off
from everything, the database included, with no process killed or stopped. ``c`` must fence itself
(stop its persistent actors) and ``a``/``b`` must declare it down and take over its entity with its last
acknowledged state within lease + 2 s.

Skipped, with the reason, where network namespaces cannot be made (not root, no ``ip``, no permission).
The namespace and the relay are removed even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from kernel.pgserver import PostgresServer
from supervisors.placement import place_member
from tests.support import BOUND
from tests.support.cluster import ClusterNode, database, unique_names, wait_members
from tests.support.processes import ROOT

LEASE = 2.0

pytestmark = pytest.mark.timeout(120)


def _ip(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=BOUND, check=False)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace with its loopback up; deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add)")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2) on this machine")
    name = f"pyotp-part-{os.getpid()}"
    made = _ip("netns", "add", name)
    if made.returncode != 0:
        pytest.skip(f"`ip netns add` failed here: {made.stderr.strip()}")
    try:
        up = _ip("-n", name, "link", "set", "lo", "up")
        assert up.returncode == 0, up.stderr
        yield name
    finally:
        _ip("netns", "del", name)


@contextlib.contextmanager
def relay(netns: str, postgres: PostgresServer) -> Iterator[subprocess.Popen[str]]:
    """The namespace's way to the database: 127.0.0.1:PORT there -> the server's Unix socket."""
    assert postgres.directory is not None
    socket_path = os.path.join(postgres.directory, f".s.PGSQL.{postgres.port}")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.support.unix_relay",
         str(postgres.port), socket_path], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", f"the relay did not start: {line}{proc.stdout.read()}"
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(BOUND)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def test_a_partitioned_node_fences_itself_and_is_taken_over(postgres: PostgresServer, netns: str) -> None:
    with database(postgres) as dsn, relay(netns, postgres):
        names = unique_names("abc")
        cluster = [ClusterNode(names[0], dsn, LEASE), ClusterNode(names[1], dsn, LEASE),
                   ClusterNode(names[2], dsn, LEASE, prefix=["ip", "netns", "exec", netns])]
        try:
            for node in cluster:
                node.ready()
            a, b, c = cluster
            ids = {n.id for n in cluster}
            for node in cluster:  # membership is the database's: c is a member, unreachable or not
                wait_members(node, ids)
            key = next(f"p{i}" for i in range(1000) if place_member(f"p{i}", sorted(ids)) == c.id)
            for amount in (1, 2, 3):
                where, total = c.ask(op="entity", key=key, request=["add", amount])
            assert (where, total) == (c.id, 6)
            # The partition: c's loopback goes down, so its connections to the relay (the database)
            # go silent, as a cut cable would make them. Nothing is killed or stopped.
            cut = _ip("-n", netns, "link", "set", "lo", "down")
            assert cut.returncode == 0, cut.stderr
            started = time.monotonic()
            wait_members(a, {a.id, b.id}, bound=LEASE + 5)
            declared = time.monotonic() - started
            reply = a.answer(a.send(op="entity", key=key, request="get", timeout=LEASE + 5), LEASE + 6)
            took = time.monotonic() - started
            assert "ok" in reply, reply
            where, total = reply["ok"]
            assert where in (a.id, b.id) and total == 6, reply
            fenced = next((line for line in c.output if "lost its cluster lease" in line), None)
            deadline = time.monotonic() + BOUND
            while fenced is None and time.monotonic() < deadline:
                time.sleep(0.05)  # c's log is read by a thread: poll for the line it writes
                fenced = next((line for line in c.output if "lost its cluster lease" in line), None)
            assert fenced is not None and "stopping its persistent actors" in fenced, "".join(c.output)
            print(f"partition: c declared down after {declared:.2f}s, {key} served by node {where} "
                  f"after {took:.2f}s (lease {LEASE}s)")
            assert took < LEASE + 2, f"take-over after the partition took {took:.1f}s"
        finally:
            cluster[2].kill()  # cut off, it could not leave the cluster: no orderly stop to wait for
            for node in cluster:
                node.close()
