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
from collections.abc import Awaitable, Callable

from eventstore_client import tracing
from eventstore_client.client import EventStoreClient, GroupSession, RecordedEvent
from eventstore_client.codec import MalformedEvent
from eventstore_client.errors import EventStoreError

log = logging.getLogger(__name__)

Handler = Callable[[RecordedEvent], Awaitable[None]]


class GroupConsumer:
    """Runs `handler` for the group's deliveries: acks after it returns, nacks for a retry when
    it raises (the store parks the event after the group's `max_attempts`), parks at once an
    event that does not read as its contract (`MalformedEvent`), reconnects with back-off."""

    def __init__(
        self,
        client: EventStoreClient,
        group: str,
        handler: Handler,
        *,
        member: str = "",
        concurrency: int = 32,
        max_backoff: float = 5.0,
    ) -> None:
        self._client = client
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
        while True:
            try:
                async with self._client.consume(
                    self.group, self._member, self._concurrency
                ) as session:
                    self.joined.set()
                    delay = 0.05
                    await self._serve(session)
                log.warning("group %s: the store ended the call; joining again", self.group)
            except asyncio.CancelledError:
                raise
            except (EventStoreError, OSError) as exc:
                log.warning("group %s: %s; joining again", self.group, exc)
            self.joined.clear()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self._max_backoff)

    async def _serve(self, session: GroupSession) -> None:
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

    async def _handle(self, session: GroupSession, event: RecordedEvent) -> None:
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
