"""The customers' personal-data keys, in customer_svc's own PostgreSQL schema (never in the
event store): one AES-256 key per customer, made on first use. Erasing one leaves a row with no
key, so the customer stays forgotten: a key is never made for them again."""

from __future__ import annotations

import os

import asyncpg

from eventstore_client.personal import SubjectForgotten
from hosting.advisory_locks import AdvisoryLock
from hosting.database import AttachedPool


class PostgresSubjectKeys(AttachedPool):
    what = "the keys' database"

    def __init__(self, pool: asyncpg.Pool | None = None, schema: str = "customer_svc") -> None:
        super().__init__(pool)
        self._schema = schema

    async def setup(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1)", int(AdvisoryLock.CUSTOMER_KEYS_SETUP)
            )
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._schema}")
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {self._schema}.subject_keys (
                        subject    text        PRIMARY KEY,
                        key        bytea,      -- NULL: erased, for ever
                        created_at timestamptz NOT NULL DEFAULT now(),
                        erased_at  timestamptz
                    )"""
            )

    async def get(self, subject: str) -> bytes | None:
        key: bytes | None = await self._pool.fetchval(
            f"SELECT key FROM {self._schema}.subject_keys WHERE subject = $1", subject
        )
        return key

    async def get_or_create(self, subject: str) -> bytes:
        row = await self._pool.fetchrow(
            f"""WITH made AS (
                    INSERT INTO {self._schema}.subject_keys (subject, key) VALUES ($1, $2)
                    ON CONFLICT (subject) DO NOTHING RETURNING key
                )
                SELECT key FROM made
                UNION ALL
                SELECT key FROM {self._schema}.subject_keys WHERE subject = $1
                LIMIT 1""",
            subject,
            os.urandom(32),
        )
        if row is None or row["key"] is None:
            raise SubjectForgotten(subject)
        key: bytes = row["key"]
        return key

    async def erase(self, subject: str) -> bool:
        erased = await self._pool.fetchval(
            f"""INSERT INTO {self._schema}.subject_keys (subject, key, erased_at)
                VALUES ($1, NULL, now())
                ON CONFLICT (subject) DO UPDATE SET key = NULL, erased_at = now()
                WHERE {self._schema}.subject_keys.key IS NOT NULL
                RETURNING true""",
            subject,
        )
        return bool(erased)
