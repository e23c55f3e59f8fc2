"""kernel.pgserver: a real, throwaway PostgreSQL server that only its password opens, removed when stopped."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import psutil
import pytest

from kernel.errors import PostgresUnavailable
from kernel.pgserver import FAST, PostgresServer


def postmasters(directory: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(directory in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def test_started_server_answers_its_password_only_and_leaves_nothing(postgres: PostgresServer) -> None:
    async def check() -> None:
        conn = await asyncpg.connect(postgres.dsn)
        try:
            assert await conn.fetchval("SELECT 1 + 1") == 2
            assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
        finally:
            await conn.close()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(postgres.dsn.replace(postgres.password, "wrong"))

    asyncio.run(check())


def test_stop_removes_the_server_and_its_directory() -> None:
    server = PostgresServer(settings=FAST)
    server.start()
    directory = server.directory
    assert directory is not None and postmasters(directory)
    server.stop()
    assert not os.path.exists(directory)
    assert not postmasters(directory)
    server.stop()  # idempotent
    with pytest.raises(RuntimeError, match="not started"):
        server.dsn


def test_a_bad_setting_fails_the_start_with_the_servers_own_words() -> None:
    server = PostgresServer(settings={"no_such_setting": "1"})
    with pytest.raises(PostgresUnavailable, match="no_such_setting"):
        server.start()
    assert server.directory is None


def test_bad_host_is_named() -> None:
    with pytest.raises(ValueError, match="host"):
        PostgresServer(host="")


OWNER_SCRIPT = """
import sys
from kernel.pgserver import FAST, PostgresServer
server = PostgresServer(settings=FAST)
server.start()
print(server.directory, flush=True)
sys.stdin.read()  # until the test kills us
"""


def test_the_next_start_sweeps_the_server_of_a_sigkilled_owner() -> None:
    """pg_ctl detaches the server, so SIGKILL of its owner leaves it running; the next start stops it
    and removes its directory, and leaves the servers of live owners alone."""
    with PostgresServer(settings=FAST) as alive:
        with subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) as owner:
            try:
                assert owner.stdout is not None
                orphan = owner.stdout.readline().strip()
                assert orphan and postmasters(orphan)
            finally:
                owner.kill()  # SIGKILL: no stop(), no atexit
                owner.wait(timeout=30)
        assert os.path.exists(orphan) and postmasters(orphan)  # SIGKILL left it running
        with PostgresServer(settings=FAST) as nxt:
            assert nxt.directory != orphan
            assert not os.path.exists(orphan)
            assert not postmasters(orphan)
            assert alive.directory is not None and os.path.exists(alive.directory)
            assert postmasters(alive.directory)


def test_halt_and_restart_keep_the_data_and_the_dsn() -> None:
    with PostgresServer(settings=FAST) as server:
        async def write() -> None:
            conn = await asyncpg.connect(server.dsn)
            try:
                await conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
            finally:
                await conn.close()

        async def read() -> int:
            conn = await asyncpg.connect(server.dsn)
            try:
                value: int = await conn.fetchval("SELECT x FROM t")
                return value
            finally:
                await conn.close()

        asyncio.run(write())
        assert server.directory is not None
        server.halt()
        assert not postmasters(server.directory)
        with pytest.raises(OSError):
            asyncio.run(read())
        server.restart()
        assert asyncio.run(read()) == 42
