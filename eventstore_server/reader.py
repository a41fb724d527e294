"""Reads from PostgreSQL: streams, the global log, snapshots and checkpoints.

Every read is a short autocommit query; paging continues from the last version or position
seen, so a long read never holds a transaction open. Events come back as pages of encoded
records (see `es_events.record`), ready to send.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_server.errors import StreamDeleted


@dataclass(frozen=True, slots=True)
class StreamView:
    """What a read of one stream may see: deletes and retention hide events at once, whether
    or not the scavenger has removed their rows yet."""

    stream_id: int
    version: int  # the stream's version: deletes and expiry do not lower it
    first: int  # the lowest version a read returns (a delete, truncate_before or max_count)
    not_before: datetime | None  # max_age: events recorded before this are gone
    tombstoned: bool

    @property
    def empty(self) -> bool:
        return self.first > self.version


# What deletes and retention leave of a stream, over es_streams `s` and its metadata `m`: the
# first visible version, and the time before which events are too old (NULL: no max age).
# Reads hide by it; the scavenger removes by it.
VISIBLE_WINDOW = """
    greatest(1, s.deleted_through + 1, m.truncate_before,
             CASE WHEN m.max_count > 0 THEN s.version - m.max_count + 1 END) AS first,
    CASE WHEN m.max_age_seconds > 0
         THEN now() - make_interval(secs => m.max_age_seconds) END AS not_before"""
# Streams queued for the scavenger that exist (a name may have metadata before its stream).
STREAMS_TO_SCAVENGE = "SELECT count(*) FROM es_scavenge q JOIN es_streams s ON s.name = q.name"

_STREAM_VIEW = f"""
    SELECT s.stream_id, s.version, s.tombstoned, {VISIBLE_WINDOW}
      FROM es_streams s LEFT JOIN es_stream_metadata m ON m.name = s.name
     WHERE s.name = $1"""


@dataclass(frozen=True, slots=True)
class Page:
    """Events read in one query, already encoded.

    `records` is the concatenation of the events' framed records: as bytes, it *is* a
    ReadStreamResponse, ReadAllResponse or SubscribeResponse holding them.
    """

    records: bytes
    count: int
    first: int  # position (or version, for stream reads) of the first event, in read order
    last: int  # and of the last
    exhausted: bool  # nothing more matches up to the query's bound


@dataclass(frozen=True)
class _PageQuery:
    """Two forms of one page read. `fast` aggregates the page as it is; when the page is over
    the byte budget it answers NULL records, and `sized` reads it again, cut by bytes. The cut
    needs a running sum over the page (a window function), which made every small-event page
    about half as expensive again in PostgreSQL; large-event pages pay for a second query."""

    fast: str
    sized: str


def _page_query(where: str, key: str, descending: bool = False) -> _PageQuery:
    """A page of events in `key` order: at most $1 events and about $2 bytes (at least one).

    The inner LIMIT keeps the scan to one page; in the sized form, the running byte sum cuts
    large events short, and `scanned` counts what matched before that cut, to tell a short page
    from a cut one.
    """
    order = f"{key} DESC" if descending else key
    first, last = ("max", "min") if descending else ("min", "max")
    page = f"SELECT record, {key} FROM es_events WHERE {where} ORDER BY {order} LIMIT $1"
    fast = f"""
    SELECT CASE WHEN sum(length(record)) > $2 AND count(*) > 1 THEN NULL
                ELSE coalesce(string_agg(record, ''::bytea ORDER BY {order}), ''::bytea)
           END AS records,
           count(*)::int AS count, count(*)::int AS scanned,
           coalesce({first}({key}), 0) AS first, coalesce({last}({key}), 0) AS last
      FROM ({page}) page"""
    kept = "FILTER (WHERE before < $2)"
    sized = f"""
    SELECT coalesce(string_agg(record, ''::bytea ORDER BY {order}) {kept}, ''::bytea) AS records,
           (count(*) {kept})::int AS count, count(*)::int AS scanned,
           coalesce({first}({key}) {kept}, 0) AS first, coalesce({last}({key}) {kept}, 0) AS last
      FROM (SELECT record, {key},
                   sum(length(record)) OVER (ORDER BY {order} ROWS UNBOUNDED PRECEDING)
                       - length(record) AS before
              FROM ({page}) page
           ) sized"""
    return _PageQuery(fast, sized)


_TYPES = "(cardinality($5::text[]) = 0 OR type = ANY($5::text[]))"
# A stream's visible window (StreamView): versions from $4 up to $5 (forwards; backwards from $4
# down to $5), recorded at or after $6 (max age) and at or before $7 (as of); NULL: no bound.
_RECORDED = (
    "recorded_at >= coalesce($6::timestamptz, '-infinity')"
    " AND recorded_at <= coalesce($7::timestamptz, 'infinity')"
)
_STREAM_FORWARD = _page_query(
    f"stream_id = $3 AND version >= $4 AND version <= $5 AND {_RECORDED}", "version"
)
_STREAM_BACKWARD = _page_query(
    f"stream_id = $3 AND version <= $4 AND version >= $5 AND {_RECORDED}",
    "version",
    descending=True,
)
_ALL = _page_query(f"position > $3 AND position <= $4 AND {_TYPES}", "position")
_ALL_BACKWARD = _page_query(
    f"position < $3 AND position > $4 AND {_TYPES}", "position", descending=True
)
_CATEGORY = _page_query(
    f"category = $6 AND position > $3 AND position <= $4 AND {_TYPES}", "position"
)
# Within a stream, version order is position order: the (stream_id, version) index serves it.
_STREAM_AFTER = _page_query(
    "stream_id = (SELECT stream_id FROM es_streams WHERE name = $6)"
    f" AND version > $3 AND position <= $4 AND {_TYPES}",
    "version",
)
_TAIL_ROWS = """SELECT position, stream, category, type, version, record FROM es_events
    WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3"""


def _page(row: asyncpg.Record | None, limit: int) -> Page:
    assert row is not None  # an aggregate query always returns its one row
    # Exhausted: fewer events matched than the page could hold, and none was cut for size.
    exhausted = row["scanned"] < limit and row["count"] == row["scanned"]
    return Page(row["records"], row["count"], row["first"], row["last"], exhausted)


class Reader:
    def __init__(self, pool: asyncpg.Pool, page_size: int, page_bytes: int) -> None:
        self.pool = pool
        self._pool = pool
        self._page = page_size
        self._bytes = page_bytes

    async def _fetch(self, query: _PageQuery, *args: Any) -> asyncpg.Record | None:
        row = await self._pool.fetchrow(query.fast, *args)
        if row is not None and row["records"] is None:  # over the byte budget: cut it
            row = await self._pool.fetchrow(query.sized, *args)
        return row

    async def head(self) -> int:
        """The position of the last committed event (0 in an empty store)."""
        value: int = await self._pool.fetchval("SELECT position FROM es_head")
        return value

    async def streams(self, prefix: str, after: str, limit: int) -> list[asyncpg.Record]:
        """Streams (name, category, version) whose name starts with `prefix`, in name order,
        after the name `after` (paging)."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return await self._pool.fetch(
            """SELECT name, category, version, tombstoned, version <= deleted_through AS deleted
                 FROM es_streams WHERE name LIKE $1 AND name > $2 ORDER BY name LIMIT $3""",
            pattern,
            after,
            limit,
        )

    async def stream_view(self, stream: str) -> StreamView | None:
        """The stream's visible window; None when it does not exist."""
        row = await self._pool.fetchrow(_STREAM_VIEW, stream)
        if row is None:
            return None
        return StreamView(
            row["stream_id"], row["version"], row["first"], row["not_before"], row["tombstoned"]
        )

    async def read_stream(
        self,
        stream: str,
        from_version: int,
        max_count: int,
        backwards: bool,
        as_of: datetime | None = None,
        view: StreamView | None = None,
    ) -> AsyncIterator[Page]:
        """Pages of one stream's visible events (recorded at or before `as_of`, when given);
        nothing when the stream does not exist; StreamDeleted (NOT_FOUND) for a tombstone.
        `view`: the stream's view when the caller has read it already."""
        view = view or await self.stream_view(stream)
        if view is None:
            return
        if view.tombstoned:
            raise StreamDeleted(stream, grpc.StatusCode.NOT_FOUND)
        remaining = max_count or None
        if backwards:
            cursor = view.version if from_version == 0 else min(from_version, view.version)
            query, bound = _STREAM_BACKWARD, view.first
        else:
            cursor = max(from_version, view.first)
            query, bound = _STREAM_FORWARD, view.version
        while remaining is None or remaining > 0:
            limit = self._page if remaining is None else min(self._page, remaining)
            row = await self._fetch(
                query, limit, self._bytes, view.stream_id, cursor, bound, view.not_before, as_of
            )
            page = _page(row, limit)
            if page.count == 0:
                return
            yield page
            if remaining is not None:
                remaining -= page.count
            if page.exhausted:
                return
            cursor = page.last + (-1 if backwards else 1)

    async def read_all(
        self, after: int, max_count: int, *, category: str = "", types: Sequence[str] = ()
    ) -> AsyncIterator[Page]:
        """Pages of the global log after `after`, up to the head as it is when the read starts
        (`max_count` events at most; 0: no limit), optionally of one category and types."""
        head = await self.head()
        remaining = max_count or None
        cursor = after
        while cursor < head and (remaining is None or remaining > 0):
            limit = self._page if remaining is None else min(self._page, remaining)
            page = await self.page_after(cursor, head, limit, category=category, types=types)
            if page.count:
                yield page
            if remaining is not None:
                remaining -= page.count
            cursor = head if page.exhausted else page.last

    async def read_all_backwards(self, before: int, max_count: int) -> AsyncIterator[Page]:
        """Pages of the global log before position `before` (0: from the head), newest first,
        `max_count` events at most (0: no limit); `first`/`last` are positions in read order."""
        cursor = before or await self.head() + 1
        remaining = max_count or None
        while cursor > 1 and (remaining is None or remaining > 0):
            limit = self._page if remaining is None else min(self._page, remaining)
            page = _page(await self._fetch(_ALL_BACKWARD, limit, self._bytes, cursor, 0, []), limit)
            if page.count:
                yield page
            if page.exhausted:
                return
            if remaining is not None:
                remaining -= page.count
            cursor = page.last

    async def page_after(
        self, after: int, until: int, limit: int, *, category: str = "", types: Sequence[str] = ()
    ) -> Page:
        """Events with after < position <= until, in position order (first/last: positions)."""
        if category:
            row = await self._fetch(
                _CATEGORY, limit, self._bytes, after, until, list(types), category
            )
        else:
            row = await self._fetch(_ALL, limit, self._bytes, after, until, list(types))
        return _page(row, limit)

    async def stream_page_after(
        self, stream: str, after_version: int, until: int, limit: int, types: Sequence[str] = ()
    ) -> Page:
        """A stream's events with version > after_version and position <= until; `first` and
        `last` are versions."""
        row = await self._fetch(
            _STREAM_AFTER, limit, self._bytes, after_version, until, list(types), stream
        )
        return _page(row, limit)

    async def rows_after(self, after: int, until: int, limit: int) -> list[asyncpg.Record]:
        """Events one by one (position, stream, category, type, version, record), for the tail."""
        return await self._pool.fetch(_TAIL_ROWS, after, until, limit)

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

    async def read_snapshot(
        self, stream: str, max_version: int, having: str = "{}", as_of: datetime | None = None
    ) -> pb.Snapshot | None:
        """The latest snapshot at or below `max_version` (0: any) whose metadata contains the
        JSON object `having` (a snapshot schema, say); with `as_of`, only of a version the
        stream had reached by then."""
        row = await self._pool.fetchrow(
            """SELECT s.version, s.type, s.data, s.metadata::text AS metadata,
                      (extract(epoch FROM s.recorded_at) * 1000000)::int8 AS recorded_us
                 FROM es_snapshots s JOIN es_streams st USING (stream_id)
                WHERE st.name = $1 AND ($2::int8 = 0 OR s.version <= $2::int8)
                  AND s.metadata @> $3::jsonb
                  AND ($4::timestamptz IS NULL OR s.version <= (
                       SELECT coalesce(max(e.version), 0) FROM es_events e
                        WHERE e.stream_id = st.stream_id AND e.recorded_at <= $4::timestamptz))
                ORDER BY s.version DESC LIMIT 1""",
            stream,
            max_version,
            having,
            as_of,
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

    async def stats(self, count_streams: bool = True) -> pb.GetStatsResponse:
        """Head, durable subscribers, events scavenged and (full counts, so only when asked:
        not for the health check's every interval) the streams and those to scavenge."""
        # One statement, so one snapshot: the lags agree with the head they are measured from.
        streams = "(SELECT count(*) FROM es_streams)" if count_streams else "0"
        to_scavenge = f"({STREAMS_TO_SCAVENGE})" if count_streams else "0"
        rows = await self._pool.fetch(
            f"""SELECT h.position AS head, {streams} AS streams, c.subscriber, c.position,
                       (extract(epoch FROM c.updated_at) * 1000000)::int8 AS updated_us,
                       (SELECT events FROM es_scavenge_totals) AS scavenged,
                       {to_scavenge} AS to_scavenge
                  FROM es_head h LEFT JOIN es_checkpoints c ON true
                 ORDER BY c.subscriber"""
        )
        head: int = rows[0]["head"]
        return pb.GetStatsResponse(
            head_position=head,
            streams=rows[0]["streams"],
            events_scavenged=rows[0]["scavenged"],
            streams_to_scavenge=rows[0]["to_scavenge"],
            subscribers=[
                pb.SubscriberInfo(
                    name=r["subscriber"],
                    position=r["position"],
                    lag=max(0, head - r["position"]),
                    updated_at=Timestamp(
                        seconds=r["updated_us"] // 1_000_000,
                        nanos=r["updated_us"] % 1_000_000 * 1000,
                    ),
                )
                for r in rows
                if r["subscriber"] is not None
            ],
        )

    async def seen(self, replica: str, address: str, started: datetime) -> None:
        """This replica is up (es_replicas); replicas gone for a day are forgotten."""
        await self._pool.execute(
            """WITH gone AS (DELETE FROM es_replicas WHERE seen_at < now() - interval '1 day')
               INSERT INTO es_replicas (replica, address, started_at, seen_at)
               VALUES ($1, $2, $3, now())
               ON CONFLICT (replica) DO UPDATE SET seen_at = now()""",
            replica,
            address,
            started,
        )

    async def replicas(self) -> list[asyncpg.Record]:
        """Every store replica seen in the last day: address, started, seconds since seen."""
        return await self._pool.fetch(
            """SELECT replica, address, started_at,
                      extract(epoch FROM now() - seen_at)::float8 AS silent_s
                 FROM es_replicas ORDER BY started_at"""
        )

    async def checkpoint(self, subscriber: str) -> int | None:
        value: int | None = await self._pool.fetchval(
            "SELECT position FROM es_checkpoints WHERE subscriber = $1", subscriber
        )
        return value
