"""Use cases of the customer service: commands from gRPC and reactions to order events."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from contracts.order.v1 import events_pb2 as order_events
from customer_svc.adapters.metrics import CREDIT_DECISIONS
from customer_svc.domain import customer
from customer_svc.domain.customer import Customer, CustomerEvent
from event_contracts.order import ORDER_EVENTS
from eventstore_client.client import RecordedEvent
from eventstore_client.personal import SubjectKeys
from eventstore_client.repository import Loaded, Repository
from hosting.metrics import EVENTS_SKIPPED
from hosting.validation import is_uuid

log = logging.getLogger(__name__)

DECISIONS = {
    "CreditReserved": "reserved",
    "CreditLimitExceeded": "refused",
    "CreditReleased": "released",
}


class Customers:
    def __init__(
        self, repository: Repository[Customer, CustomerEvent], keys: SubjectKeys | None = None
    ) -> None:
        self._repository = repository
        self._keys = keys

    async def create(self, customer_id: str, name: str, credit_limit: int) -> Loaded[Customer]:
        executed = await self._repository.create(
            customer_id, lambda state: customer.create(state, name, credit_limit)
        )
        return executed.loaded

    async def get(self, customer_id: str, as_of: datetime | None = None) -> Loaded[Customer]:
        """The customer now, or as it was at `as_of`."""
        return await self._repository.load(customer_id, as_of=as_of)

    async def forget(self, customer_id: str) -> Loaded[Customer]:
        """Forget the customer's personal data: CustomerForgotten first (every replica's
        cached state drops the name with it), then the key (every sealed name, in every event
        and snapshot, becomes unreadable). Run again after a failure, it finishes the job."""
        executed = await self._repository.execute(customer_id, customer.forget)
        if self._keys is not None:
            await self._keys.erase(customer_id)
        return executed.loaded

    async def on_order_event(self, event: RecordedEvent) -> None:
        """The saga's customer side: answer each new order once, release cancelled ones."""
        message = ORDER_EVENTS.decode(event.type, event.data, event.metadata)
        react = REACTIONS.get(type(message))
        if message is None or react is None:
            EVENTS_SKIPPED.labels("customer_svc.orders", event.type).inc()
            return  # not an order event this service reacts to
        customer_id = message.customer_id  # type: ignore[attr-defined]
        if not is_uuid(customer_id):
            # order_svc accepts only UUIDs; anything else cannot name a customer stream.
            log.error(
                "ignoring %s %s: customer id %r is not a UUID", event.type, event.id, customer_id
            )
            return
        # The order's saga is what the decision belongs to: order_svc's group delivers the
        # credit events by it, so one busy customer does not make its orders wait in line.
        correlation = event.metadata.get("correlation_id") or event.stream
        executed = await self._repository.execute(
            customer_id, react(message), causation_id=event.id, correlation_id=correlation
        )
        for decided in executed.events:
            CREDIT_DECISIONS.labels(DECISIONS[type(decided).__name__]).inc()


Command = Callable[[Customer], Sequence[CustomerEvent]]


def _reserve(created: order_events.OrderCreated) -> Command:
    return lambda state: customer.reserve_credit(state, created.order_id, created.total)


def _release(cancelled: order_events.OrderCancelled) -> Command:
    return lambda state: customer.release_credit(state, cancelled.order_id)


# What each order event asks of the customer: a handler table, by contract message.
REACTIONS: dict[type[Any], Callable[[Any], Command]] = {
    order_events.OrderCreated: _reserve,
    order_events.OrderCancelled: _release,
}
# The order events this service reacts to (its subscription's filter).
ORDER_TYPES = tuple(message.DESCRIPTOR.name for message in REACTIONS)
