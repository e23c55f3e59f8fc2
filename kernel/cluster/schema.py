"""The cluster's tables in PostgreSQL: one idempotent, versioned set, installed by every node at start.

Three tables (DESIGN.md, "Beyond one host"), all times by the database's clock:

* ``pyotp_members``: one row per node: its address, its incarnation (the database's clock when it joined,
  new at every join) and its lease expiry. A node whose ``lease_expires <= now()`` is dead to everyone.
* ``pyotp_names``: who holds each name: the holder node and incarnation (both NULL once released), and
  the fencing number of the claim. A name's row is never deleted, so its fence only ever grows: every
  claim sets it to the previous one + 1, across releases and takeovers.
* ``pyotp_checkpoints``: the last state of each key, with the fence it was written under and a sequence
  number that grows by one at every committed write.

:func:`install` runs under a transaction-scoped advisory lock, so nodes starting together do not race on
PostgreSQL's catalog (two concurrent ``CREATE TABLE IF NOT EXISTS`` of one table can fail with a unique
violation on ``pg_type``).
"""

from __future__ import annotations

from typing import Any

from ..errors import ClusterSchemaMismatch

__all__ = ["SCHEMA_VERSION", "TABLES", "install"]

#: Raised when a change needs a migration; :func:`install` refuses a database of a newer version.
SCHEMA_VERSION = 1

#: The key of the advisory lock that serialises installs (any constant; "pyotp" in ASCII).
_LOCK = 0x70796F7470

TABLES = ("pyotp_schema", "pyotp_members", "pyotp_names", "pyotp_checkpoints")

_DDL = """
CREATE TABLE IF NOT EXISTS pyotp_schema (
    version integer PRIMARY KEY,
    installed timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pyotp_members (
    node text PRIMARY KEY,
    address text NOT NULL,
    incarnation timestamptz NOT NULL,
    lease_expires timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS pyotp_names (
    name text PRIMARY KEY,
    node text,
    incarnation timestamptz,
    fence bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS pyotp_names_holder ON pyotp_names (node, incarnation);
CREATE TABLE IF NOT EXISTS pyotp_checkpoints (
    key text PRIMARY KEY,
    fence bigint NOT NULL,
    state bytea NOT NULL,
    version integer NOT NULL DEFAULT 0,
    seq bigint NOT NULL,
    updated timestamptz NOT NULL DEFAULT now()
);
"""


async def install(conn: Any) -> int:
    """Create the tables if they are missing and return the database's schema version.

    Idempotent and safe to run from many nodes at once. ``conn`` is an asyncpg connection.

    Raises:
        ClusterSchemaMismatch: the database was set up by a newer version of the kernel.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        await conn.execute(_DDL)
        await conn.execute("INSERT INTO pyotp_schema(version) VALUES ($1) ON CONFLICT DO NOTHING",
                           SCHEMA_VERSION)
        found: int = await conn.fetchval("SELECT max(version) FROM pyotp_schema")
    if found > SCHEMA_VERSION:
        raise ClusterSchemaMismatch(found, SCHEMA_VERSION)
    return found
