"""The subscription runner: follow a category (or all streams) for ever, handle each event,
keep a durable checkpoint, reconnect with back-off.

Delivery is at least once: after a crash, the events since the last checkpoint come again, and
two replicas of a service each see every event. Handlers are idempotent (they recognise what
they already did by business key); the runner only guarantees order and no gaps.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from eventstore_client import tracing
from eventstore_client.client import RecordedEvent
from eventstore_client.errors import EventStoreError, UnavailableError
from eventstore_client.store import EventStore

log = logging.getLogger(__name__)

Handler = Callable[[RecordedEvent], Awaitable[None]]


class Checkpoints(Protocol):
    """Where a subscriber's position is kept between runs."""

    async def load(self, name: str) -> int: ...

    async def save(self, name: str, position: int) -> None: ...


class StoreCheckpoints:
    """Checkpoints kept by the event store itself (durable subscribers)."""

    def __init__(self, client: EventStore) -> None:
        self._client = client

    async def load(self, name: str) -> int:
        return await self._client.get_checkpoint(name) or 0

    async def save(self, name: str, position: int) -> None:
        await self._client.commit_checkpoint(name, position)


class SubscriptionRunner:
    """Runs `handler` for every event of `category` (all streams when empty), in order.

    The checkpoint is saved after each delivered batch has been handled; a handler that raises
    stops the batch, and the runner resubscribes from the last checkpoint after a back-off.
    """

    def __init__(
        self,
        client: EventStore,
        name: str,
        handler: Handler,
        *,
        category: str = "",
        event_types: Sequence[str] = (),
        checkpoints: Checkpoints | None = None,
        max_backoff: float = 5.0,
    ) -> None:
        self._client = client
        self.name = name
        self._handler = handler
        self._category = category
        self._types = list(event_types)
        self._checkpoints = checkpoints or StoreCheckpoints(client)
        self._max_backoff = max_backoff
        self.position = 0  # the last position handled
        self._saved = 0
        self.caught_up = asyncio.Event()

    async def run(self) -> None:
        """Never returns; cancel the task to stop."""
        delay = 0.05
        while True:
            try:
                self.position = max(self.position, await self._checkpoints.load(self.name))
                self._saved = self.position
                async for response in self._client.subscribe(
                    category=self._category, after_position=self.position, event_types=self._types
                ):
                    for event in response.events:
                        with tracing.consuming(__name__, self.name, event):
                            await self._handler(event)
                        self.position = event.position
                    # Events up to scanned_position that did not match the filter count as done.
                    moved = max(self.position, response.scanned_position) > self._saved
                    self.position = max(self.position, response.scanned_position)
                    if moved:
                        await self._checkpoints.save(self.name, self.position)
                        self._saved = self.position
                    if response.caught_up:
                        self.caught_up.set()
                    delay = 0.05
            except asyncio.CancelledError:
                raise
            except (EventStoreError, UnavailableError, OSError) as exc:
                log.warning("subscription %s interrupted (%s); resubscribing", self.name, exc)
            except Exception:
                log.exception(
                    "subscription %s: handler failed; retrying from the checkpoint", self.name
                )
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self._max_backoff)
