"""Deleting streams and setting their retention: the SQL behind DeleteStream and
Set/GetStreamMetadata. Reads hide what these decide at once (reader.StreamView); the scavenger
removes the rows later (scavenger.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from eventstore_server.errors import NotFound, StreamDeleted, WrongExpectedVersion
from eventstore_server.sql_codes import Expectation
from hosting.advisory_locks import AdvisoryLock


@dataclass(frozen=True)
class StreamRules:
    """A stream's metadata: retention (0: none) and the operator's own entries."""

    max_count: int = 0
    max_age_seconds: int = 0
    truncate_before: int = 0
    # The operator's entries: strings through our API; any JSON value through KurrentDB's
    # `$$<stream>` (GetStreamMetadata shows those as JSON text).
    custom: dict[str, Any] = field(default_factory=dict)

    @property
    def expires(self) -> bool:
        """Whether appends or time can make more of the stream's events go."""
        return bool(self.max_count or self.max_age_seconds)

    @property
    def removes(self) -> bool:
        """Whether the scavenger has anything to do for these rules."""
        return self.expires or bool(self.truncate_before)


class History:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def delete(self, stream: str, expected: int, tombstone: bool) -> int:
        """Soft-delete or tombstone a stream under `expected` (a version or an Expectation);
        the head position when it took effect. Snapshots of deleted versions go at once."""
        async with self._pool.acquire() as conn, conn.transaction():
            # Under the writer's lock: an append batch that began before sees the stream as it
            # was, one after sees the delete; none writes to a stream tombstoned meanwhile.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", int(AdvisoryLock.STORE_WRITER))
            row = await conn.fetchrow(
                """SELECT stream_id, version, deleted_through, tombstoned
                     FROM es_streams WHERE name = $1 FOR UPDATE""",
                stream,
            )
            if row is not None and row["tombstoned"]:
                raise StreamDeleted(stream)
            version = 0 if row is None else row["version"]
            exists = row is not None and version > row["deleted_through"]
            if (
                (expected >= 0 and version != expected)
                or (expected == Expectation.NO_STREAM and exists)
                or (expected == Expectation.STREAM_EXISTS and not exists)
            ):
                raise WrongExpectedVersion(stream, Expectation.describe(expected), version)
            if row is None:
                if not tombstone:
                    raise NotFound(f"stream {stream!r} does not exist", stream=stream)
                # A name never written is reserved for ever.
                await conn.execute(
                    """INSERT INTO es_streams (name, category, version, tombstoned)
                       VALUES ($1, split_part($1, '-', 1), 0, true)""",
                    stream,
                )
            else:
                await conn.execute(
                    """UPDATE es_streams SET deleted_through = version, tombstoned = $2
                        WHERE stream_id = $1""",
                    row["stream_id"],
                    tombstone,
                )
                await conn.execute(
                    "DELETE FROM es_snapshots WHERE stream_id = $1", row["stream_id"]
                )
                await conn.execute(
                    "INSERT INTO es_scavenge (name) VALUES ($1) ON CONFLICT DO NOTHING", stream
                )
            head: int = await conn.fetchval("SELECT position FROM es_head")
        return head

    async def set_rules(self, stream: str, rules: StreamRules, expected: int) -> int:
        """Set a stream's metadata under `expected` (its metadata version, 0: none yet, or an
        Expectation); the new metadata version."""
        args = (
            stream,
            rules.max_count,
            rules.max_age_seconds,
            rules.truncate_before,
            json.dumps(rules.custom),
        )
        values = "VALUES ($1, $2, $3, $4, $5::jsonb, 1)"
        columns = "(name, max_count, max_age_seconds, truncate_before, custom, version)"
        update = """max_count = $2, max_age_seconds = $3, truncate_before = $4,
                    custom = $5::jsonb, version = m.version + 1"""
        async with self._pool.acquire() as conn, conn.transaction():
            if expected == Expectation.ANY:
                sql = f"""INSERT INTO es_stream_metadata AS m {columns} {values}
                          ON CONFLICT (name) DO UPDATE SET {update} RETURNING version"""
                version = await conn.fetchval(sql, *args)
            elif expected in (0, Expectation.NO_STREAM):
                sql = f"""INSERT INTO es_stream_metadata AS m {columns} {values}
                          ON CONFLICT (name) DO NOTHING RETURNING version"""
                version = await conn.fetchval(sql, *args)
            else:
                sql = f"""UPDATE es_stream_metadata AS m SET {update}
                           WHERE name = $1 AND ($6::int8 < 0 OR version = $6::int8)
                          RETURNING version"""
                version = await conn.fetchval(sql, *args, expected)
            if version is None:
                actual = await conn.fetchval(
                    "SELECT version FROM es_stream_metadata WHERE name = $1", stream
                )
                raise WrongExpectedVersion(
                    f"$$metadata of {stream}", Expectation.describe(expected), actual or 0
                )
            if rules.removes:
                await conn.execute(
                    "INSERT INTO es_scavenge (name) VALUES ($1) ON CONFLICT DO NOTHING", stream
                )
        result: int = version
        return result

    async def deleted_through(self, stream: str) -> int:
        """The last version a soft delete removed (0: none)."""
        found = await self._pool.fetchval(
            "SELECT deleted_through FROM es_streams WHERE name = $1", stream
        )
        return int(found or 0)

    async def rules(self, stream: str) -> tuple[StreamRules, int] | None:
        """A stream's metadata and its version; None when none was ever set."""
        row = await self._pool.fetchrow(
            """SELECT max_count, max_age_seconds, truncate_before, custom::text AS custom,
                      version
                 FROM es_stream_metadata WHERE name = $1""",
            stream,
        )
        if row is None:
            return None
        rules = StreamRules(
            row["max_count"],
            row["max_age_seconds"],
            row["truncate_before"],
            json.loads(row["custom"]),
        )
        return rules, row["version"]
