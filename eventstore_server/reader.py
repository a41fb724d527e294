"""Reads from PostgreSQL: streams, the global log, snapshots and checkpoints.

Every read is a short autocommit query; paging continues from the last version or position
seen, so a long read never holds a transaction open. Rows become protobuf messages here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from contracts.eventstore.v1 import eventstore_pb2 as pb

# recorded_at as microseconds since the epoch: cheaper to turn into a Timestamp than a datetime.
EVENT_COLUMNS = """position, stream, version, event_id::text AS id, type, data,
    metadata::text AS metadata, content_type,
    (extract(epoch FROM recorded_at) * 1000000)::int8 AS recorded_us"""

_STREAM_FORWARD = f"""SELECT {EVENT_COLUMNS} FROM es_events
    WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"""
_STREAM_BACKWARD = f"""SELECT {EVENT_COLUMNS} FROM es_events
    WHERE stream_id = $1 AND version <= $2 ORDER BY version DESC LIMIT $3"""
_ALL = f"""SELECT {EVENT_COLUMNS} FROM es_events
    WHERE position > $1 AND position <= $2
      AND (cardinality($4::text[]) = 0 OR type = ANY($4::text[]))
    ORDER BY position LIMIT $3"""
_CATEGORY = f"""SELECT {EVENT_COLUMNS} FROM es_events
    WHERE category = $5 AND position > $1 AND position <= $2
      AND (cardinality($4::text[]) = 0 OR type = ANY($4::text[]))
    ORDER BY category, position LIMIT $3"""
# Within a stream, version order is position order: the (stream_id, version) index serves it.
_STREAM_AFTER = f"""SELECT {EVENT_COLUMNS} FROM es_events
    WHERE stream_id = (SELECT stream_id FROM es_streams WHERE name = $5)
      AND version > $1 AND position <= $2
      AND (cardinality($4::text[]) = 0 OR type = ANY($4::text[]))
    ORDER BY version LIMIT $3"""


def to_event(row: asyncpg.Record) -> pb.RecordedEvent:
    us = row["recorded_us"]
    metadata = row["metadata"]
    return pb.RecordedEvent(
        id=row["id"],
        stream=row["stream"],
        version=row["version"],
        position=row["position"],
        type=row["type"],
        data=row["data"],
        metadata=json.loads(metadata) if metadata != "{}" else None,
        content_type=row["content_type"],
        recorded_at=Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000),
    )


class Reader:
    def __init__(self, pool: asyncpg.Pool, page_size: int) -> None:
        self._pool = pool
        self._page = page_size

    async def head(self) -> int:
        """The position of the last committed event (0 in an empty store)."""
        value: int = await self._pool.fetchval("SELECT position FROM es_head")
        return value

    async def stream_version(self, stream: str) -> tuple[int, int] | None:
        """(stream_id, version) of a stream, None when it does not exist."""
        row = await self._pool.fetchrow(
            "SELECT stream_id, version FROM es_streams WHERE name = $1", stream
        )
        return None if row is None else (row["stream_id"], row["version"])

    async def read_stream(
        self, stream: str, from_version: int, max_count: int, backwards: bool
    ) -> AsyncIterator[list[asyncpg.Record]]:
        """Pages of rows of one stream; nothing when the stream does not exist."""
        found = await self.stream_version(stream)
        if found is None:
            return
        stream_id, version = found
        remaining = max_count or None
        if backwards:
            cursor = version if from_version == 0 else min(from_version, version)
        else:
            cursor = max(from_version, 1)
        while remaining is None or remaining > 0:
            limit = self._page if remaining is None else min(self._page, remaining)
            query = _STREAM_BACKWARD if backwards else _STREAM_FORWARD
            rows = await self._pool.fetch(query, stream_id, cursor, limit)
            if not rows:
                return
            yield rows
            if remaining is not None:
                remaining -= len(rows)
            if len(rows) < limit:
                return
            cursor = rows[-1]["version"] + (-1 if backwards else 1)

    async def read_after(
        self,
        after: int,
        until: int,
        limit: int,
        *,
        category: str = "",
        types: Sequence[str] = (),
    ) -> list[asyncpg.Record]:
        """Events with after < position <= until, in position order, at most `limit`."""
        if category:
            return await self._pool.fetch(_CATEGORY, after, until, limit, list(types), category)
        return await self._pool.fetch(_ALL, after, until, limit, list(types))

    async def read_stream_after(
        self, stream: str, after_version: int, until: int, limit: int, types: Sequence[str] = ()
    ) -> list[asyncpg.Record]:
        """A stream's events with version > after_version and position <= until, in order."""
        return await self._pool.fetch(
            _STREAM_AFTER, after_version, until, limit, list(types), stream
        )

    async def save_snapshot(
        self, stream: str, version: int, type_: str, data: bytes, metadata: str
    ) -> int | None:
        """Stores a snapshot; returns the stream's version, or None when there is no stream."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT stream_id, version FROM es_streams WHERE name = $1", stream
            )
            if row is None:
                return None
            if version <= row["version"]:
                await conn.execute(
                    """INSERT INTO es_snapshots (stream_id, version, type, data, metadata)
                       VALUES ($1, $2, $3, $4, $5::jsonb)
                       ON CONFLICT (stream_id, version) DO UPDATE
                       SET type = EXCLUDED.type, data = EXCLUDED.data,
                           metadata = EXCLUDED.metadata, recorded_at = now()""",
                    row["stream_id"],
                    version,
                    type_,
                    data,
                    metadata,
                )
            current: int = row["version"]
            return current

    async def read_snapshot(self, stream: str, max_version: int) -> pb.Snapshot | None:
        row = await self._pool.fetchrow(
            """SELECT s.version, s.type, s.data, s.metadata::text AS metadata,
                      (extract(epoch FROM s.recorded_at) * 1000000)::int8 AS recorded_us
                 FROM es_snapshots s JOIN es_streams st USING (stream_id)
                WHERE st.name = $1 AND ($2 = 0 OR s.version <= $2)
                ORDER BY s.version DESC LIMIT 1""",
            stream,
            max_version,
        )
        if row is None:
            return None
        us = row["recorded_us"]
        return pb.Snapshot(
            stream=stream,
            version=row["version"],
            type=row["type"],
            data=row["data"],
            metadata=json.loads(row["metadata"]),
            recorded_at=Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000),
        )

    async def commit_checkpoint(self, subscriber: str, position: int, reset: bool) -> int:
        value: int = await self._pool.fetchval(
            """INSERT INTO es_checkpoints AS c (subscriber, position) VALUES ($1, $2)
               ON CONFLICT (subscriber) DO UPDATE
               SET position = CASE WHEN $3 THEN EXCLUDED.position
                                   ELSE greatest(c.position, EXCLUDED.position) END,
                   updated_at = now()
               RETURNING position""",
            subscriber,
            position,
            reset,
        )
        return value

    async def checkpoint(self, subscriber: str) -> int | None:
        value: int | None = await self._pool.fetchval(
            "SELECT position FROM es_checkpoints WHERE subscriber = $1", subscriber
        )
        return value
