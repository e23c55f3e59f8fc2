"""The cluster's tables in PostgreSQL: one idempotent, versioned set, installed by every node at start.

Three tables (DESIGN.md, "Beyond one host"), all times by the database's clock:

* ``pyotp_members``: one row per node: its id (drawn from ``pyotp_node_ids`` once per node process: the
  node part of its pids, so a restarted node's pids never match its predecessor's), its address and
  number of workers, its incarnation (the database's clock when it joined, new at every join) and its
  lease expiry. A node whose ``lease_expires <= now()`` is dead to everyone.
* ``pyotp_names``: who holds each name: the holder node and incarnation (both NULL once released), and
  the fencing number of the claim. A name's row is never deleted, so its fence only ever grows: every
  claim sets it to the previous one + 1, across releases and takeovers.
* ``pyotp_checkpoints``: the last state of each key, with the fence it was written under and a sequence
  number that grows by one at every committed write.
* ``pyotp_schema`` holds the version and the cluster's secret: 32 random bytes made by the first install,
  the key of the HMAC handshake between nodes (whoever may use the database is a member).

:func:`install` runs under a transaction-scoped advisory lock, so nodes starting together do not race on
PostgreSQL's catalog (two concurrent ``CREATE TABLE IF NOT EXISTS`` of one table can fail with a unique
violation on ``pg_type``).
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ClusterSchemaMismatch

__all__ = ["SCHEMA_VERSION", "TABLES", "install", "secret"]

#: Raised when a change needs a migration; :func:`install` refuses a database of a newer version.
SCHEMA_VERSION = 2

#: The key of the advisory lock that serialises installs (any constant; "pyotp" in ASCII).
_LOCK = 0x70796F7470
#: Length of the cluster's handshake secret (an HMAC-SHA256 key).
_SECRET_BYTES = 32

TABLES = ("pyotp_schema", "pyotp_members", "pyotp_names", "pyotp_checkpoints")

_DDL = """
CREATE TABLE IF NOT EXISTS pyotp_schema (
    version integer PRIMARY KEY,
    installed timestamptz NOT NULL DEFAULT now(),
    secret bytea NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS pyotp_node_ids;
CREATE TABLE IF NOT EXISTS pyotp_members (
    node text PRIMARY KEY,
    id bigint NOT NULL,
    address text NOT NULL,
    workers integer NOT NULL DEFAULT 0,
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
        ClusterSchemaMismatch: the database was set up by another version of the kernel.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        if await conn.fetchval("SELECT to_regclass('pyotp_schema') IS NOT NULL"):
            found: int = await conn.fetchval("SELECT max(version) FROM pyotp_schema")
            if found != SCHEMA_VERSION:
                raise ClusterSchemaMismatch(found, SCHEMA_VERSION)
        await conn.execute(_DDL)
        await conn.execute("INSERT INTO pyotp_schema(version, secret) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                           SCHEMA_VERSION, os.urandom(_SECRET_BYTES))
    return SCHEMA_VERSION


async def secret(conn: Any) -> bytes:
    """The cluster's handshake secret (made by the first :func:`install`)."""
    found: bytes = await conn.fetchval("SELECT secret FROM pyotp_schema WHERE version = $1", SCHEMA_VERSION)
    return found
