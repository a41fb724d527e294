"""Versioned SQL migrations, applied at start-up.

Each `migrations/NNNN_name.sql` runs once, in order, in its own transaction. Several replicas may
start at once: the first takes a transaction-level advisory lock and applies what is missing;
the others wait for the lock and then find nothing left to do.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from hosting.advisory_locks import AdvisoryLock

log = logging.getLogger(__name__)


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration shipped with the server, in order."""
    found = []
    for entry in resources.files("eventstore_server.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


async def migrate(conn: asyncpg.Connection | PoolConnectionProxy) -> list[str]:
    """Apply the missing migrations; returns the names applied."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", int(AdvisoryLock.STORE_MIGRATIONS))
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS es_schema_migrations (
                   version int PRIMARY KEY, name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM es_schema_migrations")}
        for version, name, sql in available():
            if version in done:
                continue
            log.info("applying migration %s", name)
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO es_schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
            applied.append(name)
    return applied
