"""``python -m kernel run --cluster DSN --listen HOST:PORT``: two runners form one cluster, and one node's
control socket shows both (its snapshot's ``cluster`` part, the ``cluster`` op's counts, and the other
node's whole snapshot asked through the cluster). Bad cluster options are refused naming the option."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

import kernel
from kernel.control import ControlClient, ControlError
from kernel.pgserver import PostgresServer
from tests.reliability.test_row18_runner_survives_worker_kills import (  # noqa: F401 (runtime_dir: a fixture)
    runtime_dir,
)
from tests.support import BOUND
from tests.support.cluster import database, free_base_port
from tests.support.processes import ROOT, interrupt, reap, start_runner, wait_line

pytestmark = pytest.mark.timeout(180)


def run_refused(*options: str, env: dict[str, str] | None = None) -> str:
    """Run the runner with ``options``; assert it exits 2 before booting; its stderr."""
    done = subprocess.run([sys.executable, "-m", "kernel", "run", "tests.apps.chaos_app:children", *options],
                          cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 2, done.stderr
    return done.stderr


@pytest.mark.parametrize(("options", "message"), [
    (["--listen", "127.0.0.1:7400"], "--listen is only used with --cluster"),
    (["--lease", "3"], "--lease is only used with --cluster"),
    (["--tls-ca", "ca.pem"], "--tls-ca is only used with --cluster"),
    (["--cluster", "mysql://x/y", "--listen", "127.0.0.1:7400"], "--cluster: expected a postgresql:// DSN"),
    (["--cluster", "postgresql://127.0.0.1/x"], "--listen HOST:PORT is required with --cluster"),
    (["--cluster", "postgresql://127.0.0.1/x", "--listen", "7400"], "--listen '7400' has no port"),
    (["--cluster", "postgresql://127.0.0.1/x", "--listen", "127.0.0.1:1", "--lease", "0"],
     "--lease: expected a number of seconds above 0"),
    (["--cluster", "postgresql://127.0.0.1/x", "--listen", "127.0.0.1:1", "--tls-cert", "c.pem"],
     "--tls-key is missing"),
    (["--cluster", "postgresql://127.0.0.1/x", "--listen", "127.0.0.1:1", "--tls-cert", "c.pem",
      "--tls-key", "k.pem", "--tls-ca", "ca.pem"], "--tls-cert: no such file 'c.pem'"),
])
def test_bad_cluster_options_are_refused_naming_the_option(options: list[str], message: str) -> None:
    assert message in run_refused(*options)


def test_the_dsn_may_come_from_PYOTP_CLUSTER() -> None:
    """With ``$PYOTP_CLUSTER`` set the node is a cluster node, so ``--listen`` is required."""
    stderr = run_refused(env={"PYOTP_CLUSTER": "postgresql://127.0.0.1/x"})
    assert "--listen HOST:PORT is required with --cluster" in stderr


@pytest.fixture
def dsn(postgres: PostgresServer) -> Iterator[str]:
    with database(postgres) as found:
        yield found


async def both_listed(client: ControlClient, names: set[str]) -> dict[str, Any]:
    """The first snapshot whose ``cluster`` part lists every node of ``names`` (the membership poll of the
    node asked is what brings the other in)."""
    async with asyncio.timeout(BOUND):
        while True:
            snap = await client.request({"op": "snapshot"})
            if {m["name"] for m in snap["cluster"]["members"]} == names:
                return snap
            await asyncio.sleep(0.05)  # another process: its snapshot is the only view of its membership


@pytest.mark.usefixtures("runtime_dir")
def test_two_runners_form_a_cluster_and_one_control_socket_shows_both(dsn: str) -> None:
    a, b = f"ca-{os.getpid()}", f"cb-{os.getpid()}"
    runners = []
    try:
        for name in (a, b):
            listen = f"127.0.0.1:{free_base_port(2)}"
            runner, lines = start_runner("tests.apps.chaos_app:children", name, "--cluster", dsn,
                                         "--listen", listen, "--lease", "30")
            runners.append(runner)
            seen: list[str] = []
            wait_line(lines, "watch it live", seen)

        async def main() -> None:
            client = ControlClient()
            await client.connect(a)
            try:
                snap = await both_listed(client, {a, b})
                part = snap["cluster"]
                assert part["node"] == a and part["lease"] == 30.0
                members = {m["name"]: m for m in part["members"]}
                assert members[a]["self"] and not members[b]["self"]
                assert part["node_id"] == members[a]["id"] != members[b]["id"]
                assert members[b]["workers"] == 2 and members[b]["address"].startswith("127.0.0.1:")
                assert members[b]["lease_expires"] > members[b]["incarnation"]

                other = await client.request({"op": "snapshot", "node": b})  # through the cluster
                assert other["node"] == b and len(other["workers"]) == 2
                assert other["cluster"]["node_id"] == members[b]["id"]

                nodes = {m["name"]: m for m in (await client.request({"op": "cluster"}))["members"]}
                for name in (a, b):
                    # 2 workers each; the root, the pool and its 6 counters at least
                    assert nodes[name]["workers_alive"] == 2 and nodes[name]["actors"] >= 8, nodes

                with pytest.raises(ControlError, match="no live node 'nowhere'"):
                    await client.request({"op": "snapshot", "node": "nowhere"})

                # b's node process paused (well inside its lease): asking it is bounded, not stuck.
                os.kill(runners[1].pid, signal.SIGSTOP)
                try:
                    began = time.monotonic()
                    with pytest.raises(ControlError, match=f"node '{b}' did not answer within 3.0s"):
                        await client.request({"op": "snapshot", "node": b})
                    assert time.monotonic() - began < 3.0 + 1.5
                    nodes = {m["name"]: m for m in (await client.request({"op": "cluster"}))["members"]}
                    assert "did not answer" in nodes[b]["error"] and nodes[a]["actors"] >= 8, nodes
                finally:
                    os.kill(runners[1].pid, signal.SIGCONT)
            finally:
                client.close()

        kernel.run(main())
        once = subprocess.run([sys.executable, "-m", "tools.observer", "--node", a, "--show", b, "--once",
                               "--width", "160"], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert once.returncode == 0, once.stderr
        assert "cluster (2 nodes)" in once.stdout and "shown" not in once.stdout  # --once: b's own view
        assert b in once.stdout.split("this node")[0].splitlines()[-1], once.stdout  # b's row
        for runner in runners:
            assert interrupt(runner) == 0
    finally:
        for runner in runners:
            reap(runner)


def test_an_unreachable_database_exits_1_saying_so() -> None:
    nobody = free_base_port(0)  # nothing listens there
    done = subprocess.run([sys.executable, "-m", "kernel", "run", "tests.apps.chaos_app:children",
                           "--workers", "1", "--cluster", f"postgresql://127.0.0.1:{nobody}/x",
                           "--listen", f"127.0.0.1:{free_base_port(1)}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "cannot join the cluster (--cluster, --listen)" in done.stderr and "Traceback" not in done.stderr
