"""The group-commit writer: every append of this server goes through one task.

Appends that arrive while a batch is being written queue up and go together in the next
transaction: one round trip and one fsync for many appends, and the fuller the queue the larger
the batch, so throughput grows with load while a lone append waits for no timer. Each append in
a batch is checked on its own (see `es_append_batch`); if the database rejects a whole batch,
its appends are retried one by one so that a bad one cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, set_span_in_context
from opentelemetry.util.types import AttributeValue

from eventstore_server import metrics
from eventstore_server.errors import (
    DuplicateEventId,
    StoreError,
    StreamDeleted,
    Unavailable,
    WrongExpectedVersion,
)
from eventstore_server.sql_codes import Expectation, Outcome
from eventstore_server.validation import AppendCommand
from hosting import telemetry

log = logging.getLogger(__name__)

APPEND_BATCH = (
    "SELECT outcome, out_version, out_position"
    " FROM es_append_batch($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)

# Queued events from which a batch is worth writing without a commit delay: a transaction's own
# cost (about 0.5 ms of PostgreSQL CPU) is then under a third of the batch's.
AMORTIZED_EVENTS = 64

_tracer = trace.get_tracer(__name__)

# Failures after which we cannot know whether the transaction committed: the client is told
# UNAVAILABLE and retries with the same event ids, which the store recognises.
CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # A connection whose protocol state broke (seen when the server shut down mid-operation:
    # "cannot switch to state 12; another operation is in progress"): only a new one helps.
    asyncpg.exceptions.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


@dataclass(frozen=True, slots=True)
class AppendResult:
    version: int
    position: int
    written: bool  # False: an earlier append already wrote these events


@dataclass(slots=True)
class _Pending:
    command: AppendCommand
    future: asyncio.Future[AppendResult]
    size: int
    link: Link | None = None  # the span of the call that queued it


class _Lane:
    """One connection of the writer's, and so one batch in flight at a time."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: asyncpg.Connection | None = None

    async def connection(self) -> asyncpg.Connection:
        # A connection of its own: a pool's reset on release would cost a round trip per batch.
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._url, timeout=10)
        return self._conn

    def drop(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            self._conn.terminate()
        self._conn = None

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()


class GroupCommitWriter:
    """Queues appends and writes them in batches.

    `pipeline` batches may be in flight at once, each on its own connection: while one commits,
    the next is already on the wire and waits in PostgreSQL for the writer lock, so the database
    never idles during a round trip. Positions still follow commit order: they are handed out
    inside the lock.
    """

    def __init__(
        self,
        database_url: str,
        *,
        max_batch_events: int = 2000,
        max_batch_bytes: int = 16 * 1024 * 1024,
        pipeline: int = 1,
        commit_delay: float = 0.0,
        commit_siblings: int = 3,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._max_events = max_batch_events
        self._commit_delay = commit_delay
        self._commit_siblings = max(2, commit_siblings)  # so a lone append never waits
        self._last_batch = 0  # appends in the batch taken last
        self._max_bytes = max_batch_bytes
        self._on_commit = on_commit
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wakeup = asyncio.Event()
        self._lanes = [_Lane(database_url) for _ in range(max(1, pipeline))]
        self._free: asyncio.Queue[_Lane] = asyncio.Queue()
        for lane in self._lanes:
            self._free.put_nowait(lane)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed = asyncio.Event()
        self._back = asyncio.Event()  # set when the queue holds `_awaited` appends (or on close)
        self._awaited = 0
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # batches written, for metrics and tests
        self.delayed_batches = 0  # batches that waited commit_delay for more appends
        self.appends = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit-writer")

    async def append(self, command: AppendCommand) -> AppendResult:
        """Queue one append and wait for its outcome; raises a StoreError when refused."""
        # A cancelled caller cancels the future; the writer skips it unless already written.
        return await self.submit(command)

    def submit(self, command: AppendCommand) -> asyncio.Future[AppendResult]:
        """Queue one append; its outcome (or StoreError) comes in the future. For callers that
        wait on many at once without a task each (an append session)."""
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        if self._closing:
            future.set_exception(Unavailable("the server is shutting down"))
            return future
        size = sum(len(e.head) + len(e.metadata) for e in command.events)
        self._queue.append(_Pending(command, future, size, telemetry.current_link()))
        self._wakeup.set()
        if self._awaited and len(self._queue) >= self._awaited:
            self._back.set()
        return future

    async def close(self) -> None:
        """Refuse new appends and finish the queued ones."""
        self._closing = True
        self._closed.set()
        self._back.set()
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                # While every lane is busy, appends keep queueing: the batch grows with load.
                lane = await self._free.get()
                if self._sustained_load():
                    # Many callers: a short wait lets more of them join this batch, which costs
                    # each of them less CPU, in PostgreSQL and here, than committing sooner
                    # (measured: see "Commit delay" in the README). It ends as soon as as many
                    # appends wait as the last batch held: when callers wait for their answers
                    # before appending again (a session's 32 callers, say), every one of them
                    # is back, and waiting longer would only idle the store and PostgreSQL.
                    self.delayed_batches += 1
                    metrics.BATCHES_DELAYED.inc()
                    self._awaited = self._last_batch
                    self._back.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._commit_delay):
                            await self._back.wait()  # close() cuts the wait short too
                    self._awaited = 0
                elif len(self._queue) > 1:
                    # Under concurrent load, one turn of the event loop lets the calls gRPC has
                    # already received join this batch; a lone append never waits for it.
                    await asyncio.sleep(0)
                batch = self._take()
                self._last_batch = len(batch)
                if not batch:
                    self._free.put_nowait(lane)
                    continue
                task = asyncio.create_task(self._write_on(lane, batch))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            if self._closing and not self._queue:
                if self._in_flight:
                    await asyncio.gather(*self._in_flight)
                log.info("writer stopped: %d appends in %d batches", self.appends, self.batches)
                for lane in self._lanes:
                    await lane.close()
                return

    async def _write_on(self, lane: _Lane, batch: list[_Pending]) -> None:
        # One span per group commit: a child of the first append it carries (so a lone append's
        # trace shows its commit and SQL), linked to every append's span.
        links = [item.link for item in batch if item.link is not None]
        parent = set_span_in_context(NonRecordingSpan(links[0].context)) if links else None
        streams = sorted({item.command.stream for item in batch})
        attributes: dict[str, AttributeValue] = {
            "eventstore.batch.appends": len(batch),
            "eventstore.batch.events": sum(len(item.command.events) for item in batch),
            "eventstore.batch.streams": streams[:20],
            "eventstore.batch.stream_count": len(streams),
        }
        with _tracer.start_as_current_span(
            "eventstore group commit", context=parent, links=links, attributes=attributes
        ) as span:
            try:
                await self._write(lane, batch)
            finally:
                self._free.put_nowait(lane)
                done = [
                    i.future.result()
                    for i in batch
                    if i.future.done() and not i.future.cancelled() and i.future.exception() is None
                ]
                if done:
                    span.set_attribute(
                        "eventstore.batch.first_position", min(r.position for r in done)
                    )
                    span.set_attribute(
                        "eventstore.batch.last_position", max(r.position for r in done)
                    )

    def _sustained_load(self) -> bool:
        # Both the last batch and the queue now: a burst after a hiccup (a pause of this
        # process, say) makes one big batch, and waiting then would only make it later. And
        # not when the queue already carries many events: the cost of a transaction is then
        # shared well enough (measured: 100-event appends from 8 callers lost 3% to waiting).
        return (
            self._commit_delay > 0
            and self._last_batch >= self._commit_siblings
            and self._commit_siblings <= len(self._queue) < self._last_batch
            and sum(len(item.command.events) for item in self._queue) < AMORTIZED_EVENTS
        )

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        events = size = 0
        while self._queue:
            item = self._queue[0]
            if item.future.done():  # the caller gave up before we got to it
                self._queue.popleft()
                continue
            n = len(item.command.events)
            if batch and (events + n > self._max_events or size + item.size > self._max_bytes):
                break
            self._queue.popleft()
            batch.append(item)
            events += n
            size += item.size
        return batch

    async def _write(self, lane: _Lane, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            conn = await lane.connection()
            rows = await conn.fetch(APPEND_BATCH, *_arguments(batch))
        except CONNECTION_ERRORS as exc:
            log.warning("append batch failed, database unreachable: %s", exc)
            lane.drop()
            _fail(batch, Unavailable(f"database unavailable: {exc.__class__.__name__}"))
            return
        except asyncpg.PostgresError as exc:
            if len(batch) > 1:
                for item in batch:
                    await self._write(lane, [item])
                return
            log.error("append refused by the database: %s", exc)
            _fail(batch, StoreError(f"the database refused the append: {exc}"))
            return
        except Exception as exc:
            # Whatever else went wrong, the callers must hear of it (their appends may or may
            # not have committed: UNAVAILABLE, retry with the same ids) and the lane must not
            # keep a connection in an unknown state.
            log.exception("append batch failed unexpectedly")
            lane.drop()
            _fail(batch, Unavailable(f"append outcome unknown: {exc.__class__.__name__}"))
            return
        self.batches += 1
        self.appends += len(batch)
        metrics.BATCH_APPENDS.observe(len(batch))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        head = 0
        for item, row in zip(batch, rows, strict=True):
            outcome = row["outcome"]
            if outcome == Outcome.WRITTEN:
                head = max(head, row["out_position"])
                metrics.EVENTS_WRITTEN.inc(len(item.command.events))
                _resolve(item, AppendResult(row["out_version"], row["out_position"], True))
            elif outcome == Outcome.DUPLICATE:
                _resolve(item, AppendResult(row["out_version"], row["out_position"], False))
            elif outcome == Outcome.WRONG_VERSION:
                expected = item.command.expected
                _reject(
                    item,
                    WrongExpectedVersion(
                        item.command.stream,
                        Expectation.describe(expected),
                        row["out_version"],
                    ),
                )
            elif outcome == Outcome.STREAM_DELETED:
                _reject(item, StreamDeleted(item.command.stream))
            else:
                _reject(
                    item,
                    DuplicateEventId(
                        "an event id of this append is already used by another event",
                        stream=item.command.stream,
                    ),
                )
        if head and self._on_commit is not None:
            self._on_commit(head)


def _arguments(batch: list[_Pending]) -> tuple[list[Any], ...]:
    streams: list[str] = []
    expected: list[int] = []
    counts: list[int] = []
    event_append: list[int] = []
    event_index: list[int] = []
    ids: list[str] = []
    types: list[str] = []
    heads: list[bytes] = []
    metadata: list[str] = []
    for a, item in enumerate(batch, 1):
        c = item.command
        streams.append(c.stream)
        expected.append(int(c.expected))
        counts.append(len(c.events))
        event_append.extend([a] * len(c.events))
        event_index.extend(range(1, len(c.events) + 1))
        for e in c.events:
            ids.append(e.id)
            types.append(e.type)
            heads.append(e.head)
            metadata.append(e.metadata)
    return streams, expected, counts, event_append, event_index, ids, types, heads, metadata


def _resolve(item: _Pending, result: AppendResult) -> None:
    if not item.future.done():
        item.future.set_result(result)


def _reject(item: _Pending, error: StoreError) -> None:
    if not item.future.done():
        item.future.set_exception(error)


def _fail(batch: list[_Pending], error: StoreError) -> None:
    for item in batch:
        _reject(item, error)
