"""A node that rejoins the cluster while one of its workers is still making its first database
connection (API.md section 15: after a lost lease the node joins again and serves its entities).

Node ``c`` (one worker) reaches PostgreSQL through a relay (tests/support/unix_relay.py) that can make new
connections slow. Nothing was activated on ``c`` yet, so its worker has no database connection; the
node process has its own, open. ``c`` is SIGSTOPped past its lease with a call to one of its own keys
queued: on SIGCONT the worker starts its first connect (slow: 3 s) for that call while the node process
finds its lease lost, fences and joins again under a new incarnation, telling the worker. The worker's
claims must then be made under the new incarnation, so ``c`` serves its keys again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from kernel.pgserver import PostgresServer
from supervisors.placement import place_member
from tests.support import BOUND
from tests.support.cluster import ClusterNode, database, free_base_port, unique_names, wait_members
from tests.support.processes import ROOT

LEASE = 2.0
#: How long the worker's first connect takes (the relay holds it): well past a rejoin.
SLOW_CONNECT = 3.0

pytestmark = pytest.mark.timeout(120)


@contextlib.contextmanager
def relay(postgres: PostgresServer) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_base_port(0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.unix_relay", str(port), f"{postgres.host}:{postgres.port}"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stdout.read()
        yield proc, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(BOUND)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def command(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "ok"


def wait_line(node: ClusterNode, needle: str, bound: float = BOUND) -> None:
    deadline = time.monotonic() + bound
    while not any(needle in line for line in node.output):
        assert time.monotonic() < deadline, f"{node.name} never logged {needle!r}:\n{''.join(node.output)}"
        time.sleep(0.05)  # the node's output is read by a thread: poll for the line


def test_a_rejoin_during_a_workers_first_connect_still_serves_the_nodes_keys(
        postgres: PostgresServer) -> None:
    with database(postgres) as dsn, relay(postgres) as (slow, port):
        slow_dsn = dsn.replace(f":{postgres.port}/", f":{port}/")
        names = unique_names("abc")
        cluster = [ClusterNode(names[0], dsn, LEASE), ClusterNode(names[1], dsn, LEASE),
                   ClusterNode(names[2], slow_dsn, LEASE, workers=1)]
        try:
            for node in cluster:
                node.ready()
            a, b, c = cluster
            ids = {n.id for n in cluster}
            for node in cluster:
                wait_members(node, ids)
            key = next(f"r{i}" for i in range(1000) if place_member(f"r{i}", sorted(ids)) == c.id)
            command(slow, f"delay {SLOW_CONNECT}")
            c.pause()
            try:
                wait_members(a, {a.id, b.id}, bound=LEASE + 5)
                c.send(op="entity", key=key, request=["add", 1], timeout=LEASE + 5)  # runs at SIGCONT
            finally:
                c.resume()
            wait_line(c, "joined the cluster again")
            command(slow, "delay 0")
            for node in cluster:
                wait_members(node, ids)
            deadline = time.monotonic() + SLOW_CONNECT + BOUND
            while True:
                reply = c.answer(c.send(op="entity", key=key, request="get", timeout=LEASE + 5))
                if "ok" in reply:
                    break
                assert time.monotonic() < deadline, f"{key} on its owner {c.name}: {reply}"
                time.sleep(0.1)  # a retry's pace: the failed call was the event
            assert reply["ok"][0] == c.id
        finally:
            for node in cluster:
                node.close()
