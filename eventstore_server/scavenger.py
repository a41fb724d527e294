"""The scavenger: removes deleted and expired events for good, in bounded rounds.

Reads hide those events as soon as a delete or a retention rule says so (reader.StreamView);
the rows go here. Each round is one transaction that removes at most `batch` events, taken from
the streams queued in es_scavenge (a delete or a retention rule put them there), oldest first.
Replicas take turns: a round runs only under a transaction-level try-lock, so a second replica
skips rather than waits. Rounds never take the writer's lock, so appends go on meanwhile.

What goes with an event: the consumer groups' rows for it (in flight, waiting, parked), in the
same transaction and after every group's row is locked, so a group's round sees the event and
its rows, or neither. Positions are never reused, so a removed event leaves a gap that readers
of the global log step over like any position they are not shown; the head and the ordering
guarantee are untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import asyncpg

from eventstore_server import metrics
from eventstore_server.reader import STREAMS_TO_SCAVENGE, VISIBLE_WINDOW
from hosting.advisory_locks import AdvisoryLock

log = logging.getLogger(__name__)

STREAMS_PER_ROUND = 100
# After a round, rest this many times as long as it took: the scavenger then uses at most a
# third of PostgreSQL's time for itself. Measured (`make bench`, 2 cores, 32 callers): back to
# back (100,000 events removed/s) appends ran at 0.73x of a store with nothing to scavenge.
REST = 2.0

_QUEUED = f"""
    SELECT q.name, s.stream_id, s.version, {VISIBLE_WINDOW},
           coalesce(m.max_count > 0 OR m.max_age_seconds > 0, false) AS expires
      FROM es_scavenge q
      JOIN es_streams s ON s.name = q.name
      LEFT JOIN es_stream_metadata m ON m.name = q.name
     ORDER BY q.queued_at, q.name
     LIMIT $1"""

# Everything below one version goes: the first visible one by delete, truncate_before and
# max_count ($2), or by age, the first recorded at or after the cut ($3) found by walking the
# stream's index from its oldest event (so the walk costs what it removes, plus one row). Every
# event below the first young one is older than the cut, whatever the order of commit times.
_REMOVE = """
    WITH bound AS (
        SELECT CASE WHEN $3::timestamptz IS NULL THEN $2::int8
                    ELSE greatest($2::int8, coalesce(
                        (SELECT version FROM es_events
                          WHERE stream_id = $1 AND recorded_at >= $3::timestamptz
                          ORDER BY version LIMIT 1),
                        $5::int8 + 1)) END AS first
    ), doomed AS (
        SELECT e.position FROM es_events e, bound b
         WHERE e.stream_id = $1 AND e.version < b.first
         ORDER BY e.version LIMIT $4
    ), removed AS (
        DELETE FROM es_events e USING doomed d WHERE e.position = d.position
        RETURNING e.position
    )
    SELECT coalesce(array_agg(position), '{}') AS positions FROM removed"""


@dataclass
class RoundResult:
    removed: int = 0
    visited: int = 0  # queued streams looked at
    waiting: int = 0  # streams queued after the round
    exhausted: bool = False  # the budget ran out with work left
    skipped: bool = False  # another replica holds the turn


class Scavenger:
    def __init__(self, pool: asyncpg.Pool, interval: float, batch: int) -> None:
        self._pool = pool
        self._interval = interval
        self._batch = batch
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A delete or a new retention rule: look now rather than at the next interval."""
        self._wake.set()

    async def run(self) -> None:
        """Rounds for ever: back to back until every queued stream was looked at and nothing
        is left over, then one burst every `interval` seconds (or when woken)."""
        visited = 0
        while True:
            started = time.perf_counter()
            try:
                result = await self.round()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("scavenge round failed (%r); retrying", exc)
                metrics.SCAVENGE_ROUNDS.labels("failed").inc()
                result = RoundResult()
            visited += result.visited
            if result.exhausted or (not result.skipped and visited < result.waiting):
                await asyncio.sleep(max(0.01, (time.perf_counter() - started) * REST))
                continue
            visited = 0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)

    async def round(self) -> RoundResult:
        """One bounded round (see the module's docstring)."""
        started = time.perf_counter()
        result = RoundResult()
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock($1)", int(AdvisoryLock.STORE_SCAVENGER)
            ):
                metrics.SCAVENGE_ROUNDS.labels("skipped").inc()
                return RoundResult(skipped=True)
            queued = await conn.fetch(_QUEUED, STREAMS_PER_ROUND)
            if queued:
                # Every group's round waits for this one (and this one for a round in
                # progress), so no group claims an event that is going, or keeps rows for it.
                await conn.execute("SELECT 1 FROM es_groups ORDER BY name FOR UPDATE")
            budget = self._batch
            done: list[str] = []
            kept: list[str] = []
            for stream in queued:
                if budget == 0:
                    result.exhausted = True
                    break
                result.visited += 1
                positions: list[int] = await conn.fetchval(
                    _REMOVE,
                    stream["stream_id"],
                    stream["first"],
                    stream["not_before"],
                    budget,
                    stream["version"],
                )
                if positions:
                    await conn.execute(
                        """WITH a AS (DELETE FROM es_group_events WHERE position = ANY($1)),
                                b AS (DELETE FROM es_group_parked WHERE position = ANY($1))
                           UPDATE es_scavenge_totals SET events = events + cardinality($1)""",
                        positions,
                    )
                    budget -= len(positions)
                    result.removed += len(positions)
                if budget == 0:
                    result.exhausted = True  # maybe more of this stream: it stays first
                elif stream["expires"]:
                    kept.append(stream["name"])  # appends or time will expire more
                else:
                    done.append(stream["name"])  # nothing left, and nothing more can go
            # Looked-at streams that stay go to the back of the queue: every stream gets its
            # turn, however many have retention rules.
            await conn.execute(
                """WITH a AS (DELETE FROM es_scavenge WHERE name = ANY($1))
                   UPDATE es_scavenge SET queued_at = clock_timestamp() WHERE name = ANY($2)""",
                done,
                kept,
            )
            # (Names with metadata but no stream yet wait without being looked at.)
            result.waiting = await conn.fetchval(STREAMS_TO_SCAVENGE)
        metrics.SCAVENGED.inc(result.removed)
        metrics.SCAVENGE_ROUNDS.labels("removed" if result.removed else "nothing").inc()
        metrics.SCAVENGE_SECONDS.observe(time.perf_counter() - started)
        metrics.SCAVENGE_QUEUE.set(result.waiting)
        if result.removed:
            log.info("scavenged %d events", result.removed)
        return result
