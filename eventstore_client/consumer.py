"""The group consumer: a member of a consumer group that handles many streams at once.

The store sends a stream's next event only once its previous one is acked or parked, so
handling up to `concurrency` deliveries at once keeps each stream in order while a slow
handler (one that waits on I/O) no longer holds up every other stream. Replicas of a service
each run one and share the group's streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client import tracing
from eventstore_client.client import RecordedEvent
from eventstore_client.codec import MalformedEvent
from eventstore_client.errors import AlreadyExistsError, EventStoreError, NotFoundError
from eventstore_client.store import EventStore, GroupMembership

log = logging.getLogger(__name__)

Handler = Callable[[RecordedEvent], Awaitable[None]]


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
    event that does not read as its contract (`MalformedEvent`), reconnects with back-off."""

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
        self.handled = 0  # acked
        self.failed = 0  # nacked for a retry
        self.parked = 0  # parked by this consumer
        self.joined = asyncio.Event()

    async def run(self) -> None:
        """Never returns; cancel the task to stop (in-flight events are redelivered)."""
        delay = 0.05
        ensured = self._ensure is None
        while True:
            try:
                if not ensured and self._ensure is not None:
                    await self._ensure()
                    ensured = True
                async with self._client.consume(
                    self.group, self._member, self._concurrency
                ) as session:
                    self.joined.set()
                    delay = 0.05
                    await self._serve(session)
                log.warning("group %s: the store ended the call; joining again", self.group)
            except asyncio.CancelledError:
                raise
            except NotFoundError as exc:
                log.warning("group %s: %s; creating it again", self.group, exc)
                ensured = self._ensure is None
            except (EventStoreError, OSError) as exc:
                log.warning("group %s: %s; joining again", self.group, exc)
            self.joined.clear()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self._max_backoff)

    async def _serve(self, session: GroupMembership) -> None:
        running: set[asyncio.Task[None]] = set()
        try:
            async for delivery in session.deliveries():
                task = asyncio.create_task(self._handle(session, delivery.event))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()
            for task in list(running):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _handle(self, session: GroupMembership, event: RecordedEvent) -> None:
        try:
            with tracing.consuming(__name__, self.group, event):
                await self._handler(event)
        except MalformedEvent as malformed:
            log.error(
                "group %s: parking %s at %d: %s", self.group, event.type, event.position, malformed
            )
            self.parked += 1
            session.nack(event.position, park=True, reason=str(malformed))
        except Exception as exc:
            log.exception(
                "group %s: handler failed on %s at %d", self.group, event.type, event.position
            )
            self.failed += 1
            session.nack(event.position, reason=f"{type(exc).__name__}: {exc}"[:1000])
        else:
            self.handled += 1
            session.ack(event.position)
