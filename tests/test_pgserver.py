"""kernel.pgserver: a real, throwaway PostgreSQL server that only its password opens, removed when stopped."""

from __future__ import annotations

import asyncio
import os

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
