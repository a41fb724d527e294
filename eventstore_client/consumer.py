"""The group consumer: a member of a consumer group that handles many streams at once.

The store sends a stream's next event only once its previous one is acked or parked, so
handling up to `concurrency` deliveries at once keeps each stream in order while a slow
handler (one that waits on I/O) no longer holds up every other stream. Replicas of a service
each run one and share the group's streams.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import Counter, Gauge

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client import tracing
from eventstore_client.client import RecordedEvent
from eventstore_client.codec import MalformedEvent
from eventstore_client.errors import AlreadyExistsError, NotFoundError, is_transient
from eventstore_client.store import EventStore, GroupMembership

log = logging.getLogger(__name__)

Handler = Callable[[RecordedEvent], Awaitable[None]]
Transient = Callable[[BaseException], bool]

JOINS = Counter(
    "consumer_group_joins_total", "Joins of a consumer group by this process", ["group"]
)
REJOINS = Counter(
    "consumer_group_rejoins_total",
    "Joins again after the member's call ended (the store restarting, a reset, an error)",
    ["group"],
)
SILENCE = Gauge(
    "consumer_group_seconds_since_heard",
    "Seconds since this process's member last heard from the store (a delivery or a "
    "heartbeat); grows while it is not a member",
    ["group"],
)
MEMBER = Gauge(
    "consumer_group_member",
    "1 while this process's member is in the group (the store answered its join), else 0",
    ["group"],
)
RETRIES = Counter(
    "consumer_group_transient_retries_total",
    "Handler calls tried again because the store or the network failed (not counted against "
    "the event)",
    ["group"],
)


class ConsumerStopped(Exception):
    """A group consumer gave up: its calls kept ending for reasons that are neither the store's
    nor the network's (a group that exists with other settings, a refused credential, a bug),
    `max_failures` times in a row. The service must say so (its health goes NOT_SERVING)."""

    def __init__(self, group: str, failures: int, last: BaseException) -> None:
        super().__init__(f"group {group}: gave up after {failures} failures in a row: {last!r}")
        self.group = group


async def ensure_group(
    client: EventStore,
    group: str,
    *,
    category: str,
    event_types: Sequence[str] = (),
    start_after_position: int = 0,
    max_attempts: int = 0,
    ack_timeout_ms: int = 0,
    ordering: pb.GroupOrdering.ValueType = pb.GROUP_ORDERING_STREAM,
) -> bool:
    """Create the group unless it exists; True when this call created it. A group that exists
    with another start position is fine (that only mattered when it was created), and so is
    one ordered by stream where correlation was asked for (stricter, only slower: delete and
    create it again to change that); one that follows another category or other types, or is
    ordered more loosely than asked, is an error (`AlreadyExistsError`)."""
    try:
        return await client.create_group(
            group,
            category=category,
            event_types=event_types,
            start_after_position=start_after_position,
            max_attempts=max_attempts,
            ack_timeout_ms=ack_timeout_ms,
            ordering=ordering,
        )
    except AlreadyExistsError as exists:
        theirs = exists.metadata
        same_target = theirs.get("category") == category and sorted(
            filter(None, theirs.get("event_types", "").split(","))
        ) == sorted(set(event_types))
        their_ordering = pb.GroupOrdering.Value(
            theirs.get("ordering") or pb.GroupOrdering.Name(pb.GROUP_ORDERING_STREAM)
        )
        strict_enough = their_ordering in (ordering, pb.GROUP_ORDERING_STREAM)
        if not same_target or not strict_enough:
            raise
        log.info("group %s exists (%s)", group, ", ".join(f"{k}={v}" for k, v in theirs.items()))
        return False


class GroupConsumer:
    """Runs `handler` for the group's deliveries: acks after it returns, nacks for a retry when
    it raises (the store parks the event after the group's `max_attempts`), parks at once an
    event that does not read as its contract (`MalformedEvent`).

    A handler failure that is the store's or the network's (`transient`, by default
    `is_transient`: UNAVAILABLE, a deadline, a refused connection) is not the event's fault:
    the handler is called again for the same event after a back-off, for as long as the member
    holds it, and no attempt is counted against the event.

    Whatever ends the member's call (the store shutting down or restarting, a reset, an error
    in the consumer's own tasks) it joins again with capped, jittered back-off, for as long as
    it runs. It gives up (`ConsumerStopped`) only after `max_failures` calls in a row ended for
    reasons that are not transient."""

    def __init__(
        self,
        client: EventStore,
        group: str,
        handler: Handler,
        *,
        member: str = "",
        concurrency: int = 32,
        max_backoff: float = 5.0,
        ensure: Callable[[], Awaitable[object]] | None = None,
        transient: Transient = is_transient,
        max_failures: int = 5,
    ) -> None:
        """`ensure`: run (and retried like joining) before the first join and after the store
        said the group does not exist, typically `ensure_group(...)`."""
        self._client = client
        self._ensure = ensure
        self.group = group
        self._handler = handler
        self._member = member
        self._concurrency = concurrency
        self._max_backoff = max_backoff
        self._transient = transient
        self._max_failures = max_failures
        self.handled = 0  # acked
        self.failed = 0  # nacked for a retry
        self.parked = 0  # parked by this consumer
        self.joins = 0  # joins the store answered
        self.joined = asyncio.Event()  # set while the store has answered this member's join
        self._heard = time.monotonic()
        self._session: GroupMembership | None = None
        SILENCE.labels(group).set_function(self.seconds_since_heard)
        MEMBER.labels(group).set_function(lambda: float(self.is_member))

    @property
    def is_member(self) -> bool:
        """Whether the store has answered this member's join on its current call."""
        return self._session is not None and self._session.answered.is_set()

    def seconds_since_heard(self) -> float:
        """Seconds since the store was last heard on this member's call (a delivery or a
        heartbeat), or since the member was last in the group."""
        heard = max(self._heard, self._session.last_heard if self._session else 0.0)
        return time.monotonic() - heard

    async def run(self) -> None:
        """Never returns; cancel the task to stop (in-flight events are redelivered). Raises
        `ConsumerStopped` when it cannot go on."""
        delay = 0.05
        ensured = self._ensure is None
        failures = 0
        while True:
            try:
                if not ensured and self._ensure is not None:
                    await self._ensure()
                    ensured = True
                await self._member_once()
                log.warning("group %s: the store ended the call; joining again", self.group)
                failures = 0
            except asyncio.CancelledError:
                raise
            except NotFoundError as exc:
                log.warning("group %s: %s; creating it again", self.group, exc)
                ensured = self._ensure is None
            except Exception as exc:
                if self._transient(exc):
                    log.warning("group %s: %s; joining again", self.group, exc)
                    failures = 0
                else:
                    failures += 1
                    log.error(
                        "group %s: %r (%d of %d in a row); joining again",
                        self.group,
                        exc,
                        failures,
                        self._max_failures,
                        exc_info=exc,
                    )
                    if failures >= self._max_failures:
                        raise ConsumerStopped(self.group, failures, exc) from exc
            if self.joined.is_set():  # it was a member: the back-off starts over
                delay = 0.05
            self.joined.clear()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self._max_backoff)

    async def _member_once(self) -> None:
        """One membership: join, handle deliveries until the call ends, leave. The handler
        tasks belong to it: they are cancelled and awaited before it returns or raises."""
        async with self._client.consume(self.group, self._member, self._concurrency) as session:
            self._session = session
            try:
                await self._serve(session)
            finally:
                self._heard = max(self._heard, session.last_heard, time.monotonic())
                self._session = None

    def _joined(self) -> None:
        """The store answered a join (its first message on the call)."""
        self.joins += 1
        JOINS.labels(self.group).inc()
        if self.joins > 1:
            REJOINS.labels(self.group).inc()
        self.joined.set()

    async def _serve(self, session: GroupMembership) -> None:
        """Deliveries to handler tasks until the call ends or a task of ours fails (a bug in
        the consumer, not a handler's failure: those are answered): either ends the session."""
        handlers: set[asyncio.Task[None]] = set()
        broken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def finished(task: asyncio.Task[None]) -> None:
            handlers.discard(task)
            if not task.cancelled() and task.exception() is not None and not broken.done():
                broken.set_exception(task.exception())  # type: ignore[arg-type]

        async def read() -> None:
            async for delivery in session.deliveries():
                task = asyncio.create_task(self._handle(session, delivery.event))
                handlers.add(task)
                task.add_done_callback(finished)

        async def welcomed() -> None:
            await session.answered.wait()
            self._joined()

        reader = asyncio.create_task(read(), name=f"group-{self.group}-reader")
        welcome = asyncio.create_task(welcomed())
        try:
            await asyncio.wait({reader, broken}, return_when=asyncio.FIRST_COMPLETED)
            if broken.done():
                broken.result()
            reader.result()
        finally:
            reader.cancel()
            for task in handlers:
                task.cancel()
            if not welcome.done() and session.answered.is_set():
                self._joined()  # answered, but the session ended before the count ran
            welcome.cancel()
            await asyncio.gather(reader, welcome, *handlers, return_exceptions=True)
            broken.cancel()

    async def _handle(self, session: GroupMembership, event: RecordedEvent) -> None:
        delay = 0.1
        while True:
            try:
                with tracing.consuming(__name__, self.group, event):
                    await self._handler(event)
            except MalformedEvent as malformed:
                log.error(
                    "group %s: parking %s at %d: %s",
                    self.group,
                    event.type,
                    event.position,
                    malformed,
                )
                self.parked += 1
                session.nack(event.position, park=True, reason=str(malformed))
            except Exception as exc:
                if self._transient(exc):
                    # Not the event's fault: the same event again once the store is back.
                    log.warning(
                        "group %s: %s at %d: %s; trying it again",
                        self.group,
                        event.type,
                        event.position,
                        exc,
                    )
                    RETRIES.labels(self.group).inc()
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, self._max_backoff)
                    continue
                log.exception(
                    "group %s: handler failed on %s at %d", self.group, event.type, event.position
                )
                self.failed += 1
                session.nack(event.position, reason=f"{type(exc).__name__}: {exc}"[:1000])
            else:
                self.handled += 1
                session.ack(event.position)
            return
